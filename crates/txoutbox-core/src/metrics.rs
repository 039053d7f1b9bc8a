//! The relay's metrics, recorded through the [`metrics`](https://docs.rs/metrics) facade: install
//! any recorder (the `txoutbox` daemon installs a Prometheus one) and they appear; without one
//! they cost next to nothing.
//!
//! Every metric of a relay carries its [`MetricLabels`]: `table` (the outbox table, e.g.
//! `outbox_messages` or `billing.outbox`) and, in WAL mode, `slot` as well, so that several
//! relays in one process keep apart series. The table below names each metric's own labels.
//!
//! | name | kind | labels | meaning |
//! |---|---|---|---|
//! | `txoutbox_messages_published_total` | counter | `table`, `topic` | messages Kafka acknowledged and the relay completed |
//! | `txoutbox_send_failures_total` | counter | `table`, `class` (`transient`, `permanent`) | failed sends; transient ones are retried without burning attempts |
//! | `txoutbox_messages_dead_lettered_total` | counter | `table`, `topic` | messages moved to the dead-letter state |
//! | `txoutbox_store_errors_total` | counter | `table`, `operation` (`fetch`, `complete`, `record_failures`) | failed database operations (retried) |
//! | `txoutbox_batch_messages` | histogram | `table` | messages per batch handed to the transport |
//! | `txoutbox_delivery_latency_seconds` | histogram | `table` | time from the row's `created_at` (in the writer's transaction) to its acknowledgement |
//! | `txoutbox_pending_messages` | gauge | `table` | pending rows (set by [`HealthCheck`](crate::HealthCheck)) |
//! | `txoutbox_oldest_pending_age_seconds` | gauge | `table` | age of the oldest pending row (ditto) |
//! | `txoutbox_dead_messages` | gauge | `table` | rows in the dead-letter state (ditto) |
//! | `txoutbox_up` | gauge | `table`, `component` (`relay`, `database`, `broker`) | 1 when healthy, 0 otherwise (ditto) |
//! | `txoutbox_relay_standby` | gauge | `table` | 1 while the relay waits for its table's lock at start (another relay is the active one) |
//! | `txoutbox_fenced_rows_total` | counter | `table` | rows whose write was refused: this relay no longer held their lease |
//! | `txoutbox_wal_slot_lag_bytes` | gauge | `slot` | WAL mode: WAL written since the slot's confirmed position (what it keeps on disk) |
//! | `txoutbox_wal_slot_lag_seconds` | gauge | `slot` | WAL mode: age of the oldest message read from the slot and not yet confirmed (commit time) |
//! | `txoutbox_wal_slot_safe_wal_size_bytes` | gauge | `slot` | WAL mode: WAL that may still be written before `max_slot_wal_keep_size` invalidates the slot (absent when unlimited) |
//! | `txoutbox_wal_slot_invalidated` | gauge | `slot` | WAL mode: 1 when the slot was invalidated (`wal_status = lost`) |
//! | `txoutbox_dead_letter_copy_failures_total` | counter | `table`, `topic` | dead-letter copies that could not be sent to the dead-letter topic |
//!
//! The Kafka crate's exactly-once sink records `txoutbox_transactions_total` (`table`, `outcome`)
//! and `txoutbox_transaction_commit_seconds` (`table`); `docs/operations.md` lists them all (a
//! test checks).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};

use crate::message::OutboxMessage;
use crate::metric_labels::MetricLabels;
use crate::store::Backlog;

/// Messages acknowledged and completed, by topic.
pub const PUBLISHED: &str = "txoutbox_messages_published_total";
/// Failed sends, by class.
pub const SEND_FAILURES: &str = "txoutbox_send_failures_total";
/// Messages dead-lettered, by topic.
pub const DEAD_LETTERED: &str = "txoutbox_messages_dead_lettered_total";
/// Dead-lettered messages whose copy the dead-letter topic refused, by original topic.
pub const DEAD_LETTER_COPY_FAILURES: &str = "txoutbox_dead_letter_copy_failures_total";
/// Failed database operations, by operation.
pub const STORE_ERRORS: &str = "txoutbox_store_errors_total";
/// Messages per batch.
pub const BATCH_MESSAGES: &str = "txoutbox_batch_messages";
/// Commit-to-acknowledgement latency.
pub const DELIVERY_LATENCY: &str = "txoutbox_delivery_latency_seconds";
/// Pending rows.
pub const PENDING: &str = "txoutbox_pending_messages";
/// Age of the oldest pending row.
pub const OLDEST_PENDING_AGE: &str = "txoutbox_oldest_pending_age_seconds";
/// Dead rows.
pub const DEAD: &str = "txoutbox_dead_messages";
/// Component health, 1 or 0.
pub const UP: &str = "txoutbox_up";
/// 1 while the relay stands by for its table's lock (another relay is the active one).
pub const STANDBY: &str = "txoutbox_relay_standby";
/// Rows whose write was refused because this relay no longer held their lease.
pub const FENCED: &str = "txoutbox_fenced_rows_total";

/// WAL mode: bytes of WAL the replication slot keeps, by slot.
pub const WAL_SLOT_LAG_BYTES: &str = "txoutbox_wal_slot_lag_bytes";
/// WAL mode: age of the oldest unconfirmed message read from the slot, by slot.
pub const WAL_SLOT_LAG_SECONDS: &str = "txoutbox_wal_slot_lag_seconds";
/// WAL mode: bytes of WAL that may still be written before the slot is invalidated, by slot.
pub const WAL_SLOT_SAFE_WAL_SIZE: &str = "txoutbox_wal_slot_safe_wal_size_bytes";
/// WAL mode: 1 when the slot was invalidated, by slot.
pub const WAL_SLOT_INVALIDATED: &str = "txoutbox_wal_slot_invalidated";

/// Registers the descriptions and units of every txoutbox metric with the installed recorder.
/// Call once after installing it.
pub fn describe() {
    describe_counter!(
        PUBLISHED,
        "Messages acknowledged by Kafka and completed in the outbox"
    );
    describe_counter!(
        SEND_FAILURES,
        "Failed sends by class; transient ones are retried without burning attempts"
    );
    describe_counter!(DEAD_LETTERED, "Messages moved to the dead-letter state");
    describe_counter!(
        DEAD_LETTER_COPY_FAILURES,
        "Dead-lettered messages whose copy the dead-letter topic refused, even without payload"
    );
    describe_counter!(STORE_ERRORS, "Failed outbox database operations (retried)");
    describe_histogram!(BATCH_MESSAGES, Unit::Count, "Messages per batch handed to Kafka");
    describe_histogram!(
        DELIVERY_LATENCY,
        Unit::Seconds,
        "Time from a message's creation in its transaction to Kafka's acknowledgement"
    );
    describe_gauge!(PENDING, "Pending outbox rows");
    describe_gauge!(
        OLDEST_PENDING_AGE,
        Unit::Seconds,
        "Age of the oldest pending outbox row"
    );
    describe_gauge!(DEAD, "Outbox rows in the dead-letter state");
    describe_gauge!(UP, "1 when the component is healthy, 0 otherwise");
    describe_gauge!(
        STANDBY,
        "1 while the relay stands by for its table's lock (another relay is the active one)"
    );
    describe_counter!(
        FENCED,
        "Rows whose write the database refused because this relay no longer held their lease"
    );
    describe_gauge!(
        WAL_SLOT_LAG_BYTES,
        Unit::Bytes,
        "WAL mode: WAL written since the replication slot's confirmed position"
    );
    describe_gauge!(
        WAL_SLOT_LAG_SECONDS,
        Unit::Seconds,
        "WAL mode: age of the oldest message read from the slot and not yet confirmed"
    );
    describe_gauge!(
        WAL_SLOT_SAFE_WAL_SIZE,
        Unit::Bytes,
        "WAL mode: WAL that may still be written before max_slot_wal_keep_size invalidates the slot"
    );
    describe_gauge!(
        WAL_SLOT_INVALIDATED,
        "WAL mode: 1 when the replication slot was invalidated (wal_status lost)"
    );
}

/// Sets the WAL-mode gauges of replication slot `slot` (the store crate measures them; this
/// only records). `safe_wal_size` is `None` when `max_slot_wal_keep_size` is unlimited.
pub fn record_wal_slot(
    slot: &str,
    lag_bytes: u64,
    lag_seconds: f64,
    safe_wal_size: Option<i64>,
    invalidated: bool,
) {
    gauge!(WAL_SLOT_LAG_BYTES, "slot" => slot.to_owned()).set(lag_bytes as f64);
    gauge!(WAL_SLOT_LAG_SECONDS, "slot" => slot.to_owned()).set(lag_seconds.max(0.0));
    if let Some(safe) = safe_wal_size {
        gauge!(WAL_SLOT_SAFE_WAL_SIZE, "slot" => slot.to_owned()).set(safe as f64);
    }
    gauge!(WAL_SLOT_INVALIDATED, "slot" => slot.to_owned()).set(if invalidated { 1.0 } else { 0.0 });
}

/// Records the messages of settled batches that were delivered (acknowledged at `acked_at`, then
/// completed in the store).
pub(crate) fn record_delivered<'a>(
    labels: &MetricLabels,
    rows: impl Iterator<Item = &'a OutboxMessage>,
    acked_at: DateTime<Utc>,
) {
    let now = acked_at;
    let latency = histogram!(DELIVERY_LATENCY, labels.to_vec());
    let mut by_topic: HashMap<&str, u64> = HashMap::new();
    for row in rows {
        let seconds = (now - row.created_at).num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6;
        latency.record(seconds.max(0.0));
        *by_topic.entry(&*row.topic).or_default() += 1;
    }
    for (topic, n) in by_topic {
        counter!(PUBLISHED, labels.and("topic", topic.to_owned())).increment(n);
    }
}

/// Records a failed send.
pub(crate) fn record_send_failures(labels: &MetricLabels, class: &'static str, n: usize) {
    if n > 0 {
        counter!(SEND_FAILURES, labels.and("class", class)).increment(n as u64);
    }
}

/// Records a dead-lettered message.
pub(crate) fn record_dead_lettered(labels: &MetricLabels, topic: &str) {
    counter!(DEAD_LETTERED, labels.and("topic", topic.to_owned())).increment(1);
}

/// Records a dead-lettered message whose copy the dead-letter topic refused.
pub(crate) fn record_dead_letter_copy_failed(labels: &MetricLabels, topic: &str) {
    counter!(DEAD_LETTER_COPY_FAILURES, labels.and("topic", topic.to_owned())).increment(1);
}

/// Records a failed database operation.
pub(crate) fn record_store_error(labels: &MetricLabels, operation: &'static str) {
    counter!(STORE_ERRORS, labels.and("operation", operation)).increment(1);
}

/// Records the size of a batch handed to the transport.
pub(crate) fn record_batch(labels: &MetricLabels, len: usize) {
    histogram!(BATCH_MESSAGES, labels.to_vec()).record(len as f64);
}

/// Sets the backlog gauges.
pub(crate) fn record_backlog(labels: &MetricLabels, backlog: &Backlog) {
    gauge!(PENDING, labels.to_vec()).set(backlog.pending as f64);
    gauge!(DEAD, labels.to_vec()).set(backlog.dead as f64);
    let age = backlog
        .oldest_pending
        .map_or(0.0, |t| (Utc::now() - t).num_milliseconds().max(0) as f64 / 1e3);
    gauge!(OLDEST_PENDING_AGE, labels.to_vec()).set(age);
}

/// Records rows whose write was fenced off.
pub(crate) fn record_fenced(labels: &MetricLabels, rows: u64) {
    counter!(FENCED, labels.to_vec()).increment(rows);
}

/// Sets a component's up gauge.
pub(crate) fn record_standby(labels: &MetricLabels, standing_by: bool) {
    gauge!(STANDBY, labels.to_vec()).set(if standing_by { 1.0 } else { 0.0 });
}

pub(crate) fn record_up(labels: &MetricLabels, component: &'static str, up: bool) {
    gauge!(UP, labels.and("component", component)).set(if up { 1.0 } else { 0.0 });
}
