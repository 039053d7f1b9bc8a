//! What the relay needs from a database: the only way the engine reaches one (it holds no SQL).

use std::future::Future;

use chrono::{DateTime, Utc};

use crate::error::Result;
use crate::message::OutboxMessage;
use crate::wakeup::Wakeup;

/// What happens to a row once Kafka acknowledged it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Completion {
    /// Delete the row at once: the cheapest path, and the default.
    #[default]
    Delete,
    /// Keep the row, marked `published` with its time, until retention removes it.
    MarkPublished,
}

/// A failed attempt to record for one row.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// The row id.
    pub id: i64,
    /// The row's attempt count after this failure.
    pub attempts: i32,
    /// The error, kept in the row's `last_error`.
    pub error: String,
    /// When to try again; `None` moves the row to the `dead` state.
    pub next_attempt_at: Option<DateTime<Utc>>,
}

/// How much one read of pending rows may return.
///
/// Rows come back in id order while their sizes (topic, key, payload and headers, in bytes) add
/// up to less than [`bytes`](Self::bytes) — always at least one row, so a row larger than the
/// budget is still read, alone. A row larger than [`message_bytes`](Self::message_bytes) comes
/// back without its payload and headers (and without a key or topic longer than a valid one
/// could be), marked as one that can never be sent
/// ([`OutboxMessage::too_large`]): reading it whole would only hold it in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadLimit {
    /// At most this many rows.
    pub rows: usize,
    /// Rows while their sizes add up to less than this many bytes.
    pub bytes: usize,
    /// Larger rows come back without their contents.
    pub message_bytes: usize,
}

impl ReadLimit {
    /// At most `rows` rows, of any size.
    pub const fn rows(rows: usize) -> Self {
        Self {
            rows,
            bytes: usize::MAX,
            message_bytes: usize::MAX,
        }
    }

    /// Also at most `bytes` bytes (see [`ReadLimit`]).
    #[must_use]
    pub const fn with_bytes(mut self, bytes: usize) -> Self {
        self.bytes = bytes;
        self
    }

    /// Also rows of at most `message_bytes` bytes with their contents.
    #[must_use]
    pub const fn with_message_bytes(mut self, message_bytes: usize) -> Self {
        self.message_bytes = message_bytes;
        self
    }

    /// `bytes` and `message_bytes` as SQL parameters (`BIGINT`); `bytes` at least 1, so that a
    /// statement's "while the rows before it add up to less" keeps at least one row.
    pub fn sql_bytes(&self) -> (i64, i64) {
        (
            i64::try_from(self.bytes).unwrap_or(i64::MAX).max(1),
            i64::try_from(self.message_bytes).unwrap_or(i64::MAX),
        )
    }

    /// What a read of messages held in memory returns, in their order: copies of the first ones
    /// within the limit (a message is taken while the ones before it add up to less than
    /// `bytes`, as the SQL stores' window over row sizes does), and a message larger than `message_bytes` as
    /// [`OutboxMessage::too_large`] (for stores that hold messages, e.g. decoded from a log).
    pub fn take<'a>(&self, messages: impl Iterator<Item = &'a OutboxMessage>) -> Vec<OutboxMessage> {
        let mut taken = Vec::new();
        let mut bytes = 0usize;
        for message in messages.take(self.rows) {
            if !taken.is_empty() && bytes >= self.bytes {
                break;
            }
            let size = message.size();
            if size > self.message_bytes && message.malformed.is_none() {
                let mut large = OutboxMessage::too_large(
                    message.id,
                    size as u64,
                    self.message_bytes,
                    Some(&message.topic),
                    message.key.as_deref(),
                );
                large.message_id = message.message_id.clone();
                large.created_at = message.created_at;
                large.attempts = message.attempts;
                large.next_attempt_at = message.next_attempt_at;
                // It costs what it brings: its topic and key.
                bytes = bytes.saturating_add(large.size());
                taken.push(large);
                continue;
            }
            bytes = bytes.saturating_add(size);
            taken.push(message.clone());
        }
        taken
    }

    /// The row limit as an SQL parameter.
    pub fn sql_rows(&self) -> i64 {
        i64::try_from(self.rows).unwrap_or(i64::MAX)
    }
}

/// The rows of a read in id order. The SQL stores' budgeted reads do not sort their results again
/// (the window over row sizes already orders them, and a second sort costs the database time on
/// every read): they come in id order in practice, and this check keeps that from being assumed.
pub fn in_id_order(mut messages: Vec<OutboxMessage>) -> Vec<OutboxMessage> {
    if !messages.is_sorted_by_key(|m| m.id) {
        messages.sort_by_key(|m| m.id);
    }
    messages
}

/// The backlog at a glance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Backlog {
    /// Rows waiting to be published.
    pub pending: u64,
    /// Creation time of the oldest pending row.
    pub oldest_pending: Option<DateTime<Utc>>,
    /// Rows in the dead-letter state.
    pub dead: u64,
}

/// The relay's view of an outbox table.
///
/// Implemented by each store crate (PostgreSQL, PostgreSQL WAL mode, SQLite, MySQL/MariaDB), which
/// owns its SQL and migrations. Every method is one short statement (but `lock_for_relay`, which
/// may wait on purpose) so the relay can overlap database work with sends.
pub trait Store: Send + Sync + 'static {
    /// Checks that the outbox table exists at the schema version this store expects. The relay
    /// calls it once at start and stops with its error, which says what to do.
    fn check(&self) -> impl Future<Output = Result<()>> + Send;

    /// Called once when a relay starts, after [`check`](Self::check): a store that allows only
    /// one relay per table takes its lock here, and either fails, saying so, or waits as a
    /// standby while another relay holds it (the relay's shutdown ends the wait). The default
    /// allows any number.
    fn lock_for_relay(&self) -> impl Future<Output = Result<()>> + Send {
        async { Ok(()) }
    }

    /// Called once when a relay stops whose [`lock_for_relay`](Self::lock_for_relay) succeeded,
    /// after everything it sent is settled: gives that lock up, so a standby relay takes over at
    /// once (even while clones of this store live on). The default does nothing.
    fn unlock_for_relay(&self) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// Pending rows in id order, the oldest first, within `limit` (rows and bytes), including
    /// rows still backing off (the relay needs them to hold back later rows of the same key).
    fn fetch_pending(&self, limit: ReadLimit) -> impl Future<Output = Result<Vec<OutboxMessage>>> + Send;

    /// Pending rows after a cursor: rows with an id above `after` within `limit`, **plus** every
    /// pending row with an id at or below `after` that became visible since this store's previous
    /// fetch (a transaction that took its id early and committed late), all in id order. The
    /// byte budget covers both; a late row it cuts off must come back on a later call.
    ///
    /// The relay calls it to read on from where it left off without reading its in-flight rows
    /// again. The default reads from the start, which is always correct, only slower; stores
    /// whose ids always commit in order (SQLite) or that can tell late commits apart
    /// (PostgreSQL, by transaction id) do better.
    fn fetch_after(
        &self,
        after: i64,
        limit: ReadLimit,
    ) -> impl Future<Output = Result<Vec<OutboxMessage>>> + Send {
        let _ = after;
        self.fetch_pending(limit)
    }

    /// Marks rows delivered (delete them, or mark them published).
    fn complete(&self, ids: &[i64], completion: Completion) -> impl Future<Output = Result<()>> + Send;

    /// Records failed attempts (and dead-letters rows whose `next_attempt_at` is `None`).
    fn record_failures(&self, failures: &[Failure]) -> impl Future<Output = Result<()>> + Send;

    /// Counts pending and dead rows.
    fn backlog(&self) -> impl Future<Output = Result<Backlog>> + Send;

    /// The distinct `(topic, key)` of dead rows that have a key: the keys a relay with
    /// [`OnDeadLetter::ParkKey`](crate::OnDeadLetter::ParkKey) holds back until their dead rows
    /// are replayed or purged. A store that cannot list them keeps the default, and a relay in
    /// that mode refuses to start with its error.
    fn dead_keys(&self) -> impl Future<Output = Result<Vec<(String, Vec<u8>)>>> + Send {
        async {
            Err(crate::Error::Config(
                "this outbox store cannot list dead-lettered keys, which parking keys needs: \
                 use on_dead_letter = release_key with it"
                    .into(),
            ))
        }
    }

    /// Starts pushing wake-ups: the returned task calls `wakeup.notify()` whenever new rows may
    /// have committed, reconnecting by itself, until it is aborted. `None` (the default) when the
    /// database has no push notifications; the relay then relies on in-process wake-ups and its
    /// poll interval.
    fn watch(&self, wakeup: Wakeup) -> Option<tokio::task::JoinHandle<()>> {
        let _ = wakeup;
        None
    }

    /// The relay says whether it is awake (reading again at once, so it needs no push wake-up)
    /// or about to sleep until a wake-up or its poll interval. A store whose push wake-ups cost
    /// writers something (PostgreSQL's notify trigger serializes concurrent commits) can stop
    /// sending them while the relay is awake. Called only on transitions; after declaring itself
    /// asleep the relay reads once more before it waits, so a row committed in between is not
    /// missed. A failure is only logged: the poll interval still bounds the latency. The
    /// default does nothing.
    fn relay_awake(&self, awake: bool) -> impl Future<Output = Result<()>> + Send {
        let _ = awake;
        async { Ok(()) }
    }

    /// Whether this table remembers that a relay delivered under the progress key `key` (a
    /// transactional sink's, see [`Sink::progress_record`](crate::Sink::progress_record)):
    /// `Some(true)` once [`keep_progress`](Self::keep_progress) recorded it. `None` (the
    /// default): the store keeps no such record, and the relay cannot tell lost progress from a
    /// first run.
    fn progress_kept(&self, key: &str) -> impl Future<Output = Result<Option<bool>>> + Send {
        let _ = key;
        async { Ok(None) }
    }

    /// Records that a relay delivered under the progress key `key`: its transport holds progress
    /// under it from now on. Idempotent. The default does nothing.
    fn keep_progress(&self, key: &str) -> impl Future<Output = Result<()>> + Send {
        let _ = key;
        async { Ok(()) }
    }

    /// Positions that outlive this session, when the row ids do not (a log stream): the relay
    /// hands them to its sink at start, so a transactional sink records its progress in them.
    /// `None` (the default): row ids are stable, and progress is recorded in ids. `Some` also
    /// tells the relay that ids name no table row (a dead-letter topic copy then carries no row
    /// id). **A store that wraps another must forward this**, or an exactly-once sink records ids
    /// that a restart renumbers.
    fn stream_positions(&self) -> Option<std::sync::Arc<dyn crate::StreamPositions>> {
        None
    }

    /// The labels of the metrics of a relay (and a health check) over this store: its table,
    /// and in WAL mode its slot. The default: `table` = `outbox_messages`. **A store that wraps
    /// another must forward this**, or two relays in one process share their series.
    fn metric_labels(&self) -> crate::MetricLabels {
        crate::MetricLabels::default()
    }
}

impl<S: Store> Store for std::sync::Arc<S> {
    fn check(&self) -> impl Future<Output = Result<()>> + Send {
        (**self).check()
    }
    fn lock_for_relay(&self) -> impl Future<Output = Result<()>> + Send {
        (**self).lock_for_relay()
    }
    fn unlock_for_relay(&self) -> impl Future<Output = ()> + Send {
        (**self).unlock_for_relay()
    }
    fn fetch_pending(&self, limit: ReadLimit) -> impl Future<Output = Result<Vec<OutboxMessage>>> + Send {
        (**self).fetch_pending(limit)
    }
    fn fetch_after(
        &self,
        after: i64,
        limit: ReadLimit,
    ) -> impl Future<Output = Result<Vec<OutboxMessage>>> + Send {
        (**self).fetch_after(after, limit)
    }
    fn complete(&self, ids: &[i64], completion: Completion) -> impl Future<Output = Result<()>> + Send {
        (**self).complete(ids, completion)
    }
    fn record_failures(&self, failures: &[Failure]) -> impl Future<Output = Result<()>> + Send {
        (**self).record_failures(failures)
    }
    fn backlog(&self) -> impl Future<Output = Result<Backlog>> + Send {
        (**self).backlog()
    }
    fn dead_keys(&self) -> impl Future<Output = Result<Vec<(String, Vec<u8>)>>> + Send {
        (**self).dead_keys()
    }
    fn watch(&self, wakeup: Wakeup) -> Option<tokio::task::JoinHandle<()>> {
        (**self).watch(wakeup)
    }
    fn relay_awake(&self, awake: bool) -> impl Future<Output = Result<()>> + Send {
        (**self).relay_awake(awake)
    }
    fn stream_positions(&self) -> Option<std::sync::Arc<dyn crate::StreamPositions>> {
        (**self).stream_positions()
    }
    fn progress_kept(&self, key: &str) -> impl Future<Output = Result<Option<bool>>> + Send {
        (**self).progress_kept(key)
    }
    fn keep_progress(&self, key: &str) -> impl Future<Output = Result<()>> + Send {
        (**self).keep_progress(key)
    }
    fn metric_labels(&self) -> crate::MetricLabels {
        (**self).metric_labels()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(id: i64, payload: usize) -> OutboxMessage {
        let mut m = OutboxMessage::unreadable(id, "");
        m.malformed = None;
        m.topic = "t".into();
        m.payload = Some(vec![0; payload].into());
        m
    }

    #[test]
    fn rows_come_back_in_id_order() {
        let ids = |messages: &[OutboxMessage]| messages.iter().map(|m| m.id).collect::<Vec<_>>();
        let made = |ids: &[i64]| ids.iter().map(|id| message(*id, 1)).collect::<Vec<_>>();
        assert_eq!(ids(&in_id_order(made(&[3, 1, 2]))), [1, 2, 3]);
        assert_eq!(ids(&in_id_order(made(&[1, 2, 3]))), [1, 2, 3]);
        assert!(in_id_order(Vec::new()).is_empty());
    }

    #[test]
    fn a_read_in_memory_keeps_to_rows_and_bytes() {
        let held: Vec<OutboxMessage> = (1..=5).map(|id| message(id, 10)).collect();
        let ids = |read: Vec<OutboxMessage>| read.iter().map(|m| m.id).collect::<Vec<_>>();
        assert_eq!(ids(ReadLimit::rows(3).take(held.iter())), [1, 2, 3]);
        // 11 bytes each (topic and payload).
        assert_eq!(
            ids(ReadLimit::rows(10).with_bytes(33).take(held.iter())),
            [1, 2, 3]
        );
        assert_eq!(
            ids(ReadLimit::rows(10).with_bytes(23).take(held.iter())),
            [1, 2, 3],
            "the row that crosses the budget is the last one taken"
        );
        assert_eq!(
            ids(ReadLimit::rows(10).with_bytes(5).take(held.iter())),
            [1],
            "one, however large"
        );
        let read = ReadLimit::rows(10).with_message_bytes(5).take(held.iter());
        assert_eq!(read.len(), 5);
        assert!(read.iter().all(|m| m.payload.is_none() && m.malformed.is_some()));
    }
}
