//! The NATS JetStream sink: acknowledged publishes, pipelined, de-duplicated by message id.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::context::PublishAckFuture;
use async_nats::jetstream::message::PublishMessage;
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use tokio::sync::mpsc;
use txoutbox_core::{
    BatchDelivery, CreatedAtText, DeliveryTracker, Error, OutboxMessage, RefusedKeys, Result, Sink, SinkError,
};

use crate::classify::{StreamLookups, classify, classify_failure};
use crate::config::{NatsAuth, NatsConfig};
use crate::message_headers::message_headers;
use crate::subject::SubjectTemplate;

/// How long a probe waits for JetStream to answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Publishes outbox messages to NATS JetStream and completes each one when the stream
/// acknowledges it (stored, and replicated when the stream has replicas).
///
/// Each message goes to the subject its [`SubjectTemplate`] gives, with the row's payload, its
/// headers (each name's values in order), the key (`txoutbox-key`, or `txoutbox-key-base64` when it is not plain
/// text), `txoutbox-message-id`, `txoutbox-created-at`, and `Nats-Msg-Id` set to the message id:
/// a message sent again within the stream's duplicate window (two minutes by default) is stored
/// once.
///
/// Per-key order: the sink publishes every message on one connection in the relay's order, and a
/// stream stores them in the order they arrive. A message refused before it is published holds
/// back the later messages of its key in the batch. A message the stream refuses after later
/// messages of its key were published (a connection lost, a stream at its limits, a leader
/// election) is sent again after them (docs/nats.md, "Delivery, duplicates and order").
#[derive(Clone)]
pub struct NatsSink {
    jetstream: async_nats::jetstream::Context,
    subject: SubjectTemplate,
}

impl std::fmt::Debug for NatsSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsSink")
            .field("subject", &self.subject.as_str())
            .finish_non_exhaustive()
    }
}

impl NatsSink {
    /// Connects to the servers. Does not wait for them: a relay started while NATS is down keeps
    /// its messages pending and catches up when it comes (the client reconnects for ever).
    /// Fails on settings that can never work (no server, an unreadable credentials file).
    pub async fn connect(config: &NatsConfig) -> Result<Self> {
        config.validate()?;
        if config.urls_hold_credentials() {
            tracing::warn!(
                "a NATS server URL holds a user or password: the NATS client logs server addresses \
                 at debug level; pass credentials with NatsAuth (the daemon: --nats-user and \
                 TXOUTBOX_NATS_PASSWORD, or a credentials file) instead"
            );
        }
        tracing::info!(servers = %config.servers_redacted(), subject = config.subject.as_str(), "connecting to NATS");
        let mut options = async_nats::ConnectOptions::new()
            .name(&config.connection_name)
            .retry_on_initial_connect()
            .max_reconnects(None)
            .require_tls(config.require_tls);
        options = match &config.auth {
            NatsAuth::None => options,
            NatsAuth::Token(token) => options.token(token.clone()),
            NatsAuth::UserPassword { user, password } => {
                options.user_and_password(user.clone(), password.clone())
            }
            NatsAuth::NKey(seed) => options.nkey(seed.clone()),
            NatsAuth::CredentialsFile(path) => options.credentials_file(path).await.map_err(|e| {
                Error::Config(format!(
                    "cannot read the NATS credentials file {}: {e}",
                    path.display()
                ))
            })?,
        };
        if let Some(path) = &config.root_certificates {
            options = options.add_root_certificates(path.clone());
        }
        if let Some((cert, key)) = &config.client_certificate {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        let client = options
            .connect(config.server_list())
            .await
            .map_err(|e| Error::Config(format!("cannot set up the NATS connection: {e}")))?;
        let jetstream = async_nats::jetstream::ContextBuilder::new()
            .timeout(config.ack_timeout)
            .max_ack_inflight(config.max_acks_in_flight)
            .backpressure_on_inflight(true)
            .build(client);
        Ok(Self {
            jetstream,
            subject: config.subject.clone(),
        })
    }

    /// The JetStream context the sink publishes through (e.g. to create streams at start-up).
    pub fn jetstream(&self) -> &async_nats::jetstream::Context {
        &self.jetstream
    }
}

impl Sink for NatsSink {
    async fn send_batch(&self, batch: Arc<[OutboxMessage]>) -> BatchDelivery {
        let tracker = DeliveryTracker::new(batch.len());
        // The acknowledgements are awaited while the batch is still being published: each one
        // holds a permit of the client's in-flight limit until it is awaited, so a batch larger
        // than the limit would otherwise wait for room for ever.
        let (acks, pending) = mpsc::unbounded_channel();
        tokio::spawn(complete_acks(
            pending,
            Arc::clone(&tracker),
            self.jetstream.clone(),
        ));
        self.publish_all(&batch, &tracker, &acks).await;
        tracker.delivery()
    }

    /// The server's `max_payload`, once the sink has met the server (until then: no limit known,
    /// and a larger message is refused when it is published).
    fn max_message_bytes(&self) -> Option<usize> {
        let max_payload = self.jetstream.client().server_info().max_payload;
        (max_payload > 0).then_some(max_payload)
    }

    /// Asks JetStream for the account's information: the server answers and JetStream is on.
    async fn probe(&self) -> std::result::Result<(), SinkError> {
        match tokio::time::timeout(PROBE_TIMEOUT, self.jetstream.query_account()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(SinkError::transient(format!(
                "NATS JetStream did not answer the account request: {error} (is JetStream enabled \
                 for this account, the server reachable, and may the relay's user publish to \
                 $JS.API.INFO?)"
            ))),
            Err(_) => Err(SinkError::transient(format!(
                "no answer from NATS JetStream within {}s",
                PROBE_TIMEOUT.as_secs()
            ))),
        }
    }
}

/// A publish waiting for its acknowledgement: the message's index, its subject, the ack.
type PendingAck = (usize, String, PublishAckFuture);

/// Completes each message of `tracker` as its acknowledgement comes (or fails), taking the
/// publishes from `pending` as they are made; ends once the batch is published and every
/// acknowledgement is in.
async fn complete_acks(
    mut pending: mpsc::UnboundedReceiver<PendingAck>,
    tracker: Arc<DeliveryTracker>,
    jetstream: async_nats::jetstream::Context,
) {
    let mut acks = FuturesUnordered::new();
    let mut no_stream = StreamLookups::default();
    let mut publishing = true;
    loop {
        tokio::select! {
            next = pending.recv(), if publishing => match next {
                Some((index, subject, ack)) => acks.push(async move { (index, subject, ack.await) }),
                None => publishing = false,
            },
            Some((index, subject, outcome)) = acks.next(), if !acks.is_empty() => {
                let result = match outcome {
                    Ok(_) => Ok(()),
                    Err(error) => Err(classify_failure(&jetstream, &mut no_stream, &error, &subject).await),
                };
                tracker.complete(index, result);
            }
            else => break,
        }
    }
}

impl NatsSink {
    /// Publishes each message of `batch` in order, handing each acknowledgement to `acks`. A
    /// message refused before it is published completes at once, and the later messages of its
    /// key in the batch are held back ([`SinkError::deferred`]) so none overtakes it. After a
    /// transient refusal (the connection is down, its queue full) the rest of the batch fails at
    /// once instead of waiting its turn.
    async fn publish_all(
        &self,
        batch: &[OutboxMessage],
        tracker: &Arc<DeliveryTracker>,
        acks: &mpsc::UnboundedSender<PendingAck>,
    ) {
        let mut stamps = CreatedAtText::default();
        let mut refused = RefusedKeys::default();
        let mut unusable: Option<SinkError> = None;
        for (index, message) in batch.iter().enumerate() {
            if let Some(error) = &unusable {
                tracker.complete(index, Err(error.clone()));
                continue;
            }
            if refused.holds(message) {
                tracker.complete(index, Err(SinkError::deferred()));
                continue;
            }
            match self.publish(message, &mut stamps).await {
                Ok((subject, ack)) => {
                    // The receiver lives until this sender is dropped.
                    let _ = acks.send((index, subject, ack));
                }
                Err(refusal) => {
                    let refusal = refusal.unsent();
                    if refusal.is_transient() {
                        unusable = Some(
                            SinkError::transient(format!(
                                "not sent: NATS could not take an earlier message of the batch: {refusal}"
                            ))
                            .unsent(),
                        );
                    }
                    refused.refuse(message);
                    tracker.complete(index, Err(refusal));
                }
            }
        }
    }

    /// Publishes one message; its subject and acknowledgement, or why it was not published.
    async fn publish(
        &self,
        message: &OutboxMessage,
        stamps: &mut CreatedAtText,
    ) -> std::result::Result<(String, PublishAckFuture), SinkError> {
        if let Some(reason) = &message.malformed {
            return Err(SinkError::rejected(reason.clone()));
        }
        let subject = self
            .subject
            .render(&message.topic, message.key.as_deref())
            .map_err(|why| SinkError::rejected(format!("the row cannot be published to NATS: {why}")))?;
        let headers =
            message_headers(message, stamps.format(message.created_at)).map_err(SinkError::rejected)?;
        let payload = message.payload.clone().unwrap_or_default();
        let publish = PublishMessage::build().payload(payload).headers(headers);
        match self.jetstream.send_publish(subject.clone(), publish).await {
            Ok(ack) => Ok((subject, ack)),
            Err(error) => Err(classify(&error, &subject)),
        }
    }
}
