//! The relay's sink to the simulated broker (at-least-once, like the Kafka sink; exactly-once
//! when the broker runs transactions).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rand::Rng;
use txoutbox_core::{BatchDelivery, DeliveryTracker, OutboxMessage, Sink, SinkError};

use crate::pump;
use crate::record::{Queued, REFUSED};
use crate::world::{Shared, lock};

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
                    pump::step(&mut world, producer);
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
        Ok(pump::recover(&mut world, self.producer))
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
