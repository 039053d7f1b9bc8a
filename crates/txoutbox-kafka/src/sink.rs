//! The Kafka sink: an idempotent, acks=all producer that pipelines batches.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::producer::{Producer, ThreadedProducer};
use txoutbox_core::{BatchDelivery, DeliveryTracker, Error, OutboxMessage, Result, Sink};

use crate::classify::classify;
use crate::config::KafkaConfig;
use crate::context::SinkContext;

/// How long a probe waits for the brokers' metadata.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Sends outbox messages to Kafka with the record key, the user headers, a stable
/// `txoutbox-message-id` header, a `txoutbox-created-at` header and the creation time as the
/// record timestamp.
pub struct KafkaSink {
    producer: Arc<ThreadedProducer<SinkContext>>,
    max_message_bytes: usize,
}

impl std::fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSink").finish_non_exhaustive()
    }
}

impl KafkaSink {
    /// Creates the producer. Does not wait for the brokers: a relay started while Kafka is down
    /// keeps its messages pending and catches up when it comes.
    ///
    /// Unless `message.timeout.ms` (or its alias `delivery.timeout.ms`) is set, messages never
    /// expire in the producer: librdkafka retries each one, in order, until the broker takes it.
    /// An expired message could be overtaken by later messages of its key that the broker took
    /// after it came back (librdkafka's documented "gap"); the relay's health reports a broker
    /// that acknowledges nothing meanwhile.
    pub fn new(config: &KafkaConfig) -> Result<Self> {
        config.validate()?;
        let config = &if config.sets_delivery_timeout() {
            config.clone()
        } else {
            config.clone().set("message.timeout.ms", "0")
        };
        tracing::info!(properties = ?config.redacted(), "creating Kafka producer");
        let (on_timeout, timeouts) = std::sync::mpsc::sync_channel(1);
        let producer: ThreadedProducer<SinkContext> = config
            .client_config()
            .create_with_context(SinkContext {
                on_timeout: Some(on_timeout),
            })
            .map_err(|e| Error::Config(format!("could not create the Kafka producer: {e}")))?;
        let producer = Arc::new(producer);
        spawn_purger(Arc::downgrade(&producer), timeouts);
        Ok(Self {
            producer,
            max_message_bytes: config.max_message_bytes(),
        })
    }

    /// Waits up to `timeout` for every queued message to be delivered.
    pub fn flush(&self, timeout: Duration) -> Result<()> {
        self.producer
            .flush(timeout)
            .map_err(|e| Error::Sink(classify(&e, "*")))
    }
}

/// When a message expires in librdkafka's queue (`message.timeout.ms` passed, e.g. during a long
/// broker outage), the messages queued after it — possibly of the same keys — would still be
/// delivered if the broker came back before they expire too, and the expired one would then be
/// sent again after them: a key out of order. So the first expiry purges the whole local queue:
/// every queued message fails as transient and the relay sends them all again in id order.
/// (Messages already on the wire are not purged: the idempotent producer orders those.)
fn spawn_purger(
    producer: std::sync::Weak<ThreadedProducer<SinkContext>>,
    timeouts: std::sync::mpsc::Receiver<()>,
) {
    let spawned = std::thread::Builder::new()
        .name("txoutbox-purge".into())
        .spawn(move || {
            // Ends when the producer (which holds the sending side) is dropped.
            while timeouts.recv().is_ok() {
                let Some(producer) = producer.upgrade() else { return };
                tracing::warn!(
                    "a message expired in the Kafka producer's queue (message.timeout.ms); purging the queue so \
                     every key is sent again in order"
                );
                producer.purge(rdkafka::producer::PurgeConfig::default().queue());
            }
        });
    if let Err(error) = spawned {
        tracing::error!(%error, "cannot start the Kafka queue purger; a broker outage longer than message.timeout.ms may reorder keys");
    }
}

impl Sink for KafkaSink {
    async fn send_batch(&self, batch: Arc<[OutboxMessage]>) -> BatchDelivery {
        let tracker = DeliveryTracker::new(batch.len());
        crate::enqueue::enqueue(&self.producer, &batch, &tracker).await;
        tracker.delivery()
    }

    fn max_message_bytes(&self) -> Option<usize> {
        Some(self.max_message_bytes)
    }

    /// Purges librdkafka's local queue: the queued messages report `PurgeQueue` (transient).
    fn discard_queued(&self) {
        self.producer
            .purge(rdkafka::producer::PurgeConfig::default().queue());
    }

    /// Asks the brokers for the cluster's metadata (on a blocking thread: librdkafka waits).
    async fn probe(&self) -> Result<(), txoutbox_core::SinkError> {
        let producer = Arc::clone(&self.producer);
        let outcome = tokio::task::spawn_blocking(move || {
            producer.client().fetch_metadata(None, PROBE_TIMEOUT).map(|_| ())
        })
        .await;
        match outcome {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(txoutbox_core::SinkError::transient(format!(
                "no answer from the Kafka brokers within {}s: {error}",
                PROBE_TIMEOUT.as_secs()
            ))),
            Err(join) => Err(txoutbox_core::SinkError::transient(format!(
                "the Kafka probe failed: {join}"
            ))),
        }
    }
}
