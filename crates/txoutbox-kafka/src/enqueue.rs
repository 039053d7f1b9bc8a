//! Handing a batch's messages to a producer in order: what both sinks share.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, ThreadedProducer};
use txoutbox_core::{
    CreatedAtText, DeliveryTracker, OutboxMessage, RefusedKeys, SinkError, validate_topic_name,
};

use crate::classify::classify_refusal;
use crate::context::{DeliveryRef, SinkContext};
use crate::record_headers::record_headers;

/// How long to wait for room when librdkafka's local queue is full.
const QUEUE_FULL_WAIT: Duration = Duration::from_millis(1);

/// How far in the future a record's timestamp may lie: Kafka 4's default
/// `log.message.timestamp.after.max.ms`. A broker refuses a later one for the whole batch it came
/// in, so the message is refused here, alone (and retried: the clock at fault may be this one).
const MAX_TIMESTAMP_AHEAD: chrono::TimeDelta = chrono::TimeDelta::hours(1);

/// Hands each message of `batch` to `producer` in order; each one's outcome reaches `tracker`
/// (at once when it is refused, from the delivery report otherwise).
///
/// A message is refused before the producer takes it when it can never be sent as it is: a row
/// the store could not read, a topic name Kafka does not allow, anything librdkafka refuses for
/// this record alone (larger than `message.max.bytes`, ...). The later messages of its key in the
/// batch are then held back ([`SinkError::deferred`]) so none overtakes it; the other keys go on.
/// Every refusal is [`unsent`](SinkError::unsent), so the relay gives up nothing else.
///
/// Returns whether a refusal was transient (the producer itself failed, e.g. a fatal error): a
/// transactional sink must then abort.
pub(crate) async fn enqueue(
    producer: &ThreadedProducer<SinkContext>,
    batch: &[OutboxMessage],
    tracker: &Arc<DeliveryTracker>,
) -> bool {
    let mut stamps = CreatedAtText::default();
    // Keys whose message was refused here: their later messages must not overtake it.
    let mut refused = RefusedKeys::default();
    let mut transient = false;
    // The last topic name found valid (a batch mostly has one or two topics).
    let mut valid_topic: Option<&str> = None;
    let latest = chrono::Utc::now()
        .checked_add_signed(MAX_TIMESTAMP_AHEAD)
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC);
    for (index, message) in batch.iter().enumerate() {
        if refused.holds(message) {
            tracker.complete(index, Err(SinkError::deferred()));
            continue;
        }
        let refusal = if let Some(reason) = &message.malformed {
            Some(SinkError::rejected(reason.clone()))
        } else if valid_topic != Some(&*message.topic) {
            match validate_topic_name(&message.topic) {
                Ok(()) => {
                    valid_topic = Some(&message.topic);
                    None
                }
                Err(e) => Some(invalid_topic(&message.topic, &e)),
            }
        } else {
            None
        };
        let refusal = match refusal {
            Some(refusal) => Some(refusal),
            // Retried, not rejected: the relay's clock may be the one that is wrong.
            None if message.created_at > latest => Some(
                SinkError::permanent(format!(
                    "the row does not fit the outbox table contract: column `created_at` ({}) lies \
                     more than an hour ahead of this relay's clock, and Kafka refuses such record \
                     timestamps (the broker's log.message.timestamp.after.max.ms, one hour by \
                     default); leave created_at to the database, and check the clocks of the \
                     database and relay hosts",
                    message.created_at.to_rfc3339()
                ))
                .unsent(),
            ),
            None => produce(producer, message, index, tracker, &mut stamps).await,
        };
        if let Some(refusal) = refusal {
            transient |= refusal.is_transient();
            refused.refuse(message);
            tracker.complete(index, Err(refusal));
        }
    }
    transient
}

/// The refusal of a topic name that breaks Kafka's rules, quoting at most its first 100 bytes.
fn invalid_topic(topic: &str, error: &txoutbox_core::Error) -> SinkError {
    let rule = match error {
        txoutbox_core::Error::InvalidTopicName { reason, .. } => (*reason).to_owned(),
        other => other.to_string(),
    };
    let shown: String = topic.chars().take(100).collect();
    let more = if shown.len() < topic.len() { "…" } else { "" };
    SinkError::rejected(format!(
        "the row does not fit the outbox table contract: column `topic` ({shown:?}{more}, {} bytes) is \
         no valid Kafka topic name: {rule}",
        topic.len()
    ))
}

/// Hands one message to the producer; the refusal when it does not take it.
async fn produce(
    producer: &ThreadedProducer<SinkContext>,
    message: &OutboxMessage,
    index: usize,
    tracker: &Arc<DeliveryTracker>,
    stamps: &mut CreatedAtText,
) -> Option<SinkError> {
    let opaque = Box::new(DeliveryRef {
        tracker: Arc::clone(tracker),
        index,
    });
    let mut record = BaseRecord::<[u8], [u8], Box<DeliveryRef>>::with_opaque_to(&message.topic, opaque)
        .headers(record_headers(message, stamps))
        .timestamp(message.created_at.timestamp_millis());
    if let Some(key) = &message.key {
        record = record.key(&key[..]);
    }
    if let Some(payload) = &message.payload {
        record = record.payload(&payload[..]);
    }
    loop {
        match producer.send(record) {
            Ok(()) => return None,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                record = returned;
                tokio::time::sleep(QUEUE_FULL_WAIT).await;
            }
            Err((error, _)) => return Some(classify_refusal(&error, &message.topic)),
        }
    }
}
