//! State shared by the relay's services.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::config::RelayConfig;
use super::in_flight::InFlight;
use super::monitor::RelayMonitor;
use super::parked::ParkedKeys;
use super::select::HeldKey;
use crate::coordination::Ownership;

/// What the fetcher and the completer share.
#[derive(Debug)]
pub(crate) struct Shared<S, K> {
    pub(crate) store: S,
    pub(crate) sink: K,
    pub(crate) config: RelayConfig,
    pub(crate) in_flight: InFlight,
    /// Wakes an idle fetcher (new rows committed, or rows released).
    pub(crate) wake: std::sync::Arc<Notify>,
    /// Set when a graceful shutdown begins.
    pub(crate) cancel: CancellationToken,
    /// While the transport reports transient failures, the fetcher waits until this instant.
    paused_until: Mutex<Option<Instant>>,
    /// Told when a pause ends early (the transport delivered again), so the fetcher stops
    /// waiting for a pause that no longer holds.
    pub(crate) resumed: Notify,
    /// When a graceful shutdown gives up waiting for deliveries: one deadline for the whole stop.
    shutdown_deadline: std::sync::OnceLock<Instant>,
    /// Keys whose earliest pending row is backing off, until it is due. Their later rows are
    /// skipped (the cursor passes them) and picked up by the rescan that follows the release.
    held: Mutex<HashMap<HeldKey, DateTime<Utc>>>,
    /// Keys parked behind a dead-lettered message (only with `OnDeadLetter::ParkKey`).
    pub(crate) parked: ParkedKeys,
    /// Set when rows below the cursor must be read again (a transient failure, a dead letter).
    rescan: AtomicBool,
    /// Bumped whenever a held key is let go: a read after the cursor that was under way then
    /// may pass over rows of that key that wait below the cursor (see [`Shared::releases`]).
    releases: AtomicU64,
    /// What the relay observes of itself, for health checks.
    pub(crate) monitor: RelayMonitor,
    /// In a coordinated relay: what this node may read and send now.
    pub(crate) ownership: Option<Ownership>,
    /// The error that stops the relay, if one does (e.g. its sink was fenced).
    failure: Mutex<Option<crate::Error>>,
    /// Bumped when a delivery failed transiently: batches selected before it are not sent, and
    /// the fetcher reads again only once everything in flight has settled (see `drain`).
    epoch: std::sync::atomic::AtomicU64,
    /// Held (shared) by the sender from its epoch check until the sink took the batch, and
    /// (exclusively) by the completer while it moves the epoch on and tells the sink: a batch
    /// read before a failure is either handed over before the sink hears of the drain, or not at
    /// all.
    pub(crate) send_gate: tokio::sync::RwLock<()>,
    /// The store's [`Store::lock_for_relay`](crate::Store::lock_for_relay) succeeded: the relay
    /// gives the lock up when it stops (and only then).
    pub(crate) store_locked: AtomicBool,
    /// The epoch the fetcher last drained for.
    drained_epoch: std::sync::atomic::AtomicU64,
    /// Notified after every settled batch.
    pub(crate) settled: Notify,
    /// A transactional sink's progress key the table does not remember yet: recorded after the
    /// first delivery (see [`Store::keep_progress`](crate::Store::keep_progress)).
    pub(crate) progress_to_keep: Mutex<Option<String>>,
}

impl<S, K> Shared<S, K> {
    pub(crate) fn new(
        store: S,
        sink: K,
        config: RelayConfig,
        wake: std::sync::Arc<Notify>,
        cancel: CancellationToken,
    ) -> Self {
        let in_flight = InFlight::new(config.max_in_flight, config.max_in_flight_bytes);
        Self {
            store,
            sink,
            config,
            in_flight,
            wake,
            cancel,
            paused_until: Mutex::new(None),
            resumed: Notify::new(),
            shutdown_deadline: std::sync::OnceLock::new(),
            held: Mutex::new(HashMap::new()),
            parked: ParkedKeys::default(),
            rescan: AtomicBool::new(false),
            releases: AtomicU64::new(0),
            monitor: RelayMonitor::default(),
            ownership: None,
            failure: Mutex::new(None),
            epoch: std::sync::atomic::AtomicU64::new(0),
            send_gate: tokio::sync::RwLock::new(()),
            store_locked: AtomicBool::new(false),
            drained_epoch: std::sync::atomic::AtomicU64::new(0),
            settled: Notify::new(),
            progress_to_keep: Mutex::new(None),
        }
    }

    /// The send epoch: batches selected in an older one are not sent.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// A delivery failed transiently: messages of its keys may be queued behind it. Nothing
    /// selected before now is sent, and reading resumes once all in flight has settled, from
    /// the start — so every key is sent again in id order.
    pub(crate) fn request_drain(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.request_rescan();
    }

    /// Whether a drain was requested since the last call.
    pub(crate) fn take_drain(&self) -> bool {
        let epoch = self.epoch();
        self.drained_epoch.swap(epoch, Ordering::AcqRel) != epoch
    }

    /// Stops the relay with `error` (the first one wins): it finishes what is in flight and
    /// returns the error.
    pub(crate) fn fail(&self, error: crate::Error) {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(error);
        self.cancel.cancel();
    }

    /// The error that stopped the relay, if any.
    pub(crate) fn take_failure(&self) -> Option<crate::Error> {
        self.failure.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Puts rows in flight (and counts them per bucket for a coordinated relay's drains); returns
    /// them. A coordinated relay passes over rows of buckets it stopped reading while they were
    /// being read: those buckets are being handed to another node.
    pub(crate) fn enter_flight(&self, rows: Vec<crate::OutboxMessage>) -> Vec<crate::OutboxMessage> {
        let rows = match &self.ownership {
            Some(ownership) => ownership.admit(rows),
            None => rows,
        };
        self.in_flight.insert(rows.iter().map(|row| row.id));
        rows
    }

    /// Takes rows out of flight.
    pub(crate) fn leave_flight(&self, rows: &[crate::OutboxMessage]) {
        self.in_flight.remove(rows.iter().map(|row| row.id));
        if let Some(ownership) = &self.ownership {
            ownership.remove_in_flight(rows.iter().map(|row| row.bucket));
        }
    }

    pub(crate) fn pause_for(&self, delay: Duration) {
        *self.paused_until.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now() + delay);
    }

    pub(crate) fn resume(&self) {
        let was = self.paused_until.lock().unwrap_or_else(|p| p.into_inner()).take();
        #[cfg(not(txoutbox_sim_mutant = "pause_ignores_resume"))]
        if was.is_some() {
            self.resumed.notify_one();
        }
        #[cfg(txoutbox_sim_mutant = "pause_ignores_resume")]
        let _ = was;
    }

    pub(crate) fn paused_until(&self) -> Option<Instant> {
        let until = *self.paused_until.lock().unwrap_or_else(|p| p.into_inner());
        until.filter(|at| *at > Instant::now())
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<HeldKey, DateTime<Utc>>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Holds a key back until `until` (replacing an earlier hold of it).
    pub(crate) fn hold(&self, key: HeldKey, until: DateTime<Utc>) {
        self.held().insert(key, until);
    }

    /// Lets a key flow again (its failing row is dead). Its rows that wait below the cursor
    /// (held back, or deferred behind the failing row) are read again by a rescan, which this
    /// requests; until then no read after the cursor may send rows of the key.
    pub(crate) fn release(&self, key: &HeldKey) {
        self.request_rescan();
        self.releases.fetch_add(1, Ordering::AcqRel);
        self.held().remove(key);
    }

    /// How many times a held key was let go. The fetcher compares it around a read after its
    /// cursor and sends nothing from that read when it moved: the read could have selected a
    /// released key's later rows while its earlier ones wait below the cursor.
    pub(crate) fn releases(&self) -> u64 {
        self.releases.load(Ordering::Acquire)
    }

    /// Whether messages of this key must wait (backing off, or parked).
    pub(crate) fn is_held(&self, topic: &str, key: &[u8]) -> bool {
        {
            let held = self.held();
            if !held.is_empty() && held.contains_key(&(topic.into(), bytes::Bytes::copy_from_slice(key))) {
                return true;
            }
        }
        self.parked.contains(topic, key)
    }

    /// Releases the holds that are due; returns whether any was (their rows wait below the
    /// cursor, so the next fetch must rescan), and when the next one falls due.
    pub(crate) fn release_due_holds(&self, now: DateTime<Utc>) -> (bool, Option<DateTime<Utc>>) {
        let mut held = self.held();
        let before = held.len();
        held.retain(|_, until| *until > now);
        (held.len() < before, held.values().min().copied())
    }

    /// A store call bounded by `store_timeout`: a database that does not answer (a hung
    /// connection) fails the call like an unreachable one, so it is reported and retried.
    pub(crate) async fn bounded<T>(
        &self,
        call: impl std::future::Future<Output = crate::Result<T>>,
    ) -> crate::Result<T> {
        let limit = self.config.store_timeout;
        match tokio::time::timeout(limit, call).await {
            Ok(result) => result,
            Err(_) => Err(crate::Error::database(
                format!(
                    "the outbox database did not answer within {} (store_timeout); \
                     check the network path to it and the server's load",
                    crate::HumanDuration(limit)
                ),
                true,
            )),
        }
    }

    /// Asks the fetcher to read from the start again.
    pub(crate) fn request_rescan(&self) {
        self.rescan.store(true, Ordering::Release);
    }

    /// Takes a pending rescan request.
    pub(crate) fn take_rescan(&self) -> bool {
        self.rescan.swap(false, Ordering::AcqRel)
    }

    /// The instant a shutdown stops waiting for deliveries; fixed by the first caller after the
    /// shutdown began.
    pub(crate) fn shutdown_deadline(&self) -> Instant {
        *self
            .shutdown_deadline
            .get_or_init(|| Instant::now() + self.config.shutdown_timeout)
    }

    /// Sleeps unless a shutdown begins first; returns `false` on shutdown.
    pub(crate) async fn sleep(&self, delay: Duration) -> bool {
        tokio::select! {
            biased;
            _ = self.cancel.cancelled() => false,
            _ = tokio::time::sleep(delay) => true,
        }
    }
}
