//! Messages as the relay reads them and a batch's outcomes, for the tests of a sink against its
//! real broker.

use std::sync::Arc;

use txoutbox_core::{NewMessage, OutboxMessage, Sink, SinkError};

/// A message of `topic` as the relay would read it (row `id`, a fresh message id, created now).
pub fn message(
    id: i64,
    topic: &str,
    key: Option<&[u8]>,
    payload: &[u8],
    headers: &[(&str, &str)],
) -> OutboxMessage {
    NewMessage {
        message_id: uuid::Uuid::now_v7(),
        topic: topic.to_owned(),
        key: key.map(<[u8]>::to_vec),
        payload: Some(payload.to_vec()),
        headers: headers
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect(),
        strategy: Default::default(),
    }
    .into_outbox_message(id, chrono::Utc::now())
}

/// Hands `batch` to `sink` and waits for every message's outcome.
pub async fn send<S: Sink>(sink: &S, batch: Vec<OutboxMessage>) -> Vec<Result<(), SinkError>> {
    sink.send_batch(Arc::from(batch)).await.wait().await
}
