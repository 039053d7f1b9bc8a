//! The topics a relay may publish to: an allow-list of names and wildcard patterns.

use std::fmt;

use wildmatch::WildMatch;

use crate::error::{Error, Result};

/// The topics a relay publishes to; a row naming any other topic is dead-lettered at once with
/// the reason, and its dead-letter copy (if any) goes to the `txoutbox-unreadable` name.
///
/// Writers choose a row's topic: anyone who may insert into the outbox table (or, in WAL mode,
/// call `pg_logical_emit_message`) can make the relay publish to any topic its Kafka principal
/// may write. An allow-list narrows that to what the services on this outbox publish.
///
/// Patterns are topic names in which `*` stands for any run of characters and `?` for one
/// character: `orders`, `orders.*`, `billing-?.events`.
///
/// ```
/// use txoutbox_core::relay::AllowedTopics;
///
/// let allowed = AllowedTopics::new(["orders.*", "billing"])?;
/// assert!(allowed.allows("orders.created"));
/// assert!(!allowed.allows("payments"));
/// # Ok::<(), txoutbox_core::Error>(())
/// ```
#[derive(Clone)]
pub struct AllowedTopics {
    patterns: Vec<(String, WildMatch)>,
}

impl AllowedTopics {
    /// An allow-list of these patterns (at least one). Each must be a valid topic name once its
    /// wildcards are taken out.
    pub fn new<I, P>(patterns: I) -> Result<Self>
    where
        I: IntoIterator<Item = P>,
        P: Into<String>,
    {
        let mut checked = Vec::new();
        for pattern in patterns {
            let pattern = pattern.into();
            let pattern = pattern.trim().to_owned();
            let literal: String = pattern.chars().filter(|c| !matches!(c, '*' | '?')).collect();
            if !literal.is_empty() {
                crate::topic::validate_topic_name(&literal).map_err(|e| {
                    Error::Config(format!(
                        "the allowed-topic pattern {pattern:?} cannot match a topic: {e}"
                    ))
                })?;
            } else if pattern.is_empty() {
                return Err(Error::Config("an allowed-topic pattern is empty".into()));
            }
            let matcher = WildMatch::new(&pattern);
            checked.push((pattern, matcher));
        }
        if checked.is_empty() {
            return Err(Error::Config(
                "the allowed topics list no pattern: give at least one (`*` allows every topic)".into(),
            ));
        }
        Ok(Self { patterns: checked })
    }

    /// Whether a row's topic is allowed.
    pub fn allows(&self, topic: &str) -> bool {
        self.patterns.iter().any(|(_, p)| p.matches(topic))
    }

    /// The patterns, as given.
    pub fn patterns(&self) -> impl Iterator<Item = &str> {
        self.patterns.iter().map(|(p, _)| p.as_str())
    }

    /// The dead letter's reason for a row whose topic is not allowed.
    pub(crate) fn refusal(&self, topic: &str) -> String {
        let shown: String = topic.chars().take(100).collect();
        let more = if shown.len() < topic.len() { "…" } else { "" };
        format!(
            "the topic {shown:?}{more} is not among the relay's allowed topics ({}): add a pattern for \
             it, then replay the message",
            self.patterns().collect::<Vec<_>>().join(", ")
        )
    }
}

impl fmt::Debug for AllowedTopics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.patterns()).finish()
    }
}

impl PartialEq for AllowedTopics {
    fn eq(&self, other: &Self) -> bool {
        self.patterns().eq(other.patterns())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_wildcards_match_whole_topics() {
        let allowed = AllowedTopics::new(["orders.*", "billing", "audit-?"]).unwrap();
        for yes in ["orders.created", "orders.", "billing", "audit-1"] {
            assert!(allowed.allows(yes), "{yes}");
        }
        for no in ["orders", "billing.x", "xbilling", "audit-12", "payments", ""] {
            assert!(!allowed.allows(no), "{no}");
        }
        assert!(AllowedTopics::new(["*"]).unwrap().allows("anything"));
        let reason = allowed.refusal("payments");
        assert!(
            reason.contains("\"payments\"") && reason.contains("orders.*, billing, audit-?"),
            "{reason}"
        );
    }

    #[test]
    fn patterns_that_cannot_match_a_topic_are_refused() {
        assert!(AllowedTopics::new(Vec::<String>::new()).is_err());
        assert!(AllowedTopics::new([""]).is_err());
        assert!(AllowedTopics::new(["orders created"]).is_err());
        assert!(AllowedTopics::new(["ordérs.*"]).is_err());
    }
}
