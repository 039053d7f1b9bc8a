//! The fetcher: reads pending rows in id order and hands sendable ones to the sink, pipelined.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tracing::{Instrument, debug_span, warn};

use super::backoff::Backoff;
use super::config::OnDeadLetter;
use super::select::select_sendable;
use super::sender::Selected;
use super::shared::Shared;
use crate::coordination::Scope;
use crate::message::OutboxMessage;
use crate::sink::{BatchDelivery, Sink};
use crate::store::Store;

/// A batch handed to the sink, on its way to the completer.
#[derive(Debug)]
pub(crate) struct SentBatch {
    pub(crate) rows: Arc<[OutboxMessage]>,
    pub(crate) delivery: BatchDelivery,
    pub(crate) permit: OwnedSemaphorePermit,
}

/// Runs until shutdown; dropping `sender` when it returns lets the sender and completer drain.
pub(crate) async fn run<S: Store, K: Sink>(shared: Arc<Shared<S, K>>, sender: mpsc::Sender<Selected>) {
    let config = &shared.config;
    let mut db_backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    // Where reading goes on from; `None` reads from the start (at start, after failures, when a
    // held key is released, and at least once per poll interval as a safety net).
    let mut cursor: Option<i64> = None;
    let mut last_rescan = tokio::time::Instant::now();
    let mut last_parked_reload = tokio::time::Instant::now();
    let mut idle = false;
    loop {
        if idle {
            let (released, next_due) = shared.release_due_holds(Utc::now());
            let wait = next_due
                .and_then(|at| (at - Utc::now()).to_std().ok())
                .map_or(config.poll_interval, |d| d.min(config.poll_interval));
            if released {
                cursor = None;
            } else {
                tokio::select! {
                    _ = shared.cancel.cancelled() => break,
                    _ = shared.wake.notified() => {}
                    _ = ownership_changed(&shared) => {}
                    _ = tokio::time::sleep(wait) => cursor = None,
                }
            }
        }
        if shared.cancel.is_cancelled() {
            break;
        }
        if let Some(until) = shared.paused_until() {
            tokio::select! {
                _ = shared.cancel.cancelled() => break,
                _ = tokio::time::sleep_until(until) => {}
            }
        }
        // Also rescan once per poll interval under load: rows made pending again behind the
        // cursor by hand (an operator's UPDATE) are found within one interval, busy or idle.
        if let Some(ownership) = &shared.ownership {
            if ownership.take_changed() {
                cursor = None;
            }
            // Nothing leased (yet): nothing to read.
            if ownership.scope() == Scope::Nothing {
                idle = true;
                continue;
            }
        }
        // Parked keys are read again once per poll interval: a replay or purge made elsewhere (the
        // CLI, another node) releases its key, and the rows it held wait below the cursor.
        if config.on_dead_letter == OnDeadLetter::ParkKey
            && last_parked_reload.elapsed() >= config.poll_interval
        {
            last_parked_reload = tokio::time::Instant::now();
            match reload_parked(&shared).await {
                Ok(true) => cursor = None,
                Ok(false) => {}
                Err(error) => warn!(%error, "could not read the parked keys; keeping the ones known"),
            }
        }
        if shared.take_rescan()
            || shared.release_due_holds(Utc::now()).0
            || last_rescan.elapsed() >= config.poll_interval
        {
            cursor = None;
        }
        if cursor.is_none() {
            last_rescan = tokio::time::Instant::now();
        }

        // After a transient failure, wait for everything in flight to settle before reading:
        // rows of the failed keys that are still queued must fail (or land) first.
        if shared.take_drain() {
            cursor = None;
            while !shared.in_flight.is_empty() {
                tokio::select! {
                    _ = shared.cancel.cancelled() => return,
                    _ = shared.settled.notified() => {}
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        }
        let epoch = shared.epoch();

        // Rows in flight are still pending in the table: a read from the start passes over them;
        // a read from the cursor is past them already.
        let in_flight = shared.in_flight.begin_fetch();
        let span = debug_span!("txoutbox.claim", after = cursor);
        let (limit, fetched) = match cursor {
            None => {
                let limit = config.batch_size + in_flight;
                (
                    limit,
                    shared
                        .bounded(shared.store.fetch_pending(limit))
                        .instrument(span)
                        .await,
                )
            }
            Some(after) => (
                config.batch_size,
                shared
                    .bounded(shared.store.fetch_after(after, config.batch_size))
                    .instrument(span)
                    .await,
            ),
        };
        let rows = match fetched {
            Ok(rows) => {
                db_backoff.reset();
                shared.monitor.store_ok();
                rows
            }
            Err(error) => {
                shared.monitor.store_failed(&error);
                crate::metrics::record_store_error("fetch");
                let delay = db_backoff.next_delay();
                if error.is_retryable() {
                    warn!(%error, retry_in = ?delay, "could not read pending outbox messages");
                } else {
                    tracing::error!(%error, retry_in = ?delay, "could not read pending outbox messages; this needs fixing by hand");
                }
                if !shared.sleep(delay).await {
                    break;
                }
                idle = false;
                continue;
            }
        };
        let fresh = rows.iter().filter(|r| cursor.is_none_or(|c| r.id > c)).count();
        let more = fresh >= limit;
        let selection = select_sendable(
            rows,
            |id| shared.in_flight.contains(id),
            |topic, key| shared.is_held(topic, key),
            Utc::now(),
            config.batch_size,
        );
        for (key, until) in selection.holds {
            shared.hold(key, until);
        }
        if let Some(last) = selection.last_considered {
            cursor = Some(cursor.map_or(last, |c| c.max(last)));
        }
        let batch = selection.send;
        if batch.is_empty() {
            idle = !more;
            continue;
        }

        let permit = tokio::select! {
            _ = shared.cancel.cancelled() => break,
            permit = shared.in_flight.reserve(batch.len()) => permit,
        };
        shared.enter_flight(&batch);
        let rows: Arc<[OutboxMessage]> = batch.into();
        if sender.send(Selected { rows, permit, epoch }).await.is_err() {
            break;
        }
        // Look again at once: a burst may have more rows than one batch.
        idle = false;
    }
}

/// Reads the parked keys (those with a dead row) from the store; returns whether any was released.
pub(crate) async fn reload_parked<S: Store, K>(shared: &Shared<S, K>) -> crate::Result<bool> {
    let generation = shared.parked.generation();
    let keys = shared.bounded(shared.store.dead_keys()).await?;
    Ok(shared.parked.reload(keys, generation))
}

/// Resolves when a coordinated relay's scope changes; never for a single relay.
async fn ownership_changed<S, K>(shared: &Shared<S, K>) {
    match &shared.ownership {
        Some(ownership) => ownership.changed().await,
        None => std::future::pending().await,
    }
}
