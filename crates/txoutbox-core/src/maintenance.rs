//! Operator actions on the outbox table: dead letters (list, replay, purge) and retention.

use std::future::Future;
use std::ops::RangeInclusive;

use chrono::{DateTime, Utc};

use crate::error::Result;

/// The time `age` ago, or the earliest time there is when `age` reaches further back (an
/// operator's `--older-than 1000000y` then matches nothing instead of failing).
pub fn ago(age: std::time::Duration) -> DateTime<Utc> {
    chrono::TimeDelta::from_std(age)
        .ok()
        .and_then(|age| Utc::now().checked_sub_signed(age))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Which dead letters an action applies to; every field narrows the selection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeadLetterFilter {
    /// Only this topic.
    pub topic: Option<String>,
    /// Only rows with an id in this range.
    pub ids: Option<RangeInclusive<i64>>,
    /// Only rows created before this time.
    pub created_before: Option<DateTime<Utc>>,
}

impl DeadLetterFilter {
    /// Every dead letter.
    pub fn all() -> Self {
        Self::default()
    }

    /// Only this topic.
    #[must_use]
    pub fn topic(mut self, topic: impl Into<String>) -> Self {
        self.topic = Some(topic.into());
        self
    }

    /// Only ids in this range.
    #[must_use]
    pub fn ids(mut self, ids: RangeInclusive<i64>) -> Self {
        self.ids = Some(ids);
        self
    }

    /// Only rows created before `time`.
    #[must_use]
    pub fn created_before(mut self, time: DateTime<Utc>) -> Self {
        self.created_before = Some(time);
        self
    }

    /// The id bounds as nullable parameters.
    pub fn id_bounds(&self) -> (Option<i64>, Option<i64>) {
        match &self.ids {
            Some(range) => (Some(*range.start()), Some(*range.end())),
            None => (None, None),
        }
    }
}

/// The start of a dead letter's payload, as [`DeadLetters::dead_payload`] reads it: only the
/// first bytes leave the database, however large the payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadPayload {
    /// The payload's first bytes; `None` when the message has no payload (a tombstone).
    pub head: Option<Vec<u8>>,
    /// The payload's whole length in bytes (0 for a tombstone).
    pub len: u64,
}

impl DeadPayload {
    /// From a store's read of the payload's first bytes and its whole length (`None`: no such
    /// dead letter).
    pub fn from_read(read: Option<(Option<Vec<u8>>, i64)>) -> Option<Self> {
        read.map(|(head, len)| Self {
            head,
            len: u64::try_from(len).unwrap_or_default(),
        })
    }
}

/// A dead-lettered message, without its payload.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// Row id.
    pub id: i64,
    /// The stable message id.
    pub message_id: String,
    /// The Kafka topic.
    pub topic: String,
    /// The record key.
    pub key: Option<Vec<u8>>,
    /// User headers (as stored; empty when unreadable).
    pub headers: Vec<(String, String)>,
    /// Payload size in bytes.
    pub payload_len: i64,
    /// When the row was written.
    pub created_at: DateTime<Utc>,
    /// Failed attempts.
    pub attempts: i32,
    /// The last error.
    pub last_error: Option<String>,
}

/// Dead-letter actions, implemented by each store.
pub trait DeadLetters: Send + Sync {
    /// Up to `limit` dead letters matching `filter`, oldest first.
    fn list_dead(
        &self,
        filter: &DeadLetterFilter,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<DeadLetter>>> + Send;

    /// Moves matching dead letters back to `pending` with their attempts reset; the relay sends
    /// them again. Returns how many.
    fn replay_dead(&self, filter: &DeadLetterFilter) -> impl Future<Output = Result<u64>> + Send;

    /// Deletes matching dead letters. Returns how many.
    fn purge_dead(&self, filter: &DeadLetterFilter) -> impl Future<Output = Result<u64>> + Send;

    /// The start of dead letter `id`'s payload, at most `max_bytes` of it, cut by the database
    /// (`None`: no such dead letter), for an operator who chose to look at it.
    fn dead_payload(
        &self,
        id: i64,
        max_bytes: usize,
    ) -> impl Future<Output = Result<Option<DeadPayload>>> + Send;
}

/// Retention of published rows (kept with `Completion::MarkPublished`).
pub trait Retention: Send + Sync {
    /// Deletes at most `batch` published rows published before `before`, oldest first, in one
    /// short statement; returns how many. Call it in a loop until it returns less than `batch`:
    /// never one unbounded DELETE. Pending and dead rows are never touched.
    fn purge_published(
        &self,
        before: DateTime<Utc>,
        batch: usize,
    ) -> impl Future<Output = Result<u64>> + Send;
}

/// The rows of one topic, by state.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct TopicStats {
    /// The Kafka topic.
    pub topic: String,
    /// Rows waiting to be published.
    pub pending: u64,
    /// Creation time of the oldest pending row.
    pub oldest_pending: Option<DateTime<Utc>>,
    /// Rows in the dead-letter state.
    pub dead: u64,
    /// Published rows kept for retention (`Completion::MarkPublished`).
    pub published: u64,
}

/// Per-topic statistics, for operators (`txoutbox status`).
pub trait Statistics: Send + Sync {
    /// Every topic with rows in the table, by name. Reads the whole table: meant for an
    /// operator's occasional look, not for every health check (use
    /// [`Store::backlog`](crate::Store::backlog) there).
    fn topic_stats(&self) -> impl Future<Output = Result<Vec<TopicStats>>> + Send;
}

#[cfg(test)]
mod ago_tests {
    use super::*;

    #[test]
    fn an_age_beyond_the_calendar_is_the_earliest_time() {
        assert_eq!(ago(std::time::Duration::MAX), DateTime::<Utc>::MIN_UTC);
        let hour_ago = ago(std::time::Duration::from_secs(3600));
        assert!(
            (Utc::now() - hour_ago - chrono::TimeDelta::hours(1))
                .num_seconds()
                .abs()
                < 5
        );
    }
}
