//! The console's per-second sample: publish rate, commit→ack latency and backlog.

use chrono::Utc;
use tokio::time::Instant;

use super::console::{Console, Last};
use crate::history::{Histogram, Sample};
use crate::state::RouteState;

impl Console {
    /// Takes this second's sample: publish rate, latency from the delivery-latency histogram,
    /// and the pending count of the latest health check. Called every second by the routes'
    /// sampler.
    pub(crate) fn record_second(&self, state: &RouteState, now: Instant) {
        let published = state.monitor.published();
        // This relay's series only: other relays of the process have other labels.
        let latency = state.prometheus.as_ref().and_then(|prometheus| {
            Histogram::from_prometheus(
                &prometheus.render(),
                txoutbox_core::metrics::DELIVERY_LATENCY,
                state.monitor.metric_labels().pairs(),
            )
        });
        let pending = state.reports.latest().and_then(|h| h.backlog).map(|b| b.pending);
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(previous) = last.as_ref() {
            let elapsed = now.duration_since(previous.at).as_secs_f64();
            let rate = if elapsed > 0.0 {
                published.saturating_sub(previous.published) as f64 / elapsed
            } else {
                0.0
            };
            let observed = match (&latency, &previous.latency) {
                (Some(now), Some(before)) => now.since(before, 0.99),
                (Some(now), None) => now.since(&Histogram::default(), 0.99),
                _ => None,
            };
            self.timeline.push(Sample {
                at: Utc::now(),
                rate,
                latency_avg_ms: observed.map(|(mean, _)| mean * 1e3),
                latency_p99_ms: observed.map(|(_, p99)| p99 * 1e3),
                pending,
            });
        }
        *last = Some(Last {
            at: now,
            published,
            latency,
        });
    }
}
