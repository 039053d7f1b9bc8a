//! The headers of a Kafka record: the message's own, then the message id and creation time.

use rdkafka::message::{Header, OwnedHeaders};
use txoutbox_core::{CREATED_AT_HEADER, MESSAGE_ID_HEADER, OutboxMessage};

/// The record headers of a message: the user's, then the message id and creation time.
pub(crate) fn record_headers(message: &OutboxMessage, stamps: &mut CreatedAtText) -> OwnedHeaders {
    let created_at = stamps.format(message.created_at);
    let mut headers = OwnedHeaders::new_with_capacity(message.headers.len() + 2);
    for (name, value) in message.headers.iter() {
        headers = headers.insert(Header {
            key: name,
            value: Some(value.as_bytes()),
        });
    }
    headers
        .insert(Header {
            key: MESSAGE_ID_HEADER,
            value: Some(message.message_id.as_bytes()),
        })
        .insert(Header {
            key: CREATED_AT_HEADER,
            value: Some(created_at.as_bytes()),
        })
}

/// The creation-time header's text, formatted once for a run of messages written at the same
/// time (a transaction's messages in WAL mode, a `publish_all` batch).
#[derive(Default)]
pub(crate) struct CreatedAtText {
    last: Option<(chrono::DateTime<chrono::Utc>, String)>,
}

impl CreatedAtText {
    /// RFC 3339 in UTC with microseconds.
    pub(crate) fn format(&mut self, at: chrono::DateTime<chrono::Utc>) -> &str {
        if self.last.as_ref().is_none_or(|(last, _)| *last != at) {
            self.last = Some((at, at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)));
        }
        self.last.as_ref().map_or("", |(_, text)| text.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_at_text_is_rfc3339_micros_and_follows_the_time() {
        let mut stamps = CreatedAtText::default();
        let first = chrono::DateTime::from_timestamp_micros(1_764_400_000_123_456).unwrap();
        assert_eq!(stamps.format(first), "2025-11-29T07:06:40.123456Z");
        assert_eq!(stamps.format(first), "2025-11-29T07:06:40.123456Z");
        let later = first + chrono::TimeDelta::microseconds(1);
        assert_eq!(stamps.format(later), "2025-11-29T07:06:40.123457Z");
    }
}
