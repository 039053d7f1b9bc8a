//! The immediate-with-fallback strategy: the publishing process sends right after its commit.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::message::OutboxMessage;
use crate::sink::Sink;
use crate::store::{Completion, Store};

/// Sends committed messages of immediate topics from the publishing process.
///
/// Create one per process with [`Immediate::new`] and give it to the outbox (e.g.
/// `PgOutbox::with_immediate`); the outbox transaction's `commit()` hands it the messages of
/// topics whose strategy is [`PublishStrategy::ImmediateWithFallback`](crate::PublishStrategy),
/// after the commit succeeded. A failed send only logs: the relay delivers the row after its
/// grace period.
#[derive(Debug)]
pub struct Immediate<S, K> {
    store: S,
    sink: K,
}

impl<S: Store, K: Sink> Immediate<S, K> {
    /// A sender over `sink` that completes delivered rows through `store`.
    pub fn new(store: S, sink: K) -> Arc<Self> {
        Arc::new(Self { store, sink })
    }

    /// Sends committed rows and deletes those Kafka acknowledged; the rest stay for the relay.
    pub async fn send(&self, rows: Vec<OutboxMessage>) {
        if rows.is_empty() {
            return;
        }
        let rows: Arc<[OutboxMessage]> = rows.into();
        let results = self.sink.send_batch(Arc::clone(&rows)).await.wait().await;
        let mut delivered = Vec::with_capacity(rows.len());
        for (row, result) in rows.iter().zip(results) {
            match result {
                Ok(()) => delivered.push(row.id),
                Err(error) => tracing::warn!(
                    id = row.id, %error,
                    "immediate send failed; the relay will deliver the message after its grace period"
                ),
            }
        }
        if !delivered.is_empty()
            && let Err(error) = self.store.complete(&delivered, Completion::Delete).await
        {
            // Kafka has them; the relay will send them again after the grace period (a duplicate,
            // which consumers drop by message id).
            tracing::warn!(%error, rows = delivered.len(), "could not delete immediately sent messages");
        }
    }
}

/// The object-safe face of [`Immediate`], so an outbox can hold any store and sink.
pub trait ImmediateSend: Send + Sync + 'static {
    /// See [`Immediate::send`].
    fn send_committed(&self, rows: Vec<OutboxMessage>) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

impl<S: Store, K: Sink> ImmediateSend for Immediate<S, K> {
    fn send_committed(&self, rows: Vec<OutboxMessage>) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(self.send(rows))
    }
}
