//! Where a record's message id comes from.

use std::sync::Arc;

use crate::message::{InboxMessage, position_id};

/// The header the txoutbox relay puts on every record: the message's UUID.
pub const MESSAGE_ID_HEADER: &str = "txoutbox-message-id";

/// The longest message id the inbox table holds, in bytes.
pub const MAX_MESSAGE_ID_BYTES: usize = 512;

/// An application's function from a record to its id (`None`: the record has none).
pub type DeriveId = Arc<dyn Fn(&InboxMessage) -> Option<String> + Send + Sync>;

/// How the inbox finds a record's message id, the key it de-duplicates by.
///
/// Whatever the source, a record without a usable id (none, not UTF-8, empty, with a NUL
/// character, or longer than [`MAX_MESSAGE_ID_BYTES`]) gets its position, `topic/partition/offset`: re-deliveries of that
/// record are still recognised, but a copy the producer sent twice is not.
#[derive(Clone, Default)]
pub enum MessageIdSource {
    /// The [`MESSAGE_ID_HEADER`] header, as txoutbox's relay writes it. The default.
    #[default]
    TxoutboxHeader,
    /// Another header (e.g. a CloudEvents `ce_id`).
    Header(String),
    /// The position only: no producer-side de-duplication.
    Position,
    /// An id the application derives from the record (e.g. from a field of the payload).
    Derived(DeriveId),
}

impl std::fmt::Debug for MessageIdSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TxoutboxHeader => f.write_str("TxoutboxHeader"),
            Self::Header(name) => f.debug_tuple("Header").field(name).finish(),
            Self::Position => f.write_str("Position"),
            Self::Derived(_) => f.write_str("Derived(..)"),
        }
    }
}

impl MessageIdSource {
    /// Sets `message`'s id from this source; returns whether the source gave a usable one.
    pub(crate) fn assign(&self, message: &mut InboxMessage) -> bool {
        let found = match self {
            Self::TxoutboxHeader => message.header_str(MESSAGE_ID_HEADER).map(str::to_owned),
            Self::Header(name) => message.header_str(name).map(str::to_owned),
            Self::Position => None,
            Self::Derived(derive) => derive(message),
        };
        match found {
            // NUL: text columns of PostgreSQL refuse it.
            Some(id) if !id.is_empty() && id.len() <= MAX_MESSAGE_ID_BYTES && !id.contains('\0') => {
                message.id = id;
                true
            }
            _ => {
                message.id = position_id(&message.topic, message.partition, message.offset);
                matches!(self, Self::Position)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_then_position() {
        let mut m = InboxMessage::new("t", 0, 3).with_header(MESSAGE_ID_HEADER, "abc");
        assert!(MessageIdSource::default().assign(&mut m));
        assert_eq!(m.id(), "abc");
        let mut m = InboxMessage::new("t", 0, 3).with_header(MESSAGE_ID_HEADER, "x".repeat(513));
        assert!(!MessageIdSource::default().assign(&mut m));
        assert_eq!(m.id(), "t/0/3");
        let mut m = InboxMessage::new("t", 1, 4).with_payload("p9");
        let derived = MessageIdSource::Derived(Arc::new(|m| {
            m.payload().map(|p| String::from_utf8_lossy(p).into_owned())
        }));
        assert!(derived.assign(&mut m));
        assert_eq!(m.id(), "p9");
        let mut m = InboxMessage::new("t", 1, 4).with_header(MESSAGE_ID_HEADER, "a\0b");
        assert!(!MessageIdSource::default().assign(&mut m));
        assert_eq!(m.id(), "t/1/4");
        let mut m = InboxMessage::new("t", 1, 4).with_header(MESSAGE_ID_HEADER, "abc");
        assert!(MessageIdSource::Position.assign(&mut m));
        assert_eq!(m.id(), "t/1/4");
    }
}
