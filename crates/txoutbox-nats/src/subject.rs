//! The subject a message is published to: a template over its topic and key, and NATS's rules
//! for the subject it gives.

use txoutbox_core::{Error, Result};

/// Where the topic goes in a template.
const TOPIC: &str = "{topic}";
/// Where the key goes in a template.
const KEY: &str = "{key}";

/// The subject of each message, from a template such as `{topic}` (the default), `orders.{topic}`
/// or `{topic}.{key}`: `{topic}` is replaced by the message's topic, `{key}` by its key (which
/// must then be one valid subject token: UTF-8 without `.`, whitespace or wildcards).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectTemplate {
    text: String,
    uses_key: bool,
}

impl Default for SubjectTemplate {
    fn default() -> Self {
        Self {
            text: TOPIC.to_owned(),
            uses_key: false,
        }
    }
}

impl SubjectTemplate {
    /// Parses a template; it must name `{topic}`, and any other text must be valid in a subject.
    pub fn new(text: &str) -> Result<Self> {
        let bad = |why: &str| {
            Err(Error::Config(format!(
                "NATS subject template {text:?}: {why} (e.g. `{{topic}}`, `outbox.{{topic}}` or `{{topic}}.{{key}}`)"
            )))
        };
        if !text.contains(TOPIC) {
            return bad("it must contain {topic}");
        }
        let literal = text.replace(TOPIC, "t").replace(KEY, "k");
        if literal.contains(['{', '}']) {
            return bad("only {topic} and {key} are placeholders");
        }
        if let Err(why) = check_subject(&literal) {
            return bad(&why);
        }
        Ok(Self {
            text: text.to_owned(),
            uses_key: text.contains(KEY),
        })
    }

    /// The template as given.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The subject of a message of `topic` and `key`, or why it has none.
    pub(crate) fn render(&self, topic: &str, key: Option<&[u8]>) -> std::result::Result<String, String> {
        let mut subject = self.text.replace(TOPIC, topic);
        if self.uses_key {
            let key = key.ok_or("the subject template uses {key} and the message has no key")?;
            let token = std::str::from_utf8(key)
                .map_err(|_| "the subject template uses {key} and the key is not UTF-8".to_owned())?;
            if token.is_empty() || token.contains(['.', '*', '>']) || token.chars().any(forbidden) {
                return Err(format!(
                    "the subject template uses {{key}} and the key {token:?} is no subject token \
                     (not empty; no `.`, `*`, `>`, whitespace or control characters)"
                ));
            }
            subject = subject.replace(KEY, token);
        }
        check_subject(&subject).map(|()| subject)
    }
}

/// A character no subject holds.
fn forbidden(c: char) -> bool {
    c.is_whitespace() || c.is_control()
}

/// NATS's rules for a subject a message is published to: tokens separated by `.`, none empty,
/// none a wildcard (`*`, `>`), no whitespace or control characters.
pub(crate) fn check_subject(subject: &str) -> std::result::Result<(), String> {
    let shown: String = subject.chars().take(100).collect();
    let more = if shown.len() < subject.len() { "…" } else { "" };
    let fail = |why: &str| Err(format!("subject {shown:?}{more} is no valid NATS subject: {why}"));
    if subject.is_empty() {
        return fail("it is empty");
    }
    if subject.chars().any(forbidden) {
        return fail("it holds whitespace or control characters");
    }
    for token in subject.split('.') {
        if token.is_empty() {
            return fail("it has an empty token (a leading, trailing or doubled `.`)");
        }
        if token == "*" || token == ">" {
            return fail("messages cannot be published to a wildcard (`*`, `>`)");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_topic_and_key() {
        let t = SubjectTemplate::default();
        assert_eq!(t.render("orders", None).unwrap(), "orders");
        let t = SubjectTemplate::new("outbox.{topic}.{key}").unwrap();
        assert_eq!(t.render("orders", Some(b"o-1")).unwrap(), "outbox.orders.o-1");
        for key in [&b""[..], b"a.b", b"a b", b"*", b">", b"\xff"] {
            assert!(t.render("orders", Some(key)).is_err(), "{key:?}");
        }
        assert!(t.render("orders", None).unwrap_err().contains("no key"));
    }

    #[test]
    fn refuses_bad_templates_and_subjects() {
        for bad in [
            "orders",
            "{topic}.",
            "a..{topic}",
            "{topic}.*",
            "{topic}.>",
            "{topic} x",
            "{topic}.{id}",
        ] {
            assert!(SubjectTemplate::new(bad).is_err(), "{bad}");
        }
        let t = SubjectTemplate::default();
        for topic in ["", ".a", "a.", "a..b", "a b", "a\nb", "*", "a.>"] {
            let e = t.render(topic, None).unwrap_err();
            assert!(e.contains("no valid NATS subject"), "{topic:?}: {e}");
        }
        assert!(t.render("a.b-c_d", None).is_ok());
    }
}
