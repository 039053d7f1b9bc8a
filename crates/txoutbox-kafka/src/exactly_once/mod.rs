//! Exactly-once delivery into Kafka for read_committed consumers: every batch of outbox rows goes
//! out in a Kafka transaction together with a progress record naming those rows, so a relay that
//! crashes between Kafka's commit and the database's mark is not followed by a resend — its
//! successor reads the progress and marks the rows instead. See `docs/guarantees.md`.
//!
//! The shape follows Kafka Connect's exactly-once source connectors (KIP-618): one
//! `transactional.id` per outbox table (per relay slot), `init_transactions` at start fences every
//! older relay with that id and aborts its open transaction; progress lives in a compacted
//! topic, written inside the same transaction as the records.

mod failpoint;
mod progress;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use txoutbox_core::{
    BatchDelivery, DeliveryTracker, Error, OutboxMessage, Result, Sink, SinkError, SinkErrorKind,
};

use crate::config::KafkaConfig;
use crate::context::{DeliveryRef, SinkContext};
use crate::sink::KafkaSink;
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
    /// The producer's `transactional.id`: one per outbox table (two relays with the same id fence
    /// each other, which is the point). Default: `txoutbox-outbox_messages`.
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

/// A batch inside the open transaction: its rows, the relay's tracker (resolved at commit) and
/// the per-message outcomes librdkafka reports.
struct Pending {
    ids: Vec<i64>,
    engine: Arc<DeliveryTracker>,
    sent: Arc<DeliveryTracker>,
}

struct Open {
    txn: String,
    began: Instant,
    messages: usize,
    batches: Vec<Pending>,
}

struct State {
    producer: Option<Arc<ThreadedProducer<SinkContext>>>,
    open: Option<Open>,
    fenced: Option<String>,
}

struct Inner {
    config: KafkaConfig,
    settings: ExactlyOnceSettings,
    state: tokio::sync::Mutex<State>,
    /// Rows of committed transactions whose database mark is not confirmed yet.
    unmarked: Mutex<BTreeSet<i64>>,
    ticker: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The relay reported the end of a burst: the ticker commits the open transaction now (a
    /// report while the ticker is busy is kept as the Notify's permit).
    burst_ended: Arc<tokio::sync::Notify>,
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
    /// Enters the fenced state and returns the error every later outcome carries: the relay
    /// stops, and the producer is never recreated (that would fence the successor in turn).
    fn enter_fenced(&self, state: &mut State, reason: &str) -> SinkError {
        let message = format!(
            "another relay took over the Kafka transactional id `{}` (this relay is fenced): {reason}",
            self.inner.settings.transactional_id
        );
        metrics::counter!("txoutbox_transactions_total", "outcome" => "fenced").increment(1);
        state.producer = None;
        state.fenced = Some(message.clone());
        SinkError::new(SinkErrorKind::Fenced, None, message)
    }

    /// Enters the fenced state; every outcome of `open` is Fenced.
    fn fence(&self, state: &mut State, open: &Open, reason: &str) {
        let error = self.enter_fenced(state, reason);
        fail_all(open, &error);
    }

    /// Checks the settings; connects when the relay starts (`recover`).
    pub fn new(config: &KafkaConfig, settings: ExactlyOnceSettings) -> Result<Self> {
        config.validate()?;
        if settings.transactional_id.trim().is_empty() {
            return Err(Error::Config("the exactly-once transactional id is empty".into()));
        }
        txoutbox_core::validate_topic_name(&settings.progress_topic)?;
        let config = config
            .clone()
            .set("transactional.id", settings.transactional_id.clone())
            .set("enable.idempotence", "true");
        tracing::info!(properties = ?config.redacted(), transactional_id = %settings.transactional_id, "exactly-once Kafka producer");
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                settings,
                state: tokio::sync::Mutex::new(State {
                    producer: None,
                    open: None,
                    fenced: None,
                }),
                unmarked: Mutex::new(BTreeSet::new()),
                ticker: Mutex::new(None),
                burst_ended: Arc::new(tokio::sync::Notify::new()),
            }),
        })
    }

    fn unmarked(&self) -> std::sync::MutexGuard<'_, BTreeSet<i64>> {
        self.inner.unmarked.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new producer with `init_transactions` done: fences every older producer with this
    /// transactional id and aborts (or completes) its open transaction.
    async fn start_producer(&self) -> Result<Arc<ThreadedProducer<SinkContext>>> {
        let producer: ThreadedProducer<SinkContext> = self
            .inner
            .config
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
                    "could not start Kafka transactions for `{}`: {e}. The brokers must support transactions \
                     (Kafka 0.11+, with transaction.state.log settings the cluster can meet) and the relay's \
                     principal needs WRITE on the transactional id",
                    self.inner.settings.transactional_id
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

    /// The last committed progress of this transactional id.
    async fn read_progress(&self) -> Result<Option<Progress>> {
        let client = self.inner.config.client_config();
        let topic = self.inner.settings.progress_topic.clone();
        let id = self.inner.settings.transactional_id.clone();
        tokio::task::spawn_blocking(move || progress::read_last(&client, &topic, &id))
            .await
            .map_err(blocking_error)?
    }

    /// Commits the open transaction (if any) and resolves its batches.
    async fn commit(&self, state: &mut State) {
        let Some(open) = state.open.take() else {
            return;
        };
        let Some(producer) = state.producer.clone() else {
            fail_all(&open, &SinkError::transient("the Kafka producer is gone"));
            return;
        };
        let ids: Vec<i64> = open.batches.iter().flat_map(|b| b.ids.iter().copied()).collect();
        let progress = Progress {
            v: progress::VERSION,
            txn: open.txn.clone(),
            ids,
            unmarked: self.unmarked().iter().copied().collect(),
        };
        let payload = serde_json::to_vec(&progress).unwrap_or_default();
        let key = self.inner.settings.transactional_id.clone();
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
            self.abort(state, &producer, open, None).await;
            return;
        }
        let started = Instant::now();
        let mut outcome: std::result::Result<Duration, KafkaError> = Err(KafkaError::Canceled);
        for _ in 0..3 {
            let committing = Arc::clone(&producer);
            outcome = match tokio::task::spawn_blocking(move || {
                // rdkafka's commit first flushes in steps of up to 100 ms while the producer's
                // own thread serves the delivery reports, which would add ~100 ms to every
                // commit. Wait for the queue to empty in 1 ms steps instead; the flush inside the
                // commit then returns at once.
                let deadline = Instant::now() + TXN_TIMEOUT;
                while committing.in_flight_count() > 0 && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(1));
                }
                let acked = Instant::now();
                failpoint::hit(Step::BeforeCommit);
                committing
                    .commit_transaction(TXN_TIMEOUT)
                    .map(|()| acked.elapsed())
            })
            .await
            {
                Ok(result) => result,
                Err(_) => Err(KafkaError::Canceled),
            };
            match &outcome {
                Err(KafkaError::Transaction(e)) if e.is_retriable() => continue,
                _ => break,
            }
        }
        match outcome {
            Ok(end_txn) => {
                tracing::debug!(
                    messages = progress.ids.len(),
                    open_ms = open.began.elapsed().as_millis() as u64,
                    commit_ms = started.elapsed().as_millis() as u64,
                    end_txn_ms = end_txn.as_millis() as u64,
                    "Kafka transaction committed"
                );
                metrics::histogram!("txoutbox_transaction_commit_seconds")
                    .record(started.elapsed().as_secs_f64());
                metrics::counter!("txoutbox_transactions_total", "outcome" => "committed").increment(1);
                self.unmarked()
                    .extend(open.batches.iter().flat_map(|b| b.ids.iter().copied()));
                failpoint::hit(Step::AfterCommit);
                for batch in &open.batches {
                    for index in 0..batch.ids.len() {
                        batch.engine.complete(index, Ok(()));
                    }
                }
            }
            Err(KafkaError::Transaction(e)) if e.txn_requires_abort() => {
                tracing::warn!(error = %e, "the Kafka transaction must be aborted; its messages are sent again");
                self.abort(state, &producer, open, None).await;
            }
            Err(KafkaError::Flush(code)) => {
                // The commit never started: the transaction is still open and can be aborted.
                tracing::warn!(
                    ?code,
                    "Kafka did not take the transaction's messages in time; aborting it"
                );
                self.abort(state, &producer, open, None).await;
            }
            Err(error) => self.unknown_outcome(state, open, error).await,
        }
    }

    /// Aborts the transaction; each message comes back permanent (its own fault) or transient.
    async fn abort(
        &self,
        state: &mut State,
        producer: &Arc<ThreadedProducer<SinkContext>>,
        open: Open,
        cause: Option<SinkError>,
    ) {
        metrics::counter!("txoutbox_transactions_total", "outcome" => "aborted").increment(1);
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
            state.producer = None;
        }
    }

    /// A commit whose outcome is unknown (or a fatal error): drop the producer, fence it with a
    /// new one, and learn from the progress topic whether the transaction committed. Rows are
    /// never marked on a guess.
    async fn unknown_outcome(&self, state: &mut State, open: Open, error: KafkaError) {
        let fatal = state.producer.as_deref().and_then(fenced_by_successor);
        state.producer = None;
        if is_fenced(&error) || fatal.is_some() {
            self.fence(state, &open, &fatal.unwrap_or_else(|| error.to_string()));
            return;
        }
        tracing::warn!(%error, "the outcome of a Kafka commit is unknown; asking the progress topic");
        // Until Kafka answers, nothing else is sent: a guess either way could lose or repeat rows.
        let mut delay = Duration::from_millis(200);
        let (producer, last) = loop {
            let resolved = async {
                let producer = self.start_producer().await?;
                let last = self.read_progress().await?;
                Ok::<_, Error>((producer, last))
            }
            .await;
            match resolved {
                Ok(resolved) => break resolved,
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?delay, "cannot learn the outcome of a Kafka commit yet");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        };
        state.producer = Some(producer);
        if last.is_some_and(|p| p.txn == open.txn) {
            metrics::counter!("txoutbox_transactions_total", "outcome" => "committed").increment(1);
            self.unmarked()
                .extend(open.batches.iter().flat_map(|b| b.ids.iter().copied()));
            for batch in &open.batches {
                for index in 0..batch.ids.len() {
                    batch.engine.complete(index, Ok(()));
                }
            }
        } else {
            metrics::counter!("txoutbox_transactions_total", "outcome" => "aborted").increment(1);
            fail_all(
                &open,
                &SinkError::transient(format!("the Kafka transaction did not commit: {error}")),
            );
        }
    }

    /// A usable producer, recreating it (and completing what the progress says) after a failure.
    async fn ensure_producer(&self, state: &mut State) -> Result<Arc<ThreadedProducer<SinkContext>>> {
        if let Some(producer) = &state.producer {
            return Ok(Arc::clone(producer));
        }
        let producer = self.start_producer().await?;
        state.producer = Some(Arc::clone(&producer));
        Ok(producer)
    }

    fn spawn_ticker(&self) {
        let weak = Arc::downgrade(&self.inner);
        let interval = self.inner.settings.commit_interval;
        let burst = Arc::clone(&self.inner.burst_ended);
        let ticker = tokio::spawn(async move {
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
                }
            }
        });
        *self.inner.ticker.lock().unwrap_or_else(|p| p.into_inner()) = Some(ticker);
    }
}

fn fail_all(open: &Open, error: &SinkError) {
    for batch in &open.batches {
        for index in 0..batch.ids.len() {
            batch.engine.complete(index, Err(error.clone()));
        }
    }
}

impl Sink for ExactlyOnceSink {
    /// No: every record a transaction carries counts in its progress record as the row's delivery.
    fn accepts_dead_letter_copies(&self) -> bool {
        false
    }

    async fn send_batch(&self, batch: Arc<[OutboxMessage]>) -> BatchDelivery {
        let engine = DeliveryTracker::new(batch.len());
        let mut state = self.inner.state.lock().await;
        if let Some(reason) = &state.fenced {
            let error = SinkError::new(SinkErrorKind::Fenced, None, reason.clone());
            for index in 0..batch.len() {
                engine.complete(index, Err(error.clone()));
            }
            return engine.delivery();
        }
        let producer = match self.ensure_producer(&mut state).await {
            Ok(producer) => producer,
            Err(error) => {
                let error = SinkError::transient(error.to_string());
                for index in 0..batch.len() {
                    engine.complete(index, Err(error.clone()));
                }
                return engine.delivery();
            }
        };
        if state.open.is_none() {
            let beginning = Arc::clone(&producer);
            match tokio::task::spawn_blocking(move || beginning.begin_transaction()).await {
                Ok(Ok(())) => {
                    state.open = Some(Open {
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
                        for index in 0..batch.len() {
                            engine.complete(index, Err(error.clone()));
                        }
                        return engine.delivery();
                    }
                    tracing::warn!(error = %message, "could not begin a Kafka transaction; the producer is recreated");
                    state.producer = None;
                    let error =
                        SinkError::transient(format!("could not begin a Kafka transaction: {message}"));
                    for index in 0..batch.len() {
                        engine.complete(index, Err(error.clone()));
                    }
                    return engine.delivery();
                }
            }
        }
        let sent = DeliveryTracker::new(batch.len());
        for (index, message) in batch.iter().enumerate() {
            if let Some(reason) = &message.malformed {
                sent.complete(index, Err(SinkError::permanent(reason.clone())));
                continue;
            }
            let mut record = BaseRecord::<[u8], [u8], Box<DeliveryRef>>::with_opaque_to(
                &message.topic,
                Box::new(DeliveryRef {
                    tracker: Arc::clone(&sent),
                    index,
                }),
            )
            .headers(KafkaSink::headers(message))
            .timestamp(message.created_at.timestamp_millis());
            if let Some(key) = &message.key {
                record = record.key(key.as_slice());
            }
            if let Some(payload) = &message.payload {
                record = record.payload(payload.as_slice());
            }
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                        record = returned;
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    Err((error, returned)) => {
                        returned
                            .delivery_opaque
                            .tracker
                            .complete(index, Err(crate::classify::classify(&error, &message.topic)));
                        break;
                    }
                }
            }
        }
        let ids: Vec<i64> = batch.iter().map(|m| m.id).collect();
        let open = state.open.as_mut().expect("a transaction is open");
        open.messages += batch.len();
        open.batches.push(Pending {
            ids,
            engine: Arc::clone(&engine),
            sent: Arc::clone(&sent),
        });
        // A message refused on the spot spoils the transaction: abort now so later batches do
        // not join it.
        let refused = !sent.permanent_failures_so_far().is_empty();
        let full = open.messages >= self.inner.settings.max_messages;
        if refused {
            let open = state.open.take().expect("a transaction is open");
            self.abort(&mut state, &producer, open, None).await;
        } else if full {
            self.commit(&mut state).await;
        }
        engine.delivery()
    }

    async fn probe(&self) -> std::result::Result<(), SinkError> {
        let state = self.inner.state.lock().await;
        if let Some(reason) = &state.fenced {
            return Err(SinkError::new(SinkErrorKind::Fenced, None, reason.clone()));
        }
        Ok(())
    }

    async fn recover(&self) -> Result<Vec<i64>> {
        let client = self.inner.config.client_config();
        progress::ensure_topic(
            &client,
            &self.inner.settings.progress_topic,
            self.inner.settings.progress_replication,
            self.inner.settings.create_progress_topic,
        )
        .await?;
        let mut state = self.inner.state.lock().await;
        let producer = self.start_producer().await?;
        state.producer = Some(producer);
        let last = self.read_progress().await?;
        drop(state);
        if self
            .inner
            .ticker
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_none()
        {
            self.spawn_ticker();
        }
        let ids = last.map(|p| p.all_ids()).unwrap_or_default();
        self.unmarked().extend(ids.iter().copied());
        tracing::info!(
            transactional_id = %self.inner.settings.transactional_id,
            rows = ids.len(),
            "exactly-once: transactions fenced and progress read"
        );
        Ok(ids)
    }

    fn end_of_burst(&self) {
        self.inner.burst_ended.notify_one();
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
