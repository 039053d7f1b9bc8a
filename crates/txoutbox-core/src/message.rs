//! Messages on their way in (written by `publish`) and on their way out (read by the relay).

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// Name of the Kafka header carrying the message's stable id, for consumer de-duplication.
pub const MESSAGE_ID_HEADER: &str = "txoutbox-message-id";
/// Name of the Kafka header carrying the message's creation time (RFC 3339, UTC).
pub const CREATED_AT_HEADER: &str = "txoutbox-created-at";

/// A message encoded for its topic, ready to be written to the outbox table.
#[derive(Debug, Clone, PartialEq)]
pub struct NewMessage {
    /// Stable id (UUID v7), sent as the `txoutbox-message-id` header.
    pub message_id: Uuid,
    /// The Kafka topic.
    pub topic: String,
    /// The Kafka record key; `None` lets the partitioner spread the records.
    pub key: Option<Vec<u8>>,
    /// The record value; `None` is a tombstone.
    pub payload: Option<Vec<u8>>,
    /// User headers, in order.
    pub headers: Vec<(String, String)>,
    /// How it reaches Kafka (from its topic).
    pub strategy: crate::publish_strategy::PublishStrategy,
}

impl NewMessage {
    /// Refuses what no outbox takes, before anything is written: an empty topic
    /// (`InvalidTopicName`). Other names the broker refuses are the relay's to dead-letter, as for
    /// any writer's rows.
    pub fn check(&self) -> crate::Result<()> {
        if self.topic.is_empty() {
            return Err(crate::Error::InvalidTopicName {
                name: String::new(),
                reason: "it is empty",
            });
        }
        Ok(())
    }

    /// The row as the relay would read it, once written with `id` at `created_at`.
    pub fn into_outbox_message(self, id: i64, created_at: DateTime<Utc>) -> OutboxMessage {
        OutboxMessage {
            id,
            message_id: message_id_text(&self.message_id),
            topic: self.topic.into(),
            key: self.key.map(Bytes::from),
            payload: self.payload.map(Bytes::from),
            headers: self.headers.into(),
            created_at,
            attempts: 0,
            next_attempt_at: None,
            bucket: 0,
            malformed: None,
        }
    }

    /// The headers as the JSON object stored in the table's `headers` column (`None` when empty).
    pub fn headers_json(&self) -> Option<String> {
        headers_to_json(&self.headers)
    }
}

/// Encodes headers as the table contract's JSON object (`{"name": "value", ...}`).
pub fn headers_to_json(headers: &[(String, String)]) -> Option<String> {
    if headers.is_empty() {
        return None;
    }
    let map: serde_json::Map<String, serde_json::Value> = headers
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    Some(serde_json::Value::Object(map).to_string())
}

/// Decodes the table's `headers` column. Non-string values (from foreign writers) are kept as
/// their JSON text, exactly as written; a name given twice keeps its last value in its first
/// place; anything that is not a JSON object (or `null`) is an error message for the row.
pub fn headers_from_json(json: Option<&str>) -> Result<Vec<(String, String)>, String> {
    let Some(json) = json else {
        return Ok(Vec::new());
    };
    match serde_json::from_str::<HeadersJson<'_>>(json) {
        Ok(HeadersJson::Null) => Ok(Vec::new()),
        Ok(HeadersJson::Object(members)) => {
            let mut headers = indexmap::IndexMap::with_capacity(members.len());
            for (name, value) in members {
                let text = if value.get().starts_with('"') {
                    serde_json::from_str::<String>(value.get())
                        .map_err(|e| format!("is not valid JSON: {e}"))?
                } else {
                    value.get().to_owned()
                };
                headers.insert(name, text);
            }
            Ok(headers.into_iter().collect())
        }
        Ok(HeadersJson::Other(raw)) => Err(format!(
            "must hold a JSON object of strings, not {}",
            match raw.get().as_bytes().first() {
                Some(b'[') => "an array",
                Some(b'"') => "a string",
                Some(b't' | b'f') => "a boolean",
                _ => "a number",
            }
        )),
        Err(e) => Err(format!("is not valid JSON: {e}")),
    }
}

/// The `headers` column's JSON, its members' values as written.
enum HeadersJson<'a> {
    Null,
    Object(Vec<(String, &'a serde_json::value::RawValue)>),
    Other(&'a serde_json::value::RawValue),
}

impl<'de> serde::Deserialize<'de> for HeadersJson<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = <&serde_json::value::RawValue>::deserialize(deserializer)?;
        match raw.get().as_bytes().first() {
            Some(b'n') => Ok(Self::Null),
            Some(b'{') => {
                let members: Members<'de> =
                    serde_json::from_str(raw.get()).map_err(serde::de::Error::custom)?;
                Ok(Self::Object(members.0))
            }
            _ => Ok(Self::Other(raw)),
        }
    }
}

/// An object's members in order, values unparsed.
struct Members<'a>(Vec<(String, &'a serde_json::value::RawValue)>);

impl<'de> serde::Deserialize<'de> for Members<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(0).min(64));
                while let Some(member) = map.next_entry::<String, &'de serde_json::value::RawValue>()? {
                    members.push(member);
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

/// A UUID in its hyphenated text form, as the `txoutbox-message-id` header carries it.
pub fn message_id_text(id: &Uuid) -> Arc<str> {
    Arc::from(&*id.hyphenated().encode_lower(&mut Uuid::encode_buffer()))
}

/// A pending row as the relay reads it from the outbox table.
///
/// Cheap to clone: the text and byte fields are shared (reference-counted), so a store that
/// keeps messages until Kafka acknowledges them (the WAL store) hands out copies without copying
/// their contents.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxMessage {
    /// The row id: insertion order, which is the order messages of one key are sent in.
    pub id: i64,
    /// The stable message id sent as the `txoutbox-message-id` header.
    pub message_id: Arc<str>,
    /// The Kafka topic.
    pub topic: Arc<str>,
    /// The record key.
    pub key: Option<Bytes>,
    /// The record value.
    pub payload: Option<Bytes>,
    /// User headers, in order.
    pub headers: Arc<[(String, String)]>,
    /// When the row was written.
    pub created_at: DateTime<Utc>,
    /// Failed delivery attempts so far (transient failures do not count).
    pub attempts: i32,
    /// Not to be sent before this time (set after a failed attempt).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The row's bucket, derived from its key.
    pub bucket: i32,
    /// Set when the row cannot be sent at all (e.g. malformed headers from a foreign writer); the
    /// relay dead-letters such a row at once with this reason.
    pub malformed: Option<String>,
}

impl OutboxMessage {
    /// A row that could not be decoded (e.g. a foreign writer put text where bytes belong). The
    /// relay dead-letters it at once with `reason`, instead of stopping on it.
    pub fn unreadable(id: i64, reason: impl Into<String>) -> Self {
        Self {
            id,
            message_id: Arc::default(),
            topic: Arc::default(),
            key: None,
            payload: None,
            headers: Arc::default(),
            created_at: DateTime::<Utc>::default(),
            attempts: 0,
            next_attempt_at: None,
            bucket: 0,
            malformed: Some(reason.into()),
        }
    }

    /// A row whose topic, key, payload and headers add up to `size` bytes, more than the
    /// `limit` a message may have: read without its contents, dead-lettered at once. Its `topic`
    /// and `key` are kept when the store could still read them (a key parks, and a dead-letter
    /// copy goes by them).
    pub fn too_large(id: i64, size: u64, limit: usize, topic: Option<&str>, key: Option<&[u8]>) -> Self {
        let mut message = Self::unreadable(
            id,
            format!(
                "the message is too large to send: its topic, key, payload and headers are {size} bytes, \
                 more than the {limit} the relay reads (the sink's largest message, e.g. Kafka's \
                 `message.max.bytes`); raise that limit (and the topic's `max.message.bytes`), then \
                 replay it"
            ),
        );
        if let Some(topic) = topic.filter(|t| !t.is_empty()) {
            message.topic = Arc::from(topic);
        }
        message.key = key.map(Bytes::copy_from_slice);
        message
    }

    /// The bytes the message holds: topic, key, payload and headers (what a
    /// [`ReadLimit`](crate::ReadLimit) counts).
    pub fn size(&self) -> usize {
        self.topic.len()
            + self.key.as_ref().map_or(0, Bytes::len)
            + self.payload.as_ref().map_or(0, Bytes::len)
            + self.headers.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
    }

    /// Whether the row may be sent at `now` (no back-off pending).
    pub fn is_due(&self, now: DateTime<Utc>) -> bool {
        self.next_attempt_at.is_none_or(|at| at <= now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_and_foreign_values() {
        let headers = vec![("a".to_owned(), "1".to_owned()), ("b".to_owned(), "x".to_owned())];
        let json = headers_to_json(&headers).unwrap();
        let mut back = headers_from_json(Some(&json)).unwrap();
        back.sort();
        assert_eq!(back, headers);
        assert_eq!(headers_to_json(&[]), None);
        assert_eq!(
            headers_from_json(Some(r#"{"n": 5}"#)).unwrap(),
            vec![("n".to_owned(), "5".to_owned())]
        );
        assert!(headers_from_json(Some("[1]")).unwrap_err().contains("an array"));
        assert!(
            headers_from_json(Some("{"))
                .unwrap_err()
                .contains("not valid JSON")
        );
        // Values that are not strings as written (no float rounding), a repeated name's last
        // value in its first place, escapes of strings decoded.
        assert_eq!(
            headers_from_json(Some(
                r#"{"f": 1.9536196326595886e+281, "a": "x", "o": {"b": [1, 2]}, "f": 1.50, "e": "\u00e9\n"}"#
            ))
            .unwrap(),
            [("f", "1.50"), ("a", "x"), ("o", r#"{"b": [1, 2]}"#), ("e", "é\n")]
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        assert!(headers_from_json(Some("null")).unwrap().is_empty());
        assert!(headers_from_json(Some(" 5 ")).unwrap_err().contains("a number"));
    }
}
