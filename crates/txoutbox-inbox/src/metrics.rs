//! The inbox's metrics, each labelled with `consumer` (the consumer group); the names and what
//! they count: `docs/operations.md`.

use metrics::{Unit, counter, describe_counter, describe_gauge, gauge};

/// Records handled and committed.
pub(crate) const HANDLED: &str = "txoutbox_inbox_handled_total";
/// Records skipped because their id was recorded already.
pub(crate) const DUPLICATES: &str = "txoutbox_inbox_duplicates_total";
/// Failed handler attempts (each attempt counts).
pub(crate) const FAILURES: &str = "txoutbox_inbox_handler_failures_total";
/// Records parked after their last attempt or a permanent failure.
pub(crate) const PARKED: &str = "txoutbox_inbox_parked_total";
/// Parked records replayed successfully.
pub(crate) const REPLAYED: &str = "txoutbox_inbox_replayed_total";
/// Records read whose id came from their position (no usable id found).
pub(crate) const POSITION_IDS: &str = "txoutbox_inbox_position_ids_total";
/// Failed calls to the database outside the handler (retried until it answers).
pub(crate) const STORE_ERRORS: &str = "txoutbox_inbox_store_errors_total";
/// Records behind the partitions' ends, summed (librdkafka's statistics).
pub(crate) const LAG: &str = "txoutbox_inbox_lag";
/// Records read and not finished.
pub(crate) const IN_FLIGHT: &str = "txoutbox_inbox_in_flight";

/// Every metric name, for the docs check.
pub const NAMES: [&str; 9] = [
    HANDLED,
    DUPLICATES,
    FAILURES,
    PARKED,
    REPLAYED,
    POSITION_IDS,
    STORE_ERRORS,
    LAG,
    IN_FLIGHT,
];

/// Adds one to counter `name` of `consumer`.
pub(crate) fn count(name: &'static str, consumer: &str) {
    counter!(name, "consumer" => consumer.to_owned()).increment(1);
}

/// Adds `n` to counter `name` of `consumer`.
pub(crate) fn counter_add(name: &'static str, consumer: &str, n: u64) {
    if n > 0 {
        counter!(name, "consumer" => consumer.to_owned()).increment(n);
    }
}

/// Sets gauge `name` of `consumer`.
pub(crate) fn set(name: &'static str, consumer: &str, value: f64) {
    gauge!(name, "consumer" => consumer.to_owned()).set(value);
}

/// Registers every inbox metric's help text with the installed recorder.
pub fn describe() {
    describe_counter!(
        HANDLED,
        Unit::Count,
        "Records handled and committed with their id."
    );
    describe_counter!(
        DUPLICATES,
        Unit::Count,
        "Records skipped: their id was recorded already."
    );
    describe_counter!(FAILURES, Unit::Count, "Failed handler attempts.");
    describe_counter!(PARKED, Unit::Count, "Records parked after their last attempt.");
    describe_counter!(REPLAYED, Unit::Count, "Parked records replayed and handled.");
    describe_counter!(
        POSITION_IDS,
        Unit::Count,
        "Records de-duplicated by their position (no usable id)."
    );
    describe_counter!(
        STORE_ERRORS,
        Unit::Count,
        "Failed inbox database calls outside the handler."
    );
    describe_gauge!(
        LAG,
        Unit::Count,
        "Records behind the ends of the assigned partitions."
    );
    describe_gauge!(IN_FLIGHT, Unit::Count, "Records read and not yet finished.");
}
