//! The exactly-once sink's reaction to each class of error a transactional call can return,
//! injected with librdkafka's mock cluster: retriable (the call is retried, the rows delivered),
//! abortable (the transaction is aborted, no row reported delivered, the next one commits), fatal
//! or fenced (every row reported fenced, never delivered, and the sink stays fenced).
//!
//! The mock cluster cannot fence a producer by a successor or filter aborted records for
//! read_committed consumers: those are proven against the real broker (the `exactly_once` tests of
//! `txoutbox-cli`), never here.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use txoutbox_core::{DeliveryResult, OutboxMessage, Sink, SinkErrorKind};
use txoutbox_kafka::{ExactlyOnceSettings, ExactlyOnceSink, KafkaConfig};

const TOPIC: &str = "orders";
const BATCH: usize = 20;

fn mock() -> MockCluster<'static, DefaultProducerContext> {
    let mock = MockCluster::new(1).expect("a mock cluster");
    mock.create_topic(TOPIC, 3, 1).expect("a topic");
    // The sink never makes a broker create a topic (the relay creates its progress topic at
    // start, in `recover`, which these tests do not run).
    mock.create_topic("txoutbox-progress", 1, 1)
        .expect("the progress topic");
    mock
}

/// A sink that commits each batch it is given (its transaction is full after one batch).
fn sink(mock: &MockCluster<'static, DefaultProducerContext>) -> ExactlyOnceSink {
    let config = KafkaConfig::new(mock.bootstrap_servers())
        .set("message.timeout.ms", "10000")
        .set("transaction.timeout.ms", "10000");
    let settings = ExactlyOnceSettings::for_table("orders_outbox")
        .with_commit(Duration::from_secs(60), BATCH)
        .with_progress_replication(1);
    ExactlyOnceSink::new(&config, settings).expect("valid settings")
}

fn batch(first_id: i64) -> Arc<[OutboxMessage]> {
    (first_id..first_id + BATCH as i64)
        .map(|id| {
            let mut row = OutboxMessage::unreadable(id, "");
            row.malformed = None;
            row.message_id = format!("m-{id}").into();
            row.topic = TOPIC.into();
            row.key = Some(format!("k{}", id % 5).into_bytes().into());
            row.payload = Some(format!("payload {id}").into_bytes().into());
            row.created_at = Utc::now();
            row
        })
        .collect()
}

async fn send(sink: &ExactlyOnceSink, first_id: i64) -> Vec<DeliveryResult> {
    tokio::time::timeout(Duration::from_secs(60), async {
        sink.send_batch(batch(first_id)).await.wait().await
    })
    .await
    .expect("every outcome within a minute")
}

fn kinds(results: &[DeliveryResult]) -> Vec<Option<SinkErrorKind>> {
    let mut kinds: Vec<Option<SinkErrorKind>> = results
        .iter()
        .map(|r| r.as_ref().err().map(|e| e.kind()))
        .collect();
    kinds.dedup();
    kinds
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_commits_and_reports_every_row_delivered() {
    let mock = mock();
    let sink = sink(&mock);
    assert_eq!(kinds(&send(&sink, 1).await), [None]);
    assert_eq!(kinds(&send(&sink, 100).await), [None], "the next transaction too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retriable_commit_errors_are_retried_and_the_rows_delivered() {
    let mock = mock();
    let sink = sink(&mock);
    assert_eq!(kinds(&send(&sink, 1).await), [None]);
    mock.request_errors(
        RDKafkaApiKey::EndTxn,
        &[
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_CONCURRENT_TRANSACTIONS,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_COORDINATOR,
        ],
    );
    assert_eq!(kinds(&send(&sink, 100).await), [None]);
    mock.request_errors(
        RDKafkaApiKey::AddPartitionsToTxn,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_CONCURRENT_TRANSACTIONS],
    );
    assert_eq!(kinds(&send(&sink, 200).await), [None]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abortable_error_aborts_the_transaction_and_the_next_one_commits() {
    let mock = mock();
    let sink = sink(&mock);
    assert_eq!(kinds(&send(&sink, 1).await), [None]);
    // Every produce request of this transaction is refused for good: the transaction must be
    // aborted, and none of its rows may be reported delivered.
    mock.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_INVALID_RECORD; 10],
    );
    let results = send(&sink, 100).await;
    assert!(results.iter().all(|r| r.is_err()), "{results:?}");
    assert!(
        results.iter().all(
            |r| matches!(r, Err(e) if matches!(e.kind(), SinkErrorKind::Permanent | SinkErrorKind::Transient))
        ),
        "{results:?}"
    );
    mock.clear_request_errors(RDKafkaApiKey::Produce);
    // Until the relay says it drained, every batch is refused: it may hold later rows of the
    // aborted keys, which must not commit ahead of them.
    // (Deferred: read again, no attempt counted, no back-off.)
    assert_eq!(
        kinds(&send(&sink, 150).await),
        [Some(SinkErrorKind::Deferred)],
        "a batch handed over before the relay moved its epoch on"
    );
    // Then the sink takes batches again: a transaction may still be aborted while the producer
    // bumps its epoch (the mock reports the refused batches' sequence numbers as skipped), its
    // rows reported transient (sent again), never delivered and never fenced; then they commit.
    let mut delivered = false;
    for first in [200, 300, 400] {
        sink.epoch_moved();
        let outcome = kinds(&send(&sink, first).await);
        if outcome == [None] {
            delivered = true;
            break;
        }
        assert_eq!(outcome, [Some(SinkErrorKind::Transient)]);
    }
    assert!(delivered, "the sink did not recover from an aborted transaction");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_producer_reports_every_row_fenced_and_stays_fenced() {
    let mock = mock();
    let sink = sink(&mock);
    assert_eq!(kinds(&send(&sink, 1).await), [None]);
    mock.request_errors(
        RDKafkaApiKey::EndTxn,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_PRODUCER_FENCED],
    );
    assert_eq!(kinds(&send(&sink, 100).await), [Some(SinkErrorKind::Fenced)]);
    // Fenced for good: nothing more is sent, and the relay's probe says so.
    assert_eq!(kinds(&send(&sink, 200).await), [Some(SinkErrorKind::Fenced)]);
    assert_eq!(
        sink.probe().await.map_err(|e| e.kind()),
        Err(SinkErrorKind::Fenced)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_fenced_while_adding_partitions_never_delivers() {
    let mock = mock();
    let sink = sink(&mock);
    assert_eq!(kinds(&send(&sink, 1).await), [None]);
    mock.request_errors(
        RDKafkaApiKey::AddPartitionsToTxn,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_INVALID_PRODUCER_EPOCH; 4],
    );
    let results = send(&sink, 100).await;
    assert!(results.iter().all(|r| r.is_err()), "{results:?}");
    assert_eq!(kinds(&results), [Some(SinkErrorKind::Fenced)], "{results:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transactional_id_without_permission_delivers_nothing() {
    let mock = mock();
    mock.request_errors(
        RDKafkaApiKey::InitProducerId,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TRANSACTIONAL_ID_AUTHORIZATION_FAILED; 3],
    );
    let sink = sink(&mock);
    let results = send(&sink, 1).await;
    assert!(results.iter().all(|r| r.is_err()), "{results:?}");
    let message = results[0].as_ref().unwrap_err().to_string();
    assert!(message.contains("WRITE on the transactional id"), "{message}");
}
