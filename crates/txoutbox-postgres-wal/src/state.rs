//! What the streaming task and the relay's store share: the buffer of decoded messages, the
//! open transactions, and the slot position that may be confirmed.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, TimeZone, Utc};
use pgwire_replication::{Lsn, ReplicationConfig};
use sqlx::PgPool;
use tokio::sync::{Notify, watch};
use uuid::Uuid;

use crate::buffer::Buffer;
use crate::config::WalConfig;
use crate::positions::{Builder, Covered, Description, Skip, in_runs, runs};

pub(crate) struct Shared {
    pub(crate) pool: PgPool,
    pub(crate) config: Arc<WalConfig>,
    pub(crate) replication: ReplicationConfig,
    pub(crate) dead_insert: String,
    pub(crate) dead_count: String,
    pub(crate) state: Mutex<State>,
    /// New messages arrived (wakes the relay through `watch`).
    pub(crate) arrived: Notify,
    /// Buffer space was freed (wakes the streaming task under back-pressure).
    pub(crate) space: Notify,
    /// The position to confirm to PostgreSQL.
    pub(crate) confirm: watch::Sender<Lsn>,
    /// The highest WAL position the stream has reached.
    pub(crate) received: watch::Sender<Lsn>,
    /// The stream's state, for `lock_for_relay`.
    pub(crate) status: watch::Sender<StreamStatus>,
    /// The cluster's system identifier, read by `check` (exactly-once progress records it).
    pub(crate) system: std::sync::OnceLock<String>,
}

impl Shared {
    /// Whether the buffer holds as many messages, or bytes, as it may (back-pressure).
    pub(crate) fn is_full(&self, state: &State) -> bool {
        state.buffer.len() >= self.config.max_buffered
            || state.buffer.bytes() >= self.config.max_buffered_bytes
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum StreamStatus {
    Idle,
    Connecting,
    Streaming,
    Failed(String),
}

/// A transaction whose messages are not all completed yet: committed, or being streamed (its
/// commit not read yet) because it is larger than the buffer should hold at once.
#[derive(Debug)]
pub(crate) struct Tx {
    pub(crate) first_id: i64,
    /// Its messages (ids `first_id..first_id + len`, in the order the transaction wrote them).
    pub(crate) len: usize,
    pub(crate) outstanding: usize,
    /// Where its commit record starts (announced when it begins): its name in exactly-once
    /// progress and in the ids of its unreadable messages, the same on every replay.
    pub(crate) start: Lsn,
    /// Where its commit record ends; `None` while it streams (the slot never moves past it then).
    pub(crate) end_lsn: Option<Lsn>,
    /// While it streams: which of its messages an exactly-once progress says Kafka holds already.
    pub(crate) covered: Covered,
}

#[derive(Debug, Default)]
pub(crate) struct State {
    /// Decoded messages not completed yet, by synthetic id (commit order).
    pub(crate) buffer: Buffer,
    /// Transactions not confirmed yet, in commit order.
    pub(crate) txs: VecDeque<Tx>,
    pub(crate) next_id: i64,
    /// End of the last transaction taken into the buffer: replays after a reconnect skip up to it.
    pub(crate) last_commit_end: Lsn,
    pub(crate) confirmed: Lsn,
    /// What an exactly-once sink's progress says was delivered beyond the stream's position:
    /// skipped as the stream reaches it.
    pub(crate) skip: Option<Skip>,
    /// The progress this session resumed from, whole: every later description repeats it until
    /// the watermark passes it (a database crash may replay the slot from below this session's
    /// start).
    pub(crate) resumed: Option<Skip>,
    /// The relay has begun reading (after any exactly-once resume): a large transaction may
    /// stream from now on.
    pub(crate) reading: bool,
}

impl State {
    /// Confirms every leading transaction with nothing outstanding; returns the new position.
    pub(crate) fn advance(&mut self) -> Option<Lsn> {
        let mut to = None;
        while self
            .txs
            .front()
            .is_some_and(|t| t.outstanding == 0 && t.end_lsn.is_some())
        {
            to = self.txs.pop_front().and_then(|t| t.end_lsn);
        }
        let to = to.filter(|&l| l > self.confirmed)?;
        self.confirmed = to;
        if let Some(mut resumed) = self.resumed.take() {
            self.resumed = resumed.prune(to).then_some(resumed);
        }
        Some(to)
    }

    /// Drops the messages `skip` names from the transactions already taken (a relay reads none
    /// of them before it recovered), and keeps it for those still to come.
    pub(crate) fn resume(&mut self, mut skip: Skip) {
        let mut dropped = Vec::new();
        for tx in &mut self.txs {
            let covered = skip.covered(tx.start, tx.end_lsn).unwrap_or(Covered::Nothing);
            if tx.end_lsn.is_none() {
                tx.covered = covered.clone();
            }
            match covered {
                Covered::Nothing => {}
                Covered::All => dropped.extend(tx.ids()),
                Covered::Some(runs) => dropped.extend(
                    tx.ids()
                        .zip(0u32..)
                        .filter(|&(_, index)| in_runs(&runs, index))
                        .map(|(id, _)| id),
                ),
            }
        }
        for id in dropped {
            self.complete_one(id);
        }
        self.resumed = Some(skip.clone());
        self.skip = skip.prune(self.last_commit_end).then_some(skip);
    }

    /// Describes what is done (see [`positions`](crate::positions)), `delivered` included.
    pub(crate) fn describe(&self, slot: &str, system: Option<String>, delivered: &[i64]) -> Description {
        let mut delivered = delivered.to_vec();
        delivered.sort_unstable();
        let mut builder = Builder::new(slot, system, self.confirmed);
        for tx in &self.txs {
            let end = tx.first_id + tx.len as i64;
            let extra = {
                let from = delivered.partition_point(|&d| d < tx.first_id);
                let to = delivered.partition_point(|&d| d < end);
                delivered.get(from..to).unwrap_or_default()
            };
            let covered = if tx.outstanding == 0 {
                Covered::All
            } else if extra.is_empty() && tx.outstanding == tx.len {
                Covered::Nothing
            } else {
                let waiting: Vec<i64> = self
                    .buffer
                    .ids_in(tx.first_id..end)
                    .filter(|id| extra.binary_search(id).is_err())
                    .collect();
                if waiting.is_empty() {
                    Covered::All
                } else if waiting.len() == tx.len {
                    Covered::Nothing
                } else {
                    Covered::Some(runs(
                        tx.ids()
                            .zip(0u32..)
                            .filter(|(id, _)| waiting.binary_search(id).is_err())
                            .map(|(_, index)| index),
                    ))
                }
            };
            // A streaming transaction may have more messages: never all done.
            let covered = match (covered, tx.end_lsn) {
                (Covered::All, None) => Covered::Some(runs(0..u32::try_from(tx.len).unwrap_or(u32::MAX))),
                (covered, _) => covered,
            };
            builder.push(tx.start, tx.end_lsn, covered);
        }
        builder.finish(self.resumed.as_ref())
    }

    pub(crate) fn complete_one(&mut self, id: i64) {
        if self.buffer.remove(id).is_none() {
            return;
        }
        let at = self.txs.partition_point(|t| t.first_id <= id);
        if let Some(tx) = at.checked_sub(1).and_then(|i| self.txs.get_mut(i)) {
            tx.outstanding = tx.outstanding.saturating_sub(1);
        }
    }
}

impl Tx {
    pub(crate) fn ids(&self) -> std::ops::Range<i64> {
        self.first_id..self.first_id + self.len as i64
    }
}

/// The first id of a session: the time in nanoseconds, so no two sessions' ids meet (a session
/// would need more messages than nanoseconds passed before the next one started). A progress
/// recorded in ids by mistake (a store wrapper that does not forward
/// [`Store::stream_positions`]) then matches nothing after a restart, and messages are sent
/// again instead of being skipped.
pub(crate) fn first_session_id() -> i64 {
    let nanos = Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX / 2);
    nanos.clamp(1, i64::MAX / 2)
}

/// A UUID (version 8, custom) for the message at `index` of the transaction whose commit starts
/// at `start`: the id of a message whose envelope could not be read, stable across replays.
pub(crate) fn position_id(start: Lsn, index: u32) -> Uuid {
    let mut bytes = [0u8; 16];
    for (to, from) in bytes
        .iter_mut()
        .zip(start.0.to_be_bytes().into_iter().chain(index.to_be_bytes()))
    {
        *to = from;
    }
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// PostgreSQL's epoch (2000-01-01) plus microseconds.
pub(crate) fn pg_time(micros: i64) -> DateTime<Utc> {
    let epoch = Utc
        .with_ymd_and_hms(2000, 1, 1, 0, 0, 0)
        .single()
        .unwrap_or_default();
    epoch + chrono::Duration::microseconds(micros)
}
