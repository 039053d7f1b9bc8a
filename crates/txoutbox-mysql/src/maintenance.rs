//! Dead letters, retention and per-topic statistics on MySQL / MariaDB.

use chrono::{DateTime, Utc};
use sqlx::mysql::MySqlArguments;
use sqlx::query::Query;
use sqlx::{AssertSqlSafe, MySql, Row};
use txoutbox_core::{
    DeadLetter, DeadLetterFilter, DeadLetters, DeadPayload, Result, Retention, Statistics, TopicStats,
    headers_from_json,
};

use crate::error::db_error;
use crate::store::MySqlStore;

/// Binds the dead-letter filter: each value twice (see `sql::DEAD_FILTER`).
fn filtered<'q>(statement: &'q str, filter: &DeadLetterFilter) -> Query<'q, MySql, MySqlArguments> {
    let (low, high) = filter.id_bounds();
    sqlx::query(AssertSqlSafe(statement))
        .bind(filter.topic.clone())
        .bind(filter.topic.clone())
        .bind(low)
        .bind(low)
        .bind(high)
        .bind(high)
        .bind(filter.created_before)
        .bind(filter.created_before)
}

impl DeadLetters for MySqlStore {
    async fn dead_payload(&self, id: i64, max_bytes: usize) -> Result<Option<DeadPayload>> {
        let read: Option<(Option<Vec<u8>>, i64)> =
            sqlx::query_as(AssertSqlSafe(self.sql().dead_payload.as_str()))
                .bind(i64::try_from(max_bytes).unwrap_or(i64::MAX))
                .bind(id)
                .fetch_optional(self.pool())
                .await
                .map_err(db_error)?;
        Ok(DeadPayload::from_read(read))
    }

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
                    message_id: row.try_get("message_id")?,
                    topic: row.try_get("topic")?,
                    key: row.try_get("key")?,
                    headers: headers_from_json(headers.as_deref()).unwrap_or_default(),
                    payload_len: row.try_get("payload_len")?,
                    // A zero date (stored by a server without NO_ZERO_DATE) is listed as the
                    // earliest time, not an error that would hide every other dead letter.
                    created_at: row.try_get("created_at").unwrap_or(DateTime::<Utc>::MIN_UTC),
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

    async fn purge_dead(&self, filter: &DeadLetterFilter) -> Result<u64> {
        let done = filtered(&self.sql().purge_dead, filter)
            .execute(self.pool())
            .await
            .map_err(db_error)?;
        Ok(done.rows_affected())
    }
}

impl Retention for MySqlStore {
    async fn purge_published(&self, before: DateTime<Utc>, batch: usize) -> Result<u64> {
        let done = sqlx::query(AssertSqlSafe(self.sql().purge_published.as_str()))
            .bind(before)
            .bind(i64::try_from(batch).unwrap_or(i64::MAX))
            .execute(self.pool())
            .await
            .map_err(db_error)?;
        Ok(done.rows_affected())
    }
}

impl Statistics for MySqlStore {
    async fn topic_stats(&self) -> Result<Vec<TopicStats>> {
        let rows = sqlx::query(AssertSqlSafe(self.sql().topic_stats.as_str()))
            .fetch_all(self.pool())
            .await
            .map_err(db_error)?;
        let count = |row: &sqlx::mysql::MySqlRow, column| {
            row.try_get::<Option<i64>, _>(column)
                .map(|n| n.unwrap_or(0).max(0) as u64)
        };
        rows.iter()
            .map(|row| {
                Ok(TopicStats {
                    topic: row.try_get("topic")?,
                    pending: count(row, "pending")?,
                    oldest_pending: row
                        .try_get("oldest_pending")
                        .unwrap_or(Some(DateTime::<Utc>::MIN_UTC)),
                    dead: count(row, "dead")?,
                    published: count(row, "published")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(db_error)
    }
}
