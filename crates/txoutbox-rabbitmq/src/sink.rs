//! The RabbitMQ sink: persistent messages on one channel with publisher confirms, mandatory so
//! that an unroutable message is reported instead of dropped.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind, PublisherConfirm};
use txoutbox_core::{
    BatchDelivery, CreatedAtText, DeliveryTracker, OutboxMessage, RefusedKeys, Result, Sink, SinkError,
};

use crate::classify::outcome;
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
}

/// A connection and its confirm-mode channel.
struct Link {
    /// Kept open with the channel.
    connection: Connection,
    channel: Channel,
}

impl std::fmt::Debug for RabbitMqSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitMqSink")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// A publish waiting for its confirm: the message's index, its routing key, the confirm.
type PendingConfirm = (usize, String, PublisherConfirm);

impl RabbitMqSink {
    /// A sink for `config`; it connects when it first sends or probes, so a relay started while
    /// the broker is down keeps its messages pending and catches up when it comes.
    pub fn new(config: &RabbitMqConfig) -> Result<Self> {
        config.validate()?;
        tracing::info!(uri = %config.uri_redacted(), exchange = %config.exchange, routing_key = config.routing_key.as_str(), "RabbitMQ sink");
        Ok(Self {
            config: Arc::new(config.clone()),
            link: tokio::sync::Mutex::new(None),
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
            lapin::Result::Ok(Link { connection, channel })
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

    /// Publishes each message of `batch` in order on `channel`; the confirms to wait for. A
    /// message refused before it is published completes at once, and the later messages of its
    /// key in the batch are held back so none overtakes it. Whether the channel failed.
    async fn publish_all(
        &self,
        channel: &Channel,
        batch: &[OutboxMessage],
        tracker: &Arc<DeliveryTracker>,
    ) -> (Vec<PendingConfirm>, bool) {
        let mut confirms = Vec::with_capacity(batch.len());
        let mut stamps = CreatedAtText::default();
        let mut refused = RefusedKeys::default();
        let mut failed = false;
        for (index, message) in batch.iter().enumerate() {
            if refused.holds(message) {
                tracker.complete(index, Err(SinkError::deferred()));
                continue;
            }
            match self.publish(channel, message, &mut stamps).await {
                Ok(pending) => confirms.push((index, pending.0, pending.1)),
                Err(refusal) => {
                    failed |= refusal.is_transient();
                    refused.refuse(message);
                    tracker.complete(index, Err(refusal.unsent()));
                }
            }
        }
        (confirms, failed)
    }

    /// Publishes one message; its routing key and confirm, or why it was not published.
    async fn publish(
        &self,
        channel: &Channel,
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
        let options = BasicPublishOptions {
            mandatory: true,
            ..BasicPublishOptions::default()
        };
        match channel
            .basic_publish(
                self.config.exchange.as_str().into(),
                key,
                options,
                payload,
                properties,
            )
            .await
        {
            Ok(confirm) => Ok((routing_key, confirm)),
            Err(error) => Err(SinkError::transient(format!(
                "routing key `{routing_key}`: the publish failed: {error}"
            ))),
        }
    }
}

impl Sink for RabbitMqSink {
    async fn send_batch(&self, batch: Arc<[OutboxMessage]>) -> BatchDelivery {
        let tracker = DeliveryTracker::new(batch.len());
        let mut link = self.link.lock().await;
        let channel = match self.channel(&mut link).await {
            Ok(channel) => channel,
            Err(error) => {
                for index in 0..batch.len() {
                    tracker.complete(index, Err(error.clone().unsent()));
                }
                return tracker.delivery();
            }
        };
        let (confirms, failed) = self.publish_all(&channel, &batch, &tracker).await;
        if failed {
            // Connect again for the next batch.
            *link = None;
        }
        drop(link);
        if !confirms.is_empty() {
            let tracker = Arc::clone(&tracker);
            let config = Arc::clone(&self.config);
            tokio::spawn(async move {
                let mut confirms: FuturesUnordered<_> = confirms
                    .into_iter()
                    .map(|(index, routing_key, confirm)| {
                        let timeout = config.confirm_timeout;
                        async move {
                            (
                                index,
                                routing_key,
                                tokio::time::timeout(timeout, confirm).await.ok(),
                            )
                        }
                    })
                    .collect();
                while let Some((index, routing_key, confirm)) = confirms.next().await {
                    tracker.complete(index, outcome(confirm, &config.exchange, &routing_key));
                }
            });
        }
        tracker.delivery()
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
