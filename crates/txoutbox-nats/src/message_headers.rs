//! The headers of a NATS message: the row's own, then its key, message id and creation time, and
//! `Nats-Msg-Id` for the stream's de-duplication.

use async_nats::HeaderMap;
use async_nats::header::{HeaderName, HeaderValue, NATS_MESSAGE_ID};
use base64::Engine as _;
use txoutbox_core::{CREATED_AT_HEADER, MESSAGE_ID_HEADER, OutboxMessage};

/// The header carrying the key when it is plain text (see [`key_header`]).
pub const KEY_HEADER: &str = "txoutbox-key";
/// The header carrying the key, base64 (standard, padded), when it is not plain text.
pub const KEY_BASE64_HEADER: &str = "txoutbox-key-base64";

/// The prefix of the headers JetStream acts on (`Nats-Msg-Id`, `Nats-Rollup`, `Nats-TTL`,
/// `Nats-Expected-…`).
const NATS_PREFIX: &str = "Nats-";

/// The headers of `message`, or why a header of the row cannot travel in a NATS message.
///
/// NATS headers are text lines: a name of visible ASCII without `:`, a value without CR or LF.
/// A row whose header breaks those rules is refused as a whole rather than sent altered.
pub(crate) fn message_headers(message: &OutboxMessage, created_at: &str) -> Result<HeaderMap, String> {
    let mut headers = HeaderMap::new();
    for (name, value) in message.headers.iter() {
        if name
            .get(..NATS_PREFIX.len())
            .is_some_and(|prefix| prefix.eq_ignore_ascii_case(NATS_PREFIX))
        {
            return Err(format!(
                "the row does not fit the outbox table contract for NATS: header {:?} is one of \
                 JetStream's own (`Nats-…`), which steer the stream (roll-ups, expectations, \
                 de-duplication); a row may not set them",
                shorten(name)
            ));
        }
        let header_name: HeaderName = name.parse().map_err(|_| {
            format!(
                "the row does not fit the outbox table contract for NATS: header name {:?} is not \
                 visible ASCII without `:`, which NATS headers require",
                shorten(name)
            )
        })?;
        let header_value: HeaderValue = value.parse().map_err(|_| {
            format!(
                "the row does not fit the outbox table contract for NATS: the value of header {:?} \
                 holds a line break, which NATS headers cannot carry",
                shorten(name)
            )
        })?;
        headers.append(header_name, header_value);
    }
    if let Some(key) = &message.key {
        let (name, value) = key_header(key);
        headers.append(name, value);
    }
    headers.append(MESSAGE_ID_HEADER, &*message.message_id);
    headers.append(CREATED_AT_HEADER, created_at);
    headers.insert(NATS_MESSAGE_ID, &*message.message_id);
    Ok(headers)
}

/// The key as a header: [`KEY_HEADER`] with the key itself when it is UTF-8 without control
/// characters or surrounding whitespace (a header parser would trim that), else
/// [`KEY_BASE64_HEADER`] with its base64.
pub fn key_header(key: &[u8]) -> (&'static str, String) {
    match std::str::from_utf8(key) {
        Ok(text) if !text.chars().any(char::is_control) && text.trim() == text => {
            (KEY_HEADER, text.to_owned())
        }
        _ => (
            KEY_BASE64_HEADER,
            base64::engine::general_purpose::STANDARD.encode(key),
        ),
    }
}

/// At most the first 100 characters of a name, for error messages.
fn shorten(text: &str) -> String {
    let shown: String = text.chars().take(100).collect();
    if shown.len() < text.len() {
        format!("{shown}…")
    } else {
        shown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(key: Option<&[u8]>, headers: &[(&str, &str)]) -> OutboxMessage {
        txoutbox_testing::sinks::message(7, "t", key, b"", headers)
    }

    #[test]
    fn keys_go_as_text_or_base64() {
        assert_eq!(key_header(b"order-1"), (KEY_HEADER, "order-1".to_owned()));
        assert_eq!(key_header(b""), (KEY_HEADER, String::new()));
        assert_eq!(
            key_header(b" padded"),
            (KEY_BASE64_HEADER, "IHBhZGRlZA==".to_owned())
        );
        assert_eq!(key_header(b"a\nb").0, KEY_BASE64_HEADER);
        assert_eq!(key_header(&[0xff, 0]).0, KEY_BASE64_HEADER);
    }

    #[test]
    fn headers_in_order_then_ours() {
        let m = message(Some(b"k"), &[("b", "2"), ("a", "1"), ("b", "3")]);
        let h = message_headers(&m, "2026-12-07T00:00:00.000000Z").unwrap();
        assert_eq!(h.get_all("b").map(|v| v.as_str()).collect::<Vec<_>>(), ["2", "3"]);
        assert_eq!(h.get("a").unwrap().as_str(), "1");
        assert_eq!(h.get(KEY_HEADER).unwrap().as_str(), "k");
        assert_eq!(h.get(MESSAGE_ID_HEADER).unwrap().as_str(), &*m.message_id);
        assert_eq!(h.get(NATS_MESSAGE_ID).unwrap().as_str(), &*m.message_id);
        assert_eq!(
            h.get(CREATED_AT_HEADER).unwrap().as_str(),
            "2026-12-07T00:00:00.000000Z"
        );
    }

    #[test]
    fn refuses_what_nats_headers_cannot_carry() {
        let e = message_headers(&message(None, &[("a b", "1")]), "t").unwrap_err();
        assert!(e.contains("header name \"a b\""), "{e}");
        let e = message_headers(&message(None, &[("a:b", "1")]), "t").unwrap_err();
        assert!(e.contains("visible ASCII"), "{e}");
        let e = message_headers(&message(None, &[("a", "x\r\nPUB evil 0")]), "t").unwrap_err();
        assert!(e.contains("line break"), "{e}");
        for name in ["Nats-Rollup", "nats-msg-id", "NATS-TTL"] {
            let e = message_headers(&message(None, &[(name, "all")]), "t").unwrap_err();
            assert!(e.contains("JetStream's own"), "{e}");
        }
    }
}
