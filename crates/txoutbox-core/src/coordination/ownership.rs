//! What a coordinated relay may do right now: the buckets it may read, the fence its writes
//! carry, and until when it may send. Shared by the coordinator (which writes it), the relay
//! engine and the store (which read it).

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::metric_labels::MetricLabels;

/// The rows a node may read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// None: the node holds no lease (yet).
    Nothing,
    /// Every row (it holds the table's exclusive lease).
    All,
    /// Rows of these buckets, sorted.
    Buckets(Vec<i32>),
}

#[derive(Debug)]
struct Session {
    epoch: i64,
    scope: Scope,
    /// Sends are allowed until then (local clock; a margin before the lease ends).
    valid_until: Option<Instant>,
    /// Buckets still leased while their in-flight messages settle, no longer read.
    draining: BTreeSet<i32>,
}

#[derive(Debug)]
struct State {
    node: String,
    session: RwLock<Session>,
    /// In-flight rows per bucket: a bucket is released only once its count is zero.
    in_flight: Mutex<HashMap<i32, usize>>,
    /// Set when the scope grew or the session changed: rows below the cursor must be read again.
    changed: AtomicBool,
    /// Wakes the fetcher on a change.
    wake: Notify,
    applied: AtomicU64,
    fenced: AtomicU64,
    /// The labels of the fenced-rows counter.
    labels: MetricLabels,
    /// Set by an exactly-once relay in work-balance mode: what must happen before it takes
    /// buckets from sessions that lost them (see [`TakeOver`]).
    take_over: TakeOverSlot,
}

/// Holds the [`TakeOver`] step, if one is set.
#[derive(Default)]
struct TakeOverSlot(Mutex<Option<TakeOver>>);

impl std::fmt::Debug for TakeOverSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = self.0.lock().map(|slot| slot.is_some()).unwrap_or(false);
        f.write_str(if set { "TakeOver(set)" } else { "TakeOver(none)" })
    }
}

/// Called by the coordinator with the epochs of lost sessions whose buckets it wants, before it
/// takes them ([`Leases::take_over`](super::Leases::take_over)): fences their transport
/// identities and returns, per session, the rows it delivered for good. A
/// [`Config`](crate::Error::Config) error stops the relay; any other is tried again.
pub(crate) type TakeOver = Arc<
    dyn Fn(Vec<i64>) -> std::pin::Pin<Box<dyn Future<Output = crate::Result<Vec<crate::TakenOver>>> + Send>>
        + Send
        + Sync,
>;

/// A node's current right to relay. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Ownership {
    state: Arc<State>,
}

impl Ownership {
    /// A node that holds nothing yet.
    pub fn new(node: impl Into<String>) -> Self {
        Self::labelled(node, MetricLabels::default())
    }

    /// A node that holds nothing yet, whose fenced-rows counter carries `labels`.
    pub(crate) fn labelled(node: impl Into<String>, labels: MetricLabels) -> Self {
        Self {
            state: Arc::new(State {
                node: node.into(),
                session: RwLock::new(Session {
                    epoch: 0,
                    scope: Scope::Nothing,
                    valid_until: None,
                    draining: BTreeSet::new(),
                }),
                in_flight: Mutex::new(HashMap::new()),
                changed: AtomicBool::new(false),
                wake: Notify::new(),
                applied: AtomicU64::new(0),
                fenced: AtomicU64::new(0),
                labels,
                take_over: TakeOverSlot::default(),
            }),
        }
    }

    /// This node's id.
    pub fn node(&self) -> &str {
        &self.state.node
    }

    /// The fence every write carries: the node and its session's epoch.
    pub fn fence(&self) -> (&str, i64) {
        (&self.state.node, self.session().epoch)
    }

    /// This node's current session epoch (0 before it joined).
    pub fn epoch(&self) -> i64 {
        self.session().epoch
    }

    /// Buckets still leased while their in-flight messages settle.
    pub fn draining_buckets(&self) -> Vec<i32> {
        self.session().draining.iter().copied().collect()
    }

    /// Whether this node leads the table's housekeeping (retention): it holds the table's
    /// exclusive lease, or bucket 0 in work balance. Exactly one live node does at a time.
    pub fn leads(&self) -> bool {
        match self.scope() {
            Scope::All => true,
            Scope::Buckets(buckets) => buckets.first() == Some(&0),
            Scope::Nothing => false,
        }
    }

    /// The rows this node may read now.
    pub fn scope(&self) -> Scope {
        self.session().scope.clone()
    }

    /// Whether the node may hand messages to Kafka now (its leases are surely still valid).
    pub fn may_send(&self) -> bool {
        let session = self.session();
        (session.scope != Scope::Nothing || !session.draining.is_empty())
            && session.valid_until.is_some_and(|until| Instant::now() < until)
    }

    /// Rows whose write the database applied / refused because the lease was gone (fenced).
    pub fn write_counts(&self) -> (u64, u64) {
        (
            self.state.applied.load(Ordering::Relaxed),
            self.state.fenced.load(Ordering::Relaxed),
        )
    }

    /// Called by stores after a fenced write of `requested` rows that changed `applied`.
    pub fn record_write(&self, requested: usize, applied: u64) {
        self.state.applied.fetch_add(applied, Ordering::Relaxed);
        let fenced = (requested as u64).saturating_sub(applied);
        if fenced > 0 {
            self.state.fenced.fetch_add(fenced, Ordering::Relaxed);
            crate::metrics::record_fenced(&self.state.labels, fenced);
            tracing::warn!(
                rows = fenced,
                node = %self.state.node,
                "fenced: this relay no longer holds the lease of these rows; their new owner handles them"
            );
        }
    }

    fn session(&self) -> std::sync::RwLockReadGuard<'_, Session> {
        self.state.session.read().unwrap_or_else(|p| p.into_inner())
    }

    fn session_mut(&self) -> std::sync::RwLockWriteGuard<'_, Session> {
        self.state.session.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Enters session `epoch` holding nothing, as the coordinator does after joining; for tests
    /// of stores' fencing.
    #[doc(hidden)]
    pub fn begin_for_tests(&self, epoch: i64) {
        self.begin(epoch);
    }

    /// Sets the readable scope with a long validity, as the coordinator does after a renewal;
    /// for tests of stores' scoped reads.
    #[doc(hidden)]
    pub fn set_for_tests(&self, scope: Scope) {
        self.set(scope, Instant::now() + std::time::Duration::from_secs(3600));
    }

    /// Sets what must happen before buckets are taken from lost sessions.
    pub(crate) fn set_take_over(&self, take_over: TakeOver) {
        *self.state.take_over.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(take_over);
    }

    /// What must happen before buckets are taken from lost sessions, if anything.
    pub(crate) fn take_over(&self) -> Option<TakeOver> {
        self.state
            .take_over
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A new session: nothing held yet.
    pub(crate) fn begin(&self, epoch: i64) {
        *self.session_mut() = Session {
            epoch,
            scope: Scope::Nothing,
            valid_until: None,
            draining: BTreeSet::new(),
        };
        self.mark_changed();
    }

    /// The session was lost: stop reading and sending at once.
    pub(crate) fn lose(&self) {
        let mut session = self.session_mut();
        session.scope = Scope::Nothing;
        session.valid_until = None;
        session.draining.clear();
    }

    /// Buckets being drained.
    pub(crate) fn draining(&self) -> BTreeSet<i32> {
        self.session().draining.clone()
    }

    pub(crate) fn set_draining(&self, draining: BTreeSet<i32>) {
        self.session_mut().draining = draining;
    }

    /// After a successful renewal.
    pub(crate) fn set(&self, scope: Scope, valid_until: Instant) {
        let grew = {
            let mut session = self.session_mut();
            // Sends resume after a time when they were not allowed: the fetcher, which stopped
            // reading meanwhile, reads again at once (from the start).
            let resumed = session.valid_until.is_none_or(|until| Instant::now() >= until);
            let grew = resumed
                || match (&session.scope, &scope) {
                    (_, Scope::Nothing) => false,
                    (Scope::All, _) => false,
                    (Scope::Buckets(old), Scope::Buckets(new)) => new.iter().any(|b| !old.contains(b)),
                    _ => true,
                };
            session.scope = scope;
            session.valid_until = Some(valid_until);
            grew
        };
        if grew {
            self.mark_changed();
        }
    }

    fn mark_changed(&self) {
        self.state.changed.store(true, Ordering::Release);
        self.state.wake.notify_one();
    }

    /// Whether the scope grew since the last call (the fetcher then reads from the start).
    pub(crate) fn take_changed(&self) -> bool {
        self.state.changed.swap(false, Ordering::AcqRel)
    }

    /// Resolves when the scope changes.
    pub(crate) async fn changed(&self) {
        self.state.wake.notified().await;
    }

    /// Rows of `bucket` in flight.
    pub(crate) fn in_flight(&self, bucket: i32) -> usize {
        self.counts().get(&bucket).copied().unwrap_or(0)
    }

    /// Of `rows` just read, those of buckets this node still reads, counted in flight per
    /// bucket. The scope is looked at under the counts' lock, which
    /// [`stop_reading`](Self::stop_reading) takes too: a row either counts before a bucket stops
    /// being read (and the bucket is released only once it settled) or is passed over.
    pub(crate) fn admit(&self, rows: Vec<crate::OutboxMessage>) -> Vec<crate::OutboxMessage> {
        let mut counts = self.counts();
        #[cfg(not(txoutbox_sim_mutant = "released_while_read"))]
        let rows: Vec<crate::OutboxMessage> = {
            let session = self.session();
            rows.into_iter()
                .filter(|row| match &session.scope {
                    Scope::All => true,
                    Scope::Nothing => false,
                    Scope::Buckets(buckets) => buckets.binary_search(&row.bucket).is_ok(),
                })
                .collect()
        };
        for row in &rows {
            *counts.entry(row.bucket).or_default() += 1;
        }
        rows
    }

    /// Stops reading `buckets` (they now belong to another node): they are drained — still
    /// leased while their rows in flight settle — and released once none is left.
    pub(crate) fn stop_reading(&self, buckets: &BTreeSet<i32>) {
        if buckets.is_empty() {
            return;
        }
        let _counts = self.counts();
        let mut session = self.session_mut();
        if let Scope::Buckets(read) = &mut session.scope {
            read.retain(|b| !buckets.contains(b));
            if read.is_empty() {
                session.scope = Scope::Nothing;
            }
        }
        session.draining.extend(buckets);
    }

    pub(crate) fn remove_in_flight(&self, buckets: impl IntoIterator<Item = i32>) {
        let mut counts = self.counts();
        for b in buckets {
            if let Some(n) = counts.get_mut(&b) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    counts.remove(&b);
                }
            }
        }
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, HashMap<i32, usize>> {
        self.state.in_flight.lock().unwrap_or_else(|p| p.into_inner())
    }
}
