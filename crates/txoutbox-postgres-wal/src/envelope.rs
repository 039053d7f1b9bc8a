//! The envelope of one message in the WAL: the content of a transactional logical message.
//!
//! Version 1, all integers big-endian (what `int4send` writes, so SQL can build it too):
//!
//! | bytes | field |
//! | --- | --- |
//! | 1 | version, `0x01` |
//! | 16 | message id (UUID, `uuid_send`) |
//! | 4 + n | topic: length, UTF-8 bytes |
//! | 4 + n | key: length (`-1` for none), bytes |
//! | 4 + n | payload: length (`-1` for a tombstone), bytes |
//! | 4 + n | headers: length (`-1` for none), a JSON object of strings (the table contract's `headers`) |

use std::sync::Arc;

use bytes::Bytes;
use txoutbox_core::{Interner, NewMessage, headers_from_json};
use uuid::Uuid;

/// The envelope version this crate writes and reads.
pub const ENVELOPE_VERSION: u8 = 1;

/// Encodes a message as a version-1 envelope.
pub fn encode(message: &NewMessage) -> Vec<u8> {
    let headers = message.headers_json();
    let len = 1
        + 16
        + 16
        + message.topic.len()
        + message.key.as_ref().map_or(0, Vec::len)
        + message.payload.as_ref().map_or(0, Vec::len)
        + headers.as_ref().map_or(0, String::len);
    let mut out = Vec::with_capacity(len);
    out.push(ENVELOPE_VERSION);
    out.extend_from_slice(message.message_id.as_bytes());
    put(&mut out, Some(message.topic.as_bytes()));
    put(&mut out, message.key.as_deref());
    put(&mut out, message.payload.as_deref());
    put(&mut out, headers.as_deref().map(str::as_bytes));
    out
}

fn put(out: &mut Vec<u8>, field: Option<&[u8]>) {
    match field {
        Some(bytes) => {
            let len = i32::try_from(bytes.len()).unwrap_or(i32::MAX);
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(bytes);
        }
        None => out.extend_from_slice(&(-1_i32).to_be_bytes()),
    }
}

/// A decoded envelope. Its key and payload share the envelope's buffer (no copy).
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// The stable message id.
    pub message_id: Uuid,
    /// The Kafka topic.
    pub topic: Arc<str>,
    /// The record key.
    pub key: Option<Bytes>,
    /// The record value.
    pub payload: Option<Bytes>,
    /// User headers, in order.
    pub headers: Vec<(String, String)>,
}

/// Decodes an envelope; the error says what is wrong with it (the relay dead-letters such a
/// message with that reason instead of stopping).
pub fn decode(bytes: &Bytes) -> Result<Envelope, String> {
    decode_with(bytes, &mut Interner::new())
}

/// [`decode`], sharing the topic names of a stream of envelopes through `topics`.
pub fn decode_with(bytes: &Bytes, topics: &mut Interner) -> Result<Envelope, String> {
    let mut r = Reader { bytes, at: 0 };
    let version = r.take(1)?.first().copied().unwrap_or_default();
    if version != ENVELOPE_VERSION {
        return Err(format!(
            "unknown envelope version {version} (this relay reads version {ENVELOPE_VERSION}): upgrade the relay"
        ));
    }
    let message_id = Uuid::from_slice(r.take(16)?).map_err(|e| e.to_string())?;
    let topic = r.field()?.ok_or("the topic is missing")?;
    let topic = std::str::from_utf8(topic).map_err(|_| "the topic is not UTF-8".to_owned())?;
    if topic.is_empty() {
        return Err("the topic is empty".into());
    }
    // No Kafka topic has one, and PostgreSQL's text (the dead-letter table's topic) cannot hold
    // a NUL: such a topic would stop the relay when it is dead-lettered.
    if topic.chars().any(char::is_control) {
        return Err(format!("the topic {topic:?} holds a control character"));
    }
    let topic = topics.get(topic);
    let key = r.field()?.map(|field| bytes.slice_ref(field));
    let payload = r.field()?.map(|field| bytes.slice_ref(field));
    let headers = match r.field()? {
        Some(json) => {
            let json = std::str::from_utf8(json).map_err(|_| "the headers are not UTF-8".to_owned())?;
            headers_from_json(Some(json)).map_err(|e| format!("the headers {e}"))?
        }
        None => Vec::new(),
    };
    if r.at != bytes.len() {
        return Err(format!("{} bytes after the last field", bytes.len() - r.at));
    }
    Ok(Envelope {
        message_id,
        topic,
        key,
        payload,
        headers,
    })
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| {
                format!(
                    "the envelope is truncated: {} bytes, needs {} at offset {}",
                    self.bytes.len(),
                    n,
                    self.at
                )
            })?;
        let out = self.bytes.get(self.at..end).unwrap_or_default();
        self.at = end;
        Ok(out)
    }

    fn field(&mut self) -> Result<Option<&'a [u8]>, String> {
        let len = i32::from_be_bytes(self.take(4)?.try_into().map_err(|_| "bad length")?);
        match len {
            -1 => Ok(None),
            n if n < 0 => Err(format!("negative field length {n}")),
            n => self.take(n as usize).map(Some),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> NewMessage {
        NewMessage {
            message_id: Uuid::now_v7(),
            topic: "orders".into(),
            key: Some(b"k1".to_vec()),
            payload: Some(b"{\"a\":1}".to_vec()),
            headers: vec![("origin".into(), "shop".into()), ("seq".into(), "7".into())],
            strategy: Default::default(),
        }
    }

    #[test]
    fn round_trip() {
        let m = message();
        let e = decode(&encode(&m).into()).unwrap();
        assert_eq!(e.message_id, m.message_id);
        assert_eq!(&*e.topic, m.topic);
        assert_eq!(e.key.as_deref(), m.key.as_deref());
        assert_eq!(e.payload.as_deref(), m.payload.as_deref());
        assert_eq!(e.headers, m.headers);
    }

    #[test]
    fn key_and_payload_share_the_envelope_buffer() {
        let bytes = Bytes::from(encode(&message()));
        let e = decode(&bytes).unwrap();
        let payload = e.payload.unwrap();
        let inside = bytes.as_ptr_range();
        assert!(
            inside.contains(&payload.as_ptr()),
            "the payload is a slice of the envelope"
        );
    }

    #[test]
    fn none_fields_round_trip() {
        let mut m = message();
        m.key = None;
        m.payload = None;
        m.headers.clear();
        let e = decode(&encode(&m).into()).unwrap();
        assert_eq!((e.key, e.payload, e.headers), (None, None, vec![]));
    }

    #[test]
    fn bad_envelopes_say_what_is_wrong() {
        let bytes = encode(&message());
        let decode = |b: &[u8]| decode(&Bytes::copy_from_slice(b));
        assert!(
            decode(&bytes[..bytes.len() - 1])
                .unwrap_err()
                .contains("truncated")
        );
        let mut v2 = bytes.clone();
        v2[0] = 2;
        assert!(decode(&v2).unwrap_err().contains("upgrade the relay"));
        let mut long = bytes;
        long.push(0);
        assert!(decode(&long).unwrap_err().contains("after the last field"));
        assert!(decode(&[]).unwrap_err().contains("truncated"));
        let mut nul = message();
        nul.topic = "a\0b".into();
        assert!(decode(&encode(&nul)).unwrap_err().contains("control character"));
    }
}
