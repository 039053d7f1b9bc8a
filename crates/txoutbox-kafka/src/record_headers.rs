//! The headers of a Kafka record: the message's own, then the message id and creation time.

use rdkafka::message::{Header, OwnedHeaders};
use txoutbox_core::{CREATED_AT_HEADER, CreatedAtText, MESSAGE_ID_HEADER, OutboxMessage};

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
