//! The batches passed between the relay's tasks: fetcher → sender ([`Selected`]) → completer
//! ([`SentBatch`]).

use std::sync::Arc;

use crate::message::OutboxMessage;
use crate::sink::BatchDelivery;

/// A batch the fetcher selected and reserved in flight, not yet handed to the sink.
#[derive(Debug)]
pub(crate) struct Selected {
    pub(crate) rows: Arc<[OutboxMessage]>,
    pub(crate) permit: super::in_flight::Permit,
    /// The send epoch when the rows were selected.
    pub(crate) epoch: u64,
    /// Nothing more follows for now: the sink hears [`Sink::end_of_burst`] after this batch,
    /// unless more batches were queued behind it meanwhile.
    /// (A marker with no rows only carries this.)
    pub(crate) end_of_burst: bool,
}

/// A batch handed to the sink, on its way to the completer.
#[derive(Debug)]
pub(crate) struct SentBatch {
    pub(crate) rows: Arc<[OutboxMessage]>,
    pub(crate) delivery: BatchDelivery,
    pub(crate) permit: super::in_flight::Permit,
    /// The send epoch it was handed over in.
    pub(crate) epoch: u64,
}
