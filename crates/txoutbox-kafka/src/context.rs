//! The librdkafka client context: routes delivery reports to batch trackers and logs to tracing.

use std::sync::Arc;

use rdkafka::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{DeliveryResult, ProducerContext};
use txoutbox_core::DeliveryTracker;

use crate::classify::classify;

/// Which message of which batch a delivery report is about.
pub(crate) struct DeliveryRef {
    pub(crate) tracker: Arc<DeliveryTracker>,
    pub(crate) index: usize,
}

/// Context of the sink's producer. `on_timeout` (at-least-once sink only) is told when a message
/// expired in librdkafka's queue, so the sink can purge the messages queued after it.
#[derive(Default)]
pub(crate) struct SinkContext {
    pub(crate) on_timeout: Option<std::sync::mpsc::SyncSender<()>>,
}

impl ClientContext for SinkContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", facility = fac, "{log_message}")
            }
            RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", facility = fac, "{log_message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", facility = fac, "{log_message}")
            }
            RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", facility = fac, "{log_message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // Connection problems surface here long before any message times out: say so plainly.
        tracing::warn!(
            target: "txoutbox::kafka",
            %error,
            "Kafka broker problem: {reason}; pending messages stay in the outbox until the broker is reachable"
        );
    }
}

impl ProducerContext for SinkContext {
    type DeliveryOpaque = Box<DeliveryRef>;

    fn delivery(&self, result: &DeliveryResult<'_>, delivery: Self::DeliveryOpaque) {
        let outcome = match result {
            Ok(_) => Ok(()),
            Err((error, message)) => {
                if error.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::MessageTimedOut)
                    && let Some(signal) = &self.on_timeout
                {
                    // Coalesced: one pending purge request is enough.
                    let _ = signal.try_send(());
                }
                Err(classify(error, message.topic()))
            }
        };
        delivery.tracker.complete(delivery.index, outcome);
    }
}
