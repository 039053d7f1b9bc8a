//! Dead letters and retention on PostgreSQL.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use sqlx::postgres::PgArguments;
use sqlx::query::Query;
use sqlx::{AssertSqlSafe, Postgres, Row};
use txoutbox_core::{
    DeadLetter, DeadLetterFilter, DeadLetters, DeadPayload, Result, Retention, Statistics, TopicStats,
    headers_from_json,
};
use uuid::Uuid;

use crate::error::db_error;
use crate::store::PgStore;
use crate::timestamp::{PgTimestamp, saturating};

fn filtered(statement: &Arc<str>, filter: &DeadLetterFilter) -> Query<'static, Postgres, PgArguments> {
    let (low, high) = filter.id_bounds();
    sqlx::query(AssertSqlSafe(Arc::clone(statement)))
        .bind(filter.topic.clone())
        .bind(low)
        .bind(high)
        .bind(filter.created_before)
}

impl DeadLetters for PgStore {
    async fn list_dead(&self, filter: &DeadLetterFilter, limit: usize) -> Result<Vec<DeadLetter>> {
        let rows = filtered(&self.sql().list_dead, filter)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(self.pool())
            .await
            .map_err(db_error)?;
        rows.iter()
            .map(|row| {
                let headers: Option<String> = row.try_get("headers")?;
                Ok(DeadLetter {
                    id: row.try_get("id")?,
                    message_id: row.try_get::<Uuid, _>("message_id")?.to_string(),
                    topic: row.try_get("topic")?,
                    key: row.try_get("key")?,
                    headers: headers_from_json(headers.as_deref()).unwrap_or_default(),
                    payload_len: row.try_get("payload_len")?,
                    created_at: row.try_get::<PgTimestamp, _>("created_at")?.saturating(),
                    attempts: row.try_get("attempts")?,
                    last_error: row.try_get("last_error")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(db_error)
    }

    async fn replay_dead(&self, filter: &DeadLetterFilter) -> Result<u64> {
        let done = filtered(&self.sql().replay_dead, filter)
            .execute(self.pool())
            .await
            .map_err(db_error)?;
        Ok(done.rows_affected())
    }

    async fn dead_payload(&self, id: i64, max_bytes: usize) -> Result<Option<DeadPayload>> {
        let read: Option<(Option<Vec<u8>>, i64)> =
            sqlx::query_as(AssertSqlSafe(Arc::clone(&self.sql().dead_payload)))
                .bind(id)
                .bind(i32::try_from(max_bytes).unwrap_or(i32::MAX))
                .fetch_optional(self.pool())
                .await
                .map_err(db_error)?;
        Ok(DeadPayload::from_read(read))
    }

    async fn purge_dead(&self, filter: &DeadLetterFilter) -> Result<u64> {
        let done = filtered(&self.sql().purge_dead, filter)
            .execute(self.pool())
            .await
            .map_err(db_error)?;
        Ok(done.rows_affected())
    }
}

impl Retention for PgStore {
    async fn purge_published(&self, before: DateTime<Utc>, batch: usize) -> Result<u64> {
        let done = sqlx::query(AssertSqlSafe(Arc::clone(&self.sql().purge_published)))
            .bind(before)
            .bind(i64::try_from(batch).unwrap_or(i64::MAX))
            .execute(self.pool())
            .await
            .map_err(db_error)?;
        Ok(done.rows_affected())
    }
}

impl Statistics for PgStore {
    async fn topic_stats(&self) -> Result<Vec<TopicStats>> {
        let rows = sqlx::query(AssertSqlSafe(Arc::clone(&self.sql().topic_stats)))
            .fetch_all(self.pool())
            .await
            .map_err(db_error)?;
        let count =
            |row: &sqlx::postgres::PgRow, column| row.try_get::<i64, _>(column).map(|n| n.max(0) as u64);
        rows.iter()
            .map(|row| {
                Ok(TopicStats {
                    topic: row.try_get("topic")?,
                    pending: count(row, "pending")?,
                    oldest_pending: saturating(row.try_get("oldest_pending")?),
                    dead: count(row, "dead")?,
                    published: count(row, "published")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(db_error)
    }
}
