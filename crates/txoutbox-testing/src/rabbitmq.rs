//! Quorum queues per test on the test broker, and a reader that brings back what reached them as
//! [`Record`]s.

use lapin::options::{BasicGetOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Channel, Connection, ConnectionProperties};

use crate::kafka::Record;

/// The test broker (`TXOUTBOX_RABBITMQ_URL`).
pub fn url() -> String {
    crate::required_env("TXOUTBOX_RABBITMQ_URL")
}

/// Durable quorum queues of a test's own, one per topic, named `<prefix>.<topic>`: with the
/// default exchange and the routing key `<prefix>.{topic}` every topic lands in its queue.
#[derive(Debug)]
pub struct TestQueues {
    /// The queues' prefix.
    pub prefix: String,
    topics: Vec<String>,
    _connection: Connection,
    channel: Channel,
}

impl TestQueues {
    /// Declares a quorum queue per topic.
    pub async fn new(prefix: &str, topics: &[String]) -> Self {
        let connection = Connection::connect(&url(), ConnectionProperties::default())
            .await
            .expect("connect to RabbitMQ");
        let channel = connection.create_channel().await.expect("a channel");
        let prefix = crate::unique(prefix);
        let mut arguments = FieldTable::default();
        arguments.insert(
            ShortString::from("x-queue-type"),
            AMQPValue::LongString("quorum".into()),
        );
        for topic in topics {
            channel
                .queue_declare(
                    ShortString::from(format!("{prefix}.{topic}")),
                    QueueDeclareOptions {
                        durable: true,
                        ..QueueDeclareOptions::default()
                    },
                    arguments.clone(),
                )
                .await
                .expect("declare a quorum queue");
        }
        Self {
            prefix,
            topics: topics.to_vec(),
            _connection: connection,
            channel,
        }
    }

    /// The sink's routing key template that lands every topic in its queue.
    pub fn routing_key_template(&self) -> String {
        format!("{}.{{topic}}", self.prefix)
    }

    /// How many messages the queue of `topic` holds.
    pub async fn count(&self, topic: &str) -> u32 {
        self.channel
            .queue_declare(
                ShortString::from(format!("{}.{topic}", self.prefix)),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("the queue")
            .message_count()
    }

    /// Every message of the queue of `topic`, in queue order (taken: a second read finds none).
    /// The key comes from `txoutbox-key`; the offset is the position in the queue.
    pub async fn take_all(&self, topic: &str) -> Vec<Record> {
        let queue = format!("{}.{topic}", self.prefix);
        let mut records = Vec::new();
        while let Some(message) = self
            .channel
            .basic_get(
                ShortString::from(queue.as_str()),
                BasicGetOptions { no_ack: true },
            )
            .await
            .expect("basic.get")
        {
            let delivery = message.delivery;
            let mut headers = Vec::new();
            if let Some(table) = delivery.properties.headers() {
                for (name, value) in table.inner() {
                    let values = match value {
                        AMQPValue::FieldArray(values) => values.as_slice().to_vec(),
                        one => vec![one.clone()],
                    };
                    for value in values {
                        if let AMQPValue::LongString(bytes) = value {
                            headers.push((name.to_string(), bytes.as_bytes().to_vec()));
                        }
                    }
                }
            }
            let key = headers
                .iter()
                .find(|(name, _)| name == "txoutbox-key")
                .map(|(_, value)| value.clone());
            records.push(Record {
                topic: topic.to_owned(),
                partition: 0,
                offset: records.len() as i64,
                key,
                payload: Some(delivery.data),
                headers,
                timestamp_ms: delivery.properties.timestamp().map(|s| s as i64 * 1000),
            });
        }
        records
    }

    /// Deletes the queues.
    pub async fn delete(self) {
        for topic in &self.topics {
            let _ = self
                .channel
                .queue_delete(
                    ShortString::from(format!("{}.{topic}", self.prefix)),
                    QueueDeleteOptions::default(),
                )
                .await;
        }
    }
}
