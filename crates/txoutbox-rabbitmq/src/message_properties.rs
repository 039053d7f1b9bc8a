//! The AMQP properties of a message: persistent, its message id and creation time, the row's
//! headers, the key, the ids as headers.

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use txoutbox_core::{CREATED_AT_HEADER, MESSAGE_ID_HEADER, OutboxMessage};

/// The header carrying the key (its bytes as they are: AMQP long strings are binary).
pub const KEY_HEADER: &str = "txoutbox-key";

/// The most header bytes (names, values, the key) a message may carry: the content header must fit
/// one frame (`frame_max`, 131,072 bytes by default), or the broker closes the connection.
const MAX_HEADER_BYTES: usize = 120_000;

/// AMQP's persistent delivery mode: the broker writes the message to disk (for a durable queue).
const PERSISTENT: u8 = 2;

/// The properties of `message` and the bytes its headers take, or why a header of the row cannot
/// travel in an AMQP message (a name longer than 255 bytes).
pub(crate) fn message_properties(
    message: &OutboxMessage,
    created_at: &str,
) -> Result<(BasicProperties, usize), String> {
    let mut headers = FieldTable::default();
    let mut size = 0;
    for (name, value) in message.headers.iter() {
        if ["CC", "BCC", KEY_HEADER, MESSAGE_ID_HEADER, CREATED_AT_HEADER]
            .iter()
            .any(|n| name.eq_ignore_ascii_case(n))
        {
            return Err(format!(
                "the row does not fit the outbox table contract for RabbitMQ: header {name:?} is the \
                 broker's (`CC`, `BCC` route a message to more queues) or one the sink \
                 writes (`txoutbox-key`, `txoutbox-message-id`, `txoutbox-created-at`); a row may not set it"
            ));
        }
        let key = ShortString::try_new(name.as_str()).map_err(|_| {
            format!(
                "the row does not fit the outbox table contract for RabbitMQ: a header name is {} bytes \
                 long, longer than the 255 an AMQP field name holds",
                name.len()
            )
        })?;
        size += name.len() + value.len();
        append(&mut headers, key, value.as_bytes());
    }
    if let Some(key) = &message.key {
        size += key.len();
        append(&mut headers, ShortString::from(KEY_HEADER), key);
    }
    if size > MAX_HEADER_BYTES {
        return Err(format!(
            "the row does not fit the outbox table contract for RabbitMQ: its headers and key take \
             {size} bytes, more than an AMQP frame carries ({MAX_HEADER_BYTES} of the broker's \
             default frame_max of 131,072)"
        ));
    }
    append(
        &mut headers,
        ShortString::from(MESSAGE_ID_HEADER),
        message.message_id.as_bytes(),
    );
    append(
        &mut headers,
        ShortString::from(CREATED_AT_HEADER),
        created_at.as_bytes(),
    );
    let mut properties = BasicProperties::default()
        .with_delivery_mode(PERSISTENT)
        .with_timestamp(u64::try_from(message.created_at.timestamp()).unwrap_or(0))
        .with_headers(headers);
    if let Ok(id) = ShortString::try_new(&*message.message_id) {
        properties = properties.with_message_id(id);
    }
    Ok((properties, size))
}

/// Adds a header; a name given twice holds an array of its values, in order.
fn append(headers: &mut FieldTable, name: ShortString, value: &[u8]) {
    let value = AMQPValue::LongString(LongString::from(value.to_vec()));
    let merged = match headers.inner().get(&name) {
        None => value,
        Some(AMQPValue::FieldArray(values)) => {
            let mut values = values.clone();
            values.push(value);
            AMQPValue::FieldArray(values)
        }
        Some(first) => AMQPValue::FieldArray(FieldArray::from(vec![first.clone(), value])),
    };
    headers.insert(name, merged);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(key: Option<&[u8]>, headers: &[(&str, &str)]) -> OutboxMessage {
        txoutbox_testing::sinks::message(7, "t", key, b"", headers)
    }

    fn text(value: &AMQPValue) -> Vec<u8> {
        match value {
            AMQPValue::LongString(s) => s.as_bytes().to_vec(),
            other => panic!("not a long string: {other:?}"),
        }
    }

    #[test]
    fn maps_the_row() {
        let m = message(Some(&[0xff, b'k']), &[("b", "2"), ("a", "1"), ("b", "3")]);
        let (p, size) = message_properties(&m, "2026-12-07T00:00:00.000000Z").unwrap();
        assert_eq!(p.delivery_mode(), &Some(2));
        assert_eq!(p.message_id().as_ref().map(|s| s.as_str()), Some(&*m.message_id));
        let h = p.headers().as_ref().unwrap().inner();
        let AMQPValue::FieldArray(b) = &h["b"] else {
            panic!("{h:?}")
        };
        assert_eq!(
            b.as_slice().iter().map(text).collect::<Vec<_>>(),
            [b"2".to_vec(), b"3".to_vec()]
        );
        assert_eq!(text(&h["a"]), b"1");
        assert_eq!(text(&h[KEY_HEADER]), [0xff, b'k']);
        assert_eq!(text(&h[MESSAGE_ID_HEADER]), m.message_id.as_bytes());
        assert_eq!(text(&h[CREATED_AT_HEADER]), b"2026-12-07T00:00:00.000000Z");
        assert_eq!(size, 6 + 2);
    }

    #[test]
    fn refuses_headers_that_steer_the_broker_or_forge_ours() {
        for name in [
            "CC",
            "bcc",
            "txoutbox-message-id",
            "TXOUTBOX-KEY",
            "txoutbox-created-at",
        ] {
            let e = message_properties(&message(None, &[(name, "q")]), "t").unwrap_err();
            assert!(e.contains("may not set it"), "{name}: {e}");
        }
        let copy = message(
            None,
            &[
                ("txoutbox-dead-letter-topic", "orders"),
                ("txoutbox-dead-letter-error", "x"),
            ],
        );
        assert!(
            message_properties(&copy, "t").is_ok(),
            "a dead-letter copy's headers travel"
        );
        let big = "v".repeat(130_000);
        let e = message_properties(&message(None, &[("big", &big)]), "t").unwrap_err();
        assert!(e.contains("frame"), "{e}");
    }

    #[test]
    fn refuses_a_header_name_amqp_cannot_carry() {
        let long = "n".repeat(256);
        let e = message_properties(&message(None, &[(&long, "v")]), "t").unwrap_err();
        assert!(e.contains("256 bytes"), "{e}");
    }
}
