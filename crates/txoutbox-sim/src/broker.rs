//! A scripted broker: what landed where, what was acknowledged, what the producers hold. What
//! it does over time is in [`pump`](crate::pump), the relay's sink to it in
//! [`sim_sink`](crate::sim_sink).
//!
//! The producer keeps one queue per partition and sends each in order; a pump takes the head of
//! a random partition's queue now and then, so acknowledgements come back in any order across
//! partitions and in order within one. At the head of a queue a record lands and is
//! acknowledged, or fails: permanently (a poison payload), transiently, or after it landed (the
//! acknowledgement is lost: the outcome is unknown to the relay). A failure fails everything
//! queued behind it in its partition too; after a transient failure, what the relay enqueues to
//! that partition fails as well until it reacts (`discard_queued`). That is the Kafka sink's
//! default (librdkafka retries transient errors itself and reports none before a purge); with
//! `message.timeout.ms` set, a later record may land before the relay reacts — the window
//! `docs/guarantees.md` documents, not simulated here. The broker also stops answering for a while (an outage), after which what was
//! queued either goes on or times out. At enqueue, a record that can never be sent is refused
//! (`Rejected`) and the later records of its key in the batch are held back (`Deferred`), as the
//! Kafka sink does. When the relay ends (a crash or a shutdown) its producer dies: a random
//! prefix of each queue lands, unacknowledged, and the rest is gone.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use txoutbox_core::{OutboxMessage, SinkError};

use crate::record::{Lane, Partition, Queued};
use crate::transactions::Transactions;

/// One record in a partition's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Landed {
    /// The row id it came from.
    pub id: i64,
    /// Its key.
    pub key: Option<Bytes>,
    /// Virtual time it landed, in milliseconds.
    pub at_ms: u64,
}

/// What landed where, what was acknowledged, and what the producer holds.
#[derive(Debug)]
pub struct Broker {
    partitions: u32,
    logs: BTreeMap<Partition, Vec<Landed>>,
    /// Per live producer, what was acknowledged to it.
    pub(crate) acknowledged: BTreeMap<u64, BTreeSet<i64>>,
    /// Each producer's queue per partition (several producers live at once when several relay
    /// nodes share the table).
    pub(crate) queues: BTreeMap<Lane, VecDeque<Queued>>,
    /// Queues whose head failed transiently: what the producer enqueues to them fails too until
    /// its relay reacts (`discard_queued`).
    pub(crate) broken: BTreeSet<Lane>,
    pub(crate) outage_until_ms: Option<u64>,
    /// Whether what is queued times out when the outage ends.
    pub(crate) outage_times_out: bool,
    round_robin: u32,
    /// Producers so far (one per relay life): the newest is this number.
    pub(crate) producers: u64,
    /// Per producer, the rows its relay may complete: acknowledged to it, or recovered by it.
    may_complete: BTreeMap<u64, BTreeSet<i64>>,
    /// The exactly-once mode's transactions.
    pub(crate) transactions: Transactions,
}

impl Broker {
    /// A broker whose topics have `partitions` partitions each.
    pub(crate) fn new(partitions: u32) -> Self {
        Self {
            partitions: partitions.max(1),
            logs: BTreeMap::new(),
            acknowledged: BTreeMap::new(),
            queues: BTreeMap::new(),
            broken: BTreeSet::new(),
            outage_until_ms: None,
            outage_times_out: false,
            round_robin: 0,
            producers: 0,
            may_complete: BTreeMap::new(),
            transactions: Transactions::default(),
        }
    }

    /// The partition a record goes to: by key (FNV-1a), keyless ones round-robin.
    pub(crate) fn partition_of(&mut self, message: &OutboxMessage) -> Partition {
        let partition = match &message.key {
            Some(key) => {
                let hash = key.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                    (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
                });
                u32::try_from(hash % u64::from(self.partitions)).unwrap_or(0)
            }
            None => {
                self.round_robin = self.round_robin.wrapping_add(1);
                self.round_robin % self.partitions
            }
        };
        (Arc::clone(&message.topic), partition)
    }

    /// The rows acknowledged to `producer` (while it lives).
    pub fn acknowledged_to(&self, producer: u64) -> BTreeSet<i64> {
        self.acknowledged.get(&producer).cloned().unwrap_or_default()
    }

    /// Each partition's log.
    pub fn logs(&self) -> &BTreeMap<(Arc<str>, u32), Vec<Landed>> {
        &self.logs
    }

    /// Whether no producer holds anything.
    pub fn is_idle(&self) -> bool {
        self.queues.values().all(VecDeque::is_empty) && self.transactions.is_idle()
    }

    /// The queues of `producer`.
    pub(crate) fn lanes_of(&self, producer: u64) -> Vec<Lane> {
        self.queues
            .keys()
            .filter(|(owner, _)| *owner == producer)
            .cloned()
            .collect()
    }

    /// Whether `producer` holds nothing (what its relay handed over landed or failed).
    pub fn holds_nothing(&self, producer: u64) -> bool {
        self.queues
            .iter()
            .all(|((owner, _), queue)| *owner != producer || queue.is_empty())
            && self.transactions.is_idle()
    }

    /// Whether the broker runs in exactly-once mode.
    pub fn is_exactly_once(&self) -> bool {
        self.transactions.enabled
    }

    /// Whether the relay of `producer` may complete row `id`: its producer had it acknowledged,
    /// or recovered it as committed.
    pub fn may_be_completed_by(&self, producer: u64, id: i64) -> bool {
        self.may_complete
            .get(&producer)
            .is_some_and(|ids| ids.contains(&id))
    }

    /// Rows the relay of `producer` may complete (recovered as committed).
    pub(crate) fn may_complete(&mut self, producer: u64, ids: &[i64]) {
        self.may_complete.entry(producer).or_default().extend(ids);
    }

    /// The broker acknowledged these rows' records to `producer`.
    pub(crate) fn acknowledge(&mut self, producer: u64, ids: &[i64]) {
        self.acknowledged.entry(producer).or_default().extend(ids);
        self.may_complete(producer, ids);
    }

    /// Whether the broker is in an outage.
    pub fn is_out(&self) -> bool {
        self.outage_until_ms.is_some()
    }

    pub(crate) fn land(&mut self, partition: &Partition, message: &OutboxMessage, now_ms: u64) {
        self.logs.entry(partition.clone()).or_default().push(Landed {
            id: message.id,
            key: message.key.clone(),
            at_ms: now_ms,
        });
    }

    /// Fails everything queued in a lane (behind a failed record).
    pub(crate) fn fail_queue(&mut self, lane: &Lane, why: &str) -> usize {
        let queue = self.queues.remove(lane).unwrap_or_default();
        let failed = queue.len();
        for queued in queue {
            queued.fail(SinkError::transient(why));
        }
        failed
    }
}
