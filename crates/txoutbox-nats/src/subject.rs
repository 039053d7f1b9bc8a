//! The subject a message is published to: a template over its topic and key, and NATS's rules
//! for the subject it gives.

use txoutbox_core::{Error, NameTemplate, Result};

/// The subject of each message, from a template such as `{topic}` (the default), `orders.{topic}`
/// or `{topic}.{key}` ([`NameTemplate`]): with `{key}`, the key must be one valid subject token
/// (UTF-8 without `.`, whitespace or wildcards).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubjectTemplate {
    template: NameTemplate,
}

impl SubjectTemplate {
    /// Parses a template; any text besides the placeholders must be valid in a subject.
    pub fn new(text: &str) -> Result<Self> {
        let bad = |why: &str| {
            Err(Error::Config(format!(
                "NATS subject template {text:?}: {why} (e.g. `{{topic}}`, `outbox.{{topic}}` or `{{topic}}.{{key}}`)"
            )))
        };
        let template = match NameTemplate::new(text) {
            Ok(template) => template,
            Err(why) => return bad(&why),
        };
        if let Err(why) = check_subject(&template.with("t", "k")) {
            return bad(&why);
        }
        Ok(Self { template })
    }

    /// The template as given.
    pub fn as_str(&self) -> &str {
        self.template.as_str()
    }

    /// The subject of a message of `topic` and `key`, or why it has none.
    pub(crate) fn render(&self, topic: &str, key: Option<&[u8]>) -> std::result::Result<String, String> {
        if self.template.uses_key()
            && let Some(token) = key.and_then(|k| std::str::from_utf8(k).ok())
            && (token.is_empty() || token.contains(['.', '*', '>']) || token.chars().any(forbidden))
        {
            return Err(format!(
                "the subject template uses {{key}} and the key {token:?} is no subject token \
                 (not empty; no `.`, `*`, `>`, whitespace or control characters)"
            ));
        }
        let subject = self.template.render(topic, key)?;
        check_subject(&subject)?;
        if reserved(&subject) && !reserved(self.template.as_str()) {
            return Err(format!(
                "subject {subject:?} lies in NATS's own name space (`$…` holds JetStream's and the \
                 system's API, `_INBOX` replies): a row may not address it"
            ));
        }
        Ok(subject)
    }
}

/// The longest subject the sink publishes to (the server's protocol line, 4 KiB by default, holds
/// it with the reply subject and sizes).
const MAX_SUBJECT_BYTES: usize = 1024;

/// Whether a subject (or a template) begins in NATS's own name space.
fn reserved(subject: &str) -> bool {
    subject.starts_with('$') || subject.split('.').next() == Some("_INBOX")
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
    if subject.len() > MAX_SUBJECT_BYTES {
        return fail(&format!("it is longer than {MAX_SUBJECT_BYTES} bytes"));
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
        assert_eq!(
            SubjectTemplate::new("all.events")
                .unwrap()
                .render("x", None)
                .unwrap(),
            "all.events"
        );
    }

    #[test]
    fn refuses_bad_templates_and_subjects() {
        for bad in [
            "{topic}.",
            "a..{topic}",
            "{topic}.*",
            "{topic}.>",
            "{topic} x",
            "{topic}.{id}",
            "",
        ] {
            assert!(SubjectTemplate::new(bad).is_err(), "{bad}");
        }
        let t = SubjectTemplate::default();
        for topic in ["", ".a", "a.", "a..b", "a b", "a\nb", "*", "a.>"] {
            let e = t.render(topic, None).unwrap_err();
            assert!(e.contains("no valid NATS subject"), "{topic:?}: {e}");
        }
        assert!(t.render("a.b-c_d", None).is_ok());
        for system in [
            "$JS.API.STREAM.PURGE.ORDERS",
            "$SYS.REQ.SERVER.PING",
            "_INBOX.abc",
        ] {
            let e = t.render(system, None).unwrap_err();
            assert!(e.contains("own name space"), "{system}: {e}");
        }
        assert!(
            SubjectTemplate::new("$events.{topic}")
                .unwrap()
                .render("a", None)
                .is_ok()
        );
        assert!(
            t.render(&"a".repeat(1025), None)
                .unwrap_err()
                .contains("longer than 1024")
        );
    }
}
