//! Relay settings.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::retry::RetryPolicy;
use crate::store::Completion;

/// What a dead-lettered message does to the later messages of its key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum OnDeadLetter {
    /// The key flows again at once: its later messages are sent, so consumers see them without
    /// the dead one. The default.
    #[default]
    ReleaseKey,
    /// The key stays parked while it has a dead message: its later messages wait (pending) until
    /// the dead one is replayed (it is then sent first) or purged. Parking is kept in the table,
    /// so it survives restarts and holds on every relay node; other keys keep flowing.
    ParkKey,
}

/// What `{topic}` stands for in a [`DeadLetterTopic`] template when the dead row could not be
/// read and so has no topic of its own.
pub const UNREADABLE_TOPIC: &str = "txoutbox-unreadable";

/// Where a copy of each dead-lettered message is sent, besides the `dead` state it gets in the
/// table.
///
/// The copy has the message's key, payload and headers plus `txoutbox-dead-letter-topic` (the
/// original topic), `txoutbox-dead-letter-error`, `txoutbox-dead-letter-attempts` and
/// `txoutbox-dead-letter-row` (the row id; absent when the store's ids name no table row, as
/// in WAL mode, where `txoutbox-message-id` names the dead letter). When the copy is itself
/// refused for good (a message too large for its topic is too large for the copy too) it is sent
/// once more without its payload, with `txoutbox-dead-letter-payload: dropped`. While the broker
/// cannot take the copy, the message stays pending and dies again later: the copy is sent at
/// least once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterTopic {
    template: String,
}

impl DeadLetterTopic {
    /// A topic name, or a template in which `{topic}` stands for the message's own topic (e.g.
    /// `"{topic}.dead"`). Checked against Kafka's topic name rules.
    pub fn new(template: impl Into<String>) -> Result<Self> {
        let template = template.into();
        crate::topic::validate_topic_name(&template.replace("{topic}", "t"))?;
        // The name the copies of unreadable rows get must be valid too.
        crate::topic::validate_topic_name(&template.replace("{topic}", UNREADABLE_TOPIC))?;
        Ok(Self { template })
    }

    /// The dead-letter topic of a message published to `topic`. A row that could not be read
    /// has no topic, and a foreign writer's topic may not be a valid name (or make the template
    /// too long): `{topic}` then stands for [`UNREADABLE_TOPIC`] (e.g.
    /// `txoutbox-unreadable.dead`), a valid name the operator can create to receive their copies.
    pub fn for_topic(&self, topic: &str) -> String {
        if !topic.is_empty() {
            let name = self.template.replace("{topic}", topic);
            if crate::topic::validate_topic_name(&name).is_ok() {
                return name;
            }
        }
        self.template.replace("{topic}", UNREADABLE_TOPIC)
    }

    /// The template as given.
    pub fn template(&self) -> &str {
        &self.template
    }
}

/// How a relay reads, sends and completes messages.
///
/// ```
/// use std::time::Duration;
/// use txoutbox_core::RelayConfig;
///
/// let config = RelayConfig::default()
///     .with_batch_size(2_000)
///     .with_poll_interval(Duration::from_millis(250));
/// config.validate()?;
/// # Ok::<(), txoutbox_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RelayConfig {
    /// Rows read and sent per batch. Default: 1,000.
    pub batch_size: usize,
    /// Messages sent but not yet acknowledged and completed, at most. Bounds memory and the
    /// number of messages a crash can resend. Default: 10,000.
    pub max_in_flight: usize,
    /// Bytes (topics, keys, payloads, headers) one read of pending rows may bring, at most: a
    /// batch holds fewer rows than `batch_size` when they are large. A row larger than this is
    /// still read, alone. Default: 16 MiB.
    pub max_batch_bytes: usize,
    /// Bytes of messages sent but not yet acknowledged and completed, at most (a batch larger
    /// than this still goes, alone). With `max_batch_bytes`, bounds the memory the relay holds
    /// for messages; librdkafka keeps its own copy of the messages in flight. Default: 64 MiB.
    pub max_in_flight_bytes: usize,
    /// How long an idle relay waits before looking again when nothing woke it. Default: 1 s.
    pub poll_interval: Duration,
    /// What happens to delivered rows. Default: [`Completion::Delete`].
    pub completion: Completion,
    /// Retries of messages that failed permanently.
    pub retry: RetryPolicy,
    /// Whether a dead-lettered message releases its key or parks it. Default: release.
    pub on_dead_letter: OnDeadLetter,
    /// Where copies of dead-lettered messages go. Default: none (they stay in the table only).
    pub dead_letter_topic: Option<DeadLetterTopic>,
    /// The only topics the relay publishes to; rows naming others are dead-lettered at once.
    /// Default: none (every topic a row names).
    pub allowed_topics: Option<super::AllowedTopics>,
    /// How long one call to the store (a read, a mark) may take. A database that does not answer
    /// in time (e.g. a connection hung on a network that drops packets silently) fails the call
    /// like an unreachable one: reported in health, retried. Default: 30 s.
    pub store_timeout: Duration,
    /// How long a graceful shutdown waits for messages already handed to the sink. Messages whose
    /// delivery is still unknown then stay pending and are sent again by the next relay.
    /// Default: 30 s.
    pub shutdown_timeout: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            batch_size: 1_000,
            max_in_flight: 10_000,
            max_batch_bytes: 16 << 20,
            max_in_flight_bytes: 64 << 20,
            poll_interval: Duration::from_secs(1),
            completion: Completion::default(),
            retry: RetryPolicy::default(),
            on_dead_letter: OnDeadLetter::default(),
            dead_letter_topic: None,
            allowed_topics: None,
            shutdown_timeout: Duration::from_secs(30),
            store_timeout: Duration::from_secs(30),
        }
    }
}

impl RelayConfig {
    /// Sets the batch size.
    #[must_use]
    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size;
        self
    }

    /// Sets the in-flight limit.
    #[must_use]
    pub fn with_max_in_flight(mut self, max_in_flight: usize) -> Self {
        self.max_in_flight = max_in_flight;
        self
    }

    /// Sets the byte budget of one read.
    #[must_use]
    pub fn with_max_batch_bytes(mut self, bytes: usize) -> Self {
        self.max_batch_bytes = bytes;
        self
    }

    /// Sets the byte budget of what is in flight.
    #[must_use]
    pub fn with_max_in_flight_bytes(mut self, bytes: usize) -> Self {
        self.max_in_flight_bytes = bytes;
        self
    }

    /// Sets the poll interval.
    #[must_use]
    pub fn with_poll_interval(mut self, poll_interval: Duration) -> Self {
        self.poll_interval = poll_interval;
        self
    }

    /// Sets what happens to delivered rows.
    #[must_use]
    pub fn with_completion(mut self, completion: Completion) -> Self {
        self.completion = completion;
        self
    }

    /// Sets the retry policy.
    #[must_use]
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Sets what a dead-lettered message does to its key.
    #[must_use]
    pub fn with_on_dead_letter(mut self, on_dead_letter: OnDeadLetter) -> Self {
        self.on_dead_letter = on_dead_letter;
        self
    }

    /// Sends a copy of each dead-lettered message to this topic.
    #[must_use]
    pub fn with_dead_letter_topic(mut self, topic: DeadLetterTopic) -> Self {
        self.dead_letter_topic = Some(topic);
        self
    }

    /// Publishes only to the topics `allowed` lists; rows naming others are dead-lettered at once.
    #[must_use]
    pub fn with_allowed_topics(mut self, allowed: super::AllowedTopics) -> Self {
        self.allowed_topics = Some(allowed);
        self
    }

    /// Sets the deadline of each store call.
    #[must_use]
    pub fn with_store_timeout(mut self, store_timeout: Duration) -> Self {
        self.store_timeout = store_timeout;
        self
    }

    /// Sets the graceful-shutdown wait.
    #[must_use]
    pub fn with_shutdown_timeout(mut self, shutdown_timeout: Duration) -> Self {
        self.shutdown_timeout = shutdown_timeout;
        self
    }

    /// Checks the values and their consistency.
    pub fn validate(&self) -> Result<()> {
        if self.batch_size == 0 {
            return Err(Error::Config("relay batch_size must be at least 1".into()));
        }
        if self.max_in_flight < self.batch_size {
            return Err(Error::Config(format!(
                "relay max_in_flight ({}) must be at least batch_size ({})",
                self.max_in_flight, self.batch_size
            )));
        }
        if self.max_in_flight > u32::MAX as usize / 2 {
            return Err(Error::Config("relay max_in_flight is too large".into()));
        }
        if self.max_batch_bytes == 0 {
            return Err(Error::Config("relay max_batch_bytes must be at least 1".into()));
        }
        if self.max_in_flight_bytes < self.max_batch_bytes {
            return Err(Error::Config(format!(
                "relay max_in_flight_bytes ({}) must be at least max_batch_bytes ({})",
                self.max_in_flight_bytes, self.max_batch_bytes
            )));
        }
        if self.max_in_flight_bytes > u32::MAX as usize {
            return Err(Error::Config(
                "relay max_in_flight_bytes must be at most 4 GiB".into(),
            ));
        }
        if self.store_timeout.is_zero() {
            return Err(Error::Config("relay store_timeout must be above zero".into()));
        }
        if self.poll_interval.is_zero() {
            return Err(Error::Config("relay poll_interval must be above zero".into()));
        }
        self.retry.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_without_a_topic_gets_a_valid_dead_letter_topic() {
        let per_topic = DeadLetterTopic::new("{topic}.dead").unwrap();
        assert_eq!(per_topic.for_topic("orders"), "orders.dead");
        assert_eq!(per_topic.for_topic(""), "txoutbox-unreadable.dead");
        crate::topic::validate_topic_name(&per_topic.for_topic("")).unwrap();
        assert_eq!(
            DeadLetterTopic::new("{topic}").unwrap().for_topic(""),
            UNREADABLE_TOPIC
        );
        // A template valid for short topics whose unreadable name would be too long is refused.
        let long = format!("{{topic}}.{}", "d".repeat(240));
        assert!(DeadLetterTopic::new(long).is_err());
        assert_eq!(
            DeadLetterTopic::new("all.dead").unwrap().for_topic(""),
            "all.dead"
        );
        // A foreign writer's topic that is no valid name, or too long for the template.
        for bad in ["with space", "ünïcode", &"t".repeat(245)] {
            assert_eq!(per_topic.for_topic(bad), "txoutbox-unreadable.dead", "{bad}");
        }
    }
}
