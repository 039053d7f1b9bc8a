//! The sender: hands selected batches to the sink in order, so the fetcher's next read overlaps
//! the enqueueing of the current batch.

use std::sync::Arc;

use chrono::TimeDelta;
use tokio::sync::mpsc;
use tracing::{Instrument, debug, debug_span};

use super::batches::{Selected, SentBatch};
use super::shared::Shared;
use crate::message::OutboxMessage;
use crate::sink::Sink;

/// Runs until the fetcher hangs up (after sending what it had selected) or the completer does.
pub(crate) async fn run<S, K: Sink>(
    shared: Arc<Shared<S, K>>,
    mut selected: mpsc::Receiver<Selected>,
    completer: mpsc::Sender<SentBatch>,
) {
    while let Some(batch) = selected.recv().await {
        let end_of_burst = batch.end_of_burst;
        let sent = hand_over(&shared, batch).await;
        // Batches the fetcher selected while the sink was busy (a commit) belong to the same
        // burst: only the last one queued ends it, so they share one transaction.
        if end_of_burst && selected.is_empty() {
            shared.sink.end_of_burst();
        }
        if let Some(sent) = sent
            && completer.send(sent).await.is_err()
        {
            break;
        }
    }
}

/// Rows of this batch went back to pending: the batches selected after it are not sent either
/// (they could carry later rows of the same keys), and reading resumes from the start once what
/// is in flight settled.
fn give_back_later_batches<S, K: Sink>(shared: &Shared<S, K>) {
    #[cfg(not(txoutbox_sim_mutant = "refusal_keeps_epoch"))]
    shared.request_drain();
    #[cfg(txoutbox_sim_mutant = "refusal_keeps_epoch")]
    shared.request_rescan();
}

/// Hands one batch to the sink, or gives its rows back to pending when they may no longer go.
async fn hand_over<S, K: Sink>(shared: &Shared<S, K>, selected: Selected) -> Option<SentBatch> {
    let Selected {
        rows, permit, epoch, ..
    } = selected;
    // No drain begins between the epoch check and the hand-over (see `Shared::send_gate`).
    let _gate = shared.send_gate.read().await;
    // A delivery failed since these rows were selected: they could overtake the failed rows
    // of their keys. They go back to pending and are read again after the drain.
    if epoch != shared.epoch() {
        debug!(
            rows = rows.len(),
            "not sending: a delivery failed since these rows were read"
        );
        shared.leave_flight(&rows);
        shared.request_rescan();
        return None;
    }
    // A key may have been held since the fetcher selected this batch (a row of it was refused
    // in the previous batch): its rows must not overtake that row, so they go back to pending.
    // Rare: the batch is copied only when one of its rows is held.
    let is_held = |row: &OutboxMessage| {
        row.key
            .as_ref()
            .is_some_and(|key| shared.is_held(&row.topic, key))
    };
    // A coordinated relay whose leases may have ended (it was paused, or cannot renew) sends
    // nothing: the rows stay pending for whoever holds them now. The batches selected after
    // this one are given back too (the epoch moves on): were the leases renewed meanwhile, they
    // would overtake these rows.
    if shared.ownership.as_ref().is_some_and(|o| !o.may_send()) {
        debug!(
            rows = rows.len(),
            "not sending: the leases of these rows may have ended"
        );
        shared.leave_flight(&rows);
        give_back_later_batches(shared);
        return None;
    }
    let rows: Arc<[OutboxMessage]> = if rows.iter().any(is_held) {
        let (held, keep): (Vec<_>, Vec<_>) = rows.iter().cloned().partition(is_held);
        shared.leave_flight(&held);
        // Later batches may hold later rows of these keys, and the hold may end before they go.
        give_back_later_batches(shared);
        keep.into()
    } else {
        rows
    };
    if rows.is_empty() {
        return None;
    }
    let first_id = rows.first().map(|row| row.id);
    debug!(rows = rows.len(), first_id, "sending batch");
    crate::metrics::record_batch(shared.monitor.metric_labels(), rows.len());
    let delivery = shared
        .sink
        .send_batch(Arc::clone(&rows))
        .instrument(debug_span!("txoutbox.send", rows = rows.len(), first_id))
        .await;
    // Rows refused on the spot (e.g. too large) hold their key before the next batch goes out;
    // the completer replaces the hold with the row's retry time.
    for index in delivery.permanent_failures_so_far() {
        if let Some(row) = rows.get(index)
            && let Some(key) = &row.key
        {
            shared.hold(
                super::select::held_key(&row.topic, key),
                crate::clock::now() + TimeDelta::days(1),
            );
        }
    }
    Some(SentBatch {
        rows,
        delivery,
        permit,
        epoch,
    })
}
