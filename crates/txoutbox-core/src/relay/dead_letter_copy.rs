//! Copies of dead-lettered messages sent to the dead-letter topic ([`DeadLetterTopic`]).

use std::sync::Arc;

use tracing::{error, warn};

use super::AllowedTopics;
use super::config::DeadLetterTopic;
use crate::message::OutboxMessage;
use crate::sink::{Sink, SinkError, SinkErrorKind};
use crate::store::Failure;

/// Header naming the topic the message was published to.
pub const ORIGINAL_TOPIC_HEADER: &str = "txoutbox-dead-letter-topic";
/// Header with the last error.
pub const ERROR_HEADER: &str = "txoutbox-dead-letter-error";
/// Header with the failed attempts.
pub const ATTEMPTS_HEADER: &str = "txoutbox-dead-letter-attempts";
/// Header with the outbox row id (for `txoutbox dead-letters replay --id`). Absent on copies
/// from a store whose ids do not name table rows (the WAL store's, numbered per session): the
/// copy's `txoutbox-message-id` header finds the dead letter there.
pub const ROW_HEADER: &str = "txoutbox-dead-letter-row";
/// Header set (to `dropped`) on a copy sent without its payload, which the topic refused.
pub const PAYLOAD_HEADER: &str = "txoutbox-dead-letter-payload";

/// The copy of a dead row for `topic`; `row_ids`: the row's id names its table row. A row whose
/// topic the allow-list does not name has its copy sent to the unreadable name: its writer must
/// not choose where even the copy goes.
fn copy(
    row: &OutboxMessage,
    failure: &Failure,
    topic: &DeadLetterTopic,
    row_ids: bool,
    with_payload: bool,
    allowed: Option<&AllowedTopics>,
) -> OutboxMessage {
    let mut copy = row.clone();
    // A creation time in the future (a foreign writer's) may be what the broker refused: the
    // copy is stamped now instead.
    copy.created_at = copy.created_at.min(crate::clock::now());
    let own = if allowed.is_none_or(|a| a.allows(&row.topic)) {
        &*row.topic
    } else {
        ""
    };
    copy.topic = topic.for_topic(own).into();
    // A row that could not be read has nothing trustworthy to copy but its id and error.
    let mut headers = if copy.malformed.take().is_some() {
        Vec::new()
    } else {
        row.headers.to_vec()
    };
    headers.extend([
        (ORIGINAL_TOPIC_HEADER.to_owned(), row.topic.to_string()),
        (ERROR_HEADER.to_owned(), failure.error.clone()),
        (ATTEMPTS_HEADER.to_owned(), failure.attempts.to_string()),
    ]);
    if row_ids {
        headers.push((ROW_HEADER.to_owned(), row.id.to_string()));
    }
    // A row read without its payload (too large, or unreadable) has none to copy either.
    if !with_payload || (row.malformed.is_some() && row.payload.is_none()) {
        copy.payload = None;
        headers.push((PAYLOAD_HEADER.to_owned(), "dropped".to_owned()));
    }
    copy.headers = headers.into();
    copy
}

/// Sends the copies of rows that die now and waits for the broker. Returns, per row, `Err` with
/// the transient error when the copy could not be sent yet (the row must then stay pending and
/// die again later), `Ok` otherwise — a copy refused for good is sent again without its payload,
/// and if that too is refused the row dies all the same, with an error logged. `row_ids`: the
/// store's message ids name table rows (see [`ROW_HEADER`]).
pub(crate) async fn send<K: Sink>(
    sink: &K,
    topic: &DeadLetterTopic,
    row_ids: bool,
    allowed: Option<&AllowedTopics>,
    dying: &[(&OutboxMessage, &Failure)],
    labels: &crate::MetricLabels,
) -> Vec<Result<(), SinkError>> {
    let copies: Arc<[OutboxMessage]> = dying
        .iter()
        .map(|(row, f)| copy(row, f, topic, row_ids, true, allowed))
        .collect();
    let mut outcomes = sink.send_batch(copies).await.wait().await;
    let refused: Vec<usize> = outcomes
        .iter()
        .enumerate()
        .filter(|(_, r)| matches!(r, Err(e) if !e.is_transient()))
        .map(|(i, _)| i)
        .collect();
    if !refused.is_empty() {
        let again: Vec<(usize, &(&OutboxMessage, &Failure))> = refused
            .iter()
            .filter_map(|&i| dying.get(i).map(|d| (i, d)))
            .collect();
        let stripped: Arc<[OutboxMessage]> = again
            .iter()
            .map(|(_, (row, f))| copy(row, f, topic, row_ids, false, allowed))
            .collect();
        let retried = sink.send_batch(stripped).await.wait().await;
        for ((i, (row, _)), outcome) in again.into_iter().zip(retried) {
            let Some(slot) = outcomes.get_mut(i) else {
                continue;
            };
            let first = std::mem::replace(slot, Ok(()));
            match outcome {
                Ok(()) => {
                    warn!(id = row.id, error = %first.err().map(|e| e.to_string()).unwrap_or_default(),
                        "the dead-letter topic refused the message; its copy was sent without the payload")
                }
                Err(e) if e.is_transient() => *slot = Err(e),
                Err(e) => {
                    crate::metrics::record_dead_letter_copy_failed(labels, &row.topic);
                    error!(id = row.id, error = %e,
                        "the dead-letter topic refused the message's copy even without its payload; the message is dead in the table only")
                }
            }
        }
    }
    outcomes
        .into_iter()
        .map(|r| match r {
            Err(e) if e.kind() != SinkErrorKind::Permanent => Err(e),
            _ => Ok(()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> OutboxMessage {
        let mut row = OutboxMessage::unreadable(7, "x");
        row.malformed = None;
        row.topic = "orders".into();
        row.key = Some(bytes::Bytes::from_static(b"k"));
        row.payload = Some(bytes::Bytes::from_static(b"p"));
        row.headers = vec![("h".into(), "v".into())].into();
        row
    }

    fn failure() -> Failure {
        Failure {
            id: 7,
            attempts: 3,
            error: "too large".into(),
            next_attempt_at: None,
        }
    }

    #[test]
    fn a_copy_keeps_key_payload_headers_and_says_why_it_died() {
        let topic = DeadLetterTopic::new("{topic}.dead").unwrap();
        let c = copy(&row(), &failure(), &topic, true, true, None);
        assert_eq!(&*c.topic, "orders.dead");
        assert_eq!(c.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(c.payload.as_deref(), Some(&b"p"[..]));
        let header = |name: &str| c.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
        assert_eq!(header("h"), Some("v"));
        assert_eq!(header(ORIGINAL_TOPIC_HEADER), Some("orders"));
        assert_eq!(header(ERROR_HEADER), Some("too large"));
        assert_eq!(header(ATTEMPTS_HEADER), Some("3"));
        assert_eq!(header(ROW_HEADER), Some("7"));
        let stripped = copy(&row(), &failure(), &topic, true, false, None);
        assert_eq!(stripped.payload, None);
        assert!(
            stripped
                .headers
                .contains(&(PAYLOAD_HEADER.into(), "dropped".into()))
        );
    }

    #[test]
    fn a_copy_names_no_row_when_ids_are_not_row_ids() {
        let topic = DeadLetterTopic::new("{topic}.dead").unwrap();
        let c = copy(&row(), &failure(), &topic, false, true, None);
        assert!(c.headers.iter().all(|(n, _)| n != ROW_HEADER));
        assert!(c.headers.iter().any(|(n, _)| n == ERROR_HEADER));
    }

    #[test]
    fn a_copy_of_a_row_outside_the_allow_list_goes_to_the_unreadable_name() {
        let topic = DeadLetterTopic::new("{topic}.dead").unwrap();
        let allowed = AllowedTopics::new(["billing.*"]).unwrap();
        let c = copy(&row(), &failure(), &topic, true, true, Some(&allowed));
        assert_eq!(&*c.topic, "txoutbox-unreadable.dead");
        let header = |name: &str| c.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
        assert_eq!(header(ORIGINAL_TOPIC_HEADER), Some("orders"));
        let allowed = AllowedTopics::new(["orders"]).unwrap();
        let c = copy(&row(), &failure(), &topic, true, true, Some(&allowed));
        assert_eq!(&*c.topic, "orders.dead");
    }
}
