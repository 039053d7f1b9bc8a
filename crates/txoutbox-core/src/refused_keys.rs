//! The keys a sink must hold back for the rest of a batch once one of their messages was refused.

use std::collections::HashSet;

use crate::message::OutboxMessage;

/// The keys (topic and key) of a batch whose message a sink refused before its transport took it:
/// the later messages of those keys in the batch must not be sent ([`crate::SinkError::deferred`]),
/// or they would overtake the refused one. Messages without a key are never held.
#[derive(Debug, Default)]
pub struct RefusedKeys<'a> {
    keys: HashSet<(&'a str, &'a [u8])>,
}

impl<'a> RefusedKeys<'a> {
    /// Whether an earlier message of `message`'s key was refused.
    pub fn holds(&self, message: &'a OutboxMessage) -> bool {
        !self.keys.is_empty()
            && message
                .key
                .as_deref()
                .is_some_and(|key| self.keys.contains(&(&*message.topic, key)))
    }

    /// Records that `message` was refused: its key's later messages are held.
    pub fn refuse(&mut self, message: &'a OutboxMessage) {
        if let Some(key) = message.key.as_deref() {
            self.keys.insert((&*message.topic, key));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(topic: &str, key: Option<&[u8]>) -> OutboxMessage {
        let mut m = OutboxMessage::unreadable(1, "x");
        m.topic = topic.into();
        m.key = key.map(bytes::Bytes::copy_from_slice);
        m
    }

    #[test]
    fn holds_the_refused_key_of_its_topic_only() {
        let (a, a2, b, other_topic, none) = (
            message("t", Some(b"a")),
            message("t", Some(b"a")),
            message("t", Some(b"b")),
            message("u", Some(b"a")),
            message("t", None),
        );
        let mut refused = RefusedKeys::default();
        assert!(!refused.holds(&a));
        refused.refuse(&a);
        refused.refuse(&none);
        assert!(refused.holds(&a2));
        assert!(!refused.holds(&b));
        assert!(!refused.holds(&other_topic));
        assert!(!refused.holds(&none));
    }
}
