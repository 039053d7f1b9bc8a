//! The fetcher: reads pending rows in id order and hands sendable ones to the sink, pipelined.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tracing::{debug, warn};

use super::backoff::Backoff;
use super::select::select_sendable;
use super::shared::Shared;
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

/// Runs until shutdown; dropping `completer` when it returns lets the completer drain.
pub(crate) async fn run<S: Store, K: Sink>(shared: Arc<Shared<S, K>>, completer: mpsc::Sender<SentBatch>) {
    let config = &shared.config;
    let mut db_backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let mut idle = false;
    loop {
        if idle {
            tokio::select! {
                _ = shared.cancel.cancelled() => break,
                _ = shared.wake.notified() => {}
                _ = tokio::time::sleep(config.poll_interval) => {}
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

        // Rows in flight are still pending in the table: read past them.
        let limit = config.batch_size + shared.in_flight.begin_fetch();
        let rows = match shared.store.fetch_pending(limit).await {
            Ok(rows) => {
                db_backoff.reset();
                rows
            }
            Err(error) => {
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
        let batch = select_sendable(
            rows,
            |id| shared.in_flight.contains(id),
            Utc::now(),
            config.batch_size,
        );
        if batch.is_empty() {
            idle = true;
            continue;
        }

        let permit = tokio::select! {
            _ = shared.cancel.cancelled() => break,
            permit = shared.in_flight.reserve(batch.len()) => permit,
        };
        shared.in_flight.insert(batch.iter().map(|row| row.id));
        let rows: Arc<[OutboxMessage]> = batch.into();
        debug!(rows = rows.len(), first_id = rows[0].id, "sending batch");
        let delivery = shared.sink.send_batch(Arc::clone(&rows)).await;
        if completer
            .send(SentBatch {
                rows,
                delivery,
                permit,
            })
            .await
            .is_err()
        {
            break;
        }
        // Look again at once: a burst may have more rows than one batch.
        idle = false;
    }
}
