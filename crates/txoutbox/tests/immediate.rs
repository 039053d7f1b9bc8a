//! Immediate-with-fallback: the publishing process sends right after its commit; the relay
//! delivers what it could not.
#![cfg(feature = "postgres")]

mod common;

use std::time::Duration;

use common::{Event, drained, keyed, relay_config, start_relay, verify};
use txoutbox::kafka::{KafkaConfig, KafkaSink};
use txoutbox::postgres::PgOutbox;
use txoutbox::{Immediate, PublishStrategy, Store, Topics};
use txoutbox_testing::kafka::{count, new_topic, read_all};
use txoutbox_testing::postgres::TestSchema;

async fn immediate_outbox(db: &TestSchema, topic: &str, grace: Duration, sink: KafkaSink) -> PgOutbox {
    let topics = Topics::new()
        .with(keyed::<0>(topic).strategy(PublishStrategy::ImmediateWithFallback { grace }))
        .unwrap();
    let outbox = PgOutbox::with_table(topics, db.table());
    outbox.migrate(&db.pool).await.unwrap();
    let sender = Immediate::new(outbox.store(db.pool.clone()), sink);
    outbox.with_immediate(sender)
}

async fn publish_committed(outbox: &PgOutbox, db: &TestSchema, events: u64) {
    for seq in 1..=events {
        let mut tx = outbox.begin(&db.pool).await.unwrap();
        tx.publish(&Event::<0> {
            key: format!("k{}", seq % 3),
            seq,
        })
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_broker_up_each_message_is_sent_once_right_after_commit() {
    txoutbox_testing::init_tracing();
    let topic = new_topic("immediate-up", 3).await;
    let db = TestSchema::new().await;
    let sink = KafkaSink::new(&KafkaConfig::new(txoutbox_testing::kafka::bootstrap())).unwrap();
    // The relay runs too, but must leave the rows alone for a grace period longer than the test.
    let outbox = immediate_outbox(&db, &topic, Duration::from_secs(600), sink).await;
    let store = outbox.store(db.pool.clone());
    let relay = start_relay(store.clone(), relay_config());

    publish_committed(&outbox, &db, 20).await;
    // Only the immediate path can empty the table within the grace period.
    drained(&store, Duration::from_secs(30)).await;
    relay.shutdown().await.unwrap();
    let verdict = verify(&read_all(&[topic]).await);
    assert_eq!(
        (verdict.distinct, verdict.duplicates, verdict.order_violations),
        (20, 0, 0),
        "{verdict:?}"
    );
    db.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_broker_down_at_commit_the_relay_delivers_later() {
    txoutbox_testing::init_tracing();
    let topic = new_topic("immediate-down", 3).await;
    let db = TestSchema::new().await;
    // The publishing process cannot reach any broker.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dead =
        KafkaSink::new(&KafkaConfig::new(format!("127.0.0.1:{port}")).set("message.timeout.ms", "300"))
            .unwrap();
    let outbox = immediate_outbox(&db, &topic, Duration::from_secs(2), dead).await;
    publish_committed(&outbox, &db, 5).await;
    let store = outbox.store(db.pool.clone());
    // The immediate sends fail and the rows stay for the relay.
    let failed = txoutbox_testing::eventually(Duration::from_secs(10), || async {
        store.backlog().await.unwrap().pending == 5
    })
    .await;
    assert!(failed);
    assert_eq!(count(std::slice::from_ref(&topic)).await, 0);

    let relay = start_relay(store.clone(), relay_config());
    drained(&store, Duration::from_secs(30)).await;
    relay.shutdown().await.unwrap();
    let verdict = verify(&read_all(&[topic]).await);
    assert_eq!(
        (verdict.distinct, verdict.duplicates, verdict.order_violations),
        (5, 0, 0),
        "{verdict:?}"
    );
    db.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_back_outbox_transaction_sends_nothing() {
    txoutbox_testing::init_tracing();
    let topic = new_topic("immediate-rollback", 1).await;
    let db = TestSchema::new().await;
    let sink = KafkaSink::new(&KafkaConfig::new(txoutbox_testing::kafka::bootstrap())).unwrap();
    let outbox = immediate_outbox(&db, &topic, Duration::from_millis(100), sink).await;
    let mut tx = outbox.begin(&db.pool).await.unwrap();
    tx.publish(&Event::<0> {
        key: "k".into(),
        seq: 1,
    })
    .await
    .unwrap();
    tx.rollback().await.unwrap();
    // A committed marker afterwards: once it is in Kafka, anything sent before it would be too.
    publish_committed(&outbox, &db, 1).await;
    let store = outbox.store(db.pool.clone());
    let relay = start_relay(store.clone(), relay_config());
    drained(&store, Duration::from_secs(30)).await;
    relay.shutdown().await.unwrap();
    let records = read_all(&[topic]).await;
    assert_eq!(records.len(), 1, "only the committed message: {records:?}");
    db.drop_schema().await;
}
