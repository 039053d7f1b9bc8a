//! The consumer's settings: Kafka, concurrency, memory, retries, retention.

use std::time::Duration;

use txoutbox_core::{Error, Result, RetryPolicy};

use crate::message_id::MessageIdSource;

/// librdkafka properties the consumer sets itself; a user value for one of them is refused.
const OWN_PROPERTIES: [&str; 4] = [
    "group.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "bootstrap.servers",
];

/// Where to consume from: the brokers, the consumer group (also the inbox's `consumer` column),
/// the topics, and any other librdkafka consumer property (TLS, SASL, `auto.offset.reset`).
///
/// `Debug` redacts values of properties whose names mention passwords, secrets or keys.
#[derive(Clone)]
pub struct ConsumerConfig {
    pub(crate) bootstrap_servers: String,
    pub(crate) group_id: String,
    pub(crate) topics: Vec<String>,
    pub(crate) properties: Vec<(String, String)>,
}

impl std::fmt::Debug for ConsumerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let properties: Vec<(&str, &str)> = self
            .properties
            .iter()
            .map(|(k, v)| {
                let secret = ["password", "secret", "key", "token"]
                    .iter()
                    .any(|word| k.contains(word));
                (k.as_str(), if secret { "<redacted>" } else { v.as_str() })
            })
            .collect();
        f.debug_struct("ConsumerConfig")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("group_id", &self.group_id)
            .field("topics", &self.topics)
            .field("properties", &properties)
            .finish()
    }
}

impl ConsumerConfig {
    /// A consumer of `topics` in group `group_id` on `bootstrap_servers`. A new group starts at
    /// the earliest offset (`auto.offset.reset=earliest`; set it to `latest` to skip the past).
    pub fn new(
        bootstrap_servers: impl Into<String>,
        group_id: impl Into<String>,
        topics: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Self {
            bootstrap_servers: bootstrap_servers.into(),
            group_id: group_id.into(),
            topics: topics.into_iter().map(Into::into).collect(),
            properties: vec![("auto.offset.reset".into(), "earliest".into())],
        }
    }

    /// Sets a librdkafka consumer property (e.g. `security.protocol`, `sasl.password`).
    #[must_use]
    pub fn set(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        let key = key.into();
        self.properties.retain(|(k, _)| *k != key);
        self.properties.push((key, value.into()));
        self
    }

    /// The consumer group.
    pub fn group_id(&self) -> &str {
        &self.group_id
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.group_id.is_empty() || self.group_id.len() > 255 {
            return Err(Error::Config(
                "the inbox's consumer group id must be 1 to 255 bytes (it is the inbox table's `consumer`)"
                    .into(),
            ));
        }
        if self.topics.is_empty() {
            return Err(Error::Config(
                "the inbox consumes no topic: name at least one".into(),
            ));
        }
        if let Some((key, _)) = self
            .properties
            .iter()
            .find(|(k, _)| OWN_PROPERTIES.contains(&k.as_str()))
        {
            return Err(Error::Config(format!(
                "the inbox sets `{key}` itself (offsets are committed only after the database commit): remove it"
            )));
        }
        Ok(())
    }
}

/// How the consumer handles records.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct InboxConfig {
    /// Records handled at once, at most: records of one key (and of one partition without keys)
    /// always one after another, in offset order. Default: 8.
    pub concurrency: usize,
    /// Records handled in one database transaction, at most: a lane takes those already queued
    /// (it never waits for more), claims their ids in one statement, handles the new ones in
    /// turn and commits once. If any of them fails, the transaction rolls back and the records
    /// are handled one by one — the handlers before the failing one run again. Default: 1 (a
    /// transaction per record); 16 ran about five times the records per second here
    /// (docs/benchmarks.md).
    pub records_per_transaction: usize,
    /// Bytes of records read but not finished, at most (a larger record still goes, alone).
    /// Default: 64 MiB.
    pub max_in_flight_bytes: usize,
    /// Handler attempts before a record is parked, and the back-off between them. Failures of the
    /// database connection itself never count: they are retried until it answers. Default: 5
    /// attempts, 100 ms doubling to 10 s.
    pub retry: RetryPolicy,
    /// Where a record's message id comes from. Default: the `txoutbox-message-id` header.
    pub message_id: MessageIdSource,
    /// How often finished offsets are committed to Kafka. Default: 1 s.
    pub commit_interval: Duration,
    /// How long a rebalance waits for the records of revoked partitions to finish. Default: 30 s.
    pub revoke_timeout: Duration,
    /// How long handled ids are kept (a re-delivery later than this is handled again). Default:
    /// 7 days.
    pub retention: Duration,
    /// How often old ids are removed, in batches of `retention_batch`. Default: 5 min.
    pub retention_interval: Duration,
    /// Ids removed per statement. Default: 1,000.
    pub retention_batch: u32,
    /// How often the consumer looks for parked records marked for replay. Default: 5 s.
    pub replay_interval: Duration,
}

impl Default for InboxConfig {
    fn default() -> Self {
        Self {
            concurrency: 8,
            records_per_transaction: 1,
            max_in_flight_bytes: 64 * 1024 * 1024,
            retry: RetryPolicy::default()
                .with_max_attempts(5)
                .with_backoff(Duration::from_millis(100), Duration::from_secs(10)),
            message_id: MessageIdSource::default(),
            commit_interval: Duration::from_secs(1),
            revoke_timeout: Duration::from_secs(30),
            retention: Duration::from_secs(7 * 24 * 3600),
            retention_interval: Duration::from_secs(300),
            retention_batch: 1000,
            replay_interval: Duration::from_secs(5),
        }
    }
}

impl InboxConfig {
    /// Sets the concurrency.
    #[must_use]
    pub fn with_concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency;
        self
    }

    /// Sets how many queued records one transaction may take.
    #[must_use]
    pub fn with_records_per_transaction(mut self, records: usize) -> Self {
        self.records_per_transaction = records;
        self
    }

    /// Sets the retry policy of failing handlers.
    #[must_use]
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Sets where message ids come from.
    #[must_use]
    pub fn with_message_id(mut self, source: MessageIdSource) -> Self {
        self.message_id = source;
        self
    }

    /// Sets how long handled ids are kept.
    #[must_use]
    pub fn with_retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.concurrency == 0 || self.concurrency > 1024 {
            return Err(Error::Config("inbox concurrency must be 1 to 1024".into()));
        }
        if self.records_per_transaction == 0 || self.records_per_transaction > 10_000 {
            return Err(Error::Config(
                "inbox records_per_transaction must be 1 to 10,000".into(),
            ));
        }
        if self.max_in_flight_bytes == 0 {
            return Err(Error::Config("inbox max_in_flight_bytes must be above 0".into()));
        }
        if self.commit_interval.is_zero()
            || self.retention_interval.is_zero()
            || self.replay_interval.is_zero()
        {
            return Err(Error::Config(
                "inbox commit_interval, retention_interval and replay_interval must be above 0".into(),
            ));
        }
        if self.retention_batch == 0 {
            return Err(Error::Config("inbox retention_batch must be above 0".into()));
        }
        self.retry.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_the_inbox_sets_and_redacts_secrets() {
        let c = ConsumerConfig::new("b:9092", "g", ["t"]).set("enable.auto.commit", "true");
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("enable.auto.commit")
        );
        let c = ConsumerConfig::new("b:9092", "g", ["t"]).set("sasl.password", "hunter2");
        assert!(c.validate().is_ok());
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(ConsumerConfig::new("b", "", ["t"]).validate().is_err());
        assert!(
            ConsumerConfig::new("b", "g", Vec::<String>::new())
                .validate()
                .is_err()
        );
        assert!(InboxConfig::default().validate().is_ok());
        assert!(InboxConfig::default().with_concurrency(0).validate().is_err());
    }
}
