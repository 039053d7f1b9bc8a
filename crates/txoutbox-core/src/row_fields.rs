//! A relay read's row, as a store decodes it, made into an [`OutboxMessage`].

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};

use crate::interner::Interner;
use crate::message::{OutboxMessage, headers_from_json};

/// The columns of the table contract as a store decoded them from one row, borrowed from the
/// row (each store reads them in its own dialect, at [`row_position`](crate::row_position)).
#[derive(Debug, Clone, Copy)]
pub struct RowFields<'a> {
    /// `id`.
    pub id: i64,
    /// `message_id`, as text.
    pub message_id: &'a str,
    /// `topic`.
    pub topic: &'a str,
    /// `key`.
    pub key: Option<&'a [u8]>,
    /// `payload`.
    pub payload: Option<&'a [u8]>,
    /// `headers`, the JSON text.
    pub headers: Option<&'a str>,
    /// `created_at`.
    pub created_at: DateTime<Utc>,
    /// `attempts`.
    pub attempts: i32,
    /// `next_attempt_at`.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// `bucket`.
    pub bucket: i32,
}

impl RowFields<'_> {
    /// The message. Headers that are not a JSON object of strings (a foreign writer's) make it
    /// [`malformed`](OutboxMessage::malformed), to be dead-lettered with the reason; topics are
    /// shared through `topics`.
    pub fn into_message(self, topics: &mut Interner) -> OutboxMessage {
        let (headers, malformed) = match headers_from_json(self.headers) {
            Ok(headers) => (headers.into(), None),
            Err(reason) => (Arc::default(), Some(UnfitColumn::new("headers", reason).reason())),
        };
        OutboxMessage {
            id: self.id,
            message_id: Arc::from(self.message_id),
            topic: topics.get(self.topic),
            key: self.key.map(Bytes::copy_from_slice),
            payload: self.payload.map(Bytes::copy_from_slice),
            headers,
            created_at: self.created_at,
            attempts: self.attempts,
            next_attempt_at: self.next_attempt_at,
            bucket: self.bucket,
            malformed,
        }
    }
}

/// A column of a row that does not fit the table contract, and what is wrong with it: the row is
/// dead-lettered at once with both in its reason, instead of stopping the relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnfitColumn {
    /// The column's name in the table contract.
    pub column: &'static str,
    /// What is wrong with its value.
    pub problem: String,
}

impl UnfitColumn {
    /// `column` holds a value the relay cannot use, for `problem`.
    pub fn new(column: &'static str, problem: impl Into<String>) -> Self {
        Self {
            column,
            problem: problem.into(),
        }
    }

    /// `column` could not be decoded: the error's cause says why (a driver's "error decoding
    /// column N" wrapper adds nothing).
    pub fn undecodable(column: &'static str, error: &(dyn std::error::Error + 'static)) -> Self {
        let cause = error.source().unwrap_or(error);
        Self::new(column, format!("cannot be read: {cause}"))
    }

    /// The reason stored with the dead letter.
    pub fn reason(&self) -> String {
        format!(
            "the row does not fit the outbox table contract: column `{}` {}",
            self.column, self.problem
        )
    }

    /// The row as a message the relay dead-letters at once ([`OutboxMessage::unreadable`]),
    /// keeping its topic and key when they could be read: the dead-letter topic's copy goes by
    /// them, and a parked key stays parked in memory as in the table.
    pub fn into_message(self, id: i64, topic: Option<&str>, key: Option<&[u8]>) -> OutboxMessage {
        let mut message = OutboxMessage::unreadable(id, self.reason());
        if let Some(topic) = topic {
            message.topic = Arc::from(topic);
        }
        message.key = key.map(Bytes::copy_from_slice);
        message
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(headers: Option<&str>) -> RowFields<'_> {
        RowFields {
            id: 7,
            message_id: "0190b7a4-0000-7000-8000-000000000007",
            topic: "orders",
            key: Some(b"k"),
            payload: None,
            headers,
            created_at: DateTime::default(),
            attempts: 2,
            next_attempt_at: None,
            bucket: 3,
        }
    }

    #[test]
    fn a_row_becomes_a_message_and_bad_headers_mark_it_malformed() {
        let mut topics = Interner::new();
        let m = fields(Some(r#"{"a":"1"}"#)).into_message(&mut topics);
        assert_eq!(
            (m.id, &*m.topic, m.key.as_deref()),
            (7, "orders", Some(&b"k"[..]))
        );
        assert_eq!((m.payload, m.attempts, m.bucket), (None, 2, 3));
        assert_eq!(&*m.headers, [("a".to_owned(), "1".to_owned())]);
        assert!(m.malformed.is_none());
        let bad = fields(Some("[1]")).into_message(&mut topics);
        assert!(bad.headers.is_empty());
        let reason = bad.malformed.unwrap();
        assert!(
            reason.contains("column `headers`") && reason.contains("JSON object"),
            "{reason}"
        );
        assert!(Arc::ptr_eq(&m.topic, &bad.topic), "topics are shared");
    }

    #[test]
    fn an_unfit_column_names_itself_and_keeps_the_route() {
        let m = UnfitColumn::new("created_at", "is `infinity`").into_message(9, Some("orders"), Some(b"k"));
        assert_eq!(
            (m.id, &*m.topic, m.key.as_deref()),
            (9, "orders", Some(&b"k"[..]))
        );
        let reason = m.malformed.unwrap();
        assert!(reason.contains("column `created_at` is `infinity`"), "{reason}");
        let unrouted = UnfitColumn::new("topic", "is not UTF-8").into_message(1, None, None);
        assert!(unrouted.topic.is_empty() && unrouted.key.is_none());
    }
}
