//! The relay's own commit → acknowledgement latency: a process-wide `metrics` recorder keeps the
//! samples of `txoutbox_delivery_latency_seconds` (a row's `created_at`, set in the writer's
//! transaction, to Kafka's acknowledgement and the row's completion) and ignores every other
//! metric. Slightly pessimistic: it includes the rest of the writer's transaction and the mark.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use txoutbox::metrics::DELIVERY_LATENCY;

static SAMPLES: Mutex<Vec<f64>> = Mutex::new(Vec::new());

fn samples() -> std::sync::MutexGuard<'static, Vec<f64>> {
    SAMPLES.lock().unwrap_or_else(|p| p.into_inner())
}

struct Capture;

impl HistogramFn for Capture {
    fn record(&self, seconds: f64) {
        samples().push(seconds);
    }
}

struct CaptureRecorder;

impl Recorder for CaptureRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, _: &Key, _: &Metadata<'_>) -> Counter {
        Counter::noop()
    }

    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        if key.name() == DELIVERY_LATENCY {
            Histogram::from_arc(Arc::new(Capture))
        } else {
            Histogram::noop()
        }
    }
}

/// Installs the recorder (once per process; later calls do nothing).
pub(crate) fn install() {
    let _ = metrics::set_global_recorder(CaptureRecorder);
}

/// How many samples were recorded since the last [`take`].
pub(crate) fn count() -> usize {
    samples().len()
}

/// The samples recorded since the last call, emptied.
pub(crate) fn take() -> Vec<Duration> {
    std::mem::take(&mut *samples())
        .into_iter()
        .map(Duration::from_secs_f64)
        .collect()
}
