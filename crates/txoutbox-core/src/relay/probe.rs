//! The prober: while nothing is in flight, asks the sink now and then whether its transport
//! answers, so the relay's health shows a broker that went away while there was nothing to send.

use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use super::shared::Shared;
use crate::sink::Sink;

/// How often an idle relay probes its transport.
pub(crate) const PROBE_INTERVAL: Duration = Duration::from_secs(5);

/// Runs until aborted by the relay.
pub(crate) async fn run<S, K: Sink>(shared: Arc<Shared<S, K>>) {
    loop {
        // In-flight deliveries report the transport's state better than any probe.
        if shared.in_flight.is_empty() {
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
        }
        tokio::select! {
            _ = shared.cancel.cancelled() => return,
            _ = tokio::time::sleep(PROBE_INTERVAL) => {}
        }
    }
}
