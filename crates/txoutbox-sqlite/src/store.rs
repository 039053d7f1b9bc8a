//! The relay side: read pending rows, complete them, record failures.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteRow;
use sqlx::{AssertSqlSafe, Row, SqlitePool};
use txoutbox_core::id_ranges;
use txoutbox_core::{
    Backlog, Completion, Failure, Interner, OutboxMessage, ReadLimit, Result, RowFields, Store, UnfitColumn,
    row_position,
};

use crate::error::db_error;
use crate::migrate;
use crate::sql::Statements;

/// The relay's [`Store`] over a SQLite outbox table. Create it with
/// [`SqliteOutbox::store`](crate::SqliteOutbox::store).
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    sql: Arc<Statements>,
    /// The relay lock file, held while a relay uses this store (one relay per table and file).
    relay_lock: Arc<Mutex<Option<std::fs::File>>>,
}

impl SqliteStore {
    pub(crate) fn new(pool: SqlitePool, sql: Arc<Statements>) -> Self {
        Self {
            pool,
            sql,
            relay_lock: Arc::new(Mutex::new(None)),
        }
    }

    /// The pool the store uses.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    pub(crate) fn sql(&self) -> &Statements {
        &self.sql
    }
}

/// Milliseconds since the Unix epoch as a time, or what is wrong with them.
fn time(ms: i64) -> std::result::Result<DateTime<Utc>, String> {
    DateTime::from_timestamp_millis(ms).ok_or_else(|| {
        format!(
            "is {ms} ms since 1970, outside the years -262143 to 262142 that a record timestamp can \
             carry (write milliseconds since the Unix epoch)"
        )
    })
}

/// Milliseconds since the Unix epoch as a time, or the nearest one a `DateTime` holds (for
/// listings, which must show every row).
pub(crate) fn millis(ms: i64) -> DateTime<Utc> {
    time(ms).unwrap_or(if ms < 0 {
        DateTime::<Utc>::MIN_UTC
    } else {
        DateTime::<Utc>::MAX_UTC
    })
}

/// Decodes a row; a row that does not fit the table contract (SQLite stores any value in any
/// column) comes back as [`OutboxMessage::unreadable`], naming the column, so one bad row from a
/// foreign writer never stops the relay.
fn decode(
    row: &SqliteRow,
    message_bytes: usize,
    topics: &mut Interner,
) -> Result<OutboxMessage, sqlx::Error> {
    let id: i64 = row.try_get(row_position::ID)?;
    let size: i64 = row.try_get(row_position::COUNT)?;
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

/// A column's value, or what is wrong with it.
fn column<'r, T>(row: &'r SqliteRow, index: usize, name: &'static str) -> std::result::Result<T, UnfitColumn>
where
    T: sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
{
    row.try_get(index).map_err(|e| UnfitColumn::undecodable(name, &e))
}

fn decode_fields(
    row: &SqliteRow,
    id: i64,
    topics: &mut Interner,
) -> std::result::Result<OutboxMessage, UnfitColumn> {
    let created_at: i64 = column(row, row_position::CREATED_AT, "created_at")?;
    let next_attempt_at: Option<i64> = column(row, row_position::NEXT_ATTEMPT_AT, "next_attempt_at")?;
    Ok(RowFields {
        id,
        message_id: column(row, row_position::MESSAGE_ID, "message_id")?,
        topic: column(row, row_position::TOPIC, "topic")?,
        key: column(row, row_position::KEY, "key")?,
        payload: column(row, row_position::PAYLOAD, "payload")?,
        headers: column(row, row_position::HEADERS, "headers")?,
        created_at: time(created_at).map_err(|p| UnfitColumn::new("created_at", p))?,
        attempts: column(row, row_position::ATTEMPTS, "attempts")?,
        next_attempt_at: next_attempt_at
            .map(time)
            .transpose()
            .map_err(|p| UnfitColumn::new("next_attempt_at", p))?,
        bucket: column(row, row_position::BUCKET, "bucket")?,
    }
    .into_message(topics))
}

fn id_list(ids: &[i64]) -> String {
    serde_json::to_string(ids).unwrap_or_else(|_| "[]".to_owned())
}

impl Store for SqliteStore {
    /// One relay per table and database file: an exclusive lock on
    /// `<database file>.txoutbox-relay-<table>.lock` (in-memory databases need none), held while
    /// this store or a clone of it lives.
    async fn lock_for_relay(&self) -> Result<()> {
        // This store (or a clone of it) holds the lock already: a relay restarted in-process.
        if self
            .relay_lock
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
        {
            return Ok(());
        }
        let database = self.pool.connect_options().get_filename().to_path_buf();
        if database.as_os_str().is_empty() || database.to_string_lossy().contains(":memory:") {
            return Ok(());
        }
        let mut path = database.into_os_string();
        path.push(format!(".txoutbox-relay-{}.lock", self.sql.table.table()));
        let path = std::path::PathBuf::from(path);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| {
                txoutbox_core::Error::Config(format!(
                    "cannot open the relay lock file {}: {e}",
                    path.display()
                ))
            })?;
        match file.try_lock() {
            Ok(()) => {
                *self.relay_lock.lock().unwrap_or_else(|p| p.into_inner()) = Some(file);
                Ok(())
            }
            Err(std::fs::TryLockError::WouldBlock) => Err(txoutbox_core::Error::Config(format!(
                "another relay already runs on this SQLite outbox (it holds {}): SQLite supports one relay \
                 per table and database file",
                path.display()
            ))),
            Err(std::fs::TryLockError::Error(e)) => Err(txoutbox_core::Error::Config(format!(
                "cannot lock {}: {e}",
                path.display()
            ))),
        }
    }

    async fn check(&self) -> Result<()> {
        migrate::check(&self.pool, &self.sql).await
    }

    async fn fetch_pending(&self, limit: ReadLimit) -> Result<Vec<OutboxMessage>> {
        self.fetch_after(0, limit).await
    }

    /// SQLite runs one write transaction at a time, and a row's id is taken under its write lock:
    /// ids become visible in id order, so no row can appear late below the cursor.
    async fn fetch_after(&self, after: i64, limit: ReadLimit) -> Result<Vec<OutboxMessage>> {
        let (bytes, message_bytes) = limit.sql_bytes();
        let rows = sqlx::query(AssertSqlSafe(Arc::clone(&self.sql.fetch_pending)))
            .bind(limit.sql_rows())
            .bind(after)
            .bind(bytes)
            .bind(message_bytes)
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?;
        let mut topics = Interner::new();
        let messages = rows
            .iter()
            .map(|row| decode(row, limit.message_bytes, &mut topics))
            .collect::<Result<_, _>>()
            .map_err(db_error)?;
        Ok(txoutbox_core::in_id_order(messages))
    }

    async fn complete(&self, ids: &[i64], completion: Completion) -> Result<()> {
        // A batch of consecutive ids (a backlog read in id order) is named by its range.
        let range = id_ranges::single_run(ids);
        let statement = self.sql.complete(completion, range.is_some());
        let query = sqlx::query(AssertSqlSafe(Arc::clone(statement)));
        let query = match range {
            Some((first, last)) => query.bind(first).bind(last),
            None => query.bind(id_list(ids)),
        };
        query.execute(&self.pool).await.map_err(db_error)?;
        Ok(())
    }

    async fn record_failures(&self, failures: &[Failure]) -> Result<()> {
        let rows: Vec<serde_json::Value> = failures
            .iter()
            .map(|f| {
                serde_json::json!([
                    f.id,
                    f.attempts,
                    f.error,
                    f.next_attempt_at.map(|at| at.timestamp_millis())
                ])
            })
            .collect();
        sqlx::query(AssertSqlSafe(Arc::clone(&self.sql.record_failures)))
            .bind(serde_json::Value::Array(rows).to_string())
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
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
            oldest_pending: row.try_get::<Option<i64>, _>(1).map_err(db_error)?.map(millis),
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
