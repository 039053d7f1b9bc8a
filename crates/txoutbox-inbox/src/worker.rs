//! A lane: records of the same keys, one after another — claim the id, run the handler, commit;
//! retry with back-off; park what keeps failing.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::{mpsc, watch};
use txoutbox_core::RetryPolicy;

use crate::error::is_transient;
use crate::handler::{Handler, HandlerError};
use crate::message::InboxMessage;
use crate::metrics::{self, count, counter_add};
use crate::progress::{Progress, Ticket};
use crate::store::InboxStore;

/// A record handed to a lane, with its place in the partition's progress.
#[derive(Debug)]
pub(crate) struct Work {
    pub(crate) message: InboxMessage,
    pub(crate) ticket: Ticket,
}

/// What every lane shares.
pub(crate) struct Shared<S, H> {
    pub(crate) store: S,
    pub(crate) handler: H,
    pub(crate) consumer: String,
    pub(crate) retry: RetryPolicy,
    pub(crate) records_per_transaction: usize,
    pub(crate) progress: Arc<Progress>,
}

/// The lane of a record: the same for every record of one key in one partition (and for every
/// keyless record of one partition), so that they run in offset order.
pub(crate) fn lane_of(message: &InboxMessage, lanes: usize) -> usize {
    let mut hasher = DefaultHasher::new();
    message.topic.hash(&mut hasher);
    message.partition.hash(&mut hasher);
    message.key.hash(&mut hasher);
    usize::try_from(hasher.finish() % lanes.max(1) as u64).unwrap_or(0)
}

/// Runs one lane until its channel closes or the consumer stops. At a stop the record in hand
/// finishes (unless it waits for a retry) and the queued ones are given up: uncommitted, they
/// come again. Records of a partition being revoked are skipped the same way.
pub(crate) async fn run_lane<S, H>(
    shared: Arc<Shared<S, H>>,
    mut records: mpsc::UnboundedReceiver<Work>,
    mut stop: watch::Receiver<bool>,
) where
    S: InboxStore,
    H: Handler<S::Tx>,
{
    let progress = &shared.progress;
    'lane: loop {
        let first = tokio::select! {
            biased;
            _ = stop.wait_for(|stopped| *stopped) => break,
            work = records.recv() => match work {
                Some(work) => work,
                None => return,
            },
        };
        // With it, up to `records_per_transaction` records already queued (never waiting for
        // more); records of a partition being revoked are skipped.
        let mut batch = Vec::with_capacity(shared.records_per_transaction);
        let mut next = Some(first);
        while let Some(work) = next.take() {
            if progress.begin(&work.ticket) {
                batch.push(work);
            } else {
                progress.skip(&work.ticket);
            }
            if batch.len() < shared.records_per_transaction {
                next = records.try_recv().ok();
            }
        }
        if batch.len() > 1 && handle_batch(&shared, &batch).await {
            for work in &batch {
                progress.finish(&work.ticket);
            }
            continue;
        }
        // One by one: a batch of one, or a batch rolled back as a whole.
        let mut works = batch.into_iter();
        while let Some(work) = works.next() {
            if handle(&shared, &work.message, &mut stop).await {
                progress.finish(&work.ticket);
            } else {
                progress.abandon(&work.ticket);
                for rest in works {
                    progress.abandon(&rest.ticket);
                }
                break 'lane;
            }
        }
    }
    records.close();
    while let Ok(work) = records.try_recv() {
        progress.skip(&work.ticket);
    }
}

/// Several records in one transaction: their ids claimed together, then each new one handled in
/// turn, one commit for all.
/// `false` when anything failed: everything is rolled back and the caller handles the records
/// one by one (with retries, parking and the failure's report).
async fn handle_batch<S, H>(shared: &Shared<S, H>, batch: &[Work]) -> bool
where
    S: InboxStore,
    H: Handler<S::Tx>,
{
    let store = &shared.store;
    let consumer = shared.consumer.as_str();
    let Ok(mut tx) = store.begin().await else {
        return false;
    };
    let messages: Vec<&InboxMessage> = batch.iter().map(|work| &work.message).collect();
    let Ok(claimed) = store.claim_all(&mut tx, consumer, &messages).await else {
        let _ = store.rollback(tx).await;
        return false;
    };
    let mut duplicates = 0_u64;
    for (message, claimed) in messages.iter().zip(claimed) {
        if !claimed {
            duplicates += 1;
            continue;
        }
        if run_handler(&shared.handler, &mut tx, message).await.is_err() {
            let _ = store.rollback(tx).await;
            return false;
        }
    }
    if store.commit(tx).await.is_err() {
        // Maybe committed (a lost connection): one by one, the claims find out.
        return false;
    }
    let handled = batch.len() as u64 - duplicates;
    counter_add(metrics::HANDLED, consumer, handled);
    counter_add(metrics::DUPLICATES, consumer, duplicates);
    true
}

/// Why an attempt failed.
enum Failure {
    /// The database (not the handler) failed: retried until it answers, never counted.
    Database(String),
    /// The handler failed, or the commit refused its work.
    Handler(HandlerError),
}

/// Handles one record to its end: handled, a duplicate, or parked (`true`); or stopped (`false`).
async fn handle<S, H>(shared: &Shared<S, H>, message: &InboxMessage, stop: &mut watch::Receiver<bool>) -> bool
where
    S: InboxStore,
    H: Handler<S::Tx>,
{
    let consumer = shared.consumer.as_str();
    let mut failures = 0_u32;
    let mut outages = 0_u32;
    loop {
        match attempt(shared, message).await {
            Ok(true) => {
                count(metrics::HANDLED, consumer);
                return true;
            }
            Ok(false) => {
                count(metrics::DUPLICATES, consumer);
                tracing::debug!(consumer, id = message.id(), "already handled: skipped");
                return true;
            }
            Err(Failure::Database(error)) => {
                outages = outages.saturating_add(1);
                count(metrics::STORE_ERRORS, consumer);
                tracing::warn!(consumer, topic = message.topic(), partition = message.partition(),
                    offset = message.offset(), %error, "inbox database call failed; retrying");
                if !pause(outage_backoff(outages), stop).await {
                    return false;
                }
            }
            Err(Failure::Handler(error)) => {
                failures = failures.saturating_add(1);
                count(metrics::FAILURES, consumer);
                let retry = if error.is_permanent() {
                    None
                } else {
                    shared.retry.backoff(failures)
                };
                match retry {
                    Some(delay) => {
                        tracing::warn!(consumer, id = message.id(), attempt = failures, %error,
                            "handler failed; retrying in {delay:?}");
                        if !pause(delay, stop).await {
                            return false;
                        }
                    }
                    None => return park(shared, message, failures, &error.to_string(), stop).await,
                }
            }
        }
    }
}

/// One attempt in one transaction: `Ok(true)` handled, `Ok(false)` a duplicate.
async fn attempt<S, H>(shared: &Shared<S, H>, message: &InboxMessage) -> Result<bool, Failure>
where
    S: InboxStore,
    H: Handler<S::Tx>,
{
    let store = &shared.store;
    let mut tx = store
        .begin()
        .await
        .map_err(|e| Failure::Database(e.to_string()))?;
    match store.claim(&mut tx, &shared.consumer, message).await {
        Ok(true) => {}
        Ok(false) => {
            let _ = store.rollback(tx).await;
            return Ok(false);
        }
        Err(e) => {
            let _ = store.rollback(tx).await;
            return Err(Failure::Database(e.to_string()));
        }
    }
    if let Err(error) = run_handler(&shared.handler, &mut tx, message).await {
        let _ = store.rollback(tx).await;
        return Err(if is_database_outage(&error) {
            Failure::Database(error.to_string())
        } else {
            Failure::Handler(error)
        });
    }
    match store.commit(tx).await {
        Ok(()) => Ok(true),
        // Lost with the connection, maybe committed: the next attempt's claim finds out.
        Err(e) if e.is_retryable() => Err(Failure::Database(e.to_string())),
        // The database refused the handler's work (e.g. a deferred constraint).
        Err(e) => Err(Failure::Handler(HandlerError::transient(e))),
    }
}

/// Runs the handler; a panic in it is a permanent failure (the record is parked), not the end of
/// the lane.
pub(crate) async fn run_handler<Tx, H: Handler<Tx>>(
    handler: &H,
    tx: &mut Tx,
    message: &InboxMessage,
) -> Result<(), HandlerError> {
    match AssertUnwindSafe(handler.handle(tx, message)).catch_unwind().await {
        Ok(result) => result,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".to_owned());
            Err(HandlerError::permanent(format!("the handler panicked: {what}")))
        }
    }
}

/// Parks a record, retrying until the database takes it; `false` when stopped first.
async fn park<S, H>(
    shared: &Shared<S, H>,
    message: &InboxMessage,
    attempts: u32,
    error: &str,
    stop: &mut watch::Receiver<bool>,
) -> bool
where
    S: InboxStore,
    H: Handler<S::Tx>,
{
    let consumer = shared.consumer.as_str();
    let mut outages = 0_u32;
    loop {
        match shared.store.park(consumer, message, attempts, error).await {
            Ok(()) => {
                count(metrics::PARKED, consumer);
                tracing::error!(
                    consumer,
                    id = message.id(),
                    topic = message.topic(),
                    partition = message.partition(),
                    offset = message.offset(),
                    attempts,
                    error,
                    "record parked in the inbox: its handler kept failing"
                );
                return true;
            }
            Err(e) => {
                outages = outages.saturating_add(1);
                count(metrics::STORE_ERRORS, consumer);
                tracing::warn!(consumer, id = message.id(), error = %e, "could not park a record; retrying");
                if !pause(outage_backoff(outages), stop).await {
                    return false;
                }
            }
        }
    }
}

/// Whether a handler's error is the database's passing failure (a lost connection, a deadlock),
/// not the handler's: such failures never use up a record's attempts.
pub(crate) fn is_database_outage(error: &HandlerError) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error.source_error());
    while let Some(e) = source {
        if let Some(e) = e.downcast_ref::<sqlx::Error>() {
            return is_transient(e);
        }
        if let Some(e) = e.downcast_ref::<txoutbox_core::Error>()
            && matches!(e, txoutbox_core::Error::Database { .. })
        {
            return e.is_retryable();
        }
        source = e.source();
    }
    false
}

/// 100 ms doubling to 10 s.
fn outage_backoff(outages: u32) -> Duration {
    let exponent = outages.saturating_sub(1).min(7);
    Duration::from_millis(100 * (1 << exponent)).min(Duration::from_secs(10))
}

/// Sleeps `delay`; `false` when the consumer stops first.
async fn pause(delay: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(delay) => true,
        _ = stop.wait_for(|stopped| *stopped) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_key_one_lane_and_outages_back_off_to_ten_seconds() {
        let m = |p, k: &str, o| InboxMessage::new("t", p, o).with_key(k);
        for lanes in [1, 3, 8] {
            assert_eq!(lane_of(&m(0, "a", 1), lanes), lane_of(&m(0, "a", 9), lanes));
            assert!(lane_of(&m(2, "b", 1), lanes) < lanes);
        }
        let spread: std::collections::HashSet<_> =
            (0..64).map(|k| lane_of(&m(0, &k.to_string(), 0), 8)).collect();
        assert!(spread.len() > 4, "keys spread over the lanes: {spread:?}");
        assert_eq!(outage_backoff(1), Duration::from_millis(100));
        assert_eq!(outage_backoff(4), Duration::from_millis(800));
        assert_eq!(outage_backoff(40), Duration::from_secs(10));
        let outage = HandlerError::from(sqlx::Error::PoolTimedOut);
        assert!(is_database_outage(&outage));
        // Inside an application's own error type.
        #[derive(Debug)]
        struct AppError(sqlx::Error);
        impl std::fmt::Display for AppError {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "app: {}", self.0)
            }
        }
        impl std::error::Error for AppError {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        assert!(is_database_outage(&HandlerError::from(AppError(
            sqlx::Error::PoolTimedOut
        ))));
        assert!(!is_database_outage(&HandlerError::from(AppError(
            sqlx::Error::RowNotFound
        ))));
        assert!(!is_database_outage(&HandlerError::transient("no")));
    }
}
