//! The broker an end-to-end case relays to and reads back from: Kafka, or another sink's broker.

use std::future::Future;

use txoutbox::{RelayConfig, RelayHandle, Store};
use txoutbox_testing::kafka::Record;

/// Where a case's relay sends, and how the case reads back what arrived.
pub(crate) trait Broker: Sync {
    /// Starts a relay over `store` with this broker's sink.
    fn start_relay<S: Store>(&self, store: S, config: RelayConfig) -> RelayHandle;

    /// Every message that reached `topics`, in the broker's order.
    fn read_all(&self, topics: &[String]) -> impl Future<Output = Vec<Record>> + Send;
}

/// The test broker (`TXOUTBOX_KAFKA_BOOTSTRAP`) through [`super::kafka_sink`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Kafka;

impl Broker for Kafka {
    fn start_relay<S: Store>(&self, store: S, config: RelayConfig) -> RelayHandle {
        super::start_relay(store, config)
    }

    fn read_all(&self, topics: &[String]) -> impl Future<Output = Vec<Record>> + Send {
        txoutbox_testing::kafka::read_all(topics)
    }
}

/// A JetStream stream of its own (`TXOUTBOX_NATS_URL`), reached through the NATS sink with the
/// subject template `<stream>.{topic}`.
#[cfg(feature = "nats")]
#[derive(Debug)]
pub(crate) struct Nats {
    pub(crate) stream: txoutbox_testing::nats::TestStream,
    sink: txoutbox::nats::NatsSink,
}

#[cfg(feature = "nats")]
impl Nats {
    /// A new stream, and a sink that publishes into it.
    pub(crate) async fn new(prefix: &str) -> Self {
        let stream = txoutbox_testing::nats::TestStream::new(prefix).await;
        let config = txoutbox::nats::NatsConfig::new(txoutbox_testing::nats::url())
            .subject(&stream.subject_template())
            .unwrap();
        let sink = txoutbox::nats::NatsSink::connect(&config).await.unwrap();
        Self { stream, sink }
    }

    /// Three topic names of its own (topics need not be created: the stream takes them all).
    pub(crate) fn topics(&self) -> Vec<String> {
        (0..3).map(|i| format!("t{i}")).collect()
    }
}

#[cfg(feature = "nats")]
impl Broker for Nats {
    fn start_relay<S: Store>(&self, store: S, config: RelayConfig) -> RelayHandle {
        txoutbox::Relay::new(store, self.sink.clone(), config)
            .unwrap()
            .start()
    }

    async fn read_all(&self, topics: &[String]) -> Vec<Record> {
        let mut records = self.stream.read_all().await;
        records.retain(|r| topics.contains(&r.topic));
        records
    }
}

/// Quorum queues of their own (`TXOUTBOX_RABBITMQ_URL`), one per topic, reached through the
/// RabbitMQ sink on the default exchange with the routing key `<prefix>.{topic}`.
#[cfg(feature = "rabbitmq")]
#[derive(Debug)]
pub(crate) struct Rabbit {
    pub(crate) queues: txoutbox_testing::rabbitmq::TestQueues,
    sink: std::sync::Arc<txoutbox::rabbitmq::RabbitMqSink>,
}

#[cfg(feature = "rabbitmq")]
impl Rabbit {
    /// Three topics and their queues, and a sink that publishes into them.
    pub(crate) async fn new(prefix: &str) -> (Self, Vec<String>) {
        let topics: Vec<String> = (0..3).map(|i| format!("t{i}")).collect();
        let queues = txoutbox_testing::rabbitmq::TestQueues::new(prefix, &topics).await;
        let config = txoutbox::rabbitmq::RabbitMqConfig::new(txoutbox_testing::rabbitmq::url())
            .routing_key(&queues.routing_key_template())
            .unwrap();
        let sink = std::sync::Arc::new(txoutbox::rabbitmq::RabbitMqSink::new(&config).unwrap());
        (Self { queues, sink }, topics)
    }
}

#[cfg(feature = "rabbitmq")]
impl Broker for Rabbit {
    fn start_relay<S: Store>(&self, store: S, config: RelayConfig) -> RelayHandle {
        txoutbox::Relay::new(store, std::sync::Arc::clone(&self.sink), config)
            .unwrap()
            .start()
    }

    async fn read_all(&self, topics: &[String]) -> Vec<Record> {
        let mut records = Vec::new();
        for topic in topics {
            records.extend(self.queues.take_all(topic).await);
        }
        records
    }
}

/// Streams of their own (`TXOUTBOX_REDIS_URL`), one per topic, reached through the Redis
/// Streams sink with the stream key `<prefix>:{topic}`.
#[cfg(feature = "redis")]
#[derive(Debug)]
pub(crate) struct Redis {
    pub(crate) streams: txoutbox_testing::redis::TestStreams,
    sink: std::sync::Arc<txoutbox::redis::RedisSink>,
}

#[cfg(feature = "redis")]
impl Redis {
    /// Three topics, and a sink that adds to their streams.
    pub(crate) async fn new(prefix: &str) -> (Self, Vec<String>) {
        let topics: Vec<String> = (0..3).map(|i| format!("t{i}")).collect();
        let streams = txoutbox_testing::redis::TestStreams::new(prefix).await;
        let config = txoutbox::redis::RedisConfig::new(txoutbox_testing::redis::url())
            .stream_key(&streams.stream_key_template())
            .unwrap();
        let sink = std::sync::Arc::new(txoutbox::redis::RedisSink::new(&config).unwrap());
        (Self { streams, sink }, topics)
    }
}

#[cfg(feature = "redis")]
impl Broker for Redis {
    fn start_relay<S: Store>(&self, store: S, config: RelayConfig) -> RelayHandle {
        txoutbox::Relay::new(store, std::sync::Arc::clone(&self.sink), config)
            .unwrap()
            .start()
    }

    async fn read_all(&self, topics: &[String]) -> Vec<Record> {
        let mut records = Vec::new();
        for topic in topics {
            records.extend(self.streams.read_all(topic).await);
        }
        records
    }
}
