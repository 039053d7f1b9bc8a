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

use crate::record::{Partition, Queued};

/// A transaction commits once it is this old (the sink's `commit_interval`), in milliseconds.
pub(crate) const COMMIT_INTERVAL_MS: u64 = 100;
/// A transaction commits once it holds this many records.
const MAX_RECORDS: usize = 50;

/// The transactions' state.
#[derive(Debug, Default)]
pub(crate) struct Transactions {
    /// Whether the broker runs in exactly-once mode.
    pub(crate) enabled: bool,
    pub(crate) open: Vec<(Partition, Queued)>,
    /// The producer that opened the transaction, and when.
    pub(crate) opened_by: u64,
    pub(crate) began_ms: u64,
    pub(crate) commit_asked: bool,
    pub(crate) spoiled: bool,
    /// The newest producer: older ones are fenced.
    pub(crate) current: u64,
    /// Committed rows the relay has not confirmed completing (the progress `recover` reads).
    pub(crate) unmarked: BTreeSet<i64>,
}

pub(crate) fn fenced() -> SinkError {
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
}
