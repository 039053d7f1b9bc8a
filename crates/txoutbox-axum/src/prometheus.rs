//! A Prometheus recorder for txoutbox's metrics, for applications that have none yet.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use txoutbox_core::{Error, metrics as names};

/// Installs a Prometheus recorder as the process's global `metrics` recorder, with histogram
/// buckets suited to txoutbox's latency and batch-size histograms, registers the metrics'
/// descriptions, and returns the handle [`RelayRoutes::prometheus`](crate::RelayRoutes::prometheus)
/// renders. A process has one global recorder: call this once (an error says when one is
/// installed already), and give the handle to every router. An application that installs its
/// own recorder passes its handle instead.
pub fn install_prometheus() -> Result<PrometheusHandle, Error> {
    let failed =
        |e: &dyn std::fmt::Display| Error::Config(format!("cannot set up the Prometheus metrics: {e}"));
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(names::DELIVERY_LATENCY.to_owned()),
            &[
                0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0,
            ],
        )
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full(names::BATCH_MESSAGES.to_owned()),
                &[
                    1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0,
                ],
            )
        })
        .map_err(|e| failed(&e))?
        .install_recorder()
        .map_err(|e| failed(&e))?;
    names::describe();
    Ok(handle)
}
