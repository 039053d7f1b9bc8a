//! The relay side: read pending rows, complete them, record failures.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, PgPool, Row};
use txoutbox_core::coordination::{Ownership, Scope};
use txoutbox_core::{Backlog, Completion, Failure, Interner, OutboxMessage, Result, RowFields, Store};
use uuid::Uuid;

use crate::error::db_error;
use crate::migrate;
use crate::sql::{Statements, fetch_column};

/// The relay's [`Store`] over a PostgreSQL outbox table. Create it with
/// [`PgOutbox::store`](crate::PgOutbox::store).
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
}

impl PgStore {
    pub(crate) fn new(pool: PgPool, sql: Arc<Statements>) -> Self {
        Self {
            pool,
            sql,
            snapshot: Arc::new(Mutex::new(None)),
            ownership: None,
        }
    }

    async fn fetch(&self, after: i64, limit: usize) -> Result<Vec<OutboxMessage>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // Late rows are few (transactions that committed out of id order); this cap only bounds
        // a pathological fetch, and a capped fetch keeps the old snapshot so none is skipped.
        let late_limit = limit.saturating_mul(10).max(10_000);
        let previous = self.snapshot.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let buckets = match self.ownership.as_ref().map(Ownership::scope) {
            None | Some(Scope::All) => None,
            Some(Scope::Nothing) => return Ok(Vec::new()),
            Some(Scope::Buckets(buckets)) => Some(buckets),
        };
        let statement = match buckets {
            Some(_) => &self.sql.fetch_pending_in_buckets,
            None => &self.sql.fetch_pending,
        };
        let mut query = sqlx::query(AssertSqlSafe(Arc::clone(statement)))
            .bind(after)
            .bind(limit)
            .bind(previous)
            .bind(late_limit);
        if let Some(buckets) = buckets {
            query = query.bind(buckets);
        }
        let rows = query.fetch_all(&self.pool).await.map_err(db_error)?;
        let mut messages = Vec::with_capacity(rows.len());
        let mut topics = Interner::new();
        let mut late = 0;
        for row in &rows {
            if let Some(id) = row
                .try_get::<Option<i64>, _>(fetch_column::ID)
                .map_err(db_error)?
            {
                let message = decode(row, id, &mut topics).map_err(db_error)?;
                late += i64::from(message.id <= after);
                messages.push(message);
            }
        }
        if late < late_limit
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

/// Decodes a row; a row that does not fit the table contract comes back as
/// [`OutboxMessage::unreadable`] so one bad row from a foreign writer never stops the relay.
fn decode(row: &PgRow, id: i64, topics: &mut Interner) -> Result<OutboxMessage, sqlx::Error> {
    Ok(decode_fields(row, id, topics).unwrap_or_else(|e| {
        OutboxMessage::unreadable(id, format!("the row does not fit the outbox table contract: {e}"))
    }))
}

fn decode_fields(row: &PgRow, id: i64, topics: &mut Interner) -> Result<OutboxMessage, sqlx::Error> {
    let mut text = Uuid::encode_buffer();
    let message_id = row.try_get::<Uuid, _>(fetch_column::MESSAGE_ID)?;
    Ok(RowFields {
        id,
        message_id: message_id.hyphenated().encode_lower(&mut text),
        topic: row.try_get(fetch_column::TOPIC)?,
        key: row.try_get(fetch_column::KEY)?,
        payload: row.try_get(fetch_column::PAYLOAD)?,
        headers: row.try_get(fetch_column::HEADERS)?,
        created_at: row.try_get(fetch_column::CREATED_AT)?,
        attempts: row.try_get(fetch_column::ATTEMPTS)?,
        next_attempt_at: row.try_get(fetch_column::NEXT_ATTEMPT_AT)?,
        bucket: row.try_get(fetch_column::BUCKET)?,
    }
    .into_message(topics))
}

impl Store for PgStore {
    fn watch(&self, wakeup: txoutbox_core::Wakeup) -> Option<tokio::task::JoinHandle<()>> {
        Some(tokio::spawn(crate::listen::listen(
            self.pool.clone(),
            self.sql.channel.clone(),
            wakeup,
        )))
    }

    async fn relay_awake(&self, awake: bool) -> Result<()> {
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

    async fn fetch_pending(&self, limit: usize) -> Result<Vec<OutboxMessage>> {
        self.fetch(0, limit).await
    }

    async fn fetch_after(&self, after: i64, limit: usize) -> Result<Vec<OutboxMessage>> {
        self.fetch(after, limit).await
    }

    async fn complete(&self, ids: &[i64], completion: Completion) -> Result<()> {
        let mark = completion == Completion::MarkPublished;
        if let Some(ownership) = &self.ownership {
            let statement = if mark {
                &self.sql.mark_published_fenced
            } else {
                &self.sql.delete_fenced
            };
            let (node, epoch) = ownership.fence();
            let done = sqlx::query(AssertSqlSafe(Arc::clone(statement)))
                .bind(ids)
                .bind(node)
                .bind(epoch)
                .execute(&self.pool)
                .await
                .map_err(db_error)?;
            ownership.record_write(ids.len(), done.rows_affected());
            return Ok(());
        }
        let statement = if mark {
            &self.sql.mark_published
        } else {
            &self.sql.delete
        };
        sqlx::query(AssertSqlSafe(Arc::clone(statement)))
            .bind(ids)
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
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
            oldest_pending: row.try_get(1).map_err(db_error)?,
            dead: count(2).map_err(db_error)?,
        })
    }

    async fn dead_keys(&self) -> Result<Vec<(String, Vec<u8>)>> {
        sqlx::query_as(AssertSqlSafe(Arc::clone(&self.sql.dead_keys)))
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)
    }
}
