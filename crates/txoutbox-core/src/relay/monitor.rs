//! What a running relay last observed of itself, its database and its transport: read by health
//! checks, status pages and metrics without touching the database.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

use crate::metric_labels::MetricLabels;

/// The state of one dependency (the database or the transport) as the relay last saw it.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Condition {
    /// Not used yet since the relay started.
    #[default]
    Unknown,
    /// The last operation succeeded.
    Ok,
    /// Operations have been failing since `since`; `error` is the latest failure.
    Failing {
        /// When the current run of failures began.
        since: DateTime<Utc>,
        /// The latest error, as the relay logged it.
        error: String,
    },
}

impl Condition {
    /// Whether the dependency is known to be failing.
    pub fn is_failing(&self) -> bool {
        matches!(self, Self::Failing { .. })
    }
}

#[derive(Debug, Default)]
struct State {
    running: AtomicBool,
    standing_by: AtomicBool,
    store: Mutex<Condition>,
    sink: Mutex<Condition>,
    last_delivery: Mutex<Option<DateTime<Utc>>>,
    published: AtomicU64,
    dead_lettered: AtomicU64,
    labels: MetricLabels,
}

/// A cheap, cloneable view of a relay's health as it observes it: whether it runs, whether its
/// database and its transport answer, and when it last delivered a message.
///
/// Obtained from [`RelayHandle::monitor`](super::RelayHandle::monitor) or
/// [`Relay::monitor`](super::Relay::monitor).
#[derive(Debug, Clone, Default)]
pub struct RelayMonitor {
    state: Arc<State>,
}

impl RelayMonitor {
    /// The monitor of a relay whose metrics carry `labels`.
    pub(crate) fn labelled(labels: MetricLabels) -> Self {
        Self {
            state: Arc::new(State {
                labels,
                ..State::default()
            }),
        }
    }

    /// The labels of this relay's metrics (its table, and in WAL mode its slot).
    pub fn metric_labels(&self) -> &MetricLabels {
        &self.state.labels
    }

    /// Whether the relay's task is running (false before it starts, after it stops or panics).
    pub fn is_running(&self) -> bool {
        self.state.running.load(Ordering::Acquire)
    }

    /// Whether the relay stands by: it waits for its table's lock, which another relay holds
    /// (see [`Store::lock_for_relay`](crate::Store::lock_for_relay)). A standby relay is healthy.
    pub fn is_standing_by(&self) -> bool {
        self.state.standing_by.load(Ordering::Acquire)
    }

    pub(crate) fn set_standing_by(&self, standing_by: bool) {
        self.state.standing_by.store(standing_by, Ordering::Release);
        crate::metrics::record_standby(&self.state.labels, standing_by);
    }

    /// The outbox database as the relay last saw it.
    pub fn store(&self) -> Condition {
        lock(&self.state.store).clone()
    }

    /// The transport (Kafka) as the relay last saw it.
    pub fn sink(&self) -> Condition {
        lock(&self.state.sink).clone()
    }

    /// When the relay last had a message acknowledged.
    pub fn last_delivery(&self) -> Option<DateTime<Utc>> {
        *lock(&self.state.last_delivery)
    }

    /// Messages this relay published (acknowledged and completed) since it was created.
    pub fn published(&self) -> u64 {
        self.state.published.load(Ordering::Relaxed)
    }

    /// Messages this relay moved to the dead-letter state since it was created.
    pub fn dead_lettered(&self) -> u64 {
        self.state.dead_lettered.load(Ordering::Relaxed)
    }

    pub(crate) fn set_running(&self, running: bool) {
        self.state.running.store(running, Ordering::Release);
    }

    pub(crate) fn store_ok(&self) {
        set_ok(&self.state.store);
    }

    pub(crate) fn store_failed(&self, error: &dyn std::fmt::Display) {
        set_failing(&self.state.store, error);
    }

    pub(crate) fn sink_ok(&self) {
        set_ok(&self.state.sink);
    }

    pub(crate) fn sink_failed(&self, error: &dyn std::fmt::Display) {
        set_failing(&self.state.sink, error);
    }

    pub(crate) fn delivered(&self, messages: usize) {
        self.state.published.fetch_add(messages as u64, Ordering::Relaxed);
        *lock(&self.state.last_delivery) = Some(Utc::now());
        self.sink_ok();
    }

    pub(crate) fn dead_lettered_one(&self) {
        self.state.dead_lettered.fetch_add(1, Ordering::Relaxed);
    }

    /// A guard that marks the relay running until it is dropped (also on panic).
    pub(crate) fn running_guard(&self) -> RunningGuard {
        self.set_running(true);
        RunningGuard(self.clone())
    }
}

/// Marks the relay stopped when dropped.
pub(crate) struct RunningGuard(RelayMonitor);

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.0.set_running(false);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

fn set_ok(condition: &Mutex<Condition>) {
    let mut condition = lock(condition);
    if *condition != Condition::Ok {
        *condition = Condition::Ok;
    }
}

fn set_failing(condition: &Mutex<Condition>, error: &dyn std::fmt::Display) {
    let mut condition = lock(condition);
    let since = match &*condition {
        Condition::Failing { since, .. } => *since,
        _ => Utc::now(),
    };
    *condition = Condition::Failing {
        since,
        error: error.to_string(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_of_failures_keeps_its_start_and_the_latest_error() {
        let monitor = RelayMonitor::default();
        assert_eq!(monitor.sink(), Condition::Unknown);
        monitor.sink_failed(&"first");
        let Condition::Failing { since, .. } = monitor.sink() else {
            panic!("failing expected")
        };
        monitor.sink_failed(&"second");
        assert_eq!(
            monitor.sink(),
            Condition::Failing {
                since,
                error: "second".into()
            }
        );
        monitor.delivered(3);
        assert_eq!(monitor.sink(), Condition::Ok);
        assert_eq!(monitor.published(), 3);
        assert!(monitor.last_delivery().is_some());
    }

    #[test]
    fn the_running_flag_follows_the_guard() {
        let monitor = RelayMonitor::default();
        {
            let _guard = monitor.running_guard();
            assert!(monitor.is_running());
        }
        assert!(!monitor.is_running());
    }
}
