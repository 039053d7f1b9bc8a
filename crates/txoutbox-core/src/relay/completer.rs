//! The completer: awaits deliveries in order, marks delivered rows in batches, records failures.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::mpsc;
use tracing::{Instrument, debug, debug_span, error, warn};

use super::backoff::Backoff;
use super::batches::SentBatch;
use super::config::OnDeadLetter;
use super::shared::Shared;
use crate::message::OutboxMessage;
use crate::sink::{DeliveryResult, Sink, SinkError, SinkErrorKind};
use crate::store::{Failure, Store};

/// Rows marked by one statement at most, when several delivered batches are ready together.
const MAX_ROWS_PER_MARK: usize = 10_000;

/// A batch whose every message has an outcome.
struct Settled {
    rows: Arc<[OutboxMessage]>,
    results: Vec<DeliveryResult>,
    _permit: super::in_flight::Permit,
    /// The send epoch it was handed over in.
    epoch: u64,
}

/// Runs until the fetcher hangs up and every batch it sent is settled (or the shutdown timeout
/// passes: rows whose delivery is still unknown then simply stay pending).
pub(crate) async fn run<S: Store, K: Sink>(
    shared: Arc<Shared<S, K>>,
    mut batches: mpsc::Receiver<SentBatch>,
) {
    let mut transport_backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    let mut next: Option<SentBatch> = None;
    loop {
        let first = match next.take() {
            Some(batch) => batch,
            None => match batches.recv().await {
                Some(batch) => batch,
                None => break,
            },
        };
        let Some(first) = wait_delivery(&shared, first).await else {
            break;
        };
        let mut rows = first.rows.len();
        let mut settled = vec![first];
        // Coalesce the batches that are already delivered into one mark.
        while rows < MAX_ROWS_PER_MARK {
            match batches.try_recv() {
                Ok(batch) if batch.delivery.is_done() => {
                    rows += batch.rows.len();
                    let Some(done) = wait_delivery(&shared, batch).await else {
                        break;
                    };
                    settled.push(done);
                }
                Ok(batch) => {
                    next = Some(batch);
                    break;
                }
                Err(_) => break,
            }
        }
        settle(&shared, settled, &mut transport_backoff).await;
    }
}

/// Waits for a batch's outcomes; gives up (returns `None`) once a shutdown has waited
/// `shutdown_timeout`.
async fn wait_delivery<S, K>(shared: &Shared<S, K>, batch: SentBatch) -> Option<Settled> {
    let SentBatch {
        rows,
        delivery,
        permit,
        epoch,
    } = batch;
    let deadline = async {
        shared.cancel.cancelled().await;
        tokio::time::sleep_until(shared.shutdown_deadline()).await;
    };
    tokio::select! {
        biased;
        results = delivery.wait() => Some(Settled { rows, results, _permit: permit, epoch }),
        _ = deadline => {
            warn!(
                rows = rows.len(),
                "shutdown timeout passed before Kafka confirmed these messages; they stay pending and will be sent again"
            );
            None
        }
    }
}

async fn settle<S: Store, K: Sink>(
    shared: &Shared<S, K>,
    settled: Vec<Settled>,
    transport_backoff: &mut Backoff,
) {
    // Every batch here has its outcomes: the latency histogram ends now, not after the mark.
    let acked_at = crate::clock::now();
    let mut delivered = Vec::new();
    let mut failing: Vec<(&OutboxMessage, Failure)> = Vec::new();
    // A failure the transport reported after it took the message: later messages of its key may
    // be queued behind it. (One refused when enqueued had its key's later messages held back.)
    let mut taken_then_failed = false;
    let mut transient = 0usize;
    let mut first_transient = None;
    // Transient failures of batches handed over before the epoch last moved were given up by the
    // purge that moved it (or failed behind the failure that did): they are sent again like any
    // other, but say nothing new about the transport, so they do not pause the relay (each purge
    // would otherwise fail the next round and keep every key backing off).
    let epoch_now = shared.epoch();
    let mut deferred = 0usize;
    let mut fenced = None;
    for batch in &settled {
        for (row, result) in batch.rows.iter().zip(&batch.results) {
            match result {
                Ok(()) => delivered.push(row.id),
                Err(e) if e.kind() == SinkErrorKind::Deferred => deferred += 1,
                Err(e) if e.kind() == SinkErrorKind::Fenced => {
                    fenced.get_or_insert_with(|| e.clone());
                }
                Err(e) if e.is_transient() => {
                    transient += 1;
                    #[cfg(not(txoutbox_sim_mutant = "stale_failures_pause"))]
                    let stale = batch.epoch != epoch_now;
                    #[cfg(txoutbox_sim_mutant = "stale_failures_pause")]
                    let stale = false;
                    if !stale {
                        first_transient.get_or_insert_with(|| e.clone());
                    }
                }
                Err(e) => {
                    taken_then_failed |= !e.is_unsent();
                    failing.push((row, failure_for(shared, row, e)));
                }
            }
        }
    }

    // Messages that die now first get their copy on the dead-letter topic; while the broker
    // cannot take a copy, its message stays pending (it dies again later), so each copy is sent
    // at least once.
    if let Some(topic) = &shared.config.dead_letter_topic {
        let dying: Vec<(&OutboxMessage, &Failure)> = failing
            .iter()
            .filter(|(_, f)| f.next_attempt_at.is_none())
            .map(|(row, f)| (*row, f))
            .collect();
        if !dying.is_empty() {
            let not_copied: Vec<(i64, crate::sink::SinkError)> =
                // A store with stream positions numbers its messages per session: those ids
                // name no table row.
                super::dead_letter_copy::send(
                    &shared.sink,
                    topic,
                    shared.store.stream_positions().is_none(),
                    shared.config.allowed_topics.as_ref(),
                    &dying,
                    shared.monitor.metric_labels(),
                )
                    .await
                    .into_iter()
                    .zip(&dying)
                    .filter_map(|(outcome, (row, _))| outcome.err().map(|e| (row.id, e)))
                    .collect();
            for (id, e) in not_copied {
                failing.retain(|(row, _)| row.id != id);
                transient += 1;
                first_transient.get_or_insert(e);
            }
        }
    }
    let mut failures = Vec::with_capacity(failing.len());
    // Keys parked now, confirmed once their dead rows are written.
    let mut parking = Vec::new();
    // Keys let go because their failing row is dead: released only once this round's rows left
    // the flight, since a later row of the key deferred behind the dead one still counts as in
    // flight until then, and a read would pass over it and send the key's rows after it first.
    let mut releasing = Vec::new();
    for (row, failure) in failing {
        if failure.next_attempt_at.is_none() {
            shared.monitor.dead_lettered_one();
            crate::metrics::record_dead_lettered(shared.monitor.metric_labels(), &row.topic);
        }
        // Hold the key until the retry: its later rows must not overtake this one. A dead row
        // releases its key, or parks it (as configured).
        if let Some(key) = &row.key {
            let key = super::select::held_key(&row.topic, key);
            match failure.next_attempt_at {
                Some(at) => shared.hold(key, at),
                None => {
                    // Parked before the hold goes, so no moment lets its later rows out.
                    if shared.config.on_dead_letter == OnDeadLetter::ParkKey {
                        shared.parked.park(key.clone());
                        parking.push(key.clone());
                    }
                    // The mutant lets the key go at once, as the relay did before the simulation
                    // found the overtaking this causes.
                    #[cfg(txoutbox_sim_mutant = "early_release")]
                    shared.release(&key);
                    releasing.push(key);
                }
            }
        }
        failures.push(failure);
    }

    if !delivered.is_empty() {
        write_with_retry(shared, "complete", "mark delivered messages", || {
            shared.bounded(shared.store.complete(&delivered, shared.config.completion))
        })
        .instrument(debug_span!("txoutbox.mark", rows = delivered.len()))
        .await;
        shared.sink.completed(&delivered);
        // The transport holds progress now: the table remembers its key from here on.
        let progress_key = shared
            .progress_to_keep
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(key) = progress_key {
            write_with_retry(shared, "keep_progress", "record the progress key", || {
                shared.bounded(shared.store.keep_progress(&key))
            })
            .await;
        }
        shared.monitor.delivered(delivered.len());
        crate::metrics::record_delivered(
            shared.monitor.metric_labels(),
            settled
                .iter()
                .flat_map(|batch| batch.rows.iter().zip(&batch.results))
                .filter(|(_, result)| result.is_ok())
                .map(|(row, _)| row),
            acked_at,
        );
    }
    if !failures.is_empty() {
        for f in &failures {
            match f.next_attempt_at {
                Some(at) => {
                    warn!(id = f.id, attempts = f.attempts, error = %f.error, retry_at = %at, "message failed; will retry")
                }
                None => {
                    error!(id = f.id, attempts = f.attempts, error = %f.error, "message dead-lettered")
                }
            }
        }
        write_with_retry(shared, "record_failures", "record failed attempts", || {
            shared.bounded(shared.store.record_failures(&failures))
        })
        .await;
        if !parking.is_empty() {
            shared.parked.confirm(&parking);
        }
        crate::metrics::record_send_failures(shared.monitor.metric_labels(), "permanent", failures.len());
    }
    if let Some(error) = fenced {
        error!(%error, "another relay took over this relay's Kafka identity; this relay stops, its rows stay pending");
        shared.fail(crate::Error::Sink(error));
    }
    // Rows below the cursor must be read again: those that failed transiently, and the later rows
    // of a key whose failing row is now dead (they were held back while it was retried).
    if transient > 0 || deferred > 0 || failures.iter().any(|f| f.next_attempt_at.is_none()) {
        shared.request_rescan();
    }
    crate::metrics::record_send_failures(shared.monitor.metric_labels(), "transient", transient);
    // A failed message (retried later) must not be overtaken by later messages of its key that
    // are still queued: they are given up and sent again after it. Messages refused before the
    // transport took them (an unreadable row, an invalid topic) leave the queue alone: the sink
    // held their keys' later messages back, and one bad row must not cost the others.
    if transient > 0 || taken_then_failed {
        // Give up what the transport has not sent at once: it also frees room for a hand-over
        // that waits for it while holding the gate. Then move the epoch under the gate, give up
        // what that hand-over queued, and let the sink take batches again.
        shared.sink.discard_queued();
        let _gate = shared.send_gate.write().await;
        shared.request_drain();
        shared.sink.discard_queued();
        shared.sink.epoch_moved();
    }
    // Transient failures in a round where the broker refused a record it took are most likely
    // that record's partition-mates, failed with it: the broker answers, so they are not a reason
    // to pause every key (a poison message retried now and then would otherwise keep the whole
    // relay backing off, up to the cap, for as long as it lives). They are sent again after the
    // drain; a broker that is really failing shows in the next round, which has no refusal.
    #[cfg(not(txoutbox_sim_mutant = "poison_pauses_all"))]
    let collateral = taken_then_failed;
    #[cfg(txoutbox_sim_mutant = "poison_pauses_all")]
    let collateral = false;
    if let Some(error) = first_transient.as_ref().filter(|_| collateral) {
        debug!(
            messages = transient, %error,
            "messages failed with a refused one of their partition; they stay pending and will be sent again"
        );
    } else if let Some(error) = first_transient {
        shared.monitor.sink_failed(&error);
        let delay = transport_backoff.next_delay();
        warn!(
            messages = transient, %error, retry_in = %crate::HumanDuration(delay),
            "Kafka is not accepting messages right now; they stay pending and will be sent again"
        );
        shared.pause_for(delay);
    } else if !delivered.is_empty() {
        transport_backoff.reset();
        shared.resume();
    }

    // Only now may the fetcher see these rows again (completed rows are gone from its reads).
    for batch in &settled {
        shared.leave_flight(&batch.rows);
    }
    for key in &releasing {
        shared.release(key);
    }
    shared.settled.notify_waiters();
    if transient > 0 || deferred > 0 || !failures.is_empty() {
        shared.wake.notify_one();
    }
}

fn failure_for<S, K>(shared: &Shared<S, K>, row: &OutboxMessage, error: &SinkError) -> Failure {
    let attempts = row.attempts.saturating_add(1);
    // Retrying a row that cannot even be read, or that the transport can never take, would fail
    // the same way: dead-letter it at once.
    let next_attempt_at = if row.malformed.is_some() || error.kind() == SinkErrorKind::Rejected {
        None
    } else {
        shared.config.retry.backoff(attempts.max(0) as u32).map(|delay| {
            TimeDelta::from_std(delay)
                .ok()
                .and_then(|delay| crate::clock::now().checked_add_signed(delay))
                .unwrap_or(DateTime::<Utc>::MAX_UTC)
        })
    };
    Failure {
        id: row.id,
        attempts,
        // Stored as text: a NUL (a foreign writer's, quoted in the error) cannot be.
        error: error.to_string().replace('\0', "\\0"),
        next_attempt_at,
    }
}

/// Retries a database write until it succeeds; during a shutdown, until its deadline (the rows
/// then stay pending and are sent again: at-least-once).
async fn write_with_retry<S, K, F, Fut>(
    shared: &Shared<S, K>,
    operation: &'static str,
    what: &str,
    mut write: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = crate::Result<()>>,
{
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        match write().await {
            Ok(()) => {
                shared.monitor.store_ok();
                return;
            }
            Err(error) => {
                shared.monitor.store_failed(&error);
                crate::metrics::record_store_error(shared.monitor.metric_labels(), operation);
                let delay = backoff.next_delay();
                // A shutdown keeps trying while its time lasts: one failed mark would otherwise
                // send every row of the round again after the restart.
                // (The deadline is fixed by its first caller: asked only once the shutdown began.)
                #[cfg(not(txoutbox_sim_mutant = "shutdown_gives_up"))]
                let out_of_time = || tokio::time::Instant::now() + delay >= shared.shutdown_deadline();
                #[cfg(txoutbox_sim_mutant = "shutdown_gives_up")]
                let out_of_time = || true;
                if shared.cancel.is_cancelled() && out_of_time() {
                    error!(%error, "could not {what} before the shutdown timeout; those messages stay pending and will be sent again");
                    return;
                }
                if error.is_retryable() {
                    warn!(%error, retry_in = %crate::HumanDuration(delay), "could not {what}");
                } else {
                    error!(%error, retry_in = %crate::HumanDuration(delay), "could not {what}; this needs fixing by hand");
                }
                tokio::time::sleep(delay).await;
            }
        }
    }
}
