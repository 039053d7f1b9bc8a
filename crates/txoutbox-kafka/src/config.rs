//! Kafka producer settings: librdkafka properties with txoutbox's safe defaults.

use std::collections::BTreeMap;

use rdkafka::ClientConfig;
use txoutbox_core::{Error, Result};

/// Properties txoutbox sets unless the user sets them: the delivery guarantees rely on the first
/// two (idempotence keeps each partition's order across retries; `acks=all` survives a leader
/// loss), the rest trade a few milliseconds of latency for batching.
const DEFAULTS: &[(&str, &str)] = &[
    ("enable.idempotence", "true"),
    ("acks", "all"),
    ("linger.ms", "5"),
    ("client.id", "txoutbox"),
    // The Java client's partitioner: a key lands on the same partition whichever client wrote it.
    ("partitioner", "murmur2_random"),
    ("queue.buffering.max.messages", "1000000"),
    // The relay never makes a broker create a topic (Kafka's default
    // `auto.create.topics.enable=true` would otherwise create any topic a row names, with the
    // broker's default settings). Set it to `true` to let such a broker create the data topics.
    ("allow.auto.create.topics", "false"),
];

/// Words that mark a property's value as secret: it is never logged or shown.
const SECRET_MARKERS: &[&str] = &[
    "password",
    "secret",
    "jaas",
    "key.pem",
    "ssl.key",
    "token",
    "credentials",
];

/// librdkafka properties for the [`KafkaSink`](crate::KafkaSink).
///
/// Any librdkafka producer property may be set (TLS, SASL, compression, ...); see
/// <https://github.com/confluentinc/librdkafka/blob/master/CONFIGURATION.md>.
///
/// ```
/// use txoutbox_kafka::KafkaConfig;
///
/// let config = KafkaConfig::new("127.0.0.1:9092")
///     .set("compression.type", "lz4")
///     .set("security.protocol", "SASL_SSL")
///     .set("sasl.password", "s3cret");
/// assert!(!format!("{config:?}").contains("s3cret"));
/// ```
#[derive(Clone, Default)]
pub struct KafkaConfig {
    properties: BTreeMap<String, String>,
}

impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.redacted()).finish()
    }
}

impl KafkaConfig {
    /// Settings for the brokers at `bootstrap_servers` (`host:port[,host:port...]`).
    pub fn new(bootstrap_servers: impl Into<String>) -> Self {
        Self::default().set("bootstrap.servers", bootstrap_servers)
    }

    /// Sets a librdkafka property (overrides txoutbox's default for it).
    #[must_use]
    pub fn set(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.insert(key.into(), value.into());
        self
    }

    /// Sets many properties at once.
    #[must_use]
    pub fn set_all<K: Into<String>, V: Into<String>>(
        mut self,
        properties: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.properties
            .extend(properties.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// The value of a property, as set or defaulted.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.properties
            .get(key)
            .map(String::as_str)
            .or_else(|| DEFAULTS.iter().find(|(k, _)| *k == key).map(|(_, v)| *v))
    }

    /// The largest message the producer takes (`message.max.bytes`, librdkafka's default
    /// 1,000,000 bytes): larger rows are dead-lettered without being read whole.
    pub fn max_message_bytes(&self) -> usize {
        self.get("message.max.bytes")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(1_000_000)
    }

    /// Whether the user set the producer's delivery timeout (`message.timeout.ms` or its alias
    /// `delivery.timeout.ms`).
    pub(crate) fn sets_delivery_timeout(&self) -> bool {
        ["message.timeout.ms", "delivery.timeout.ms"]
            .iter()
            .any(|key| self.properties.contains_key(*key))
    }

    /// The properties with secret values replaced by `***`, for logs.
    pub fn redacted(&self) -> Vec<(String, String)> {
        self.effective()
            .into_iter()
            .map(|(k, v)| {
                let secret = SECRET_MARKERS.iter().any(|m| k.contains(m));
                (k.clone(), if secret { "***".to_owned() } else { v })
            })
            .collect()
    }

    /// Checks what txoutbox's guarantees need.
    pub fn validate(&self) -> Result<()> {
        match self.get("bootstrap.servers") {
            Some(s) if !s.trim().is_empty() => {}
            _ => {
                return Err(Error::Config(
                    "Kafka `bootstrap.servers` is not set: give the broker addresses, e.g. 127.0.0.1:9092"
                        .into(),
                ));
            }
        }
        if !matches!(self.get("enable.idempotence"), Some("true")) {
            return Err(Error::Config(
                "Kafka `enable.idempotence` must stay `true`: without it a retried batch can reorder or \
                 duplicate a key's messages"
                    .into(),
            ));
        }
        if !matches!(self.get("acks"), Some("all" | "-1")) {
            return Err(Error::Config(
                "Kafka `acks` must be `all`: with fewer acknowledgements a broker failure can lose messages \
                 the relay already marked published"
                    .into(),
            ));
        }
        Ok(())
    }

    fn effective(&self) -> BTreeMap<String, String> {
        let mut all: BTreeMap<String, String> = DEFAULTS
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        all.extend(self.properties.clone());
        all
    }

    /// The rdkafka client config.
    pub(crate) fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        for (k, v) in self.effective() {
            config.set(k, v);
        }
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_apply_and_can_be_overridden() {
        let config = KafkaConfig::new("b:1").set("linger.ms", "0");
        assert_eq!(config.get("acks"), Some("all"));
        assert_eq!(config.get("linger.ms"), Some("0"));
        config.validate().unwrap();
    }

    #[test]
    fn refuses_settings_that_break_the_guarantees() {
        assert!(KafkaConfig::default().validate().is_err());
        let err = KafkaConfig::new("b:1").set("acks", "1").validate().unwrap_err();
        assert!(err.to_string().contains("acks"), "{err}");
        let err = KafkaConfig::new("b:1")
            .set("enable.idempotence", "false")
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("idempotence"), "{err}");
    }

    #[test]
    fn secrets_are_redacted() {
        let config = KafkaConfig::new("b:1")
            .set("sasl.password", "hunter2")
            .set("sasl.oauthbearer.client.secret", "x1");
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2") && !shown.contains("x1"), "{shown}");
        assert!(shown.contains("bootstrap.servers"));
    }
}
