//! The records the simulated producers hold, and the payloads the broker treats specially.

use std::sync::Arc;

use txoutbox_core::{DeliveryTracker, OutboxMessage, SinkError};

/// Payloads starting with this always fail permanently at the broker (a poison message).
pub const POISON: &[u8] = b"poison";
/// Payloads starting with this are refused at enqueue (a record the broker can never take).
pub const REFUSED: &[u8] = b"refused";

/// A record the producer holds, not yet sent.
#[derive(Debug)]
pub(crate) struct Queued {
    pub(crate) batch: Arc<[OutboxMessage]>,
    pub(crate) index: usize,
    pub(crate) tracker: Arc<DeliveryTracker>,
}

impl Queued {
    pub(crate) fn message(&self) -> Option<&OutboxMessage> {
        self.batch.get(self.index)
    }

    pub(crate) fn fail(self, error: SinkError) {
        self.tracker.complete(self.index, Err(error));
    }

    pub(crate) fn succeed(self) {
        self.tracker.complete(self.index, Ok(()));
    }
}

/// A topic's partition.
pub(crate) type Partition = (Arc<str>, u32);

/// One producer's queue to a partition.
pub(crate) type Lane = (u64, Partition);
