//! The prober: while nothing is in flight, asks the sink now and then whether its transport
//! answers, so the relay's health shows a broker that went away while there was nothing to send;
//! while messages are in flight, reports the transport failing once none has been acknowledged
//! for [`STALL_AFTER`] (a broker that accepts connections but cannot commit, or one that is gone
//! while the producer keeps retrying in order).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::shared::Shared;
use crate::sink::Sink;

/// How often an idle relay probes its transport (and a busy one checks for a stall).
pub(crate) const PROBE_INTERVAL: Duration = Duration::from_secs(5);

/// How long messages may stay in flight without any acknowledgement before the transport counts
/// as failing. Far above a healthy broker's worst acknowledgement time, and above a leader
/// failover's stall (about 9 s when a broker dies silently).
pub(crate) const STALL_AFTER: Duration = Duration::from_secs(15);

/// Runs until aborted by the relay.
pub(crate) async fn run<S, K: Sink>(shared: Arc<Shared<S, K>>) {
    let mut stall = StallWatch::default();
    loop {
        // In-flight deliveries report the transport's state better than any probe.
        if shared.in_flight.is_empty() {
            stall = StallWatch::default();
            let was_failing = shared.monitor.sink().is_failing();
            match shared.sink.probe().await {
                Ok(()) if shared.in_flight.is_empty() => {
                    if was_failing {
                        info!("Kafka answers again");
                    }
                    shared.monitor.sink_ok();
                }
                Ok(()) => {}
                Err(error) => {
                    if !was_failing {
                        warn!(%error, "Kafka does not answer");
                    }
                    shared.monitor.sink_failed(&error);
                }
            }
        } else {
            let settled = shared.monitor.published() + shared.monitor.dead_lettered();
            if let Some(stalled) = stall.observe(settled, Instant::now()) {
                let in_flight = shared.in_flight.len();
                let error = format!(
                    "Kafka has acknowledged none of the {in_flight} messages in flight for {} s; \
                     they stay pending and are delivered in order once it does",
                    stalled.as_secs()
                );
                if !shared.monitor.sink().is_failing() {
                    warn!("{error}");
                }
                shared.monitor.sink_failed(&error);
            }
        }
        tokio::select! {
            biased;
            _ = shared.cancel.cancelled() => return,
            _ = tokio::time::sleep(PROBE_INTERVAL) => {}
        }
    }
}

/// Watches the count of settled messages while some are in flight.
#[derive(Debug, Default)]
struct StallWatch {
    /// The count last seen and when it was first seen.
    since: Option<(u64, Instant)>,
}

impl StallWatch {
    /// Returns how long nothing has settled, once that is at least [`STALL_AFTER`].
    fn observe(&mut self, settled: u64, now: Instant) -> Option<Duration> {
        match self.since {
            Some((seen, at)) if seen == settled => {
                let stalled = now.duration_since(at);
                (stalled >= STALL_AFTER).then_some(stalled)
            }
            _ => {
                self.since = Some((settled, now));
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stall_is_reported_only_after_no_progress_for_the_stall_time() {
        let t0 = Instant::now();
        let mut watch = StallWatch::default();
        assert_eq!(watch.observe(5, t0), None);
        assert_eq!(watch.observe(5, t0 + Duration::from_secs(5)), None);
        assert_eq!(
            watch.observe(5, t0 + STALL_AFTER),
            Some(STALL_AFTER),
            "no progress for the stall time"
        );
        // Progress restarts the clock.
        let t1 = t0 + STALL_AFTER + Duration::from_secs(1);
        assert_eq!(watch.observe(6, t1), None);
        assert_eq!(watch.observe(6, t1 + STALL_AFTER - Duration::from_secs(1)), None);
        assert!(watch.observe(6, t1 + STALL_AFTER).is_some());
    }
}
