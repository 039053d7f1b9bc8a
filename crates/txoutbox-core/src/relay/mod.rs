//! The relay: a tokio service that moves committed outbox rows to a sink.
//!
//! Three services carry the rows (a prober that watches the transport, the store's watcher of
//! new rows and, for coordinated relays, the coordinator run beside them): the [fetcher](fetcher) reads pending rows in id order and
//! selects the batches that may go now; the [sender](sender) hands them to the sink in order
//! without waiting for acknowledgements (so the next read overlaps it); the
//! [completer](completer) awaits each batch's outcomes in order and marks delivered rows with one
//! statement per batch (or per several batches). A row is never marked before its delivery is
//! confirmed.
//!
//! Every `select!` of the engine is `biased` (its branches polled in the order written, a
//! shutdown first) and its wall clock is `clock::now`: a simulated run (`txoutbox-sim`) of one
//! seed takes the same path every time.

mod allowed_topics;
mod backoff;
mod batches;
mod completer;
mod config;
pub mod dead_letter_copy;
mod fetcher;
mod in_flight;
mod monitor;
mod parked;
mod probe;
mod select;
mod sender;
mod shared;

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::info;

pub use allowed_topics::AllowedTopics;
pub use config::{DeadLetterTopic, OnDeadLetter, RelayConfig, UNREADABLE_TOPIC};
pub use monitor::{Condition, RelayMonitor};

use crate::child_task::ChildTask;
use crate::coordination::{Coordination, Leases, Ownership, Scope};
use crate::error::{Error, Result};
use crate::progress_record::ProgressStep;
use crate::sink::Sink;
use crate::store::Store;
use crate::wakeup::Wakeup;
use shared::Shared;

/// A relay from a [`Store`] to a [`Sink`], ready to start.
///
/// ```no_run
/// # async fn demo<S: txoutbox_core::Store, K: txoutbox_core::Sink>(store: S, sink: K) -> txoutbox_core::Result<()> {
/// use txoutbox_core::{Relay, RelayConfig};
///
/// let relay = Relay::new(store, sink, RelayConfig::default())?.start();
/// let wakeup = relay.wakeup(); // call `wakeup.notify()` after committing new messages
/// // ... serve requests ...
/// relay.shutdown().await?; // finishes what is in flight
/// # Ok(()) }
/// ```
pub struct Relay<S, K> {
    shared: Shared<S, K>,
    /// An exactly-once relay in work-balance mode: its sink's identity belongs to its session,
    /// and it takes over what lost sessions delivered before it reads their buckets.
    session_bound: bool,
    /// A coordinated relay's coordinator, started with the relay; it ends after `engine_done`.
    coordinator: Option<CoordinatorTask>,
    engine_done: CancellationToken,
}

/// How long a store's [`Store::lock_for_relay`] may take before the relay counts as standing by.
const STANDBY_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

type CoordinatorTask = std::pin::Pin<Box<dyn Future<Output = Result<()>> + Send>>;

impl<S: std::fmt::Debug, K: std::fmt::Debug> std::fmt::Debug for Relay<S, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("shared", &self.shared)
            .field("coordinated", &self.coordinator.is_some())
            .finish()
    }
}

impl<S: Store, K: Sink> Relay<S, K> {
    /// A relay over `store` and `sink` in [`Coordination::Single`] mode; fails if the config is
    /// invalid. Several replicas may each run one: the stores keep one active per table and the
    /// others on standby (see [`Store::lock_for_relay`]).
    pub fn new(store: S, sink: K, config: RelayConfig) -> Result<Self> {
        config.validate()?;
        if config.dead_letter_topic.is_some() && !sink.accepts_dead_letter_copies() {
            return Err(crate::Error::Config(
                "this sink cannot send copies to a dead-letter topic (an exactly-once sink would \
                 count a copy as the row's delivery): remove dead_letter_topic, dead rows stay \
                 listed in the table"
                    .into(),
            ));
        }
        let labels = store.metric_labels();
        sink.use_metric_labels(&labels);
        let mut shared = Shared::new(
            store,
            sink,
            config,
            Arc::new(Notify::new()),
            CancellationToken::new(),
        );
        shared.monitor = RelayMonitor::labelled(labels);
        Ok(Self {
            shared,
            session_bound: false,
            coordinator: None,
            engine_done: CancellationToken::new(),
        })
    }

    /// A relay that shares its table with other relay nodes as `coordination` says (see
    /// [`coordination`](crate::coordination)); the store must support leases.
    /// [`Coordination::Single`] is the same as [`Relay::new`].
    ///
    /// ```no_run
    /// # async fn demo<S: txoutbox_core::Store + txoutbox_core::coordination::Leases, K: txoutbox_core::Sink>(store: S, sink: K) -> txoutbox_core::Result<()> {
    /// use txoutbox_core::coordination::Coordination;
    /// use txoutbox_core::{Relay, RelayConfig};
    ///
    /// let relay = Relay::coordinated(store, sink, RelayConfig::default(), Coordination::work_balance())?.start();
    /// # Ok(()) }
    /// ```
    pub fn coordinated(mut store: S, sink: K, config: RelayConfig, coordination: Coordination) -> Result<Self>
    where
        S: Leases,
    {
        coordination.validate()?;
        let Some(settings) = coordination.lease_settings() else {
            return Self::new(store, sink, config);
        };
        let ownership = Ownership::labelled(settings.resolved_node_id(), store.metric_labels());
        store.attach(ownership.clone());
        let leases = store.clone();
        // Stored with the node: relays of another coordination or delivery refuse to join.
        let mode = match sink.delivery() {
            Some(delivery) => format!("{} ({delivery})", coordination.name()),
            None => coordination.name().to_owned(),
        };
        let session_bound = matches!(coordination, Coordination::WorkBalance(_)) && sink.delivery().is_some();
        let mut relay = Self::new(store, sink, config)?;
        relay.shared.ownership = Some(ownership.clone());
        relay.session_bound = session_bound;
        relay.coordinator = Some(Box::pin(crate::coordination::run(
            leases,
            ownership,
            coordination,
            mode,
            session_bound,
            relay.shared.config.completion,
            relay.shared.cancel.clone(),
            relay.engine_done.clone(),
        )));
        Ok(relay)
    }

    /// Spawns the relay on the current tokio runtime.
    pub fn start(self) -> RelayHandle {
        let wake = Arc::clone(&self.shared.wake);
        let cancel = self.shared.cancel.clone();
        let monitor = self.monitor();
        let task = tokio::spawn(self.run_inner());
        RelayHandle {
            wake,
            cancel,
            monitor,
            task,
        }
    }

    /// What this relay observes of itself, for health checks (see [`HealthCheck`](crate::HealthCheck)).
    pub fn monitor(&self) -> RelayMonitor {
        self.shared.monitor.clone()
    }

    /// A coordinated relay's current leases and fence (`None` for a single relay).
    pub fn ownership(&self) -> Option<Ownership> {
        self.shared.ownership.clone()
    }

    /// The wake-up handle of this relay, before it starts (for [`run_until`](Self::run_until)).
    pub fn wakeup(&self) -> Wakeup {
        Wakeup::new(Arc::clone(&self.shared.wake))
    }

    /// Runs the relay in the current task until `shutdown` resolves, then shuts down gracefully.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> Result<()> {
        let cancel = self.shared.cancel.clone();
        let run = self.run_inner();
        tokio::pin!(run);
        tokio::select! {
            biased;
            result = &mut run => return result,
            () = shutdown => cancel.cancel(),
        }
        run.await
    }

    async fn run_inner(self) -> Result<()> {
        let Self {
            shared,
            session_bound,
            coordinator,
            engine_done,
        } = self;
        let shared = Arc::new(shared);
        if session_bound && let Some(ownership) = &shared.ownership {
            // Weak: the ownership lives in `shared`, which must not keep itself alive.
            let for_take_over = Arc::downgrade(&shared);
            ownership.set_take_over(Arc::new(move |sessions| {
                let shared = for_take_over.upgrade();
                Box::pin(async move {
                    match shared {
                        Some(shared) => take_over(&shared, sessions).await,
                        None => Err(Error::Shutdown),
                    }
                })
            }));
        }
        let cancel = shared.cancel.clone();
        let mut coordinator = coordinator.map(|task| {
            ChildTask::spawn(async move {
                let result = task.await;
                if let Err(error) = &result {
                    tracing::error!(%error, "relay coordination failed; the relay stops");
                    cancel.cancel();
                }
                result
            })
        });
        let result = Self::run_engine(Arc::clone(&shared), coordinator.is_some(), session_bound).await;
        if shared.store_locked.load(std::sync::atomic::Ordering::Acquire) {
            shared.store.unlock_for_relay().await;
        }
        // The engine has settled what it sent: the coordinator may now give up the leases.
        engine_done.cancel();
        let coordination = match &mut coordinator {
            Some(task) => task.join().await.map_err(|_| Error::Shutdown).and_then(|r| r),
            None => Ok(()),
        };
        result.and(coordination)
    }

    async fn run_engine(shared: Arc<Shared<S, K>>, coordinated: bool, session_bound: bool) -> Result<()> {
        let _running = shared.monitor.running_guard();
        // A missing table is a mistake to report at once; a database that is down is waited for.
        let mut backoff = backoff::Backoff::new(
            std::time::Duration::from_millis(200),
            std::time::Duration::from_secs(5),
        );
        loop {
            match shared.bounded(shared.store.check()).await {
                Ok(()) => {
                    // Not bounded: a store may wait here on purpose (a standby for a slot or a
                    // table lock), until it may relay or the relay is shut down.
                    let lock = shared.store.lock_for_relay();
                    tokio::pin!(lock);
                    // A lock not had within a second is another relay's: this one stands by.
                    let mut standing_by = false;
                    let locked = loop {
                        // The lock first: a store that answers at once (a refusal) is heard
                        // even when the relay is shut down right after it started.
                        tokio::select! {
                            biased;
                            locked = &mut lock => break locked,
                            () = shared.cancel.cancelled() => {
                                shared.monitor.set_standing_by(false);
                                return Ok(());
                            }
                            () = tokio::time::sleep(STANDBY_AFTER), if !standing_by => {
                                standing_by = true;
                                shared.monitor.set_standing_by(true);
                            }
                        }
                    };
                    shared.monitor.set_standing_by(false);
                    if let Err(error) = locked {
                        tracing::error!(%error, "the relay cannot start");
                        return Err(error);
                    }
                    shared
                        .store_locked
                        .store(true, std::sync::atomic::Ordering::Release);
                    shared.monitor.store_ok();
                    break;
                }
                Err(error) if error.is_retryable() => {
                    shared.monitor.store_failed(&error);
                    let delay = backoff.next_delay();
                    tracing::warn!(%error, retry_in = %crate::HumanDuration(delay), "the outbox database is not reachable yet");
                    if !shared.sleep(delay).await {
                        return Ok(());
                    }
                }
                Err(error) => {
                    tracing::error!(%error, "the relay cannot start");
                    return Err(error);
                }
            }
        }
        // Parked keys are known before anything is read, so none of their rows slips out.
        if shared.config.on_dead_letter == config::OnDeadLetter::ParkKey {
            let reloaded = retry_at_start(&shared, &mut backoff, "cannot read the parked keys yet", || {
                fetcher::reload_parked(&shared)
            })
            .await?;
            if reloaded.is_none() {
                return Ok(());
            }
            info!(keys = shared.parked.len(), "dead letters park their keys");
        }
        // Rows the transport already holds for good (a transactional sink's last progress) are
        // completed before anything is read, so they are not sent again. A store whose ids last
        // one session gives the sink positions to record that progress in.
        if let Some(positions) = shared.store.stream_positions() {
            shared.sink.use_stream_positions(positions);
        }
        if !wait_for_lease(&shared).await {
            return Ok(());
        }
        if session_bound && let Some(ownership) = &shared.ownership {
            shared.sink.use_session(ownership.epoch());
        }
        if !recover(&shared).await? || !check_progress(&shared).await? {
            return Ok(());
        }
        info!(
            batch_size = shared.config.batch_size,
            max_in_flight = shared.config.max_in_flight,
            poll_interval = %crate::HumanDuration(shared.config.poll_interval),
            node = shared.ownership.as_ref().map(|o| o.node()),
            coordinated,
            "relay started"
        );
        let watcher = shared.store.watch(Wakeup::new(Arc::clone(&shared.wake)));
        if watcher.is_some() {
            info!("push wake-ups on: committed messages wake the relay at once");
        }
        // A few batches may wait for the completer; the in-flight permits bound the rows anyway.
        let (to_completer, from_sender) = mpsc::channel(64);
        // One selected batch may wait while the sender enqueues the previous one. (A deeper queue
        // let more batches reach the wire between a failed delivery and the drain that follows
        // it: per-key order violations in the majority-outage chaos test.)
        let (to_sender, from_fetcher) = mpsc::channel(1);
        let _watcher = watcher.map(ChildTask::adopt);
        let mut completer = ChildTask::spawn(completer::run(Arc::clone(&shared), from_sender));
        let _prober = ChildTask::spawn(probe::run(Arc::clone(&shared)));
        let mut sender = ChildTask::spawn(sender::run(Arc::clone(&shared), from_fetcher, to_completer));
        fetcher::run(Arc::clone(&shared), to_sender).await;
        if let Err(e) = sender.join().await {
            tracing::error!(error = %e, "relay sender panicked");
        }
        if let Err(e) = completer.join().await {
            tracing::error!(error = %e, "relay completer panicked");
        }
        info!("relay stopped");
        match shared.take_failure() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

/// How often a relay waiting for its first lease looks at its ownership again.
const LEASE_POLL: std::time::Duration = std::time::Duration::from_millis(50);

/// Holds a coordinated relay whose sink records progress (a transactional sink: its
/// [`Sink::delivery`] is not at-least-once) until it holds a lease that still allows sends:
/// [`Sink::recover`] takes over the transport's identity (a Kafka transactional id, fencing every
/// older producer with it), which must be the identity of a relay that lost the lease — never of
/// the one relaying now. Meanwhile the relay counts as standing by. Returns false when the relay
/// was shut down while waiting.
async fn wait_for_lease<S, K: Sink>(shared: &Shared<S, K>) -> bool {
    let Some(ownership) = &shared.ownership else {
        return true;
    };
    if shared.sink.delivery().is_none() {
        return true;
    }
    let waiting_since = tokio::time::Instant::now();
    loop {
        if ownership.scope() != Scope::Nothing && ownership.may_send() {
            shared.monitor.set_standing_by(false);
            return true;
        }
        if waiting_since.elapsed() >= STANDBY_AFTER {
            shared.monitor.set_standing_by(true);
        }
        if !shared.sleep(LEASE_POLL).await {
            shared.monitor.set_standing_by(false);
            return false;
        }
    }
}

/// Asks the sink which rows it already delivered for good and completes them. Returns false when
/// the relay was shut down meanwhile.
async fn recover<S: Store, K: Sink>(shared: &Shared<S, K>) -> Result<bool> {
    let mut backoff = backoff::Backoff::new(
        std::time::Duration::from_millis(200),
        std::time::Duration::from_secs(5),
    );
    // Each attempt first waits for a lease again: one lost while the transport was unreachable
    // went to another relay, whose transport identity this recovery would fence.
    let recovered = retry_at_start(
        shared,
        &mut backoff,
        "cannot read the transport's progress yet",
        || async {
            if !wait_for_lease(shared).await {
                return Ok(None);
            }
            shared.sink.recover().await.map(Some)
        },
    )
    .await?;
    let Some(Some(ids)) = recovered else {
        return Ok(false);
    };
    if ids.is_empty() {
        return Ok(true);
    }
    loop {
        match shared
            .bounded(shared.store.complete(&ids, shared.config.completion))
            .await
        {
            Ok(()) => break,
            Err(error) => {
                let delay = backoff.next_delay();
                tracing::warn!(%error, retry_in = %crate::HumanDuration(delay), "cannot complete the rows the transport already holds");
                if !shared.sleep(delay).await {
                    return Ok(false);
                }
            }
        }
    }
    info!(
        rows = ids.len(),
        "completed rows that Kafka already held from the previous run"
    );
    shared.sink.completed(&ids);
    Ok(true)
}

/// Fences lost sessions' transport identities (see [`Sink::take_over`]) and checks that the
/// progress of each that delivered is still there; returns what each delivered for good, which
/// the coordinator completes as it takes their buckets.
async fn take_over<S: Store, K: Sink>(
    shared: &Shared<S, K>,
    sessions: Vec<i64>,
) -> Result<Vec<crate::TakenOver>> {
    let found = shared.sink.take_over(&sessions).await?;
    let table = table_name(shared);
    for taken in &found {
        if !taken.record.found {
            let kept = shared
                .bounded(shared.store.progress_kept(&taken.record.key))
                .await?;
            // Gone while the table remembers deliveries under it: stops the relay.
            taken.record.step(kept, &table)?;
        }
    }
    Ok(found)
}

/// Checks a transactional sink's progress against the table's record of earlier deliveries (see
/// [`Sink::progress_record`]): stops the relay when the progress is gone, and has the table
/// remember the key when it does not yet. Returns false when the relay was shut down meanwhile.
async fn check_progress<S: Store, K: Sink>(shared: &Shared<S, K>) -> Result<bool> {
    let Some(record) = shared.sink.progress_record() else {
        return Ok(true);
    };
    let mut backoff = backoff::Backoff::new(
        std::time::Duration::from_millis(200),
        std::time::Duration::from_secs(5),
    );
    let table = table_name(shared);
    let checked = retry_at_start(
        shared,
        &mut backoff,
        "cannot check the progress key against the table yet",
        || async {
            let kept = shared.bounded(shared.store.progress_kept(&record.key)).await?;
            match record.step(kept, &table)? {
                ProgressStep::Nothing => Ok(()),
                ProgressStep::KeepAfterFirstDelivery => {
                    *shared.progress_to_keep.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some(record.key.clone());
                    Ok(())
                }
                ProgressStep::KeepNow => shared.bounded(shared.store.keep_progress(&record.key)).await,
            }
        },
    )
    .await?;
    Ok(checked.is_some())
}

/// The relay's table, as its metrics name it (for messages).
fn table_name<S: Store, K>(shared: &Shared<S, K>) -> String {
    shared
        .store
        .metric_labels()
        .get("table")
        .unwrap_or(crate::DEFAULT_TABLE)
        .to_owned()
}

/// Runs a start-up step until it succeeds: a retryable error waits (`backoff`) and tries again,
/// saying `what` failed; any other stops the relay. `None` when the relay was shut down while
/// waiting.
async fn retry_at_start<S, K, T, F, Fut>(
    shared: &Shared<S, K>,
    backoff: &mut backoff::Backoff,
    what: &str,
    mut step: F,
) -> Result<Option<T>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    loop {
        match step().await {
            Ok(value) => return Ok(Some(value)),
            Err(error) if error.is_retryable() => {
                let delay = backoff.next_delay();
                tracing::warn!(%error, retry_in = %crate::HumanDuration(delay), "{what}");
                if !shared.sleep(delay).await {
                    return Ok(None);
                }
            }
            Err(error) => {
                tracing::error!(%error, "the relay cannot start");
                return Err(error);
            }
        }
    }
}

/// A running relay.
#[derive(Debug)]
pub struct RelayHandle {
    wake: Arc<Notify>,
    cancel: CancellationToken,
    monitor: RelayMonitor,
    task: JoinHandle<Result<()>>,
}

impl RelayHandle {
    /// A handle that wakes this relay.
    pub fn wakeup(&self) -> Wakeup {
        Wakeup::new(Arc::clone(&self.wake))
    }

    /// What this relay observes of itself, for health checks (see [`HealthCheck`](crate::HealthCheck)).
    pub fn monitor(&self) -> RelayMonitor {
        self.monitor.clone()
    }

    /// Whether the relay has stopped (after a shutdown, or a panic).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Stops reading new rows (if it has not stopped already, e.g. because it could not start), waits (up to the shutdown timeout) for messages already handed to
    /// the sink, marks the delivered ones, and returns. Nothing is lost: rows whose delivery is
    /// unknown stay pending. Returns the error that stopped the relay, if one did.
    pub async fn shutdown(self) -> Result<()> {
        self.cancel.cancel();
        self.task.await.map_err(|_| Error::Shutdown)?
    }
}
