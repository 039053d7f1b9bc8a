//! The relay side: read pending rows, complete them, record failures.
//!
//! Reading on from a cursor: MySQL takes an `AUTO_INCREMENT` id at insert and shows the row at
//! commit, so a row can appear below the cursor after the relay read past its id, and MySQL has
//! no transaction ids to tell such rows apart (PostgreSQL's `xid8`). The store remembers the ids
//! it returned that may still be pending; `fetch_after` lists the pending ids at or below the
//! cursor that it never returned (ids only, through the `(status, id)` index, over the ranges
//! around the returned ids), and each is a late commit, read in full with the rows above the
//! cursor. The rows above the cursor are read first: a row that committed before any of them is
//! then among the listed ids.

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use sqlx::mysql::MySqlRow;
use sqlx::{AssertSqlSafe, MySqlPool, Row};
use txoutbox_core::coordination::{Ownership, Scope};
use txoutbox_core::{
    Backlog, Completion, Failure, Interner, OutboxMessage, ReadLimit, Result, RowFields, Store, UnfitColumn,
    row_position,
};

use crate::error::db_error;
use crate::migrate;
use crate::relay_lock::{Held, RelayLock};
use crate::sql::{
    ALL_BUCKETS, Ids, MAX_IDS, Query, Statements, bind_padded, bind_ranges, bind_runs, padded_len,
};
use txoutbox_core::id_ranges;

/// The lock name a coordinated node's reads ask `IS_USED_LOCK` about (they hold no relay lock and
/// do not look at the answer): MySQL refuses a NULL or empty lock name.
const NO_RELAY_LOCK: &str = "txoutbox: coordinated, no relay lock";

/// Where a read's row size sits (after the table contract's columns and `holder`).
const SIZE: usize = row_position::COUNT + 1;
/// Where a read's flag that it had a row after this one sits.
const MORE: usize = row_position::COUNT + 2;
/// Where a read's count of the bytes its budget took, up to and including the row, sits.
const UPTO: usize = row_position::COUNT + 3;

/// What one budgeted read returned.
#[derive(Default)]
struct BudgetedRead {
    /// The rows, in id order.
    rows: Vec<OutboxMessage>,
    /// For each row, the bytes the rows up to and including it took from the budget, as the
    /// statement counted them (a row's headers as the stored JSON text; only the key and topic
    /// of a row larger than the largest message), which is not [`OutboxMessage::size`].
    spent_upto: Vec<i64>,
    /// Whether the byte budget left rows out.
    cut: bool,
}

impl BudgetedRead {
    /// The bytes the rows took from the budget.
    fn spent(&self) -> i64 {
        self.spent_upto.last().copied().unwrap_or(0)
    }

    /// The rows that also fit a budget of `budget` bytes of which another read took `spent`
    /// first: each row while what came before it adds up to less than `budget`.
    fn rows_after_spending(mut self, spent: i64, budget: i64) -> Vec<OutboxMessage> {
        if spent > 0 {
            let before = std::iter::once(0).chain(self.spent_upto.iter().copied());
            let fit = before
                .take(self.rows.len())
                .take_while(|before| spent.saturating_add(*before) < budget)
                .count();
            self.rows.truncate(fit);
        }
        self.rows
    }
}

/// The most pending ids at or below the cursor one fetch lists; beyond it the fetch reads from
/// the start instead (always correct, slower).
const BELOW_CURSOR_CAP: i64 = 100_000;

/// Every this many checks for late commits, one lists every pending id behind the cursor, the
/// returned ones too, and forgets returned ids that are no longer pending.
const FULL_LISTING_EVERY: u32 = 32;

/// The relay's [`Store`] over a MySQL / MariaDB outbox table. Create it with
/// [`MySqlOutbox::store`](crate::MySqlOutbox::store).
///
/// Only one relay reads a table at a time: the stores of one `MySqlOutbox` share the table's
/// relay lock (a server named lock); a store of another outbox, in this process or another,
/// returns no rows while that lock is held elsewhere, and takes over when it frees. So run one
/// relay per `MySqlOutbox` (two relays over stores of one outbox would both read).
///
/// Several relay nodes share a table through leases instead (`Relay::coordinated`, exclusive or
/// work-balance): the store implements [`Leases`](txoutbox_core::coordination::Leases), and a
/// coordinated relay's store reads only what its leases cover and fences its writes with them.
///
/// `watch` is not implemented (MySQL has no LISTEN/NOTIFY): wake the relay with
/// [`MySqlOutbox::with_wakeup`](crate::MySqlOutbox::with_wakeup), or rely on its poll interval.
#[derive(Debug, Clone)]
pub struct MySqlStore {
    pool: MySqlPool,
    sql: Arc<Statements>,
    lock: Arc<RelayLock>,
    /// Ids this store returned that may still be pending: a pending id at or below the cursor
    /// that is not in here committed late. Ids leave it when completed or dead-lettered here, at
    /// a read from the start, and at every check for late commits that lists every pending id
    /// (each [`FULL_LISTING_EVERY`]th, and those with more gaps than one statement names): ids
    /// another store or a person changed.
    returned: Arc<Mutex<BTreeSet<i64>>>,
    /// Checks for late commits so far (see [`FULL_LISTING_EVERY`]).
    checks: Arc<AtomicU32>,
    /// Set for a coordinated relay: its reads are scoped and its writes fenced.
    pub(crate) ownership: Option<Ownership>,
}

/// What one read may see: the relay lock it must hold while reading (a single-mode relay), and
/// the buckets (a mask, bit `b` for bucket `b`).
struct Access {
    held: Option<Held>,
    mask: u64,
}

/// The mask of `buckets` (buckets outside 0..64 are in none).
fn mask_of(buckets: &[i32]) -> u64 {
    buckets
        .iter()
        .filter_map(|b| u32::try_from(*b).ok().and_then(|b| 1u64.checked_shl(b)))
        .fold(0, |mask, bit| mask | bit)
}

impl MySqlStore {
    pub(crate) fn new(pool: MySqlPool, sql: Arc<Statements>, lock: Arc<RelayLock>) -> Self {
        Self {
            pool,
            sql,
            lock,
            returned: Arc::new(Mutex::new(BTreeSet::new())),
            checks: Arc::new(AtomicU32::new(0)),
            ownership: None,
        }
    }

    /// What a read may see now; `None` when it may read nothing (another relay holds the relay
    /// lock, or a coordinated node holds no lease).
    async fn access(&self) -> Result<Option<Access>> {
        let mask = match self.ownership.as_ref().map(Ownership::scope) {
            None => {
                return Ok(self.lock.acquire(&self.pool).await?.map(|held| Access {
                    held: Some(held),
                    mask: ALL_BUCKETS,
                }));
            }
            Some(Scope::Nothing) => return Ok(None),
            Some(Scope::All) => ALL_BUCKETS,
            Some(Scope::Buckets(buckets)) => mask_of(&buckets),
        };
        Ok(Some(Access { held: None, mask }))
    }

    /// The pool the store uses.
    pub fn pool(&self) -> &MySqlPool {
        &self.pool
    }

    pub(crate) fn sql(&self) -> &Statements {
        &self.sql
    }

    /// Completes `ids` on `conn` (in its transaction, if one is open), fenced by `fence` (node,
    /// epoch) when given; the number of rows changed.
    pub(crate) async fn complete_on(
        &self,
        conn: &mut sqlx::MySqlConnection,
        ids: &[i64],
        completion: Completion,
        fence: Option<(&str, i64)>,
    ) -> Result<u64> {
        let statement = |ids: Ids| match completion {
            Completion::MarkPublished => self.sql.mark_published(ids, fence.is_some()),
            _ => self.sql.delete(ids, fence.is_some()),
        };
        fn fenced<'q>(query: Query<'q>, fence: Option<(&'q str, i64)>) -> Query<'q> {
            match fence {
                Some((node, epoch)) => query.bind(node).bind(epoch).bind(node).bind(epoch),
                None => query,
            }
        }
        if ids.is_empty() {
            return Ok(0);
        }
        // A batch read in id order is mostly runs of consecutive ids: name them as ranges.
        if let Some(ranges) = id_ranges::runs(ids) {
            let sql = statement(Ids::Runs(padded_len(ranges.len())));
            let query = fenced(bind_runs(sqlx::query(AssertSqlSafe(sql)), &ranges), fence);
            return Ok(query.execute(&mut *conn).await.map_err(db_error)?.rows_affected());
        }
        let mut changed = 0;
        for chunk in ids.chunks(MAX_IDS) {
            let sql = statement(Ids::List(padded_len(chunk.len())));
            let query = fenced(bind_padded(sqlx::query(AssertSqlSafe(sql)), chunk), fence);
            changed += query.execute(&mut *conn).await.map_err(db_error)?.rows_affected();
        }
        Ok(changed)
    }

    /// The pending ids at or below `after` (within the buckets of `mask`), up to
    /// [`BELOW_CURSOR_CAP`]: those this store has not returned, listed over the ranges around
    /// the returned ids, which keeps the rows in flight (up to `max_in_flight`, pending until
    /// completed) out of the read. When the returned ids leave more than
    /// [`id_ranges::MAX_RANGES`] gaps, and every [`FULL_LISTING_EVERY`]th call, every pending id
    /// there instead, the returned ones too, and `returned` keeps only those still pending.
    async fn pending_ids_upto(&self, after: i64, mask: u64) -> Result<Vec<i64>> {
        let in_buckets = mask != ALL_BUCKETS;
        let full = self
            .checks
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(FULL_LISTING_EVERY);
        let outside = if full {
            None
        } else {
            id_ranges::outside(&self.returned(), after)
        };
        if let Some(ranges) = outside {
            if ranges.is_empty() {
                return Ok(Vec::new());
            }
            let sql = self.sql.pending_ids_in(padded_len(ranges.len()), in_buckets);
            let mut query = bind_ranges(sqlx::query(AssertSqlSafe(sql)), &ranges);
            if in_buckets {
                query = query.bind(mask);
            }
            let rows = query
                .bind(BELOW_CURSOR_CAP)
                .fetch_all(&self.pool)
                .await
                .map_err(db_error)?;
            return rows.iter().map(|row| row.try_get(0).map_err(db_error)).collect();
        }
        let below: Vec<i64> = if in_buckets {
            sqlx::query_scalar(AssertSqlSafe(self.sql.pending_ids_upto_in_buckets.as_str()))
                .bind(after)
                .bind(mask)
                .bind(BELOW_CURSOR_CAP)
        } else {
            sqlx::query_scalar(AssertSqlSafe(self.sql.pending_ids_upto.as_str()))
                .bind(after)
                .bind(BELOW_CURSOR_CAP)
        }
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        let mut returned = self.returned();
        let pending: HashSet<i64> = below.iter().copied().collect();
        // Returned ids at or below the cursor that are no longer pending are done.
        returned.retain(|id| *id > after || pending.contains(id));
        Ok(below)
    }

    fn returned(&self) -> std::sync::MutexGuard<'_, BTreeSet<i64>> {
        self.returned.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Decodes the rows of a budgeted read; `None` when they were read while another connection
    /// held the relay lock.
    async fn decode_rows(
        &self,
        rows: &[MySqlRow],
        access: &Access,
        message_bytes: usize,
    ) -> Result<Option<BudgetedRead>> {
        let mut messages = Vec::with_capacity(rows.len());
        let mut topics = Interner::new();
        // The kept rows are the first ones in id order, so the byte budget cut the read exactly
        // when every one of them had a row after it.
        let mut every_row_has_more = true;
        let mut spent_upto = Vec::with_capacity(rows.len());
        for row in rows {
            let holder: Option<i64> = row.try_get(row_position::COUNT).map_err(db_error)?;
            if let Some(held) = &access.held
                && holder != Some(held.holder)
            {
                self.lock.lost().await;
                return Ok(None);
            }
            let message = decode(row, message_bytes, &mut topics).map_err(db_error)?;
            every_row_has_more &= row.try_get::<i64, _>(MORE).map_err(db_error)? != 0;
            spent_upto.push(row.try_get::<i64, _>(UPTO).map_err(db_error)?);
            messages.push(message);
        }
        // A running sum of sizes never falls: in id order too.
        spent_upto.sort_unstable();
        Ok(Some(BudgetedRead {
            cut: every_row_has_more && !messages.is_empty(),
            rows: txoutbox_core::in_id_order(messages),
            spent_upto,
        }))
    }

    async fn fetch_from(
        &self,
        access: &Access,
        after: i64,
        limit: ReadLimit,
    ) -> Result<Option<BudgetedRead>> {
        let (bytes, message_bytes) = limit.sql_bytes();
        let rows = sqlx::query(AssertSqlSafe(self.sql.fetch_after.as_str()))
            .bind(
                access
                    .held
                    .as_ref()
                    .map_or(NO_RELAY_LOCK, |held| held.name.as_str()),
            )
            .bind(message_bytes)
            .bind(message_bytes)
            .bind(after)
            .bind(access.mask)
            .bind(limit.sql_rows())
            .bind(bytes)
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?;
        self.decode_rows(&rows, access, limit.message_bytes).await
    }

    /// The pending rows among `ids`, within the byte budget of `limit` (one budget over the
    /// statements a long list needs); `None` when another connection held the relay lock.
    async fn fetch_ids(
        &self,
        access: &Access,
        ids: &[i64],
        limit: ReadLimit,
    ) -> Result<Option<BudgetedRead>> {
        let (budget, message_bytes) = limit.sql_bytes();
        let mut read = BudgetedRead {
            rows: Vec::with_capacity(ids.len()),
            spent_upto: Vec::with_capacity(ids.len()),
            cut: false,
        };
        for chunk in ids.chunks(MAX_IDS) {
            let bytes = budget.saturating_sub(read.spent());
            if bytes <= 0 {
                read.cut = true;
                return Ok(Some(read));
            }
            let sql = self.sql.fetch_ids(padded_len(chunk.len()));
            let query = sqlx::query(AssertSqlSafe(sql))
                .bind(
                    access
                        .held
                        .as_ref()
                        .map_or(NO_RELAY_LOCK, |held| held.name.as_str()),
                )
                .bind(message_bytes)
                .bind(message_bytes)
                .bind(access.mask);
            let rows = bind_padded(query, chunk)
                .bind(bytes)
                .fetch_all(&self.pool)
                .await
                .map_err(db_error)?;
            let Some(mut part) = self.decode_rows(&rows, access, limit.message_bytes).await? else {
                return Ok(None);
            };
            let spent = read.spent();
            read.spent_upto
                .extend(part.spent_upto.iter().map(|upto| upto.saturating_add(spent)));
            read.rows.append(&mut part.rows);
            // Late rows the budget left are found again by the next read.
            if part.cut {
                read.cut = true;
                return Ok(Some(read));
            }
        }
        Ok(Some(read))
    }

    async fn fetch_start(&self, access: &Access, limit: ReadLimit) -> Result<Vec<OutboxMessage>> {
        let Some(BudgetedRead { rows, cut, .. }) = self.fetch_from(access, 0, limit).await? else {
            return Ok(Vec::new());
        };
        let mut returned = self.returned();
        // Every pending row up to the last one read is in `rows`: forget the others.
        match rows.last() {
            Some(last) if cut || rows.len() >= limit.rows => {
                let above = returned.split_off(&(last.id + 1));
                *returned = above;
            }
            _ => returned.clear(),
        }
        returned.extend(rows.iter().map(|m| m.id));
        Ok(rows)
    }
}

/// Decodes a row; a row that does not fit the table contract comes back as
/// [`OutboxMessage::unreadable`], naming the column, so one bad row from a foreign writer never
/// stops the relay.
fn decode(row: &MySqlRow, message_bytes: usize, topics: &mut Interner) -> Result<OutboxMessage, sqlx::Error> {
    let id: i64 = row.try_get(row_position::ID)?;
    let size: i64 = row.try_get(SIZE)?;
    if usize::try_from(size).is_ok_and(|size| size > message_bytes) {
        let topic = row.try_get::<&str, _>(row_position::TOPIC).ok();
        let key = row.try_get::<Option<&[u8]>, _>(row_position::KEY).ok().flatten();
        return Ok(OutboxMessage::too_large(
            id,
            size.unsigned_abs(),
            message_bytes,
            topic,
            key,
        ));
    }
    Ok(decode_fields(row, id, topics).unwrap_or_else(|unfit| {
        let topic = row.try_get::<&str, _>(row_position::TOPIC).ok();
        let key = row.try_get::<Option<&[u8]>, _>(row_position::KEY).ok().flatten();
        unfit.into_message(id, topic, key)
    }))
}

/// A column's value, or what is wrong with it (e.g. a zero date, which a server without
/// `NO_ZERO_DATE` in its `sql_mode` stores).
fn column<'r, T>(row: &'r MySqlRow, index: usize, name: &'static str) -> std::result::Result<T, UnfitColumn>
where
    T: sqlx::Decode<'r, sqlx::MySql> + sqlx::Type<sqlx::MySql>,
{
    row.try_get(index).map_err(|e| UnfitColumn::undecodable(name, &e))
}

fn decode_fields(
    row: &MySqlRow,
    id: i64,
    topics: &mut Interner,
) -> std::result::Result<OutboxMessage, UnfitColumn> {
    Ok(RowFields {
        id,
        message_id: column(row, row_position::MESSAGE_ID, "message_id")?,
        topic: column(row, row_position::TOPIC, "topic")?,
        key: column(row, row_position::KEY, "key")?,
        payload: column(row, row_position::PAYLOAD, "payload")?,
        headers: column(row, row_position::HEADERS, "headers")?,
        created_at: column(row, row_position::CREATED_AT, "created_at")?,
        attempts: column(row, row_position::ATTEMPTS, "attempts")?,
        next_attempt_at: column(row, row_position::NEXT_ATTEMPT_AT, "next_attempt_at")?,
        bucket: column(row, row_position::BUCKET, "bucket")?,
    }
    .into_message(topics))
}

impl Store for MySqlStore {
    async fn check(&self) -> Result<()> {
        migrate::check(&self.pool, &self.sql).await
    }

    /// Takes the table's relay lock at start, so the first relay to start is the active one.
    /// While another relay holds it this one stands by here — nothing read, no transport started
    /// (an exactly-once standby does not fence the active relay's producer) — and goes on once
    /// the lock frees (each attempt waits up to a second for it).
    async fn lock_for_relay(&self) -> Result<()> {
        if self.ownership.is_some() {
            // Leases decide what a coordinated relay reads.
            return Ok(());
        }
        let mut said = false;
        loop {
            match self.lock.acquire(&self.pool).await {
                Ok(Some(_)) => return Ok(()),
                Ok(None) if !said => {
                    said = true;
                    tracing::info!(
                        table = %self.sql.table,
                        "another relay is active on this table; standing by until its lock frees"
                    );
                }
                Ok(None) => {}
                Err(error) if error.is_retryable() => {
                    tracing::debug!(%error, "cannot take the table's relay lock yet");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Up to `limit` pending rows from the start; none while another relay holds the table's
    /// relay lock.
    async fn fetch_pending(&self, limit: ReadLimit) -> Result<Vec<OutboxMessage>> {
        if limit.rows == 0 {
            return Ok(Vec::new());
        }
        match self.access().await? {
            Some(access) => self.fetch_start(&access, limit).await,
            None => Ok(Vec::new()),
        }
    }

    /// Rows above `after`, plus the late commits at or below it (see the module docs).
    async fn fetch_after(&self, after: i64, limit: ReadLimit) -> Result<Vec<OutboxMessage>> {
        let Some(access) = self.access().await? else {
            return Ok(Vec::new());
        };
        // The rows above the cursor first, the ids behind it second. The order matters: each
        // statement has its own snapshot, and a row seen above the cursor must not overtake an
        // earlier row of its key that committed before it with a lower id. Read in this order,
        // that earlier row committed before the first read, so the second one sees it.
        let Some(above) = self.fetch_from(&access, after, limit).await? else {
            return Ok(Vec::new());
        };
        let below = self.pending_ids_upto(after, access.mask).await?;
        if below.len() as i64 >= BELOW_CURSOR_CAP {
            tracing::warn!(
                table = %self.sql.table,
                "over {BELOW_CURSOR_CAP} pending rows behind the relay's cursor: reading from the start"
            );
            return self.fetch_start(&access, limit).await;
        }
        let late: Vec<i64> = {
            let returned = self.returned();
            below.into_iter().filter(|id| !returned.contains(id)).collect()
        };
        let late = if late.is_empty() {
            BudgetedRead::default()
        } else {
            match self.fetch_ids(&access, &late, limit).await? {
                Some(read) => read,
                None => return Ok(Vec::new()),
            }
        };
        let late_spent = late.spent();
        let mut rows = late.rows;
        // Late rows first, in id order; the rows above the cursor follow, within what the late
        // ones left of the byte budget, unless the late ones make ten batches already, or the
        // budget left late rows out (they must go before any later row of their keys): the rows
        // above the cursor left out are read again next time.
        if !late.cut && rows.len() < limit.rows.saturating_mul(10) {
            let (budget, _) = limit.sql_bytes();
            rows.extend(above.rows_after_spending(late_spent, budget));
        }
        self.returned().extend(rows.iter().map(|m| m.id));
        Ok(rows)
    }

    /// A coordinated node's writes change only the rows of buckets it holds (see
    /// [`Leases`](txoutbox_core::coordination::Leases)).
    async fn complete(&self, ids: &[i64], completion: Completion) -> Result<()> {
        let fence = self.ownership.as_ref().map(Ownership::fence);
        let mut conn = self.pool.acquire().await.map_err(db_error)?;
        let changed = self.complete_on(&mut conn, ids, completion, fence).await?;
        if let Some(ownership) = &self.ownership {
            ownership.record_write(ids.len(), changed);
        }
        let mut returned = self.returned();
        for id in ids {
            returned.remove(id);
        }
        Ok(())
    }

    /// One `UPDATE` per failure, in one transaction (failures are few; MySQL has no array
    /// parameters to update many rows with different values in one statement).
    async fn record_failures(&self, failures: &[Failure]) -> Result<()> {
        if failures.is_empty() {
            return Ok(());
        }
        let fence = self.ownership.as_ref().map(Ownership::fence);
        let statement = match fence {
            Some(_) => self.sql.record_failure_fenced.as_str(),
            None => self.sql.record_failure.as_str(),
        };
        let mut changed = 0;
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        for f in failures {
            let mut query = sqlx::query(AssertSqlSafe(statement))
                .bind(f.attempts)
                .bind(&f.error)
                .bind(f.next_attempt_at)
                .bind(f.next_attempt_at)
                .bind(f.id);
            if let Some((node, epoch)) = fence {
                query = query.bind(node).bind(epoch).bind(node).bind(epoch);
            }
            changed += query.execute(&mut *tx).await.map_err(db_error)?.rows_affected();
        }
        tx.commit().await.map_err(db_error)?;
        if let Some(ownership) = &self.ownership {
            ownership.record_write(failures.len(), changed);
        }
        // A dead row may be replayed: it must then count as a late commit.
        let mut returned = self.returned();
        for f in failures.iter().filter(|f| f.next_attempt_at.is_none()) {
            returned.remove(&f.id);
        }
        Ok(())
    }

    async fn backlog(&self) -> Result<Backlog> {
        let row = sqlx::query(AssertSqlSafe(self.sql.backlog.as_str()))
            .fetch_one(&self.pool)
            .await
            .map_err(db_error)?;
        let count = |name| row.try_get::<i64, _>(name).map(|n| n.max(0) as u64);
        Ok(Backlog {
            pending: count("pending").map_err(db_error)?,
            // A pending row whose time cannot be read (a zero date) is as old as can be, until
            // the relay dead-letters it.
            oldest_pending: row
                .try_get::<Option<DateTime<Utc>>, _>("oldest")
                .unwrap_or(Some(DateTime::<Utc>::MIN_UTC)),
            dead: count("dead").map_err(db_error)?,
        })
    }

    async fn dead_keys(&self) -> Result<Vec<(String, Vec<u8>)>> {
        sqlx::query_as(AssertSqlSafe(self.sql.dead_keys.as_str()))
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)
    }

    async fn progress_kept(&self, key: &str) -> Result<Option<bool>> {
        sqlx::query_scalar::<_, i64>(AssertSqlSafe(self.sql.progress_kept.as_str()))
            .bind(key)
            .fetch_one(&self.pool)
            .await
            .map(|kept| Some(kept != 0))
            .map_err(db_error)
    }

    async fn keep_progress(&self, key: &str) -> Result<()> {
        sqlx::query(AssertSqlSafe(self.sql.keep_progress.as_str()))
            .bind(key)
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    /// `table` = this store's table.
    fn metric_labels(&self) -> txoutbox_core::MetricLabels {
        txoutbox_core::MetricLabels::table(self.sql.table.to_string())
    }
}
