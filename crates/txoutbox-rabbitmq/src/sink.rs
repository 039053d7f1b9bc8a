//! The RabbitMQ sink: persistent messages on one channel with publisher confirms, mandatory so
//! that an unroutable message is reported instead of dropped.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind, PublisherConfirm};
use tokio::sync::mpsc;
use txoutbox_core::{
    BatchDelivery, CreatedAtText, DeliveryTracker, OutboxMessage, RefusedKeys, Result, Sink, SinkError,
};

use crate::classify::{outcome, unroutable};
use crate::config::{MAX_ROUTING_KEY_BYTES, RabbitMqConfig};
use crate::message_properties::message_properties;

/// How long connecting (and opening the channel) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Publishes outbox messages to a RabbitMQ exchange and completes each one when the broker
/// confirms it (for a durable queue: written to disk; for a quorum queue: on a majority).
///
/// Every message is persistent and mandatory, with the routing key its template gives, the
/// row's headers, the key (`txoutbox-key`), `txoutbox-message-id`, `txoutbox-created-at`, and
/// the message id and creation time (seconds) as AMQP properties. A message no queue is bound
/// for comes back from the broker and fails as permanent, like a message to a missing Kafka topic.
///
/// The sink connects at the first batch and again after the connection or channel failed; every
/// message of a batch sent while the broker is unreachable fails as transient. Per-key order: one
/// channel, published in the relay's order (see docs/rabbitmq.md for where it ends).
pub struct RabbitMqSink {
    config: Arc<RabbitMqConfig>,
    link: tokio::sync::Mutex<Option<Link>>,
    /// Set when a message failed transiently (or the queued ones were given up): batches are
    /// refused until the relay has given the failed rows back ([`Sink::epoch_moved`]), so none
    /// of their keys' later messages overtakes them.
    refusing: Arc<AtomicBool>,
}

/// A connection, its confirm-mode channel, and the task that completes its confirms in publish
/// order.
struct Link {
    connection: Connection,
    channel: Channel,
    confirms: mpsc::UnboundedSender<PendingConfirm>,
}

/// A publish waiting for its confirm.
struct PendingConfirm {
    index: usize,
    message_id: Arc<str>,
    routing_key: String,
    confirm: PublisherConfirm,
    /// When the confirm is late: the publish's time plus the confirm timeout.
    deadline: tokio::time::Instant,
    tracker: Arc<DeliveryTracker>,
}

impl std::fmt::Debug for RabbitMqSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitMqSink")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl RabbitMqSink {
    /// A sink for `config`; it connects when it first sends or probes, so a relay started while
    /// the broker is down keeps its messages pending and catches up when it comes.
    pub fn new(config: &RabbitMqConfig) -> Result<Self> {
        config.validate()?;
        tracing::info!(uri = %config.uri_redacted(), exchange = %config.exchange, routing_key = config.routing_key.as_str(), "RabbitMQ sink");
        Ok(Self {
            config: Arc::new(config.clone()),
            link: tokio::sync::Mutex::new(None),
            refusing: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The open channel, connecting first when there is none or it failed.
    async fn channel(&self, link: &mut Option<Link>) -> std::result::Result<Channel, SinkError> {
        if let Some(open) = link.as_ref()
            && open.channel.status().connected()
        {
            return Ok(open.channel.clone());
        }
        *link = None;
        let connect = async {
            let properties = ConnectionProperties::default()
                .with_connection_name(self.config.connection_name.clone().into());
            let connection = Connection::connect(&self.config.uri, properties).await?;
            let channel = connection.create_channel().await?;
            channel.confirm_select(ConfirmSelectOptions::default()).await?;
            let (confirms, pending) = mpsc::unbounded_channel();
            tokio::spawn(complete_confirms(
                pending,
                Arc::clone(&self.config),
                Arc::clone(&self.refusing),
            ));
            lapin::Result::Ok(Link {
                connection,
                channel,
                confirms,
            })
        };
        let opened = tokio::time::timeout(CONNECT_TIMEOUT, connect).await;
        match opened {
            Ok(Ok(opened)) => {
                let channel = opened.channel.clone();
                *link = Some(opened);
                tracing::info!(uri = %self.config.uri_redacted(), "connected to RabbitMQ");
                Ok(channel)
            }
            Ok(Err(error)) => Err(SinkError::transient(format!(
                "cannot connect to RabbitMQ at {}: {error}",
                self.config.uri_redacted()
            ))),
            Err(_) => Err(SinkError::transient(format!(
                "cannot connect to RabbitMQ at {} within {} s",
                self.config.uri_redacted(),
                CONNECT_TIMEOUT.as_secs()
            ))),
        }
    }

    /// Publishes each message of `batch` in order on `link`'s channel, handing each confirm to
    /// its task. A message refused before it is published completes at once, and the later
    /// messages of its key in the batch are held back so none overtakes it. After a transient
    /// refusal (the channel failed, the connection is blocked) the rest of the batch fails at
    /// once. Whether the channel failed.
    async fn publish_all(
        &self,
        link: &Link,
        batch: &[OutboxMessage],
        tracker: &Arc<DeliveryTracker>,
    ) -> bool {
        let mut stamps = CreatedAtText::default();
        let mut refused = RefusedKeys::default();
        let mut failed: Option<SinkError> = None;
        for (index, message) in batch.iter().enumerate() {
            if let Some(error) = &failed {
                tracker.complete(index, Err(error.clone()));
                continue;
            }
            if refused.holds(message) {
                tracker.complete(index, Err(SinkError::deferred()));
                continue;
            }
            match self.publish(link, message, &mut stamps).await {
                Ok((routing_key, confirm)) => {
                    let pending = PendingConfirm {
                        index,
                        message_id: Arc::clone(&message.message_id),
                        routing_key,
                        confirm,
                        deadline: tokio::time::Instant::now() + self.config.confirm_timeout,
                        tracker: Arc::clone(tracker),
                    };
                    if let Err(mpsc::error::SendError(lost)) = link.confirms.send(pending) {
                        tracker.complete(
                            lost.index,
                            Err(SinkError::transient("the RabbitMQ confirm task stopped")),
                        );
                    }
                }
                Err(refusal) => {
                    if refusal.is_transient() {
                        failed = Some(
                            SinkError::transient(format!(
                                "not sent: RabbitMQ could not take an earlier message of the batch: {refusal}"
                            ))
                            .unsent(),
                        );
                    }
                    refused.refuse(message);
                    tracker.complete(index, Err(refusal));
                }
            }
        }
        failed.is_some()
    }

    /// Publishes one message; its routing key and confirm, or why it was not published.
    async fn publish(
        &self,
        link: &Link,
        message: &OutboxMessage,
        stamps: &mut CreatedAtText,
    ) -> std::result::Result<(String, PublisherConfirm), SinkError> {
        if let Some(reason) = &message.malformed {
            return Err(SinkError::rejected(reason.clone()));
        }
        let routing_key = self
            .config
            .routing_key
            .render(&message.topic, message.key.as_deref())
            .map_err(|why| SinkError::rejected(format!("the row cannot be published to RabbitMQ: {why}")))?;
        if self.config.exchange.is_empty() && routing_key.starts_with("amq.") {
            return Err(SinkError::rejected(format!(
                "the row cannot be published to RabbitMQ: routing key `{routing_key}` names one of the \
                 broker's own queues (`amq.…`) on the default exchange"
            )));
        }
        let key = ShortString::try_new(routing_key.as_str()).map_err(|_| {
            SinkError::rejected(format!(
                "the row cannot be published to RabbitMQ: its routing key is {} bytes long, longer than \
                 the {MAX_ROUTING_KEY_BYTES} AMQP allows",
                routing_key.len()
            ))
        })?;
        let (properties, header_bytes) =
            message_properties(message, stamps.format(message.created_at)).map_err(SinkError::rejected)?;
        let payload = message.payload.as_deref().unwrap_or_default();
        let size = payload.len() + header_bytes;
        if size > self.config.max_message_bytes {
            return Err(SinkError::rejected(format!(
                "the message is {size} bytes, more than the {} this sink sends (the broker's \
                 max_message_size; raise both, then replay the message)",
                self.config.max_message_bytes
            )));
        }
        if link.connection.status().blocked() {
            return Err(SinkError::transient(
                "RabbitMQ blocks this connection (a memory or disk alarm): nothing is published until it lifts",
            ));
        }
        let options = BasicPublishOptions {
            mandatory: true,
            ..BasicPublishOptions::default()
        };
        let publish = link.channel.basic_publish(
            self.config.exchange.as_str().into(),
            key,
            options,
            payload,
            properties,
        );
        match tokio::time::timeout(self.config.confirm_timeout, publish).await {
            Ok(Ok(confirm)) => Ok((routing_key, confirm)),
            Ok(Err(error)) => Err(SinkError::transient(format!(
                "routing key `{routing_key}`: the publish failed: {error}"
            ))),
            Err(_) => Err(SinkError::transient(format!(
                "routing key `{routing_key}`: the publish was not written within {} s (the \
                 connection is blocked or stalled); the connection is dropped",
                self.config.confirm_timeout.as_secs()
            ))),
        }
    }
}

impl Sink for RabbitMqSink {
    async fn send_batch(&self, batch: Arc<[OutboxMessage]>) -> BatchDelivery {
        let tracker = DeliveryTracker::new(batch.len());
        let refuse_all = |error: SinkError| {
            for index in 0..batch.len() {
                tracker.complete(index, Err(error.clone()));
            }
        };
        if self.refusing.load(Ordering::Acquire) {
            refuse_all(
                SinkError::transient("not sent: an earlier message failed and is sent again first").unsent(),
            );
            return tracker.delivery();
        }
        let mut link = self.link.lock().await;
        if let Err(error) = self.channel(&mut link).await {
            self.refusing.store(true, Ordering::Release);
            refuse_all(error.unsent());
            return tracker.delivery();
        }
        let Some(open) = link.as_ref() else {
            refuse_all(SinkError::transient("the RabbitMQ connection closed").unsent());
            return tracker.delivery();
        };
        if self.publish_all(open, &batch, &tracker).await {
            // Connect again for the next batch; refuse batches until the relay gave these back.
            self.refusing.store(true, Ordering::Release);
            *link = None;
        }
        tracker.delivery()
    }

    /// Takes batches again: the relay has given back the rows that failed.
    fn epoch_moved(&self) {
        self.refusing.store(false, Ordering::Release);
    }

    fn max_message_bytes(&self) -> Option<usize> {
        Some(self.config.max_message_bytes)
    }

    /// Connects (when not connected) and checks that the exchange exists (a passive declare on a
    /// channel of its own: a missing exchange closes the channel it is asked on).
    async fn probe(&self) -> std::result::Result<(), SinkError> {
        let mut link = self.link.lock().await;
        self.channel(&mut link).await?;
        if self.config.exchange.is_empty() {
            return Ok(());
        }
        let Some(open) = link.as_ref() else {
            return Err(SinkError::transient("the RabbitMQ connection closed"));
        };
        let check = async {
            let channel = open.connection.create_channel().await?;
            let options = ExchangeDeclareOptions {
                passive: true,
                ..ExchangeDeclareOptions::default()
            };
            channel
                .exchange_declare(
                    self.config.exchange.as_str().into(),
                    ExchangeKind::Direct,
                    options,
                    FieldTable::default(),
                )
                .await?;
            let _ = channel.close(200, "probe done".into()).await;
            lapin::Result::Ok(())
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, check).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(SinkError::transient(format!(
                "RabbitMQ exchange `{}` cannot be used: {error} (declare it, or check the user's permissions)",
                self.config.exchange
            ))),
            Err(_) => Err(SinkError::transient(
                "RabbitMQ did not answer the exchange check in time",
            )),
        }
    }
}

/// Completes each publish of a channel as its confirm comes, in publish order.
///
/// The broker returns an unroutable (mandatory) message before it acknowledges it, but lapin
/// hands each returned message to whichever acknowledgement it processes next, which may be an
/// earlier message's (a multiple ack). So returns are collected by message id from every confirm,
/// and a message counts as delivered only if no return named it by the time its own confirm came:
/// taken in publish order, every confirm up to its own has been seen then.
async fn complete_confirms(
    mut pending: mpsc::UnboundedReceiver<PendingConfirm>,
    config: Arc<RabbitMqConfig>,
    refusing: Arc<AtomicBool>,
) {
    let mut returned: HashSet<String> = HashSet::new();
    while let Some(p) = pending.recv().await {
        let confirm = tokio::time::timeout_at(p.deadline, p.confirm).await.ok();
        if let Some(Ok(lapin::Confirmation::Ack(Some(back)) | lapin::Confirmation::Nack(Some(back)))) =
            &confirm
            && let Some(id) = back.delivery.properties.message_id()
        {
            returned.insert(id.to_string());
        }
        let result = if returned.remove(&*p.message_id) {
            Err(unroutable(&config.exchange, &p.routing_key))
        } else {
            outcome(confirm, &config.exchange, &p.routing_key)
        };
        if result.as_ref().is_err_and(SinkError::is_transient) {
            refusing.store(true, Ordering::Release);
        }
        p.tracker.complete(p.index, result);
    }
}
