//! The broker's transactions, for the exactly-once mode: what the exactly-once Kafka sink does,
//! reduced to what the relay sees.
//!
//! Records go into one open transaction per producer; it commits when the relay ends a burst, when
//! it is old enough or full — or aborts (a poison record in it, a transient failure), which fails
//! every record of it and spoils the sink: each batch is refused (deferred) until the relay moves
//! its epoch on. A commit whose outcome is lost is resolved as the real sink does (it asks its
//! progress): committed or not, reported truly. Committed ids are the progress: `recover` returns
//! those the relay has not confirmed completing. A new producer (`recover`) fences every older
//! one: their open transaction aborts and all they do fails `Fenced` — the zombie relay's fate.

use std::collections::BTreeSet;

use txoutbox_core::{SinkError, SinkErrorKind};

use crate::broker::{POISON, Partition, Queued};
use crate::world::World;

/// A transaction commits once it is this old (the sink's `commit_interval`), in milliseconds.
const COMMIT_INTERVAL_MS: u64 = 100;
/// A transaction commits once it holds this many records.
const MAX_RECORDS: usize = 50;

/// The transactions' state.
#[derive(Debug, Default)]
pub(crate) struct Transactions {
    /// Whether the broker runs in exactly-once mode.
    pub(crate) enabled: bool,
    open: Vec<(Partition, Queued)>,
    /// The producer that opened the transaction, and when.
    opened_by: u64,
    began_ms: u64,
    commit_asked: bool,
    spoiled: bool,
    /// The newest producer: older ones are fenced.
    current: u64,
    /// Committed rows the relay has not confirmed completing (the progress `recover` reads).
    unmarked: BTreeSet<i64>,
}

fn fenced() -> SinkError {
    SinkError::new(
        SinkErrorKind::Fenced,
        None,
        "simulated: another relay took over the transactional id",
    )
}

impl Transactions {
    /// Whether producer `producer` is fenced.
    pub(crate) fn is_fenced(&self, producer: u64) -> bool {
        producer < self.current
    }

    /// What every record of a batch gets before it is looked at, if anything: `Fenced` for a
    /// fenced producer, deferred while spoiled.
    pub(crate) fn refuse_batch(&self, producer: u64) -> Option<SinkError> {
        if self.is_fenced(producer) {
            Some(fenced())
        } else if self.spoiled {
            Some(SinkError::new(
                SinkErrorKind::Deferred,
                None,
                "simulated: an earlier transaction did not commit",
            ))
        } else {
            None
        }
    }

    /// Adds a record to the open transaction of `producer`.
    pub(crate) fn add(&mut self, producer: u64, partition: Partition, queued: Queued, now_ms: u64) {
        if self.open.is_empty() {
            self.opened_by = producer;
            self.began_ms = now_ms;
        }
        self.open.push((partition, queued));
        if self.open.len() >= MAX_RECORDS {
            self.commit_asked = true;
        }
    }

    /// The relay has nothing more for now: commit.
    pub(crate) fn end_of_burst(&mut self) {
        self.commit_asked = true;
    }

    /// The relay moved its epoch on: batches are taken again.
    pub(crate) fn epoch_moved(&mut self, producer: u64) {
        if !self.is_fenced(producer) {
            self.spoiled = false;
        }
    }

    /// The relay confirmed completing these rows.
    pub(crate) fn completed(&mut self, ids: &[i64]) {
        for id in ids {
            self.unmarked.remove(id);
        }
    }

    /// Whether a transaction is open.
    pub(crate) fn is_idle(&self) -> bool {
        self.open.is_empty()
    }

    /// A new producer starts: it fences the older ones (aborting their open transaction) and
    /// reads the progress: the committed rows not confirmed completed.
    pub(crate) fn recover(world: &mut World, producer: u64) -> Vec<i64> {
        let txns = &mut world.broker.transactions;
        txns.current = txns.current.max(producer);
        if !txns.open.is_empty() && txns.opened_by < producer {
            let open = std::mem::take(&mut txns.open);
            let aborted = open.len();
            for (_, queued) in open {
                queued.fail(fenced());
            }
            world.log(format_args!(
                "broker: producer {producer} fenced the older one; its transaction of {aborted} aborted"
            ));
        }
        world.broker.transactions.spoiled = false;
        let unmarked: Vec<i64> = world.broker.transactions.unmarked.iter().copied().collect();
        world.broker.may_complete(producer, &unmarked);
        world.log(format_args!(
            "broker: producer {producer} recovers {} committed rows",
            unmarked.len()
        ));
        unmarked
    }

    /// Producer `producer` died: its open transaction is gone (nothing of it lands).
    pub(crate) fn producer_dies(world: &mut World, producer: u64) {
        let txns = &mut world.broker.transactions;
        if txns.opened_by == producer && !txns.open.is_empty() {
            let dropped = std::mem::take(&mut txns.open).len();
            world.log(format_args!(
                "broker: the open transaction of {dropped} died with its producer"
            ));
        }
    }

    /// One step: commits the open transaction when it is due (not during an outage).
    pub(crate) fn step(world: &mut World) {
        let now = world.now_ms();
        let txns = &world.broker.transactions;
        let due = !txns.open.is_empty()
            && (txns.commit_asked || now.saturating_sub(txns.began_ms) >= COMMIT_INTERVAL_MS);
        if !due || world.broker.is_out() {
            return;
        }
        let txns = &mut world.broker.transactions;
        txns.commit_asked = false;
        let producer = txns.opened_by;
        let open = std::mem::take(&mut txns.open);
        if txns.is_fenced(producer) {
            for (_, queued) in open {
                queued.fail(fenced());
            }
            return;
        }
        let poison = open.iter().any(|(_, q)| {
            q.message()
                .and_then(|m| m.payload.as_ref())
                .is_some_and(|p| p.starts_with(POISON))
        });
        let faults = world.faults;
        let fails = poison || world.chance(faults.broker_transient);
        // A lost outcome is resolved by reading the progress: either way, reported truly.
        let lost_outcome = world.chance(faults.broker_lost_ack);
        let commits = !fails && (!lost_outcome || world.chance(0.5));
        if !commits {
            world.broker.transactions.spoiled = true;
            let records = open.len();
            for (_, queued) in open {
                let is_poison = queued
                    .message()
                    .and_then(|m| m.payload.as_ref())
                    .is_some_and(|p| p.starts_with(POISON));
                if is_poison {
                    queued.fail(SinkError::permanent("simulated: the broker refuses this record"));
                } else {
                    queued.fail(SinkError::transient(
                        "simulated: the transaction was aborted; sent again",
                    ));
                }
            }
            world.log(format_args!(
                "broker: a transaction of {records} aborted{}",
                if poison { " (poison)" } else { "" }
            ));
            return;
        }
        let mut ids = Vec::with_capacity(open.len());
        for (partition, queued) in &open {
            if let Some(message) = queued.message() {
                world.broker.land(partition, message, now);
                ids.push(message.id);
            }
        }
        world.broker.acknowledge(producer, &ids);
        world.broker.transactions.unmarked.extend(ids.iter().copied());
        for (_, queued) in open {
            queued.succeed();
        }
        world.log(format_args!(
            "broker: producer {producer}'s transaction of {} committed: {ids:?}",
            ids.len()
        ));
    }
}
