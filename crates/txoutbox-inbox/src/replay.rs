//! Replays: parked records an operator marked (`status = 'replay'`, e.g. `txoutbox inbox
//! replay`) are run through the handler again, one attempt each; a failure parks them again.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::handler::Handler;
use crate::message::InboxMessage;
use crate::metrics::{self, count};
use crate::store::InboxStore;
use crate::worker::{Shared, is_database_outage, run_handler};

/// Replays taken per look.
const REPLAY_BATCH: u32 = 100;

/// Looks for replays every `interval` until the consumer stops.
pub(crate) async fn replay_marked<S, H>(
    shared: Arc<Shared<S, H>>,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) where
    S: InboxStore,
    H: Handler<S::Tx>,
{
    let consumer = shared.consumer.as_str();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
        let replays = match shared.store.replays(consumer, REPLAY_BATCH).await {
            Ok(replays) => replays,
            Err(e) => {
                count(metrics::STORE_ERRORS, consumer);
                tracing::warn!(consumer, error = %e, "could not read inbox replays; trying again later");
                continue;
            }
        };
        for message in &replays {
            if *stop.borrow() {
                return;
            }
            if let Err(error) = replay(&shared, message).await {
                count(metrics::STORE_ERRORS, consumer);
                tracing::warn!(consumer, id = message.id(), %error, "inbox replay failed on the database; trying again later");
                break;
            }
        }
    }
}

/// One replay in one transaction. `Err` only for the database's failures (the replay stays
/// marked and is tried again).
async fn replay<S, H>(shared: &Shared<S, H>, message: &InboxMessage) -> Result<(), String>
where
    S: InboxStore,
    H: Handler<S::Tx>,
{
    let store = &shared.store;
    let consumer = shared.consumer.as_str();
    let mut tx = store.begin().await.map_err(|e| e.to_string())?;
    match store.claim_replay(&mut tx, consumer, message).await {
        Ok(true) => {}
        Ok(false) => {
            let _ = store.rollback(tx).await;
            return Ok(());
        }
        Err(e) => {
            let _ = store.rollback(tx).await;
            return Err(e.to_string());
        }
    }
    match run_handler(&shared.handler, &mut tx, message).await {
        Ok(()) => {
            store.commit(tx).await.map_err(|e| e.to_string())?;
            count(metrics::REPLAYED, consumer);
            tracing::info!(consumer, id = message.id(), "parked record replayed");
            Ok(())
        }
        Err(error) if is_database_outage(&error) => {
            // The database's failure, not the record's: it stays marked and is tried again.
            let _ = store.rollback(tx).await;
            Err(error.to_string())
        }
        Err(error) => {
            let _ = store.rollback(tx).await;
            count(metrics::FAILURES, consumer);
            let error = error.to_string();
            store
                .repark(consumer, message, &error)
                .await
                .map_err(|e| e.to_string())?;
            tracing::warn!(
                consumer,
                id = message.id(),
                error,
                "replayed record failed again: parked"
            );
            Ok(())
        }
    }
}
