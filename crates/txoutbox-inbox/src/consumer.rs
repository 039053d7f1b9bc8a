//! The inbox consumer: starts the poll thread, the lanes and the retention task, and stops them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use txoutbox_core::{Error, Result};

use crate::config::{ConsumerConfig, InboxConfig};
use crate::handler::Handler;
use crate::kafka_context::InboxContext;
use crate::poller::Poller;
use crate::progress::Progress;
use crate::replay::replay_marked;
use crate::store::InboxStore;
use crate::worker::{Shared, run_lane};

/// A Kafka consumer whose records are each handled once per message id, in a database
/// transaction that records the id: offsets are committed only after that commit, and a record
/// delivered again finds its id and is skipped.
///
/// ```no_run
/// # #[cfg(feature = "postgres")]
/// # async fn demo(pool: sqlx::PgPool) -> txoutbox_core::Result<()> {
/// use txoutbox_inbox::{ConsumerConfig, Handler, HandlerError, InboxConfig, InboxConsumer, InboxMessage, PgInbox};
///
/// struct Payments;
/// impl Handler<sqlx::Transaction<'static, sqlx::Postgres>> for Payments {
///     async fn handle(
///         &self,
///         tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
///         message: &InboxMessage,
///     ) -> Result<(), HandlerError> {
///         sqlx::query("INSERT INTO payments (order_key) VALUES ($1)")
///             .bind(message.key_str())
///             .execute(&mut **tx)
///             .await?;
///         Ok(())
///     }
/// }
///
/// let inbox = PgInbox::new(pool);
/// inbox.migrate().await?;
/// let kafka = ConsumerConfig::new("broker:9092", "payments", ["orders"]);
/// let running = InboxConsumer::new(kafka, inbox, Payments, InboxConfig::default()).start()?;
/// // ... at shutdown:
/// running.shutdown().await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct InboxConsumer<S, H> {
    kafka: ConsumerConfig,
    store: S,
    handler: H,
    config: InboxConfig,
}

impl<S, H> InboxConsumer<S, H>
where
    S: InboxStore,
    H: Handler<S::Tx>,
{
    /// A consumer of `kafka`'s topics into `store`, each record handled by `handler`.
    pub fn new(kafka: ConsumerConfig, store: S, handler: H, config: InboxConfig) -> Self {
        Self {
            kafka,
            store,
            handler,
            config,
        }
    }

    /// Joins the group and starts handling records (on the current tokio runtime; the Kafka
    /// polling runs on a thread of its own).
    pub fn start(self) -> Result<RunningInbox> {
        self.kafka.validate()?;
        self.config.validate()?;
        let Self {
            kafka,
            store,
            handler,
            config,
        } = self;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            Error::Config("InboxConsumer::start must be called inside a tokio runtime".into())
        })?;
        let name = kafka.group_id.clone();
        let progress = Arc::new(Progress::default());
        let consumer = create_consumer(&kafka, &name, &progress, config.revoke_timeout)?;

        let (stop_lanes, stopped) = watch::channel(false);
        let shared = Arc::new(Shared {
            store,
            handler,
            consumer: name.clone(),
            retry: config.retry.clone(),
            records_per_transaction: config.records_per_transaction,
            progress: Arc::clone(&progress),
        });
        let mut senders = Vec::with_capacity(config.concurrency);
        let mut lanes = Vec::with_capacity(config.concurrency);
        for _ in 0..config.concurrency {
            // Unbounded in records, bounded in bytes: the poll thread pauses fetching at the bound.
            let (sender, receiver) = mpsc::unbounded_channel();
            senders.push(sender);
            lanes.push(runtime.spawn(run_lane(Arc::clone(&shared), receiver, stopped.clone())));
        }
        let retention = runtime.spawn(remove_old_ids(
            Arc::clone(&shared),
            config.clone(),
            stopped.clone(),
        ));
        let replays = runtime.spawn(replay_marked(
            Arc::clone(&shared),
            config.replay_interval,
            stopped.clone(),
        ));

        let stop_polling = Arc::new(AtomicBool::new(false));
        let (lanes_done, lanes_done_receiver) = std::sync::mpsc::channel();
        let poller = Poller {
            consumer,
            lanes: senders,
            progress,
            name: name.clone(),
            message_id: config.message_id.clone(),
            max_in_flight_bytes: config.max_in_flight_bytes,
            commit_interval: config.commit_interval,
            stop: Arc::clone(&stop_polling),
        };
        let poll_thread = std::thread::Builder::new()
            .name(format!("txoutbox-inbox-{name}"))
            .spawn(move || poller.run(lanes_done_receiver))
            .map_err(|e| Error::Config(format!("could not start the inbox's poll thread: {e}")))?;
        tracing::info!(consumer = name, topics = ?kafka.topics, "inbox consumer started");
        Ok(RunningInbox {
            name,
            stop_polling,
            stop_lanes,
            lanes,
            background: vec![retention, replays],
            lanes_done,
            poll_thread: Some(poll_thread),
        })
    }
}

/// A started [`InboxConsumer`]. Call [`shutdown`](Self::shutdown) to stop it cleanly; dropping it
/// stops reading too, without waiting.
#[derive(Debug)]
pub struct RunningInbox {
    name: String,
    stop_polling: Arc<AtomicBool>,
    stop_lanes: watch::Sender<bool>,
    lanes: Vec<JoinHandle<()>>,
    /// Retention and replays.
    background: Vec<JoinHandle<()>>,
    lanes_done: std::sync::mpsc::Sender<()>,
    poll_thread: Option<std::thread::JoinHandle<()>>,
}

impl RunningInbox {
    /// Whether the consumer still works: its poll thread and every lane are alive (for a
    /// service's health check; after a panic outside a handler this turns `false`).
    pub fn is_running(&self) -> bool {
        self.poll_thread.as_ref().is_some_and(|t| !t.is_finished())
            && self.lanes.iter().all(|lane| !lane.is_finished())
    }

    /// Stops reading, lets each handler finish the record in hand (records waiting for a retry
    /// or queued are left uncommitted, to come again), commits the finished offsets and leaves
    /// the group.
    pub async fn shutdown(mut self) -> Result<()> {
        self.stop_polling.store(true, Ordering::Release);
        let _ = self.stop_lanes.send(true);
        for lane in std::mem::take(&mut self.lanes) {
            let _ = lane.await;
        }
        for task in std::mem::take(&mut self.background) {
            let _ = task.await;
        }
        let _ = self.lanes_done.send(());
        let Some(poll_thread) = self.poll_thread.take() else {
            return Ok(());
        };
        let joined = tokio::task::spawn_blocking(move || poll_thread.join()).await;
        tracing::info!(consumer = self.name, "inbox consumer stopped");
        match joined {
            Ok(Ok(())) => Ok(()),
            _ => Err(Error::Config("the inbox's poll thread panicked".into())),
        }
    }
}

impl Drop for RunningInbox {
    fn drop(&mut self) {
        self.stop_polling.store(true, Ordering::Release);
        let _ = self.stop_lanes.send(true);
        let _ = self.lanes_done.send(());
    }
}

fn create_consumer(
    kafka: &ConsumerConfig,
    name: &str,
    progress: &Arc<Progress>,
    revoke_timeout: Duration,
) -> Result<BaseConsumer<InboxContext>> {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &kafka.bootstrap_servers)
        .set("group.id", &kafka.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("statistics.interval.ms", "10000")
        // librdkafka's own prefetch, beside the records in hand (its default is 64 MiB).
        .set("queued.max.messages.kbytes", "16384");
    for (key, value) in &kafka.properties {
        client.set(key, value);
    }
    let context = InboxContext {
        consumer: name.to_owned(),
        progress: Arc::clone(progress),
        revoke_timeout,
    };
    let consumer: BaseConsumer<InboxContext> = client
        .create_with_context(context)
        .map_err(|e| Error::Config(format!("could not create the inbox's Kafka consumer: {e}")))?;
    let topics: Vec<&str> = kafka.topics.iter().map(String::as_str).collect();
    consumer
        .subscribe(&topics)
        .map_err(|e| Error::Config(format!("could not subscribe to {topics:?}: {e}")))?;
    Ok(consumer)
}

/// Removes handled ids older than the retention, in batches, every `retention_interval`.
async fn remove_old_ids<S, H>(shared: Arc<Shared<S, H>>, config: InboxConfig, mut stop: watch::Receiver<bool>)
where
    S: InboxStore,
    H: Handler<S::Tx>,
{
    loop {
        tokio::select! {
            _ = tokio::time::sleep(config.retention_interval) => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
        let mut removed = 0_u64;
        loop {
            match shared
                .store
                .remove_handled(&shared.consumer, config.retention, config.retention_batch)
                .await
            {
                Ok(n) => {
                    removed += n;
                    if n < u64::from(config.retention_batch) || *stop.borrow() {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(consumer = shared.consumer, error = %e, "could not remove old inbox ids; trying again later");
                    break;
                }
            }
        }
        if removed > 0 {
            tracing::debug!(consumer = shared.consumer, removed, "old inbox ids removed");
        }
    }
}
