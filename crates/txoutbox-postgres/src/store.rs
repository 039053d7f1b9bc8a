//! The relay side: read pending rows, complete them, record failures.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, PgPool, Row};
use txoutbox_core::coordination::{Ownership, Scope};
use txoutbox_core::id_ranges;
use txoutbox_core::{
    Backlog, Completion, Failure, Interner, OutboxMessage, ReadLimit, Result, RowFields, Store, UnfitColumn,
};
use uuid::Uuid;

use crate::error::db_error;
use crate::migrate;
use crate::relay_lock::RelayLock;
use crate::sql::{Statements, fetch_column};
use crate::timestamp::{PgTimestamp, saturating};

/// The relay's [`Store`] over a PostgreSQL outbox table. Create it with
/// [`PgOutbox::store`](crate::PgOutbox::store), one per relay.
///
/// A single-mode relay ([`Relay::new`](txoutbox_core::Relay::new)) holds the table's relay lock
/// while it runs: a second one on the same table — another replica of the service — stands by
/// (reads nothing) and takes over when the first stops or its connection ends. Relays that should
/// share the rows choose work-balance coordination
/// ([`Relay::coordinated`](txoutbox_core::Relay::coordinated)).
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    sql: Arc<Statements>,
    /// The snapshot of the previous fetch (`pg_current_snapshot()` as text): a row it could not
    /// see (its transaction was still running, or had not started) may appear late below the
    /// cursor; every other row at or below the cursor was read already.
    snapshot: Arc<Mutex<Option<String>>>,
    /// Set for a coordinated relay: its reads are scoped and its writes fenced.
    pub(crate) ownership: Option<Ownership>,
    /// A single-mode relay's lock on the table (unused by coordinated relays).
    relay_lock: Arc<RelayLock>,
}

impl PgStore {
    pub(crate) fn new(pool: PgPool, sql: Arc<Statements>) -> Self {
        Self {
            pool,
            relay_lock: Arc::new(RelayLock::new(sql.table.clone())),
            sql,
            snapshot: Arc::new(Mutex::new(None)),
            ownership: None,
        }
    }

    /// Waits until this store holds the table's relay lock (a standby waits here).
    async fn wait_for_relay_lock(&self) -> Result<()> {
        loop {
            match self.relay_lock.acquire(&self.pool).await {
                Ok(Some(_)) => return Ok(()),
                Ok(None) => {}
                // A database that is down now is waited for like a held lock; the reads would
                // report it.
                Err(error) if error.is_retryable() => {
                    tracing::debug!(%error, "cannot take the table's relay lock yet");
                }
                Err(error) => return Err(error),
            }
            tokio::time::sleep(crate::relay_lock::STANDBY_POLL).await;
        }
    }

    async fn fetch(&self, after: i64, limit: ReadLimit) -> Result<Vec<OutboxMessage>> {
        let rows_limit = limit.sql_rows();
        let (bytes, message_bytes) = limit.sql_bytes();
        // Late rows are few (transactions that committed out of id order); this cap only bounds
        // a pathological fetch, and a capped fetch keeps the old snapshot so none is skipped.
        let late_limit = rows_limit.saturating_mul(10).max(10_000);
        let (buckets, lock) = match self.ownership.as_ref().map(Ownership::scope) {
            None => match self.relay_lock.acquire(&self.pool).await? {
                Some(held) => (None, Some(held)),
                // Another relay is the active one: stand by.
                None => return Ok(Vec::new()),
            },
            Some(Scope::All) => (None, None),
            Some(Scope::Nothing) => return Ok(Vec::new()),
            // Every bucket (a work-balance node alone): the same rows as an unfiltered read,
            // without hashing each row's key to filter them.
            Some(Scope::Buckets(buckets)) if buckets.len() >= crate::leases::BUCKETS as usize => (None, None),
            Some(Scope::Buckets(buckets)) => (Some(buckets), None),
        };
        let statement = match (&buckets, lock) {
            (Some(_), _) => &self.sql.fetch_pending_in_buckets,
            (None, Some(_)) => &self.sql.fetch_pending_locked,
            (None, None) => &self.sql.fetch_pending,
        };
        let previous = self.snapshot.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut query = sqlx::query(AssertSqlSafe(Arc::clone(statement)))
            .bind(after)
            .bind(rows_limit)
            .bind(previous)
            .bind(late_limit)
            .bind(bytes)
            .bind(message_bytes);
        if let Some(buckets) = buckets {
            query = query.bind(buckets);
        }
        if let Some(held) = lock {
            query = query.bind(held.holder).bind(held.table_oid);
        }
        let rows = query.fetch_all(&self.pool).await.map_err(db_error)?;
        // The lock's connection no longer holds it (it ended, or another relay has taken over):
        // read nothing, and keep the previous snapshot so that no late row is skipped if this
        // relay becomes the active one again.
        let held = match rows.first() {
            Some(first) => first.try_get::<bool, _>(fetch_column::HELD).map_err(db_error)?,
            None => true,
        };
        if !held {
            self.relay_lock.lost().await;
            return Ok(Vec::new());
        }
        let mut messages = Vec::with_capacity(rows.len());
        let mut topics = Interner::new();
        let mut late = 0;
        // The kept rows are the first ones in id order, so the byte budget cut the read exactly
        // when every one of them had a row after it.
        let mut every_row_has_more = true;
        for row in &rows {
            if let Some(id) = row
                .try_get::<Option<i64>, _>(fetch_column::ID)
                .map_err(db_error)?
            {
                every_row_has_more &= row.try_get::<bool, _>(fetch_column::MORE).map_err(db_error)?;
                let message = decode(row, id, limit.message_bytes, &mut topics);
                late += i64::from(message.id <= after);
                messages.push(message);
            }
        }
        let messages = txoutbox_core::in_id_order(messages);
        // The budget cut the read before it reached the rows above the cursor: late rows may be
        // left, so the previous snapshot stays (a later read finds them again).
        let cut_in_late_rows =
            every_row_has_more && messages.last().is_some_and(|highest| highest.id <= after);
        if late < late_limit
            && !cut_in_late_rows
            && let Some(first) = rows.first()
        {
            let snapshot: String = first.try_get(fetch_column::SNAPSHOT).map_err(db_error)?;
            *self.snapshot.lock().unwrap_or_else(|p| p.into_inner()) = Some(snapshot);
        }
        Ok(messages)
    }

    /// The pool the store uses.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub(crate) fn sql(&self) -> &Statements {
        &self.sql
    }
}

/// Logs whether the table's push wake-ups are on, and what that means for rows other processes
/// commit.
async fn say_whether_pushed(pool: &PgPool, sql: &Statements) {
    match migrate::push_wakeups(pool, sql).await {
        Ok(true) => {
            tracing::info!(table = %sql.table, "push wake-ups are on: commits wake a sleeping relay at once")
        }
        Ok(false) => tracing::info!(
            table = %sql.table,
            "push wake-ups are off: rows other processes commit while the relay sleeps wait at most \
             its poll interval (turn them on with `txoutbox migrate --push-wakeups on`)"
        ),
        Err(error) => {
            tracing::debug!(%error, table = %sql.table, "could not tell whether push wake-ups are on")
        }
    }
}

/// Decodes a row; a row that does not fit the table contract comes back as
/// [`OutboxMessage::unreadable`], naming the column, so one bad row from a foreign writer never
/// stops the relay.
fn decode(row: &PgRow, id: i64, message_bytes: usize, topics: &mut Interner) -> OutboxMessage {
    let size = row.try_get::<i64, _>(fetch_column::SIZE).unwrap_or_default();
    if usize::try_from(size).is_ok_and(|size| size > message_bytes) {
        let topic = row.try_get::<&str, _>(fetch_column::TOPIC).ok();
        let key = row.try_get::<Option<&[u8]>, _>(fetch_column::KEY).ok().flatten();
        return OutboxMessage::too_large(id, size.unsigned_abs(), message_bytes, topic, key);
    }
    decode_fields(row, id, topics).unwrap_or_else(|unfit| {
        let topic = row.try_get::<&str, _>(fetch_column::TOPIC).ok();
        let key = row.try_get::<Option<&[u8]>, _>(fetch_column::KEY).ok().flatten();
        unfit.into_message(id, topic, key)
    })
}

/// A column's value, or what is wrong with it.
fn column<'r, T>(row: &'r PgRow, index: usize, name: &'static str) -> Result<T, UnfitColumn>
where
    T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    row.try_get(index).map_err(|e| UnfitColumn::undecodable(name, &e))
}

/// A timestamp column as a `DateTime`, or what is wrong with it (`infinity`, out of range).
fn time(at: PgTimestamp, name: &'static str) -> Result<DateTime<Utc>, UnfitColumn> {
    at.to_utc().map_err(|problem| UnfitColumn::new(name, problem))
}

fn decode_fields(row: &PgRow, id: i64, topics: &mut Interner) -> Result<OutboxMessage, UnfitColumn> {
    let mut text = Uuid::encode_buffer();
    let message_id = column::<Uuid>(row, fetch_column::MESSAGE_ID, "message_id")?;
    let created_at = column(row, fetch_column::CREATED_AT, "created_at")?;
    let next_attempt_at: Option<PgTimestamp> = column(row, fetch_column::NEXT_ATTEMPT_AT, "next_attempt_at")?;
    Ok(RowFields {
        id,
        message_id: message_id.hyphenated().encode_lower(&mut text),
        topic: column(row, fetch_column::TOPIC, "topic")?,
        key: column(row, fetch_column::KEY, "key")?,
        payload: column(row, fetch_column::PAYLOAD, "payload")?,
        headers: column(row, fetch_column::HEADERS, "headers")?,
        created_at: time(created_at, "created_at")?,
        attempts: column(row, fetch_column::ATTEMPTS, "attempts")?,
        next_attempt_at: next_attempt_at
            .map(|at| time(at, "next_attempt_at"))
            .transpose()?,
        bucket: column(row, fetch_column::BUCKET, "bucket")?,
    }
    .into_message(topics))
}

impl Store for PgStore {
    fn watch(&self, wakeup: txoutbox_core::Wakeup) -> Option<tokio::task::JoinHandle<()>> {
        let (pool, sql) = (self.pool.clone(), Arc::clone(&self.sql));
        Some(tokio::spawn(async move {
            say_whether_pushed(&pool, &sql).await;
            crate::listen::listen(pool, sql.channel.clone(), wakeup).await;
        }))
    }

    /// A standby relay says nothing: only the active one's sleep may turn the wake-ups on.
    async fn relay_awake(&self, awake: bool) -> Result<()> {
        if self.ownership.is_none() && !self.relay_lock.probably_held() {
            return Ok(());
        }
        sqlx::query(AssertSqlSafe(Arc::clone(&self.sql.relay_awake)))
            .bind(awake)
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn check(&self) -> Result<()> {
        migrate::check(&self.pool, &self.sql).await
    }

    /// A single-mode relay takes the table's relay lock, so the first relay to start is the
    /// active one. While another relay holds it this one stands by here — nothing read, no
    /// transport started (an exactly-once standby does not fence the active relay's producer) —
    /// and goes on once the lock frees.
    async fn lock_for_relay(&self) -> Result<()> {
        if self.ownership.is_some() {
            return Ok(());
        }
        // Given back if the wait fails or is given up (the relay shut down while standing by).
        let claim = self.relay_lock.claim()?;
        self.wait_for_relay_lock().await?;
        claim.keep();
        Ok(())
    }

    async fn unlock_for_relay(&self) {
        if self.ownership.is_none() {
            self.relay_lock.release().await;
        }
    }

    async fn fetch_pending(&self, limit: ReadLimit) -> Result<Vec<OutboxMessage>> {
        self.fetch(0, limit).await
    }

    async fn fetch_after(&self, after: i64, limit: ReadLimit) -> Result<Vec<OutboxMessage>> {
        self.fetch(after, limit).await
    }

    async fn complete(&self, ids: &[i64], completion: Completion) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        // A batch of consecutive ids (a backlog read in id order) is named by its range.
        let range = id_ranges::single_run(ids);
        let fence = self.ownership.as_ref().map(Ownership::fence);
        let statement = self.sql.complete(completion, range.is_some(), fence.is_some());
        let mut query = sqlx::query(AssertSqlSafe(Arc::clone(statement)));
        query = match range {
            Some((first, last)) => query.bind(first).bind(last),
            None => query.bind(ids),
        };
        if let Some((node, epoch)) = fence {
            query = query.bind(node).bind(epoch);
        }
        let done = query.execute(&self.pool).await.map_err(db_error)?;
        if let Some(ownership) = &self.ownership {
            ownership.record_write(ids.len(), done.rows_affected());
        }
        Ok(())
    }

    async fn record_failures(&self, failures: &[Failure]) -> Result<()> {
        let ids: Vec<i64> = failures.iter().map(|f| f.id).collect();
        let attempts: Vec<i32> = failures.iter().map(|f| f.attempts).collect();
        let errors: Vec<&str> = failures.iter().map(|f| f.error.as_str()).collect();
        let next: Vec<Option<DateTime<Utc>>> = failures.iter().map(|f| f.next_attempt_at).collect();
        let statement = match &self.ownership {
            Some(_) => &self.sql.record_failures_fenced,
            None => &self.sql.record_failures,
        };
        let mut query = sqlx::query(AssertSqlSafe(Arc::clone(statement)))
            .bind(&ids)
            .bind(&attempts)
            .bind(&errors)
            .bind(&next);
        if let Some(ownership) = &self.ownership {
            let (node, epoch) = ownership.fence();
            query = query.bind(node.to_owned()).bind(epoch);
        }
        let done = query.execute(&self.pool).await.map_err(db_error)?;
        if let Some(ownership) = &self.ownership {
            ownership.record_write(ids.len(), done.rows_affected());
        }
        Ok(())
    }

    async fn backlog(&self) -> Result<Backlog> {
        let row = sqlx::query(AssertSqlSafe(Arc::clone(&self.sql.backlog)))
            .fetch_one(&self.pool)
            .await
            .map_err(db_error)?;
        let count = |i| row.try_get::<i64, _>(i).map(|n| n.max(0) as u64);
        Ok(Backlog {
            pending: count(0).map_err(db_error)?,
            oldest_pending: saturating(row.try_get(1).map_err(db_error)?),
            dead: count(2).map_err(db_error)?,
        })
    }

    async fn dead_keys(&self) -> Result<Vec<(String, Vec<u8>)>> {
        sqlx::query_as(AssertSqlSafe(Arc::clone(&self.sql.dead_keys)))
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)
    }

    async fn progress_kept(&self, key: &str) -> Result<Option<bool>> {
        sqlx::query_scalar(AssertSqlSafe(Arc::clone(&self.sql.progress_kept)))
            .bind(key)
            .fetch_one(&self.pool)
            .await
            .map(Some)
            .map_err(db_error)
    }

    async fn keep_progress(&self, key: &str) -> Result<()> {
        sqlx::query(AssertSqlSafe(Arc::clone(&self.sql.keep_progress)))
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
