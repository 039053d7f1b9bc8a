//! The Redis Streams sink: one `XADD` per message, a batch's commands in one pipeline, batches
//! written one after the other on one connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::mpsc;
use txoutbox_core::{
    BatchDelivery, CreatedAtText, DeliveryTracker, Error, OutboxMessage, RefusedKeys, Result, Sink, SinkError,
};

use crate::classify::{classify, classify_batch};
use crate::config::RedisConfig;
use crate::entry::entry_fields;

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Adds outbox messages to Redis streams and completes each one when the server has replied to
/// its `XADD` with the entry's id (in the server's memory and, with `appendonly yes`, its
/// append-only file; see docs/redis.md for durability).
///
/// Each message becomes an entry of the stream its key template gives, with the fields
/// `txoutbox-message-id`, `txoutbox-created-at`, `txoutbox-key` (the key's bytes), `payload`, and
/// `header:<name>` per header in the row's order. A batch goes in one pipeline; batches are
/// written in the relay's order, one after the other, on one connection that reconnects by itself.
/// After a message fails transiently, every batch handed over until the relay has given the
/// failed rows back fails too (they may hold later messages of its keys), so nothing overtakes
/// what the relay sends again.
pub struct RedisSink {
    config: Arc<RedisConfig>,
    client: redis::Client,
    jobs: mpsc::UnboundedSender<Job>,
    epochs: Arc<Epochs>,
}

/// Which batches the writer may write: those handed over in the relay's current send epoch,
/// once a failure (or the relay's `discard_queued`) has refused the ones before it.
#[derive(Debug, Default)]
struct Epochs {
    /// The relay's send epoch: moves on at every [`Sink::epoch_moved`].
    current: AtomicU64,
    /// Batches of an earlier epoch than this are refused (not sent).
    lowest_accepted: AtomicU64,
}

impl Epochs {
    /// Refuses every batch handed over until the epoch moves on.
    fn refuse_until_moved(&self) {
        let next = self.current.load(Ordering::Acquire) + 1;
        self.lowest_accepted.fetch_max(next, Ordering::AcqRel);
    }
}

impl std::fmt::Debug for RedisSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSink")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// A batch's pipeline on its way to the writer.
struct Job {
    pipeline: redis::Pipeline,
    /// The index and stream of each command, in pipeline order.
    commands: Vec<(usize, String)>,
    tracker: Arc<DeliveryTracker>,
    epoch: u64,
}

impl RedisSink {
    /// A sink for `config`, inside a tokio runtime. It connects at the first batch and again
    /// whenever the connection failed, so a relay started while Redis is down keeps its messages
    /// pending and catches up when it comes.
    pub fn new(config: &RedisConfig) -> Result<Self> {
        config.validate()?;
        let client = redis::Client::open(config.url.as_str())
            .map_err(|e| Error::Config(format!("Redis URL {}: {e}", config.url_redacted())))?;
        let manager = ConnectionManagerConfig::new()
            .set_response_timeout(Some(config.response_timeout))
            .set_connection_timeout(Some(CONNECT_TIMEOUT));
        let connection = ConnectionManager::new_lazy_with_config(client.clone(), manager.clone())
            .map_err(|e| Error::Config(format!("cannot set up the Redis connection: {e}")))?;
        tracing::info!(url = %config.url_redacted(), stream_key = config.stream_key.as_str(), "Redis Streams sink");
        let (jobs, queue) = mpsc::unbounded_channel();
        let epochs = Arc::new(Epochs::default());
        let writer = Writer {
            client: client.clone(),
            manager,
            connection,
            epochs: Arc::clone(&epochs),
        };
        tokio::spawn(writer.run(queue));
        Ok(Self {
            config: Arc::new(config.clone()),
            client,
            jobs,
            epochs,
        })
    }

    /// The pipeline of a batch: one `XADD` per message that can go; the others complete at once
    /// (refused, or held back behind a refused message of their key).
    fn pipeline(
        &self,
        batch: &[OutboxMessage],
        tracker: &Arc<DeliveryTracker>,
    ) -> (redis::Pipeline, Vec<(usize, String)>) {
        let mut pipeline = redis::pipe();
        pipeline.ignore_errors();
        let mut commands = Vec::with_capacity(batch.len());
        let mut stamps = CreatedAtText::default();
        let mut refused = RefusedKeys::default();
        for (index, message) in batch.iter().enumerate() {
            if refused.holds(message) {
                tracker.complete(index, Err(SinkError::deferred()));
                continue;
            }
            match self.command(message, &mut stamps) {
                Ok((stream, command)) => {
                    pipeline.add_command(command);
                    commands.push((index, stream));
                }
                Err(refusal) => {
                    refused.refuse(message);
                    tracker.complete(index, Err(refusal));
                }
            }
        }
        (pipeline, commands)
    }

    /// The `XADD` of one message and its stream, or why it cannot go.
    fn command(
        &self,
        message: &OutboxMessage,
        stamps: &mut CreatedAtText,
    ) -> std::result::Result<(String, redis::Cmd), SinkError> {
        if let Some(reason) = &message.malformed {
            return Err(SinkError::rejected(reason.clone()));
        }
        let stream = self
            .config
            .stream_key
            .render(&message.topic, message.key.as_deref())
            .map_err(|why| {
                SinkError::rejected(format!("the row cannot be added to a Redis stream: {why}"))
            })?;
        let (fields, size) = entry_fields(message, stamps.format(message.created_at));
        if size > self.config.max_message_bytes {
            return Err(SinkError::rejected(format!(
                "the message is {size} bytes, more than the {} this sink sends (raise it, and Redis's \
                 proto-max-bulk-len, then replay the message)",
                self.config.max_message_bytes
            )));
        }
        let mut command = redis::cmd("XADD");
        command.arg(&stream);
        if let Some(max_len) = self.config.max_len {
            command.arg("MAXLEN").arg("~").arg(max_len);
        }
        command.arg("*");
        for (field, value) in fields {
            command.arg(field).arg(value);
        }
        Ok((stream, command))
    }
}

/// The task that writes the queued batches one after the other on one connection.
struct Writer {
    client: redis::Client,
    manager: ConnectionManagerConfig,
    connection: ConnectionManager,
    epochs: Arc<Epochs>,
}

impl Writer {
    /// Writes each queued batch, completing each command's message. A batch of an epoch the
    /// sink refuses fails at once (transient, unsent).
    async fn run(mut self, mut queue: mpsc::UnboundedReceiver<Job>) {
        while let Some(job) = queue.recv().await {
            if job.epoch < self.epochs.lowest_accepted.load(Ordering::Acquire) {
                let refused = SinkError::transient(
                    "not sent: an earlier message failed and is sent again first (this batch may hold \
                     later messages of its key)",
                )
                .unsent();
                for (index, _) in &job.commands {
                    job.tracker.complete(*index, Err(refused.clone()));
                }
                continue;
            }
            let replies: redis::RedisResult<Vec<redis::RedisResult<redis::Value>>> =
                job.pipeline.query_async(&mut self.connection).await;
            match replies {
                Ok(replies) if replies.len() == job.commands.len() => {
                    for ((index, stream), reply) in job.commands.iter().zip(replies) {
                        let result = reply.map(drop).map_err(|e| classify(&e, stream));
                        if result.as_ref().is_err_and(SinkError::is_transient) {
                            // The batches behind it may hold later messages of its key.
                            self.epochs.refuse_until_moved();
                        }
                        job.tracker.complete(*index, result);
                    }
                }
                Ok(replies) => {
                    self.epochs.refuse_until_moved();
                    let error = SinkError::transient(format!(
                        "Redis answered {} of {} commands of the batch",
                        replies.len(),
                        job.commands.len()
                    ));
                    for (index, _) in &job.commands {
                        job.tracker.complete(*index, Err(error.clone()));
                    }
                }
                Err(error) => {
                    self.epochs.refuse_until_moved();
                    // The connection manager reconnects by itself after an I/O error only; after
                    // any other (a refused password, too many clients) it would keep failing.
                    if !error.is_io_error()
                        && let Ok(fresh) =
                            ConnectionManager::new_lazy_with_config(self.client.clone(), self.manager.clone())
                    {
                        self.connection = fresh;
                    }
                    for (index, stream) in &job.commands {
                        job.tracker.complete(*index, Err(classify_batch(&error, stream)));
                    }
                }
            }
        }
    }
}

impl Sink for RedisSink {
    async fn send_batch(&self, batch: Arc<[OutboxMessage]>) -> BatchDelivery {
        let tracker = DeliveryTracker::new(batch.len());
        let (pipeline, commands) = self.pipeline(&batch, &tracker);
        if commands.is_empty() {
            return tracker.delivery();
        }
        let job = Job {
            pipeline,
            commands,
            tracker: Arc::clone(&tracker),
            epoch: self.epochs.current.load(Ordering::Acquire),
        };
        if let Err(mpsc::error::SendError(job)) = self.jobs.send(job) {
            let gone = SinkError::transient("the Redis writer stopped").unsent();
            for (index, _) in &job.commands {
                tracker.complete(*index, Err(gone.clone()));
            }
        }
        tracker.delivery()
    }

    /// The batches queued and not written yet fail (transient, unsent), and so does every batch
    /// until the epoch moves: the relay sends their messages again after the failed one.
    fn discard_queued(&self) {
        self.epochs.refuse_until_moved();
    }

    /// Takes batches again: the relay has given back the rows that failed.
    fn epoch_moved(&self) {
        self.epochs.current.fetch_add(1, Ordering::AcqRel);
    }

    fn max_message_bytes(&self) -> Option<usize> {
        Some(self.config.max_message_bytes)
    }

    /// `PING` on a connection of its own (the writer's may be mid-batch, or rebuilt after a
    /// refused password).
    async fn probe(&self) -> std::result::Result<(), SinkError> {
        let ping = async {
            let mut connection = self.client.get_multiplexed_async_connection().await?;
            redis::cmd("PING").query_async::<String>(&mut connection).await
        };
        match tokio::time::timeout(self.config.response_timeout, ping).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(SinkError::transient(format!(
                "Redis at {} does not answer: {error}",
                self.config.url_redacted()
            ))),
            Err(_) => Err(SinkError::transient(format!(
                "no answer from Redis at {} within {} s",
                self.config.url_redacted(),
                self.config.response_timeout.as_secs()
            ))),
        }
    }
}
