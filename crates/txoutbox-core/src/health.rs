//! Health checks with thresholds: is the relay running, do its database and broker answer, is
//! the backlog within bounds.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::metrics;
use crate::relay::{Condition, RelayMonitor};
use crate::store::{Backlog, Store};

/// When a backlog counts as unhealthy. `None` disables a threshold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HealthThresholds {
    /// Unhealthy above this many pending messages.
    pub max_pending: Option<u64>,
    /// Unhealthy when the oldest pending message is older than this.
    pub max_oldest_pending_age: Option<Duration>,
}

impl HealthThresholds {
    /// No backlog thresholds: only a stopped relay or an unreachable dependency is unhealthy.
    pub fn none() -> Self {
        Self::default()
    }

    /// Sets the pending-message threshold.
    #[must_use]
    pub fn max_pending(mut self, max: u64) -> Self {
        self.max_pending = Some(max);
        self
    }

    /// Sets the oldest-pending-age threshold.
    #[must_use]
    pub fn max_oldest_pending_age(mut self, max: Duration) -> Self {
        self.max_oldest_pending_age = Some(max);
        self
    }
}

/// The outcome of a [`HealthCheck`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct HealthReport {
    /// Whether every check passed.
    pub healthy: bool,
    /// Why not, one sentence per failed check.
    pub reasons: Vec<String>,
    /// The backlog, when the database answered.
    pub backlog: Option<Backlog>,
    /// Whether the relay runs (`None` when the check watches no relay).
    pub relay_running: Option<bool>,
    /// The outbox database: what the backlog query found.
    pub database: Condition,
    /// The broker, as the relay last saw it.
    pub broker: Condition,
    /// When the check ran.
    pub checked_at: DateTime<Utc>,
}

/// Checks a relay and its outbox against [`HealthThresholds`], and sets the backlog and `up`
/// gauges of [`metrics`](crate::metrics) as it goes.
///
/// Each [`check`](Self::check) runs one backlog query; call it on a timer and serve the last
/// report rather than querying per request.
#[derive(Debug, Clone)]
pub struct HealthCheck<S> {
    store: S,
    thresholds: HealthThresholds,
    relay: Option<RelayMonitor>,
}

impl<S: Store> HealthCheck<S> {
    /// A check of `store`'s backlog against `thresholds`.
    pub fn new(store: S, thresholds: HealthThresholds) -> Self {
        Self {
            store,
            thresholds,
            relay: None,
        }
    }

    /// Also checks this relay: running, and its broker reachable.
    #[must_use]
    pub fn with_relay(mut self, monitor: RelayMonitor) -> Self {
        self.relay = Some(monitor);
        self
    }

    /// Runs the checks.
    pub async fn check(&self) -> HealthReport {
        let backlog = self.store.backlog().await;
        let report = evaluate(&self.thresholds, backlog, self.relay.as_ref(), Utc::now());
        let labels = self.store.metric_labels();
        if let Some(backlog) = &report.backlog {
            metrics::record_backlog(&labels, backlog);
        }
        metrics::record_up(&labels, "database", !report.database.is_failing());
        if let Some(running) = report.relay_running {
            metrics::record_up(&labels, "relay", running);
            metrics::record_up(&labels, "broker", !report.broker.is_failing());
        }
        report
    }
}

/// The verdict from what was observed.
fn evaluate(
    thresholds: &HealthThresholds,
    backlog: crate::Result<Backlog>,
    relay: Option<&RelayMonitor>,
    now: DateTime<Utc>,
) -> HealthReport {
    let mut reasons = Vec::new();
    let (backlog, database) = match backlog {
        Ok(backlog) => (Some(backlog), Condition::Ok),
        Err(error) => {
            reasons.push(format!("the outbox database does not answer: {error}"));
            (
                None,
                Condition::Failing {
                    since: now,
                    error: error.to_string(),
                },
            )
        }
    };
    if let Some(backlog) = &backlog {
        if let Some(max) = thresholds.max_pending
            && backlog.pending > max
        {
            reasons.push(format!(
                "{} messages are pending, above the threshold of {max}",
                backlog.pending
            ));
        }
        if let (Some(max), Some(oldest)) = (thresholds.max_oldest_pending_age, backlog.oldest_pending) {
            let age = (now - oldest).to_std().unwrap_or_default();
            if age > max {
                reasons.push(format!(
                    "the oldest pending message waits for {}s, above the threshold of {}s",
                    age.as_secs(),
                    max.as_secs()
                ));
            }
        }
    }
    let (relay_running, broker) = match relay {
        Some(monitor) => {
            let running = monitor.is_running();
            if !running {
                reasons.push("the relay is not running".to_owned());
            }
            let broker = monitor.sink();
            if let Condition::Failing { since, error } = &broker {
                reasons.push(format!(
                    "Kafka has not accepted messages since {}: {error}",
                    since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                ));
            }
            (Some(running), broker)
        }
        None => (None, Condition::Unknown),
    };
    HealthReport {
        healthy: reasons.is_empty(),
        reasons,
        backlog,
        relay_running,
        database,
        broker,
        checked_at: now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    fn backlog(pending: u64, age_secs: i64, now: DateTime<Utc>) -> Backlog {
        Backlog {
            pending,
            oldest_pending: (pending > 0).then(|| now - chrono::TimeDelta::seconds(age_secs)),
            dead: 0,
        }
    }

    #[test]
    fn thresholds_name_what_was_crossed() {
        let now = Utc::now();
        let thresholds = HealthThresholds::none()
            .max_pending(100)
            .max_oldest_pending_age(Duration::from_secs(60));
        let report = evaluate(&thresholds, Ok(backlog(100, 60, now)), None, now);
        assert!(report.healthy, "{:?}", report.reasons);
        let report = evaluate(&thresholds, Ok(backlog(101, 61, now)), None, now);
        assert!(!report.healthy);
        assert_eq!(report.reasons.len(), 2, "{:?}", report.reasons);
        assert!(report.reasons[0].contains("101 messages are pending"));
        assert!(report.reasons[1].contains("61s"));
    }

    #[test]
    fn an_unreachable_database_or_stopped_relay_is_unhealthy() {
        let now = Utc::now();
        let report = evaluate(
            &HealthThresholds::none(),
            Err(Error::database("connection refused", true)),
            None,
            now,
        );
        assert!(!report.healthy);
        assert!(report.database.is_failing());
        assert!(report.reasons[0].contains("connection refused"));

        let monitor = RelayMonitor::default();
        let report = evaluate(
            &HealthThresholds::none(),
            Ok(backlog(0, 0, now)),
            Some(&monitor),
            now,
        );
        assert_eq!(report.reasons, ["the relay is not running"]);
        let _running = monitor.running_guard();
        monitor.sink_failed(&"broker down");
        let report = evaluate(
            &HealthThresholds::none(),
            Ok(backlog(0, 0, now)),
            Some(&monitor),
            now,
        );
        assert!(!report.healthy);
        assert!(report.reasons[0].contains("broker down"), "{:?}", report.reasons);
    }
}
