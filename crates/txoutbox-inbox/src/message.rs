//! One Kafka record as a handler sees it, with the id the inbox de-duplicates by.

use serde::de::DeserializeOwned;

/// A consumed record: where it came from, its key, payload and headers, and its message id.
///
/// `Debug` shows positions and sizes only, never key, payload or header values.
#[derive(Clone)]
pub struct InboxMessage {
    pub(crate) id: String,
    pub(crate) topic: String,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    pub(crate) key: Option<Vec<u8>>,
    pub(crate) payload: Option<Vec<u8>>,
    pub(crate) headers: Vec<(String, Option<Vec<u8>>)>,
    pub(crate) timestamp_millis: Option<i64>,
    pub(crate) replay: bool,
}

impl std::fmt::Debug for InboxMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboxMessage")
            .field("id", &self.id)
            .field("topic", &self.topic)
            .field("partition", &self.partition)
            .field("offset", &self.offset)
            .field("key_bytes", &self.key.as_ref().map(Vec::len))
            .field("payload_bytes", &self.payload.as_ref().map(Vec::len))
            .field("headers", &self.headers.len())
            .finish_non_exhaustive()
    }
}

impl InboxMessage {
    /// A message built by hand, e.g. to test a handler without a broker. Its id is the position
    /// (`topic/partition/offset`) until [`with_id`](Self::with_id) sets one.
    pub fn new(topic: impl Into<String>, partition: i32, offset: i64) -> Self {
        let topic = topic.into();
        Self {
            id: position_id(&topic, partition, offset),
            topic,
            partition,
            offset,
            key: None,
            payload: None,
            headers: Vec::new(),
            timestamp_millis: None,
            replay: false,
        }
    }

    /// Sets the message id.
    #[must_use]
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
    }

    /// Sets the key.
    #[must_use]
    pub fn with_key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sets the payload.
    #[must_use]
    pub fn with_payload(mut self, payload: impl Into<Vec<u8>>) -> Self {
        self.payload = Some(payload.into());
        self
    }

    /// Adds a header.
    #[must_use]
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name.into(), Some(value.into())));
        self
    }

    /// The id the inbox records: by default the `txoutbox-message-id` header, else the position.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The topic the record was read from.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The partition the record was read from.
    pub fn partition(&self) -> i32 {
        self.partition
    }

    /// The record's offset in its partition.
    pub fn offset(&self) -> i64 {
        self.offset
    }

    /// The record's key, if it has one.
    pub fn key(&self) -> Option<&[u8]> {
        self.key.as_deref()
    }

    /// The key as UTF-8 text, if it is.
    pub fn key_str(&self) -> Option<&str> {
        self.key().and_then(|k| std::str::from_utf8(k).ok())
    }

    /// The record's payload (`None` for a tombstone).
    pub fn payload(&self) -> Option<&[u8]> {
        self.payload.as_deref()
    }

    /// The payload decoded as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(self.payload().unwrap_or_default())
    }

    /// The first header of this name, if any.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.as_deref())
    }

    /// The first header of this name as UTF-8 text, if it is.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Every header, in the record's order.
    pub fn headers(&self) -> impl Iterator<Item = (&str, Option<&[u8]>)> {
        self.headers.iter().map(|(n, v)| (n.as_str(), v.as_deref()))
    }

    /// The record's timestamp, in milliseconds since the Unix epoch, if it has one.
    pub fn timestamp_millis(&self) -> Option<i64> {
        self.timestamp_millis
    }

    /// Whether this is a parked record an operator marked for replay (read back from the inbox
    /// table, not from Kafka: it has no timestamp).
    pub fn is_replay(&self) -> bool {
        self.replay
    }

    /// The bytes this message holds, with an estimate of the allocator's and the queue's share
    /// (counted against the consumer's memory bound).
    pub(crate) fn size_bytes(&self) -> usize {
        // What the allocator and the lane's queue add to each allocation and record, roughly:
        // small records cost several times their contents.
        const PER_ALLOCATION: usize = 32;
        const PER_RECORD: usize = 256;
        let headers: usize = self
            .headers
            .iter()
            .map(|(n, v)| n.len() + v.as_ref().map_or(0, Vec::len) + 2 * PER_ALLOCATION)
            .sum();
        self.id.len()
            + 2 * self.topic.len()
            + self.key.as_ref().map_or(0, Vec::len)
            + self.payload.as_ref().map_or(0, Vec::len)
            + headers
            + 6 * PER_ALLOCATION
            + std::mem::size_of::<Self>()
            + PER_RECORD
    }

    /// The headers as a JSON array of `[name, value]` pairs in the record's order, for a parked
    /// row: a UTF-8 value as a string, any other as `{"hex": "…"}`, a missing one as `null`.
    #[cfg_attr(
        not(any(feature = "postgres", feature = "sqlite", feature = "mysql")),
        allow(dead_code, reason = "used by the stores, which are behind features")
    )]
    pub(crate) fn headers_json(&self) -> String {
        use serde_json::Value;
        let pairs: Vec<Value> = self
            .headers
            .iter()
            .map(|(n, v)| {
                let value = match v.as_deref().map(|v| (v, std::str::from_utf8(v))) {
                    None => Value::Null,
                    Some((_, Ok(text))) => Value::String(text.to_owned()),
                    Some((bytes, Err(_))) => {
                        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                        serde_json::json!({ "hex": hex })
                    }
                };
                Value::Array(vec![Value::String(n.clone()), value])
            })
            .collect();
        Value::Array(pairs).to_string()
    }

    /// The headers back from [`headers_json`](Self::headers_json)'s form (nothing if malformed).
    #[cfg_attr(
        not(any(feature = "postgres", feature = "sqlite", feature = "mysql")),
        allow(dead_code, reason = "used by the stores, which are behind features")
    )]
    pub(crate) fn headers_from_json(json: &str) -> Vec<(String, Option<Vec<u8>>)> {
        let Ok(serde_json::Value::Array(pairs)) = serde_json::from_str::<serde_json::Value>(json) else {
            return Vec::new();
        };
        pairs
            .iter()
            .filter_map(|pair| {
                let name = pair.get(0)?.as_str()?.to_owned();
                let value = match pair.get(1)? {
                    serde_json::Value::String(text) => Some(text.as_bytes().to_vec()),
                    serde_json::Value::Object(object) => Some(from_hex(object.get("hex")?.as_str()?)?),
                    _ => None,
                };
                Some((name, value))
            })
            .collect()
    }
}

/// Bytes from lowercase or uppercase hex digits; `None` if malformed.
fn from_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A parked row's columns: message id, topic, partition, offset, key, payload, headers as JSON.
pub(crate) type ParkedRow = (
    String,
    String,
    i32,
    i64,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Option<String>,
);

/// A parked record back from its row.
#[cfg_attr(
    not(any(feature = "postgres", feature = "sqlite", feature = "mysql")),
    allow(dead_code, reason = "used by the stores, which are behind features")
)]
pub(crate) fn replayed_message(row: ParkedRow) -> InboxMessage {
    let (id, topic, partition, offset, key, payload, headers) = row;
    InboxMessage {
        id,
        topic,
        partition,
        offset,
        key,
        payload,
        headers: headers
            .as_deref()
            .map(InboxMessage::headers_from_json)
            .unwrap_or_default(),
        timestamp_millis: None,
        replay: true,
    }
}

/// The id of a record without one of its own: its position, unique in a cluster.
pub(crate) fn position_id(topic: &str, partition: i32, offset: i64) -> String {
    format!("{topic}/{partition}/{offset}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_headers_json_and_hides_values_in_debug() {
        let m = InboxMessage::new("orders", 2, 7)
            .with_key("k1")
            .with_payload(r#"{"n":5}"#)
            .with_header("a", "secret");
        assert_eq!(m.id(), "orders/2/7");
        assert_eq!(m.header_str("a"), Some("secret"));
        assert_eq!(m.key_str(), Some("k1"));
        let v: serde_json::Value = m.json().unwrap();
        assert_eq!(v["n"], 5);
        assert!(!format!("{m:?}").contains("secret"));
        let m = m
            .with_header("a", "twice")
            .with_header("bin", [0xff_u8, 0x00, 0x10]);
        assert_eq!(
            m.headers_json(),
            r#"[["a","secret"],["a","twice"],["bin",{"hex":"ff0010"}]]"#
        );
        assert_eq!(InboxMessage::headers_from_json(&m.headers_json()), m.headers);
        assert!(InboxMessage::headers_from_json("{").is_empty());
    }
}
