//! The sender: hands selected batches to the sink in order, so the fetcher's next read overlaps
//! the enqueueing of the current batch.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tracing::debug;

use super::fetcher::SentBatch;
use super::shared::Shared;
use crate::message::OutboxMessage;
use crate::sink::Sink;

/// A batch the fetcher selected and reserved in flight, not yet handed to the sink.
#[derive(Debug)]
pub(crate) struct Selected {
    pub(crate) rows: Arc<[OutboxMessage]>,
    pub(crate) permit: OwnedSemaphorePermit,
}

/// Runs until the fetcher hangs up (after sending what it had selected) or the completer does.
pub(crate) async fn run<S, K: Sink>(
    shared: Arc<Shared<S, K>>,
    mut selected: mpsc::Receiver<Selected>,
    completer: mpsc::Sender<SentBatch>,
) {
    while let Some(Selected { rows, permit }) = selected.recv().await {
        debug!(rows = rows.len(), first_id = rows[0].id, "sending batch");
        let delivery = shared.sink.send_batch(Arc::clone(&rows)).await;
        let batch = SentBatch {
            rows,
            delivery,
            permit,
        };
        if completer.send(batch).await.is_err() {
            break;
        }
    }
}
