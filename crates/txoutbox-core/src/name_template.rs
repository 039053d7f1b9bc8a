//! A destination name built from a message's topic and key: a NATS subject, a RabbitMQ routing
//! key, a Redis stream key.

/// Where the topic goes in a template.
const TOPIC: &str = "{topic}";
/// Where the key goes in a template.
const KEY: &str = "{key}";

/// A name with `{topic}` and `{key}` replaced by a message's topic and key, e.g. `{topic}`,
/// `outbox.{topic}` or `{topic}.{key}`. Any other `{` or `}` is refused, so a misspelt
/// placeholder never becomes part of every name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameTemplate {
    text: String,
    uses_key: bool,
}

impl Default for NameTemplate {
    /// `{topic}`.
    fn default() -> Self {
        Self {
            text: TOPIC.to_owned(),
            uses_key: false,
        }
    }
}

impl NameTemplate {
    /// Parses a template; the error says what is wrong.
    pub fn new(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("it is empty".into());
        }
        if text.replace(TOPIC, "").replace(KEY, "").contains(['{', '}']) {
            return Err("only {topic} and {key} are placeholders".into());
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

    /// Whether the template holds `{key}`.
    pub fn uses_key(&self) -> bool {
        self.uses_key
    }

    /// The text the template leaves when the topic and the key are `topic` and `key`, for checks
    /// of the template's own characters.
    pub fn with(&self, topic: &str, key: &str) -> String {
        self.text.replace(TOPIC, topic).replace(KEY, key)
    }

    /// The name for a message of `topic` and `key`, or why it has none (a template with `{key}`
    /// needs a key in UTF-8).
    pub fn render(&self, topic: &str, key: Option<&[u8]>) -> Result<String, String> {
        let name = self.text.replace(TOPIC, topic);
        if !self.uses_key {
            return Ok(name);
        }
        let key = key.ok_or("the template uses {key} and the message has no key")?;
        let key = std::str::from_utf8(key)
            .map_err(|_| "the template uses {key} and the key is not UTF-8".to_owned())?;
        Ok(name.replace(KEY, key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_and_refuses() {
        assert_eq!(NameTemplate::default().render("t", None).unwrap(), "t");
        let t = NameTemplate::new("o.{topic}.{key}").unwrap();
        assert!(t.uses_key());
        assert_eq!(t.render("t", Some(b"k")).unwrap(), "o.t.k");
        assert!(t.render("t", None).unwrap_err().contains("no key"));
        assert!(t.render("t", Some(b"\xff")).unwrap_err().contains("UTF-8"));
        assert_eq!(
            NameTemplate::new("all").unwrap().render("t", None).unwrap(),
            "all"
        );
        for bad in ["", "{topic}.{id}", "{topic", "x}"] {
            assert!(NameTemplate::new(bad).is_err(), "{bad}");
        }
    }
}
