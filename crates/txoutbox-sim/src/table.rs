//! An outbox table in memory, with the table contract's semantics.
//!
//! Ids are taken at insert and rows become visible at commit, in commit order: a transaction
//! that took its ids early and commits late puts rows below a relay's cursor (a late commit).
//! A read after a cursor returns the rows above it **and** every pending row at or below it that
//! became visible since the previous read, as PostgreSQL's store does by transaction id; a late
//! row its byte budget cuts off is owed to the next read.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use txoutbox_core::{Backlog, Completion, Failure, OutboxMessage, ReadLimit};

/// Where a committed row stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowState {
    /// Waiting to be published (possibly backing off).
    Pending,
    /// Dead-lettered.
    Dead,
    /// Delivered and kept (`Completion::MarkPublished`).
    Published,
}

/// A committed row.
#[derive(Debug, Clone)]
pub struct Row {
    /// The row as the relay reads it (attempts and retry time kept current).
    pub message: OutboxMessage,
    /// Its transaction's place in commit order.
    pub commit_seq: u64,
    /// Where it stands.
    pub state: RowState,
    /// Virtual time of its commit, in milliseconds.
    pub committed_ms: u64,
    /// Who recorded its latest failure (the relay's producer) and when, in milliseconds.
    pub failed_by: Option<(u64, u64)>,
    /// The error of its latest failure.
    pub last_error: Option<String>,
    /// When it was marked published.
    pub published_at: Option<DateTime<Utc>>,
}

/// What one reader's previous read saw.
#[derive(Debug, Default)]
struct Reader {
    /// The commit sequence the previous read saw.
    read_seq: u64,
    /// Late rows a byte budget cut off: owed to the next read after a cursor.
    owed: BTreeSet<i64>,
}

/// The table: committed rows by id, and what reading and completing did to them.
#[derive(Debug, Default)]
pub struct Table {
    next_id: i64,
    commit_seq: u64,
    rows: BTreeMap<i64, Row>,
    /// Ids of rows completed (deleted or marked published).
    completed: BTreeSet<i64>,
    /// Per reader (a relay's store), what its previous read saw: like PostgreSQL's snapshot,
    /// kept by each store, not by the table.
    readers: BTreeMap<u64, Reader>,
    /// Ids taken by transactions that rolled back.
    rolled_back: BTreeSet<i64>,
    /// Every row ever committed, as committed (the ledger the end of a run checks against).
    ledger: BTreeMap<i64, Row>,
}

/// Whether `row` is in a read's scope (`None`: every bucket).
fn in_scope(row: &Row, buckets: Option<&[i32]>) -> bool {
    buckets.is_none_or(|buckets| buckets.contains(&row.message.bucket))
}

impl Table {
    /// Takes `n` ids for a transaction's inserts (not visible until [`commit`](Self::commit)).
    pub fn take_ids(&mut self, n: usize) -> Vec<i64> {
        (0..n)
            .map(|_| {
                self.next_id += 1;
                self.next_id
            })
            .collect()
    }

    /// Commits a transaction's rows: all become visible at once.
    pub fn commit(&mut self, rows: Vec<OutboxMessage>, now_ms: u64) {
        self.commit_seq += 1;
        for message in rows {
            let row = Row {
                message,
                commit_seq: self.commit_seq,
                state: RowState::Pending,
                committed_ms: now_ms,
                failed_by: None,
                last_error: None,
                published_at: None,
            };
            self.ledger.insert(row.message.id, row.clone());
            self.rows.insert(row.message.id, row);
        }
    }

    /// Rolls a transaction back: its ids are a gap for good.
    pub fn roll_back(&mut self, ids: &[i64]) {
        self.rolled_back.extend(ids);
    }

    fn pending(&self) -> impl Iterator<Item = &Row> {
        self.rows.values().filter(|row| row.state == RowState::Pending)
    }

    /// Pending rows in id order within `limit`, read by `reader`; only rows of `buckets` when
    /// given (a coordinated relay's scope).
    pub fn fetch_pending(
        &mut self,
        reader: u64,
        limit: ReadLimit,
        buckets: Option<&[i32]>,
    ) -> Vec<OutboxMessage> {
        let read = limit.take(
            self.pending()
                .filter(|row| in_scope(row, buckets))
                .map(|row| &row.message),
        );
        let seq = self.commit_seq;
        let state = self.readers.entry(reader).or_default();
        state.read_seq = seq;
        state.owed.clear();
        read
    }

    /// Pending rows above `after`, plus the late ones at or below it that `reader` has not seen
    /// (see the module docs).
    pub fn fetch_after(
        &mut self,
        reader: u64,
        after: i64,
        limit: ReadLimit,
        buckets: Option<&[i32]>,
    ) -> Vec<OutboxMessage> {
        let state = self.readers.entry(reader).or_default();
        let read_seq = state.read_seq;
        let owed = std::mem::take(&mut state.owed);
        let late = |row: &Row| {
            row.message.id <= after && (row.commit_seq > read_seq || owed.contains(&row.message.id))
        };
        let candidates: Vec<&Row> = self
            .pending()
            .filter(|row| in_scope(row, buckets))
            .filter(|row| row.message.id > after || late(row))
            .collect();
        let read = limit.take(candidates.iter().map(|row| &row.message));
        let last_read = read.last().map_or(i64::MIN, |m| m.id);
        // The mutant forgets late rows its budget cut off (as PostgreSQL's store did before a
        // capped read kept its old snapshot): they are skipped until a rescan.
        #[cfg(not(txoutbox_sim_mutant = "late_rows_forgotten"))]
        let owed_now = candidates
            .iter()
            .filter(|row| late(row) && row.message.id > last_read)
            .map(|row| row.message.id)
            .collect();
        #[cfg(txoutbox_sim_mutant = "late_rows_forgotten")]
        let owed_now = BTreeSet::new();
        let seq = self.commit_seq;
        let state = self.readers.entry(reader).or_default();
        state.owed = owed_now;
        state.read_seq = seq;
        read
    }

    /// Completes delivered rows at `at`; ids no longer pending are passed over (a retried
    /// write).
    pub fn complete(&mut self, ids: &[i64], completion: Completion, at: DateTime<Utc>) {
        for id in ids {
            let Some(row) = self.rows.get_mut(id) else {
                continue;
            };
            if row.state != RowState::Pending {
                continue;
            }
            self.completed.insert(*id);
            match completion {
                Completion::MarkPublished => {
                    row.state = RowState::Published;
                    row.published_at = Some(at);
                    row.message.next_attempt_at = None;
                }
                _ => {
                    self.rows.remove(id);
                }
            }
        }
    }

    /// Records failed attempts; a failure without a retry time kills the row.
    pub fn record_failures(&mut self, failures: &[Failure], producer: u64, now_ms: u64) {
        for failure in failures {
            let Some(row) = self.rows.get_mut(&failure.id) else {
                continue;
            };
            if row.state != RowState::Pending {
                continue;
            }
            row.message.attempts = failure.attempts;
            row.last_error = Some(failure.error.clone());
            row.failed_by = Some((producer, now_ms));
            row.message.next_attempt_at = failure.next_attempt_at;
            if failure.next_attempt_at.is_none() {
                row.state = RowState::Dead;
            }
        }
    }

    /// Pending and dead rows, counted.
    pub fn backlog(&self) -> Backlog {
        let oldest_pending: Option<DateTime<Utc>> = self.pending().map(|row| row.message.created_at).min();
        Backlog {
            pending: self.pending().count() as u64,
            oldest_pending,
            dead: self
                .rows
                .values()
                .filter(|row| row.state == RowState::Dead)
                .count() as u64,
        }
    }

    /// The distinct `(topic, key)` of dead rows with a key.
    pub fn dead_keys(&self) -> Vec<(String, Vec<u8>)> {
        let keys: BTreeSet<(String, Vec<u8>)> = self
            .rows
            .values()
            .filter(|row| row.state == RowState::Dead)
            .filter_map(|row| Some((row.message.topic.to_string(), row.message.key.as_ref()?.to_vec())))
            .collect();
        keys.into_iter().collect()
    }

    /// The earlier row of `message`'s key (same topic and key bytes) that must hold it back now:
    /// one backing off after a recorded failure, or a dead one when dead rows park their key.
    pub fn holds_back(&self, message: &OutboxMessage, now: DateTime<Utc>, parks_keys: bool) -> Option<i64> {
        let key = message.key.as_ref()?;
        self.rows
            .range(..message.id)
            .map(|(_, row)| row)
            .filter(|row| row.message.key.as_ref() == Some(key) && row.message.topic == message.topic)
            .find(|row| match row.state {
                RowState::Pending => !row.message.is_due(now),
                RowState::Dead => parks_keys,
                RowState::Published => false,
            })
            .map(|row| row.message.id)
    }

    /// Every row ever committed, as committed, in id order.
    pub fn ledger(&self) -> impl Iterator<Item = &Row> {
        self.ledger.values()
    }

    /// Whether the id was taken by a transaction that rolled back.
    pub fn was_rolled_back(&self, id: i64) -> bool {
        self.rolled_back.contains(&id)
    }

    /// A committed row that is still in the table.
    pub fn row(&self, id: i64) -> Option<&Row> {
        self.rows.get(&id)
    }

    /// Sets the creation time of a row still in the table (a test giving rows known times).
    pub fn backdate(&mut self, id: i64, created_at: DateTime<Utc>) {
        if let Some(row) = self.rows.get_mut(&id) {
            row.message.created_at = created_at;
        }
    }

    /// Every committed row still in the table.
    pub fn rows(&self) -> impl Iterator<Item = &Row> {
        self.rows.values()
    }

    /// Whether the row was completed.
    pub fn is_completed(&self, id: i64) -> bool {
        self.completed.contains(&id)
    }

    /// Whether no row is pending, but those of parked keys when `parks_keys` (a key is parked
    /// while it has a dead row).
    pub fn is_drained(&self, parks_keys: bool) -> bool {
        let parked: BTreeSet<(&str, &[u8])> = if parks_keys {
            self.rows
                .values()
                .filter(|row| row.state == RowState::Dead)
                .filter_map(|row| Some((&*row.message.topic, row.message.key.as_deref()?)))
                .collect()
        } else {
            BTreeSet::new()
        };
        self.pending().all(|row| {
            row.message
                .key
                .as_deref()
                .is_some_and(|key| parked.contains(&(&*row.message.topic, key)))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn row(id: i64) -> OutboxMessage {
        OutboxMessage {
            id,
            message_id: format!("m{id}").into(),
            topic: Arc::from("t"),
            key: None,
            payload: Some(bytes::Bytes::from_static(b"123456789")),
            headers: Arc::default(),
            created_at: DateTime::<Utc>::UNIX_EPOCH,
            attempts: 0,
            next_attempt_at: None,
            bucket: 0,
            malformed: None,
        }
    }

    fn ids(read: &[OutboxMessage]) -> Vec<i64> {
        read.iter().map(|m| m.id).collect()
    }

    #[test]
    fn a_late_commit_below_the_cursor_is_read_after_it_once() {
        let mut table = Table::default();
        let early = table.take_ids(1); // taken first, committed last
        let later = table.take_ids(2);
        table.commit(later.iter().map(|id| row(*id)).collect(), 0);
        assert_eq!(ids(&table.fetch_pending(0, ReadLimit::rows(10), None)), [2, 3]);
        table.commit(early.iter().map(|id| row(*id)).collect(), 0);
        assert_eq!(
            ids(&table.fetch_after(0, 3, ReadLimit::rows(10), None)),
            [1],
            "late, below the cursor"
        );
        assert!(
            table.fetch_after(0, 3, ReadLimit::rows(10), None).is_empty(),
            "seen once"
        );
    }

    #[test]
    fn a_late_row_cut_by_the_byte_budget_is_owed_to_the_next_read() {
        let mut table = Table::default();
        let late = table.take_ids(2);
        let first = table.take_ids(1);
        table.commit(first.iter().map(|id| row(*id)).collect(), 0);
        assert_eq!(ids(&table.fetch_pending(0, ReadLimit::rows(10), None)), [3]);
        table.commit(late.iter().map(|id| row(*id)).collect(), 0);
        // Each row is 10 bytes: a budget of 10 takes one.
        let budget = ReadLimit::rows(10).with_bytes(10);
        assert_eq!(ids(&table.fetch_after(0, 3, budget, None)), [1]);
        assert_eq!(ids(&table.fetch_after(0, 3, budget, None)), [2], "owed");
        assert!(table.fetch_after(0, 3, budget, None).is_empty());
    }
}
