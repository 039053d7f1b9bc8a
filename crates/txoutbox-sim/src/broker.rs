//! A scripted broker and the relay's sink to it (at-least-once, like the Kafka sink).
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
use std::time::Duration;

use bytes::Bytes;
use rand::Rng;
use txoutbox_core::{BatchDelivery, DeliveryTracker, OutboxMessage, Sink, SinkError};

use crate::transactions::Transactions;
use crate::world::{Shared, World, lock};

/// Payloads starting with this always fail permanently at the broker (a poison message).
pub const POISON: &[u8] = b"poison";
/// Payloads starting with this are refused at enqueue (a record the broker can never take).
pub const REFUSED: &[u8] = b"refused";

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

/// A record the producer holds, not yet sent.
#[derive(Debug)]
pub(crate) struct Queued {
    batch: Arc<[OutboxMessage]>,
    index: usize,
    tracker: Arc<DeliveryTracker>,
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
type Lane = (u64, Partition);

/// What landed where, what was acknowledged, and what the producer holds.
#[derive(Debug)]
pub struct Broker {
    partitions: u32,
    logs: BTreeMap<Partition, Vec<Landed>>,
    /// Per live producer, what was acknowledged to it.
    acknowledged: BTreeMap<u64, BTreeSet<i64>>,
    /// Each producer's queue per partition (several producers live at once when several relay
    /// nodes share the table).
    queues: BTreeMap<Lane, VecDeque<Queued>>,
    /// Queues whose head failed transiently: what the producer enqueues to them fails too until
    /// its relay reacts (`discard_queued`).
    broken: BTreeSet<Lane>,
    outage_until_ms: Option<u64>,
    /// Whether what is queued times out when the outage ends.
    outage_times_out: bool,
    round_robin: u32,
    /// Producers so far (one per relay life): the newest is this number.
    producers: u64,
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
    fn partition_of(&mut self, message: &OutboxMessage) -> Partition {
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
    fn lanes_of(&self, producer: u64) -> Vec<Lane> {
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
    fn fail_queue(&mut self, lane: &Lane, why: &str) -> usize {
        let queue = self.queues.remove(lane).unwrap_or_default();
        let failed = queue.len();
        for queued in queue {
            queued.fail(SinkError::transient(why));
        }
        failed
    }

    /// Producer `producer` dies with its relay: a random prefix of each queue lands (never
    /// acknowledged), the rest is lost; in exactly-once mode its open transaction is gone.
    pub(crate) fn producer_dies(world: &mut World, producer: u64) {
        world.broker.acknowledged.remove(&producer);
        if world.broker.transactions.enabled {
            Transactions::producer_dies(world, producer);
            return;
        }
        let lanes = world.broker.lanes_of(producer);
        let now = world.now_ms();
        let mut landed = 0;
        for lane in lanes {
            let queue = world.broker.queues.remove(&lane).unwrap_or_default();
            let partition = lane.1;
            let keep = world.rng().random_range(0..=queue.len());
            for queued in queue.into_iter().take(keep) {
                let Some(message) = queued.message() else { continue };
                // The broker refuses a poison record, and then nothing behind it in the partition.
                if message.payload.as_ref().is_some_and(|p| p.starts_with(POISON)) {
                    break;
                }
                world.broker.land(&partition, message, now);
                landed += 1;
            }
        }
        world.broker.outage_until_ms = None;
        world.broker.broken.retain(|(owner, _)| *owner != producer);
        world.log(format_args!(
            "broker: producer {producer} died; {landed} of what it held landed"
        ));
    }

    /// One step of `producer`: the head of a random one of its queues lands or fails.
    fn step(world: &mut World, producer: u64) {
        let now = world.now_ms();
        if let Some(until) = world.broker.outage_until_ms {
            if now < until {
                return;
            }
            world.broker.outage_until_ms = None;
            if world.broker.outage_times_out {
                let lanes: Vec<Lane> = world.broker.queues.keys().cloned().collect();
                let mut failed = 0;
                for lane in lanes {
                    let timed_out = world.broker.fail_queue(&lane, "simulated: message timed out");
                    if timed_out > 0 {
                        world.broker.broken.insert(lane);
                    }
                    failed += timed_out;
                }
                world.log(format_args!("broker: back; {failed} queued records timed out"));
            } else {
                world.log("broker: back");
            }
        }
        if world.broker.transactions.enabled {
            Transactions::step(world);
        }
        let outages = world.faults.outages_per_second;
        // About one step per millisecond: the rate per second, spread over them.
        if world.chance(outages / 1_000.0) {
            let lasts = world.rng().random_range(100..3_000);
            let times_out = world.rng().random_bool(0.5);
            world.broker.outage_until_ms = Some(now + lasts);
            world.broker.outage_times_out = times_out;
            world.log(format_args!("broker: out for {lasts} ms"));
            return;
        }
        let busy: Vec<Lane> = world
            .broker
            .queues
            .iter()
            .filter(|((owner, _), q)| *owner == producer && !q.is_empty())
            .map(|(lane, _)| lane.clone())
            .collect();
        if busy.is_empty() {
            return;
        }
        let pick = world.rng().random_range(0..busy.len());
        let Some(lane) = busy.get(pick).cloned() else {
            return;
        };
        let Some(head) = world.broker.queues.get_mut(&lane).and_then(VecDeque::pop_front) else {
            return;
        };
        let partition = lane.1.clone();
        let Some(message) = head.message().cloned() else {
            return;
        };
        let faults = world.faults;
        let id = message.id;
        let poison = message.payload.as_ref().is_some_and(|p| p.starts_with(POISON));
        let failure = if poison {
            Some((
                false,
                SinkError::permanent("simulated: the broker refuses this record"),
            ))
        } else if world.chance(faults.broker_transient) {
            Some((false, SinkError::transient("simulated: not leader for partition")))
        } else if world.chance(faults.broker_lost_ack) {
            Some((
                true,
                SinkError::transient("simulated: request timed out (the record may have landed)"),
            ))
        } else {
            None
        };
        match failure {
            None => {
                world.broker.land(&partition, &message, now);
                world.log(format_args!(
                    "broker: row {id} landed on {}/{}",
                    partition.0, partition.1
                ));
                world.broker.acknowledge(producer, &[id]);
                head.succeed();
            }
            Some((landed, error)) => {
                if landed {
                    world.broker.land(&partition, &message, now);
                }
                let kind = error.kind();
                let transient = error.is_transient();
                head.fail(error);
                let behind = world
                    .broker
                    .fail_queue(&lane, "simulated: an earlier record of the partition failed");
                if transient || behind > 0 {
                    world.broker.broken.insert(lane);
                }
                world.log(format_args!(
                    "broker: row {id} failed {kind:?}{} on {}/{}; {behind} behind it failed too",
                    if landed { " after it landed" } else { "" },
                    partition.0,
                    partition.1
                ));
            }
        }
    }
}

/// The relay's sink to the simulated broker: one per relay (a producer), its pump stopped when
/// it drops.
#[derive(Debug)]
pub struct SimSink {
    world: Shared,
    /// This producer's number (the newest fences older ones in exactly-once mode).
    producer: u64,
    pump: tokio::task::JoinHandle<()>,
}

impl SimSink {
    /// A producer to the world's broker; its pump runs on the current (simulated) runtime.
    pub fn new(world: Shared) -> Self {
        let producer = {
            let mut world = lock(&world);
            world.broker.producers += 1;
            world.broker.producers
        };
        let pumped = Arc::clone(&world);
        let pump = tokio::spawn(async move {
            loop {
                let pause = {
                    let mut world = lock(&pumped);
                    Broker::step(&mut world, producer);
                    let most = if world.broker.is_idle() { 20_000 } else { 2_000 };
                    world.rng().random_range(100..most)
                };
                tokio::time::sleep(Duration::from_micros(pause)).await;
            }
        });
        Self {
            world,
            producer,
            pump,
        }
    }

    /// This producer's number.
    pub fn producer(&self) -> u64 {
        self.producer
    }
}

impl Drop for SimSink {
    fn drop(&mut self) {
        self.pump.abort();
    }
}

impl Sink for SimSink {
    async fn send_batch(&self, batch: Arc<[OutboxMessage]>) -> BatchDelivery {
        let tracker = DeliveryTracker::new(batch.len());
        let mut world = lock(&self.world);
        let mut refused_keys: BTreeSet<(Arc<str>, Bytes)> = BTreeSet::new();
        let mut queued = 0;
        let now = txoutbox_core::virtual_clock::now().unwrap_or_default();
        // (A fenced zombie's view of held and parked keys may be stale; nothing it hands over can
        // land.)
        let fenced = world.broker.transactions.enabled && world.broker.transactions.is_fenced(self.producer);
        for message in batch.iter().filter(|_| !fenced) {
            let Some(earlier) = world.table.holds_back(message, now, world.parks_keys) else {
                continue;
            };
            let (dead, failed_by) = world
                .table
                .row(earlier)
                .map(|r| (r.state == crate::table::RowState::Dead, r.failed_by))
                .unwrap_or_default();
            // Another relay's failure reaches this one within its poll interval (parked keys are
            // read again that often): two relays run at once only while one is a zombie.
            let now_ms = world.now_ms();
            let unseen = failed_by.is_some_and(|(producer, at)| {
                producer != self.producer && now_ms.saturating_sub(at) <= world.news_delay_ms
            });
            if !unseen {
                world.violation(format_args!(
                    "row {} was handed to the broker while row {earlier} of its key is {}",
                    message.id,
                    if dead { "parked" } else { "backing off" }
                ));
            }
        }
        // A coordinated relay hands over only rows of buckets its node leases.
        if let Some(node) = world.nodes.get(&self.producer).cloned() {
            let now_ms = world.now_ms();
            for message in batch.iter() {
                if !world.leases.holds(&node, None, message.bucket, now_ms) {
                    world.violation(format_args!(
                        "row {} was handed to the broker by {node}, which does not lease its bucket {}",
                        message.id, message.bucket
                    ));
                }
            }
        }
        let exactly_once = world.broker.transactions.enabled;
        if let Some(error) = world
            .broker
            .transactions
            .refuse_batch(self.producer)
            .filter(|_| exactly_once)
        {
            world.log(format_args!("sink: batch of {} refused: {error}", batch.len()));
            for index in 0..batch.len() {
                tracker.complete(index, Err(error.clone()));
            }
            return tracker.delivery();
        }
        for (index, message) in batch.iter().enumerate() {
            let held_key = message.key.clone().map(|key| (Arc::clone(&message.topic), key));
            if held_key.as_ref().is_some_and(|k| refused_keys.contains(k)) {
                world.log(format_args!("sink: row {} deferred", message.id));
                tracker.complete(index, Err(SinkError::deferred()));
                continue;
            }
            let refusal = if let Some(reason) = &message.malformed {
                Some(SinkError::rejected(reason.clone()))
            } else if message.payload.as_ref().is_some_and(|p| p.starts_with(REFUSED)) {
                Some(SinkError::rejected(
                    "simulated: the broker can never take this record",
                ))
            } else {
                None
            };
            if let Some(error) = refusal {
                world.log(format_args!("sink: row {} refused", message.id));
                refused_keys.extend(held_key);
                tracker.complete(index, Err(error));
                continue;
            }
            let partition = world.broker.partition_of(message);
            let record = Queued {
                batch: Arc::clone(&batch),
                index,
                tracker: Arc::clone(&tracker),
            };
            if exactly_once {
                let now = world.now_ms();
                world
                    .broker
                    .transactions
                    .add(self.producer, partition, record, now);
                queued += 1;
                continue;
            }
            let lane = (self.producer, partition);
            if world.broker.broken.contains(&lane) {
                world.log(format_args!(
                    "sink: row {} fails: its partition failed",
                    message.id
                ));
                tracker.complete(
                    index,
                    Err(SinkError::transient(
                        "simulated: an earlier record of the partition failed",
                    )),
                );
                continue;
            }
            world.broker.queues.entry(lane).or_default().push_back(record);
            queued += 1;
        }
        let (first, last) = (batch.first().map(|m| m.id), batch.last().map(|m| m.id));
        world.log(format_args!(
            "sink: producer {}: batch of {} ({first:?}..{last:?}), {queued} queued",
            self.producer,
            batch.len()
        ));
        tracker.delivery()
    }

    async fn recover(&self) -> txoutbox_core::Result<Vec<i64>> {
        let mut world = lock(&self.world);
        if !world.broker.transactions.enabled {
            return Ok(Vec::new());
        }
        Ok(Transactions::recover(&mut world, self.producer))
    }

    fn end_of_burst(&self) {
        lock(&self.world).broker.transactions.end_of_burst();
    }

    fn epoch_moved(&self) {
        lock(&self.world).broker.transactions.epoch_moved(self.producer);
    }

    fn completed(&self, ids: &[i64]) {
        lock(&self.world).broker.transactions.completed(ids);
    }

    fn accepts_dead_letter_copies(&self) -> bool {
        !lock(&self.world).broker.transactions.enabled
    }

    fn delivery(&self) -> Option<&'static str> {
        lock(&self.world)
            .broker
            .transactions
            .enabled
            .then_some("exactly-once")
    }

    fn discard_queued(&self) {
        if lock(&self.world).broker.transactions.enabled {
            return;
        }
        let mut world = lock(&self.world);
        let producer = self.producer;
        let lanes = world.broker.lanes_of(producer);
        let purged: usize = lanes
            .iter()
            .map(|lane| world.broker.fail_queue(lane, "simulated: purged from the queue"))
            .sum();
        world.broker.broken.retain(|(owner, _)| *owner != producer);
        world.log(format_args!("sink: discarded {purged} queued"));
    }
}
