//! Exactly-once delivery into Kafka for read_committed consumers: every batch of outbox rows goes
//! out in a Kafka transaction together with a progress record naming those rows, so a relay that
//! crashes between Kafka's commit and the database's mark is not followed by a resend — its
//! successor reads the progress and marks the rows instead. See `docs/guarantees.md`.
//!
//! The shape follows Kafka Connect's exactly-once source connectors (KIP-618): transactional ids
//! per outbox table (per relay slot), `init_transactions` at start fences every older relay with
//! them and aborts its open transactions; progress lives in a compacted topic, written inside the
//! same transaction as the records. Two producers take turns, so a transaction's `EndTxn` runs
//! while the next one fills.

mod failpoint;
mod progress;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use txoutbox_core::{
    BatchDelivery, DeliveryTracker, Error, OutboxMessage, Result, Sink, SinkError, SinkErrorKind,
    StreamPositions, TakenOver,
};

use crate::config::KafkaConfig;
use crate::context::{DeliveryRef, SinkContext};
use failpoint::Step;
use progress::Progress;

/// How often the sink checks whether the open transaction is due (its commit interval).
const TICK: Duration = Duration::from_millis(5);

/// How long a transactional call (init, commit, abort) may block.
const TXN_TIMEOUT: Duration = Duration::from_secs(30);

/// Exactly-once settings.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExactlyOnceSettings {
    /// The producers' `transactional.id`: one per outbox table (two relays with the same id fence
    /// each other, which is the point). The relay's second producer uses `<id>.1`. Default:
    /// `txoutbox-outbox_messages`.
    pub transactional_id: String,
    /// The compacted, one-partition topic holding progress records (created at start when
    /// missing). Default: `txoutbox-progress`.
    pub progress_topic: String,
    /// A transaction is committed at the latest this long after it began, and as soon as the
    /// relay reports the end of a burst ([`Sink::end_of_burst`]: it has nothing more to send for
    /// now, or no room in flight). Default: 100 ms.
    pub commit_interval: Duration,
    /// A transaction is committed once it holds this many messages. Default: 10,000.
    pub max_messages: usize,
    /// Replication factor of the progress topic when it is created. Default: 1 on a one-broker
    /// cluster; set 3 in production.
    pub progress_replication: i32,
    /// Whether the relay may create the progress topic when it is missing. Default: no — a
    /// missing topic stops the relay at start, since it may have been deleted: its successor
    /// would not know which rows Kafka already holds and would send them again. Turn it on for
    /// the first run (the daemon: `--create-progress-topic`, or `--migrate`).
    pub create_progress_topic: bool,
}

impl ExactlyOnceSettings {
    /// Settings for the outbox table named `table` (its name makes the transactional id).
    pub fn for_table(table: &str) -> Self {
        Self {
            transactional_id: format!("txoutbox-{table}"),
            progress_topic: "txoutbox-progress".to_owned(),
            commit_interval: Duration::from_millis(100),
            max_messages: 10_000,
            progress_replication: 1,
            create_progress_topic: false,
        }
    }

    /// Settings for a WAL relay streaming the replication slot `slot` (transactional id
    /// `txoutbox-wal-<slot>`): its progress is recorded in WAL positions.
    pub fn for_wal_slot(slot: &str) -> Self {
        Self::for_table(&format!("wal-{slot}"))
    }

    /// Sets the transactional id.
    #[must_use]
    pub fn with_transactional_id(mut self, id: impl Into<String>) -> Self {
        self.transactional_id = id.into();
        self
    }

    /// Sets the progress topic.
    #[must_use]
    pub fn with_progress_topic(mut self, topic: impl Into<String>) -> Self {
        self.progress_topic = topic.into();
        self
    }

    /// Sets when transactions commit.
    #[must_use]
    pub fn with_commit(mut self, interval: Duration, max_messages: usize) -> Self {
        self.commit_interval = interval;
        self.max_messages = max_messages.max(1);
        self
    }

    /// The relay's `max_in_flight` these settings want (`RelayConfig::with_max_in_flight`):
    /// four transactions' worth. A transaction's rows stay in flight until it commits; with room
    /// for only one, the relay stops reading at every commit, and throughput falls by the share
    /// of time spent committing. The daemon uses it unless `--max-in-flight` is given.
    pub fn recommended_max_in_flight(&self) -> usize {
        self.max_messages.saturating_mul(4)
    }

    /// Lets the relay create the progress topic when it is missing (see
    /// [`create_progress_topic`](Self::create_progress_topic)).
    #[must_use]
    pub fn with_create_progress_topic(mut self, create: bool) -> Self {
        self.create_progress_topic = create;
        self
    }

    /// Sets the progress topic's replication factor (used when the relay creates it).
    #[must_use]
    pub fn with_progress_replication(mut self, replication: i32) -> Self {
        self.progress_replication = replication;
        self
    }
}

/// How many transactional producers take turns. While one commits (Kafka's coordinator writes
/// its transaction markers), the other begins the next transaction. A producer that begins right
/// after its own commit is answered CONCURRENT_TRANSACTIONS, and librdkafka retries after a fixed
/// 20 ms, which every back-to-back transaction would otherwise pay.
const LANES: usize = 2;

/// The transactional id of a lane: the configured id for the first, `<id>.1` for the second.
fn lane_transactional_id(base: &str, lane: usize) -> String {
    if lane == 0 {
        base.to_owned()
    } else {
        format!("{base}.{lane}")
    }
}

/// The transactional id of the work-balance session `epoch` of a table whose configured id is
/// `base`.
fn session_transactional_id(base: &str, epoch: i64) -> String {
    format!("{base}-e{epoch}")
}

/// A batch inside the open transaction: its rows, the relay's tracker (resolved at commit) and
/// the per-message outcomes librdkafka reports.
struct Pending {
    /// The rows the producer took (those refused when enqueued are not in the transaction).
    ids: Vec<i64>,
    /// How many messages the batch has (its indexes in the trackers).
    len: usize,
    engine: Arc<DeliveryTracker>,
    sent: Arc<DeliveryTracker>,
}

struct Open {
    /// The producer (lane) the transaction runs on.
    lane: usize,
    txn: String,
    began: Instant,
    messages: usize,
    batches: Vec<Pending>,
}

impl Open {
    fn ids(&self) -> impl Iterator<Item = i64> + '_ {
        self.batches.iter().flat_map(|b| b.ids.iter().copied())
    }

    /// Resolves every row of the transaction with `outcome`: delivered once Kafka committed it,
    /// or the error it failed with.
    fn resolve_all(&self, outcome: &std::result::Result<(), SinkError>) {
        for batch in &self.batches {
            for index in 0..batch.len {
                batch.engine.complete(index, outcome.clone());
            }
        }
    }
}

/// The error of every outcome once another relay took the transactional id.
fn fenced_error(reason: String) -> SinkError {
    SinkError::new(SinkErrorKind::Fenced, None, reason)
}

/// A transaction whose commit (`EndTxn`) runs in the background while the other lane fills the
/// next one. Its records are all acknowledged already.
struct Committing {
    open: Arc<Open>,
    /// The commit's outcome; on success the task has resolved the batches already.
    task: tokio::task::JoinHandle<std::result::Result<(), KafkaError>>,
}

struct State {
    /// One producer per lane: `None` until started, and after a failure that spoiled it.
    producers: [Option<Arc<ThreadedProducer<SinkContext>>>; LANES],
    /// The lane the next transaction begins on.
    lane: usize,
    open: Option<Open>,
    /// The previous transaction while its commit runs: the open one commits only after it did,
    /// and is aborted when it did not (it may hold later rows of the same keys).
    committing: Option<Committing>,
    fenced: Option<String>,
}

impl State {
    /// The producer of `lane` (lanes are below [`LANES`]), if it runs.
    fn producer(&self, lane: usize) -> Option<Arc<ThreadedProducer<SinkContext>>> {
        self.producers.get(lane).cloned().flatten()
    }

    /// Sets (or drops, with `None`) the producer of `lane`.
    fn set_producer(&mut self, lane: usize, producer: Option<Arc<ThreadedProducer<SinkContext>>>) {
        if let Some(slot) = self.producers.get_mut(lane) {
            *slot = producer;
        }
    }
}

struct Inner {
    config: KafkaConfig,
    settings: ExactlyOnceSettings,
    state: tokio::sync::Mutex<State>,
    /// Rows of committed transactions whose database mark is not confirmed yet.
    unmarked: Mutex<BTreeSet<i64>>,
    /// Rows went back to the relay as failed and the relay has not drained yet (see `spoil`).
    spoiled: std::sync::atomic::AtomicBool,
    ticker: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The relay reported the end of a burst: the ticker commits the open transaction now (a
    /// report while the ticker is busy is kept as the Notify's permit).
    burst_ended: Arc<tokio::sync::Notify>,
    /// The store's positions when its ids last one session (WAL mode): progress is recorded in
    /// them instead of ids.
    positions: Mutex<Option<Arc<dyn StreamPositions>>>,
    /// The labels of this sink's metrics: its relay's (see [`Sink::use_metric_labels`]).
    labels: Mutex<Vec<metrics::Label>>,
    /// Whether the last `recover` found progress under the transactional id (`None` before it).
    progress_found: Mutex<Option<bool>>,
    /// The session this sink's identity belongs to (work-balance mode, [`Sink::use_session`]).
    session: Mutex<Option<i64>>,
}

impl Inner {
    /// The labels of this sink's metrics and `outcome`.
    fn labels_and_outcome(&self, outcome: &'static str) -> Vec<metrics::Label> {
        let mut labels = self.labels.lock().unwrap_or_else(|p| p.into_inner()).clone();
        labels.push(metrics::Label::new("outcome", outcome));
        labels
    }

    /// Counts a transaction that ended with `outcome`.
    fn record_transaction(&self, outcome: &'static str) {
        metrics::counter!("txoutbox_transactions_total", self.labels_and_outcome(outcome)).increment(1);
    }

    fn unmarked(&self) -> std::sync::MutexGuard<'_, BTreeSet<i64>> {
        self.unmarked.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The exactly-once Kafka sink: batches go out in Kafka transactions with progress records.
///
/// ```no_run
/// # fn demo() -> txoutbox_core::Result<()> {
/// use txoutbox_kafka::{ExactlyOnceSettings, ExactlyOnceSink, KafkaConfig};
/// let sink = ExactlyOnceSink::new(&KafkaConfig::new("broker:9092"), ExactlyOnceSettings::for_table("outbox_messages"))?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ExactlyOnceSink {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ExactlyOnceSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExactlyOnceSink")
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(ticker) = self.ticker.get_mut().ok().and_then(Option::take) {
            ticker.abort();
        }
    }
}

fn blocking_error(e: tokio::task::JoinError) -> Error {
    Error::Sink(SinkError::transient(format!(
        "a Kafka transaction call failed: {e}"
    )))
}

/// Whether an error code means another producer took over our transactional id.
fn is_fenced_code(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::Fenced
            | RDKafkaErrorCode::ProducerFenced
            | RDKafkaErrorCode::InvalidProducerEpoch
            | RDKafkaErrorCode::TransactionCoordinatorFenced
    )
}

/// Whether a transactional error means another producer took over our transactional id.
fn is_fenced(error: &KafkaError) -> bool {
    error.rdkafka_error_code().is_some_and(is_fenced_code)
}

/// The producer's fatal error, when it says another producer took over the transactional id.
fn fenced_by_successor(producer: &ThreadedProducer<SinkContext>) -> Option<String> {
    let (code, reason) = producer.client().fatal_error()?;
    is_fenced_code(code).then_some(reason)
}

impl ExactlyOnceSink {
    /// Fails every row of `open` with `error`; later batches are refused until the relay drained.
    fn fail_all(&self, open: &Open, error: &SinkError) {
        self.spoil();
        open.resolve_all(&Err(error.clone()));
    }

    /// Rows went back to the relay as failed: later rows of their keys may already be on their
    /// way here (read before the relay heard of the failure). Until the relay moved its epoch on
    /// (`epoch_moved`), every batch is refused (deferred), so none of them can commit ahead of
    /// the failed rows they follow.
    fn spoil(&self) {
        self.inner
            .spoiled
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Resolves every message of a batch with `error`.
    fn refuse(engine: &DeliveryTracker, len: usize, error: &SinkError) {
        for index in 0..len {
            engine.complete(index, Err(error.clone()));
        }
    }

    /// Enters the fenced state and returns the error every later outcome carries: the relay
    /// stops, and the producers are never recreated (that would fence the successor in turn).
    fn enter_fenced(&self, state: &mut State, reason: &str) -> SinkError {
        let message = format!(
            "another relay took over the Kafka transactional id `{}` (this relay is fenced): {reason}",
            self.transactional_id()
        );
        self.inner.record_transaction("fenced");
        state.producers = Default::default();
        state.fenced = Some(message.clone());
        fenced_error(message)
    }

    /// Enters the fenced state; every outcome of `open` is Fenced.
    fn fence(&self, state: &mut State, open: &Open, reason: &str) {
        let error = self.enter_fenced(state, reason);
        self.fail_all(open, &error);
    }

    /// Checks the settings; connects when the relay starts (`recover`).
    pub fn new(config: &KafkaConfig, settings: ExactlyOnceSettings) -> Result<Self> {
        config.validate()?;
        if settings.transactional_id.trim().is_empty() {
            return Err(Error::Config("the exactly-once transactional id is empty".into()));
        }
        txoutbox_core::validate_topic_name(&settings.progress_topic)?;
        let config = config.clone().set("enable.idempotence", "true");
        tracing::info!(properties = ?config.redacted(), transactional_id = %settings.transactional_id, "exactly-once Kafka producer");
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                settings,
                state: tokio::sync::Mutex::new(State {
                    producers: Default::default(),
                    lane: 0,
                    open: None,
                    committing: None,
                    fenced: None,
                }),
                unmarked: Mutex::new(BTreeSet::new()),
                spoiled: std::sync::atomic::AtomicBool::new(false),
                ticker: Mutex::new(None),
                burst_ended: Arc::new(tokio::sync::Notify::new()),
                positions: Mutex::new(None),
                labels: Mutex::new(Vec::new()),
                progress_found: Mutex::new(None),
                session: Mutex::new(None),
            }),
        })
    }

    fn unmarked(&self) -> std::sync::MutexGuard<'_, BTreeSet<i64>> {
        self.inner.unmarked()
    }

    /// The transactional id this sink runs under: the configured one, or in work-balance mode
    /// the session's (`<id>-e<epoch>`). Also the key of its progress records.
    fn transactional_id(&self) -> String {
        let session = *self.inner.session.lock().unwrap_or_else(|p| p.into_inner());
        match session {
            Some(epoch) => session_transactional_id(&self.inner.settings.transactional_id, epoch),
            None => self.inner.settings.transactional_id.clone(),
        }
    }

    /// The store's positions, when its ids last one session (set by the relay at start).
    fn positions(&self) -> Option<Arc<dyn StreamPositions>> {
        self.inner
            .positions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A new producer for `lane` with `init_transactions` done: fences every older producer with
    /// its transactional id and aborts (or completes) its open transaction.
    async fn start_producer(&self, lane: usize) -> Result<Arc<ThreadedProducer<SinkContext>>> {
        self.start_producer_as(&self.transactional_id(), lane).await
    }

    /// [`start_producer`](Self::start_producer) for the transactional id `base` (of this sink,
    /// or of a lost session it takes over).
    async fn start_producer_as(&self, base: &str, lane: usize) -> Result<Arc<ThreadedProducer<SinkContext>>> {
        let transactional_id = lane_transactional_id(base, lane);
        let producer: ThreadedProducer<SinkContext> = self
            .inner
            .config
            .clone()
            .set("transactional.id", transactional_id.clone())
            .client_config()
            .create_with_context(SinkContext::default())
            .map_err(|e| Error::Config(format!("could not create the Kafka producer: {e}")))?;
        let producer = Arc::new(producer);
        let init = Arc::clone(&producer);
        tokio::task::spawn_blocking(move || init.init_transactions(TXN_TIMEOUT))
            .await
            .map_err(blocking_error)?
            .map_err(|e| {
                let message = format!(
                    "could not start Kafka transactions for `{transactional_id}`: {e}. The brokers must support \
                     transactions (Kafka 0.11+, with transaction.state.log settings the cluster can meet) and \
                     the relay's principal needs WRITE on the transactional ids `{base}` and `{base}.1`"
                );
                match e.rdkafka_error_code() {
                    Some(
                        RDKafkaErrorCode::TransactionalIdAuthorizationFailed
                        | RDKafkaErrorCode::ClusterAuthorizationFailed,
                    ) => Error::Config(message),
                    _ => Error::Sink(SinkError::transient(message)),
                }
            })?;
        Ok(producer)
    }

    /// Where progress is kept, for messages.
    fn progress_location(&self) -> String {
        format!("the progress topic `{}`", self.inner.settings.progress_topic)
    }

    /// Checks the progress topic, creating it when allowed and missing.
    async fn ensure_progress_topic(&self) -> Result<()> {
        let client = self.inner.config.client_config();
        progress::ensure_topic(
            &client,
            &self.inner.settings.progress_topic,
            self.inner.settings.progress_replication,
            self.inner.settings.create_progress_topic,
        )
        .await
    }

    /// What the last progress means for this start: the row ids to complete, or (with stream
    /// positions) none, once the store was told what to skip. Progress written by a relay of the
    /// other kind is refused: its rows cannot be matched.
    fn resume(&self, last: Option<Progress>) -> Result<Vec<i64>> {
        let id = &self.transactional_id();
        match (last, self.positions()) {
            (None, _) => Ok(Vec::new()),
            (Some(p), None) if p.stream.is_some() => Err(Error::Config(format!(
                "the exactly-once progress of the transactional id `{id}` was written by a relay reading the \
                 WAL (--source wal), and this one reads an outbox table: give each its own transactional id"
            ))),
            (Some(p), None) => Ok(p.all_ids()),
            (Some(p), Some(positions)) => match &p.stream {
                Some(description) => {
                    positions.resume(description)?;
                    Ok(Vec::new())
                }
                None => Err(Error::Config(format!(
                    "the exactly-once progress of the transactional id `{id}` was written by a relay reading \
                     an outbox table, and this one reads the WAL (--source wal): give each its own \
                     transactional id"
                ))),
            },
        }
    }

    /// The last committed progress of this relay (both lanes write it under the configured id).
    async fn read_progress(&self) -> Result<Option<Progress>> {
        self.read_progress_of(self.transactional_id()).await
    }

    /// The last committed progress written under the transactional id `id`.
    async fn read_progress_of(&self, id: String) -> Result<Option<Progress>> {
        let client = self.inner.config.client_config();
        let topic = self.inner.settings.progress_topic.clone();
        tokio::task::spawn_blocking(move || progress::read_last(&client, &topic, &id))
            .await
            .map_err(blocking_error)?
    }

    /// The progress record of `open`: its rows and the unmarked ones, or, with stream
    /// positions, the store's description of everything delivered once it commits.
    fn progress(&self, open: &Open) -> Progress {
        let unmarked: Vec<i64> = self.unmarked().iter().copied().collect();
        let positions = self.positions();
        match positions {
            None => Progress {
                v: progress::VERSION,
                txn: open.txn.clone(),
                ids: open.ids().collect(),
                unmarked,
                stream: None,
            },
            Some(positions) => {
                let delivered: Vec<i64> = open.ids().chain(unmarked).collect();
                Progress {
                    v: progress::VERSION,
                    txn: open.txn.clone(),
                    ids: Vec::new(),
                    unmarked: Vec::new(),
                    stream: Some(positions.describe(&delivered)),
                }
            }
        }
    }

    /// Commits the open transaction (if any): writes its progress record, waits until Kafka
    /// acknowledged all its records, and leaves `EndTxn` running in the background while the
    /// next transaction begins on the other lane.
    async fn commit(&self, state: &mut State) {
        if !self.settle(state).await {
            return;
        }
        let started = Instant::now();
        let Some(open) = state.open.take() else {
            return;
        };
        let Some(producer) = state.producer(open.lane) else {
            self.fail_all(&open, &SinkError::transient("the Kafka producer is gone"));
            return;
        };
        let progress = self.progress(&open);
        let payload = serde_json::to_vec(&progress).unwrap_or_default();
        let key = self.transactional_id();
        let topic = self.inner.settings.progress_topic.clone();
        let record: BaseRecord<'_, String, [u8], Box<DeliveryRef>> = BaseRecord::with_opaque_to(
            &topic,
            Box::new(DeliveryRef {
                tracker: DeliveryTracker::new(1),
                index: 0,
            }),
        )
        .key(&key)
        .payload(&payload);
        if let Err((error, _)) = producer.send(record) {
            if let Some(reason) = fenced_by_successor(&producer) {
                self.fence(state, &open, &reason);
                return;
            }
            tracing::warn!(%error, "could not write the progress record; the transaction is aborted");
            self.abort(state, &producer, &open, None).await;
            return;
        }
        // Every record must be acknowledged before the other lane produces: its records must
        // follow these in each partition. rdkafka's commit would also flush, but in steps of up
        // to 100 ms while the producer's own thread serves the delivery reports; wait in 1 ms
        // steps instead.
        let waiting = Arc::clone(&producer);
        let acked = tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + TXN_TIMEOUT;
            while waiting.in_flight_count() > 0 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            waiting.in_flight_count() == 0
        })
        .await
        .unwrap_or(false);
        if !acked {
            tracing::warn!("Kafka did not take the transaction's messages in time; aborting it");
            self.abort(state, &producer, &open, None).await;
            return;
        }
        failpoint::hit(Step::BeforeCommit);
        let open = Arc::new(open);
        state.lane = (open.lane + 1) % LANES;
        let task = tokio::spawn(end_transaction(
            Arc::clone(&self.inner),
            producer,
            Arc::clone(&open),
            started,
        ));
        state.committing = Some(Committing { open, task });
    }

    /// Waits for the previous transaction's commit and deals with its failure. Returns whether
    /// it committed (true when there was none). When it did not, the open transaction is aborted
    /// as well: it began after the other's records, so it may hold later rows of their keys.
    async fn settle(&self, state: &mut State) -> bool {
        let Some(Committing { open, task }) = state.committing.take() else {
            return true;
        };
        let committed = match task.await.unwrap_or(Err(KafkaError::Canceled)) {
            Ok(()) => true,
            Err(error) => self.failed_commit(state, &open, error).await,
        };
        if !committed && let Some(later) = state.open.take() {
            match state.producer(later.lane) {
                Some(producer) => self.abort(state, &producer, &later, None).await,
                None => self.fail_all(
                    &later,
                    &state.fenced.clone().map_or_else(
                        || SinkError::transient("an earlier Kafka transaction did not commit; sent again"),
                        fenced_error,
                    ),
                ),
            }
        }
        committed
    }

    /// A commit that failed: abort when Kafka says so, otherwise learn the outcome. Returns
    /// whether the transaction committed after all.
    async fn failed_commit(&self, state: &mut State, open: &Open, error: KafkaError) -> bool {
        let producer = state.producer(open.lane);
        match (error, producer) {
            (KafkaError::Transaction(e), Some(producer)) if e.txn_requires_abort() => {
                tracing::warn!(error = %e, "the Kafka transaction must be aborted; its messages are sent again");
                self.abort(state, &producer, open, None).await;
                false
            }
            (error, _) => self.unknown_outcome(state, open, error).await,
        }
    }

    /// Aborts the transaction; each message comes back permanent (its own fault) or transient.
    async fn abort(
        &self,
        state: &mut State,
        producer: &Arc<ThreadedProducer<SinkContext>>,
        open: &Open,
        cause: Option<SinkError>,
    ) {
        self.inner.record_transaction("aborted");
        self.spoil();
        let aborting = Arc::clone(producer);
        let aborted = tokio::task::spawn_blocking(move || aborting.abort_transaction(TXN_TIMEOUT)).await;
        let ok = matches!(aborted, Ok(Ok(())));
        for batch in &open.batches {
            let results = batch.sent.outcomes_so_far();
            for (index, result) in results.into_iter().enumerate() {
                let outcome = match (result, &cause) {
                    (Some(Err(e)), _) if e.kind() == SinkErrorKind::Permanent => Err(e),
                    (_, Some(cause)) => Err(cause.clone()),
                    _ => Err(SinkError::transient(
                        "the Kafka transaction was aborted; sent again",
                    )),
                };
                batch.engine.complete(index, outcome);
            }
        }
        if !ok && let Some(reason) = fenced_by_successor(producer) {
            self.enter_fenced(state, &reason);
            return;
        }
        if !ok {
            // An abort that failed leaves the producer unusable: start afresh next time.
            tracing::warn!("could not abort the Kafka transaction; the producer is recreated");
            state.set_producer(open.lane, None);
        }
    }

    /// A commit whose outcome is unknown (or a fatal error): drop the producer, fence it with a
    /// new one, and learn from the progress topic whether the transaction committed. Rows are
    /// never marked on a guess. Returns whether it committed.
    async fn unknown_outcome(&self, state: &mut State, open: &Open, error: KafkaError) -> bool {
        if let Some(reason) = state.fenced.clone() {
            self.fail_all(open, &fenced_error(reason));
            return false;
        }
        let fatal = state.producer(open.lane).as_deref().and_then(fenced_by_successor);
        state.set_producer(open.lane, None);
        if is_fenced(&error) || fatal.is_some() {
            self.fence(state, open, &fatal.unwrap_or_else(|| error.to_string()));
            return false;
        }
        tracing::warn!(%error, "the outcome of a Kafka commit is unknown; asking the progress topic");
        // Until Kafka answers, nothing else is sent: a guess either way could lose or repeat rows.
        // (A transaction open on the other lane has no progress record yet, so it does not hold
        // the read back; it commits only if this one did.)
        let mut delay = Duration::from_millis(200);
        let (producer, last) = loop {
            let resolved = async {
                let producer = self.start_producer(open.lane).await?;
                let last = self.read_progress().await?;
                Ok::<_, Error>((producer, last))
            }
            .await;
            match resolved {
                Ok(resolved) => break resolved,
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = %txoutbox_core::HumanDuration(delay), "cannot learn the outcome of a Kafka commit yet");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        };
        state.set_producer(open.lane, Some(producer));
        if last.is_some_and(|p| p.txn == open.txn) {
            self.inner.record_transaction("committed");
            self.unmarked().extend(open.ids());
            open.resolve_all(&Ok(()));
            true
        } else {
            self.inner.record_transaction("aborted");
            self.fail_all(
                open,
                &SinkError::transient(format!("the Kafka transaction did not commit: {error}")),
            );
            false
        }
    }

    /// The producer of `lane`, started (with `init_transactions`) when it is not running.
    async fn ensure_producer(
        &self,
        state: &mut State,
        lane: usize,
    ) -> Result<Arc<ThreadedProducer<SinkContext>>> {
        if let Some(producer) = &state.producer(lane) {
            return Ok(Arc::clone(producer));
        }
        let producer = self.start_producer(lane).await?;
        state.set_producer(lane, Some(Arc::clone(&producer)));
        Ok(producer)
    }

    /// Starts the ticker, once: it commits the open transaction when it is due, and settles a
    /// finished background commit (so a failed one is handled even when nothing else is sent).
    fn ensure_ticker(&self) {
        let mut ticker = self.inner.ticker.lock().unwrap_or_else(|p| p.into_inner());
        if ticker.is_none() {
            *ticker = Some(self.spawn_ticker());
        }
    }

    fn spawn_ticker(&self) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(&self.inner);
        let interval = self.inner.settings.commit_interval;
        let burst = Arc::clone(&self.inner.burst_ended);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let burst_ended = tokio::select! {
                    _ = tick.tick() => false,
                    () = burst.notified() => true,
                };
                let Some(inner) = weak.upgrade() else { return };
                let sink = ExactlyOnceSink { inner };
                let mut state = sink.inner.state.lock().await;
                let due = state
                    .open
                    .as_ref()
                    .is_some_and(|o| burst_ended || o.began.elapsed() >= interval);
                if due {
                    sink.commit(&mut state).await;
                } else if state.committing.as_ref().is_some_and(|c| c.task.is_finished()) {
                    sink.settle(&mut state).await;
                }
            }
        })
    }
}

/// Ends a transaction whose records Kafka acknowledged (`EndTxn`, retried when Kafka says it
/// may be), then resolves its batches when it committed.
async fn end_transaction(
    inner: Arc<Inner>,
    producer: Arc<ThreadedProducer<SinkContext>>,
    open: Arc<Open>,
    started: Instant,
) -> std::result::Result<(), KafkaError> {
    let ending = Instant::now();
    let outcome = tokio::task::spawn_blocking(move || {
        let mut outcome = Err(KafkaError::Canceled);
        for _ in 0..3 {
            outcome = producer.commit_transaction(TXN_TIMEOUT);
            match &outcome {
                Err(KafkaError::Transaction(e)) if e.is_retriable() => continue,
                _ => break,
            }
        }
        outcome
    })
    .await
    .unwrap_or(Err(KafkaError::Canceled));
    if outcome.is_ok() {
        tracing::debug!(
            messages = open.messages,
            lane = open.lane,
            open_ms = open.began.elapsed().as_millis() as u64,
            commit_ms = started.elapsed().as_millis() as u64,
            end_txn_ms = ending.elapsed().as_millis() as u64,
            "Kafka transaction committed"
        );
        let labels = inner.labels.lock().unwrap_or_else(|p| p.into_inner()).clone();
        metrics::histogram!("txoutbox_transaction_commit_seconds", labels)
            .record(started.elapsed().as_secs_f64());
        inner.record_transaction("committed");
        inner.unmarked().extend(open.ids());
        failpoint::hit(Step::AfterCommit);
        open.resolve_all(&Ok(()));
    }
    outcome
}

impl Sink for ExactlyOnceSink {
    /// No: every record a transaction carries counts in its progress record as the row's delivery.
    fn accepts_dead_letter_copies(&self) -> bool {
        false
    }

    /// Exactly-once: an at-least-once relay on the same table would resend rows this one's
    /// progress records name, so coordinated relays of the two kinds refuse to share a table.
    fn delivery(&self) -> Option<&'static str> {
        Some("exactly-once")
    }

    fn max_message_bytes(&self) -> Option<usize> {
        Some(self.inner.config.max_message_bytes())
    }

    async fn send_batch(&self, batch: Arc<[OutboxMessage]>) -> BatchDelivery {
        self.ensure_ticker();
        let engine = DeliveryTracker::new(batch.len());
        let mut state = self.inner.state.lock().await;
        if let Some(reason) = &state.fenced {
            Self::refuse(&engine, batch.len(), &fenced_error(reason.clone()));
            return engine.delivery();
        }
        let lane = state.open.as_ref().map_or(state.lane, |open| open.lane);
        // A producer begins its next transaction only when its last commit is over.
        if state.committing.as_ref().is_some_and(|c| c.open.lane == lane) {
            self.settle(&mut state).await;
        }
        if self.inner.spoiled.load(std::sync::atomic::Ordering::Acquire) {
            // Deferred: not this batch's failure nor Kafka's (no attempt, no back-off, health
            // unchanged); the relay reads the rows again after the failed ones.
            let error = SinkError::new(
                SinkErrorKind::Deferred,
                None,
                "an earlier Kafka transaction of this relay did not commit; read again after its rows",
            );
            Self::refuse(&engine, batch.len(), &error);
            return engine.delivery();
        }
        let producer = match self.ensure_producer(&mut state, lane).await {
            Ok(producer) => producer,
            Err(error) => {
                self.spoil();
                Self::refuse(&engine, batch.len(), &SinkError::transient(error.to_string()));
                return engine.delivery();
            }
        };
        if state.open.is_none() {
            let beginning = Arc::clone(&producer);
            match tokio::task::spawn_blocking(move || beginning.begin_transaction()).await {
                Ok(Ok(())) => {
                    state.open = Some(Open {
                        lane,
                        txn: uuid::Uuid::now_v7().to_string(),
                        began: Instant::now(),
                        messages: 0,
                        batches: Vec::new(),
                    });
                    failpoint::hit(Step::BeforeProduce);
                }
                outcome => {
                    let message = match outcome {
                        Ok(Err(e)) => e.to_string(),
                        Err(e) => e.to_string(),
                        Ok(Ok(())) => String::new(),
                    };
                    if let Some(reason) = fenced_by_successor(&producer) {
                        let error = self.enter_fenced(&mut state, &reason);
                        Self::refuse(&engine, batch.len(), &error);
                        return engine.delivery();
                    }
                    tracing::warn!(error = %message, "could not begin a Kafka transaction; the producer is recreated");
                    state.set_producer(lane, None);
                    self.spoil();
                    let error =
                        SinkError::transient(format!("could not begin a Kafka transaction: {message}"));
                    Self::refuse(&engine, batch.len(), &error);
                    return engine.delivery();
                }
            }
        }
        let sent = DeliveryTracker::new(batch.len());
        let transient = crate::enqueue::enqueue(&producer, &batch, &sent).await;
        // Messages refused before the producer took them (unreadable, an invalid topic, too
        // large, or held back behind such a one of their key) are not in the transaction: they
        // fail now, and no progress record names them.
        let mut ids = Vec::with_capacity(batch.len());
        for (index, (message, outcome)) in batch.iter().zip(sent.outcomes_so_far()).enumerate() {
            match outcome {
                Some(Err(e)) if e.is_unsent() => engine.complete(index, Err(e)),
                _ => ids.push(message.id),
            }
        }
        let Some(open) = state.open.as_mut() else {
            // Unreachable: a transaction was opened above. Refuse rather than panic.
            Self::refuse(
                &engine,
                batch.len(),
                &SinkError::transient("no Kafka transaction is open"),
            );
            return engine.delivery();
        };
        open.messages += ids.len();
        open.batches.push(Pending {
            ids,
            len: batch.len(),
            engine: Arc::clone(&engine),
            sent: Arc::clone(&sent),
        });
        let full = open.messages >= self.inner.settings.max_messages;
        // The producer itself failed while taking a message: the transaction cannot go on.
        if transient {
            if let Some(open) = state.open.take() {
                self.abort(&mut state, &producer, &open, None).await;
            }
        } else if full {
            self.commit(&mut state).await;
        }
        engine.delivery()
    }

    async fn probe(&self) -> std::result::Result<(), SinkError> {
        let state = self.inner.state.lock().await;
        if let Some(reason) = &state.fenced {
            return Err(fenced_error(reason.clone()));
        }
        Ok(())
    }

    async fn recover(&self) -> Result<Vec<i64>> {
        self.ensure_progress_topic().await?;
        let mut state = self.inner.state.lock().await;
        for lane in 0..LANES {
            let producer = self.start_producer(lane).await?;
            state.set_producer(lane, Some(producer));
        }
        let last = self.read_progress().await?;
        *self
            .inner
            .progress_found
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(last.is_some());
        drop(state);
        self.ensure_ticker();
        let ids = self.resume(last)?;
        self.unmarked().extend(ids.iter().copied());
        tracing::info!(
            transactional_id = %self.transactional_id(),
            rows = ids.len(),
            "exactly-once: transactions fenced and progress read"
        );
        Ok(ids)
    }

    fn end_of_burst(&self) {
        self.inner.burst_ended.notify_one();
    }

    fn use_session(&self, epoch: i64) {
        *self.inner.session.lock().unwrap_or_else(|p| p.into_inner()) = Some(epoch);
    }

    /// Fences both lanes of each lost session's transactional id (`init_transactions` aborts its
    /// open transaction, or waits for its commit to finish) and only then reads its last
    /// progress, which is final from that moment.
    async fn take_over(&self, sessions: &[i64]) -> Result<Vec<TakenOver>> {
        self.ensure_progress_topic().await?;
        let mut taken = Vec::with_capacity(sessions.len());
        for &epoch in sessions {
            let id = session_transactional_id(&self.inner.settings.transactional_id, epoch);
            for lane in 0..LANES {
                // Started to fence, then dropped: it sends nothing.
                drop(self.start_producer_as(&id, lane).await?);
            }
            let last = self.read_progress_of(id.clone()).await?;
            let ids = match &last {
                Some(progress) if progress.stream.is_some() => {
                    return Err(Error::Config(format!(
                        "the exactly-once progress of `{id}` names WAL positions, and this relay reads an \
                         outbox table: give each its own transactional id"
                    )));
                }
                Some(progress) => progress.all_ids(),
                None => Vec::new(),
            };
            tracing::info!(transactional_id = %id, rows = ids.len(), "exactly-once: took over a lost session's transactional id");
            taken.push(TakenOver {
                session: epoch,
                record: txoutbox_core::ProgressRecord {
                    key: id,
                    location: self.progress_location(),
                    found: last.is_some(),
                },
                ids,
            });
        }
        Ok(taken)
    }

    /// The transactional id's progress in the progress topic, once `recover` read it.
    fn progress_record(&self) -> Option<txoutbox_core::ProgressRecord> {
        let found = (*self
            .inner
            .progress_found
            .lock()
            .unwrap_or_else(|p| p.into_inner()))?;
        Some(txoutbox_core::ProgressRecord {
            key: self.transactional_id(),
            location: self.progress_location(),
            found,
        })
    }

    fn use_stream_positions(&self, positions: Arc<dyn StreamPositions>) {
        // A sink reused by a new relay takes that relay's store.
        *self.inner.positions.lock().unwrap_or_else(|p| p.into_inner()) = Some(positions);
    }

    fn use_metric_labels(&self, labels: &txoutbox_core::MetricLabels) {
        *self.inner.labels.lock().unwrap_or_else(|p| p.into_inner()) = labels
            .pairs()
            .map(|(key, value)| metrics::Label::new(key.to_owned(), value.to_owned()))
            .collect();
    }

    /// The relay moved on after a failure: every batch it hands over from now on is read after
    /// the failed rows were given back (their keys are held until they go again), so batches
    /// are taken again.
    fn epoch_moved(&self) {
        self.inner
            .spoiled
            .store(false, std::sync::atomic::Ordering::Release);
    }

    fn completed(&self, ids: &[i64]) {
        {
            let mut unmarked = self.unmarked();
            for id in ids {
                unmarked.remove(id);
            }
        }
        failpoint::hit(Step::AfterMark);
    }
}
