//! The fields of a stream entry: the message's ids, key and payload, then its headers.

use txoutbox_core::{CREATED_AT_HEADER, MESSAGE_ID_HEADER, OutboxMessage};

/// The field holding the key's bytes as they are (absent when the message has none).
pub const KEY_FIELD: &str = "txoutbox-key";

/// The field holding the payload (absent for a `NULL` payload).
pub const PAYLOAD_FIELD: &str = "payload";

/// The prefix of a header's field: header `traceparent` is field `header:traceparent`.
pub const HEADER_FIELD_PREFIX: &str = "header:";

/// The entry's field-value pairs in order — message id, creation time, key, payload, then every
/// header as `header:<name>` in the row's order (a name given twice is two fields) — and their
/// size in bytes.
pub(crate) fn entry_fields(message: &OutboxMessage, created_at: &str) -> (Vec<(String, Vec<u8>)>, usize) {
    let mut fields = Vec::with_capacity(4 + message.headers.len());
    fields.push((
        MESSAGE_ID_HEADER.to_owned(),
        message.message_id.as_bytes().to_vec(),
    ));
    fields.push((CREATED_AT_HEADER.to_owned(), created_at.as_bytes().to_vec()));
    if let Some(key) = &message.key {
        fields.push((KEY_FIELD.to_owned(), key.to_vec()));
    }
    if let Some(payload) = &message.payload {
        fields.push((PAYLOAD_FIELD.to_owned(), payload.to_vec()));
    }
    for (name, value) in message.headers.iter() {
        fields.push((format!("{HEADER_FIELD_PREFIX}{name}"), value.as_bytes().to_vec()));
    }
    let size = fields.iter().map(|(f, v)| f.len() + v.len()).sum();
    (fields, size)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn fields_in_order() {
        let mut m = OutboxMessage::unreadable(7, "x");
        m.malformed = None;
        m.message_id = Arc::from("id-7");
        m.key = Some(bytes::Bytes::from_static(&[0xff, b'k']));
        m.payload = Some(bytes::Bytes::from_static(b"p"));
        m.headers = vec![
            ("b".to_owned(), "2".to_owned()),
            ("a".to_owned(), "1".to_owned()),
            ("b".to_owned(), "3".to_owned()),
        ]
        .into();
        let (fields, _) = entry_fields(&m, "now");
        let names: Vec<&str> = fields.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            names,
            [
                MESSAGE_ID_HEADER,
                CREATED_AT_HEADER,
                KEY_FIELD,
                PAYLOAD_FIELD,
                "header:b",
                "header:a",
                "header:b"
            ]
        );
        assert_eq!(fields[2].1, [0xff, b'k']);
        m.payload = None;
        m.key = None;
        let (fields, _) = entry_fields(&m, "now");
        assert!(!fields.iter().any(|(f, _)| f == PAYLOAD_FIELD || f == KEY_FIELD));
    }
}
