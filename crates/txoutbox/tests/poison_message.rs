//! A message the producer can never take (larger than its `message.max.bytes`) is read without
//! its payload and dead-lettered at once with the reason, without a retry that could only fail
//! and without disturbing the messages queued around it: every other key keeps flowing, and its
//! own key's later messages follow it (or wait for its replay, when keys park).
#![cfg(feature = "postgres")]

mod common;

use std::time::Duration;

use common::{Event, drained, keyed, oversize, relay_config, small_sink, start_relay, verify};
use sqlx::AssertSqlSafe;
use txoutbox::kafka::{KafkaConfig, KafkaSink};
use txoutbox::postgres::PgOutbox;
use txoutbox::{
    DeadLetterFilter, DeadLetterTopic, DeadLetters, OnDeadLetter, Relay, RetryPolicy, Store, Topics,
};
use txoutbox_testing::kafka::{count, create_topics, new_topic, read_all};
use txoutbox_testing::postgres::TestSchema;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_is_dead_lettered_and_holds_back_only_its_own_key() {
    txoutbox_testing::init_tracing();
    let topic = new_topic("poison", 3).await;
    let db = TestSchema::new().await;
    let outbox = PgOutbox::with_table(Topics::new().with(keyed::<0>(&topic)).unwrap(), db.table());
    outbox.migrate(&db.pool).await.unwrap();

    // The poison: larger than the producer accepts. Then its key's next message, then 100 others.
    let topics = outbox.topics();
    let mut poison = topics
        .encode(&Event::<0> {
            key: "poison".into(),
            seq: 1,
        })
        .unwrap();
    poison.payload =
        Some(format!(r#"{{"key":"poison","seq":1,"pad":"{}"}}"#, "x".repeat(20_000)).into_bytes());
    outbox.publish_message(&db.pool, poison).await.unwrap();
    let poison_key = "poison".to_owned();
    let mut events = vec![Event::<0> {
        key: poison_key.clone(),
        seq: 2,
    }];
    events.extend((0..100).map(|i| Event {
        key: format!("k{}", i % 5),
        seq: i + 1,
    }));
    outbox.publish_all(&db.pool, &events).await.unwrap();

    let sink = KafkaSink::new(
        &KafkaConfig::new(txoutbox_testing::kafka::bootstrap()).set("message.max.bytes", "10000"),
    )
    .unwrap();
    // Retries would be pointless: the poison is never attempted a second time.
    let retry = RetryPolicy::default()
        .with_max_attempts(5)
        .with_backoff(Duration::from_secs(60), Duration::from_secs(60));
    let store = outbox.store(db.pool.clone());
    let relay = Relay::new(store.clone(), sink, relay_config().with_retry(retry))
        .unwrap()
        .start();
    drained(&store, Duration::from_secs(30)).await;
    relay.shutdown().await.unwrap();
    let (status, error, attempts): (String, String, i32) = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT status, last_error, attempts FROM {} ORDER BY id LIMIT 1",
        outbox.table().quoted()
    )))
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        (status.as_str(), attempts),
        ("dead", 1),
        "dead at its first attempt"
    );
    assert!(
        error.contains("message.max.bytes"),
        "the error says what to do: {error}"
    );
    assert_eq!(store.backlog().await.unwrap().dead, 1);

    let records = read_all(std::slice::from_ref(&topic)).await;
    let verdict = verify(&records);
    assert_eq!(
        (verdict.distinct, verdict.duplicates, verdict.order_violations),
        (101, 0, 0),
        "{verdict:?}"
    );
    assert_eq!(
        records.iter().filter(|r| r.key_str() == poison_key).count(),
        1,
        "its second message arrives"
    );

    // The cause is fixed (a producer that accepts the size): replaying the dead letter publishes it.
    let dead = store.list_dead(&DeadLetterFilter::all(), 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (dead[0].key.as_deref(), dead[0].attempts),
        (Some(&b"poison"[..]), 1)
    );
    assert_eq!(
        store
            .replay_dead(&DeadLetterFilter::all().topic(&topic))
            .await
            .unwrap(),
        1
    );
    let relay = start_relay(store.clone(), relay_config());
    drained(&store, Duration::from_secs(30)).await;
    relay.shutdown().await.unwrap();
    let records = read_all(std::slice::from_ref(&topic)).await;
    assert_eq!(records.len(), 102, "the replayed message arrives, once");
    assert!(
        records
            .iter()
            .any(|r| r.key_str() == poison_key && r.payload.as_ref().is_some_and(|p| p.len() > 20_000))
    );
    assert_eq!(store.backlog().await.unwrap().dead, 0);
    db.drop_schema().await;
}

/// With `OnDeadLetter::ParkKey` the later messages of a dead message's key wait — across a relay
/// restart, since parking lives in the table — while other keys flow; the dead message's copy
/// (without its payload, which the topic refuses) reaches the dead-letter topic with the reason;
/// once replayed, the key's messages arrive in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_key_waits_for_its_dead_message_and_the_copy_reaches_the_dead_letter_topic() {
    txoutbox_testing::init_tracing();
    let topic = new_topic("parked", 3).await;
    let dead_letter_topic = format!("{topic}.dead");
    create_topics(&[&dead_letter_topic], 1).await;
    let db = TestSchema::new().await;
    let outbox = PgOutbox::with_table(Topics::new().with(keyed::<0>(&topic)).unwrap(), db.table());
    outbox.migrate(&db.pool).await.unwrap();

    let poison = oversize(outbox.topics(), "parked");
    outbox.publish_message(&db.pool, poison).await.unwrap();
    let mut events: Vec<Event<0>> = (2..=3)
        .map(|seq| Event {
            key: "parked".into(),
            seq,
        })
        .collect();
    events.extend((0..50).map(|i| Event {
        key: format!("k{}", i % 5),
        seq: i + 1,
    }));
    outbox.publish_all(&db.pool, &events).await.unwrap();

    let config = relay_config()
        .with_retry(RetryPolicy::default().with_max_attempts(1))
        .with_on_dead_letter(OnDeadLetter::ParkKey)
        .with_dead_letter_topic(DeadLetterTopic::new("{topic}.dead").unwrap());
    let store = outbox.store(db.pool.clone());
    let relay = Relay::new(store.clone(), small_sink(), config.clone())
        .unwrap()
        .start();
    let topics = [topic.clone()];
    let dead_letters = [dead_letter_topic.clone()];
    let settled = txoutbox_testing::eventually(Duration::from_secs(30), || async {
        count(&topics).await == 50 && count(&dead_letters).await == 1
    })
    .await;
    assert!(settled, "{:?}", store.backlog().await);
    relay.shutdown().await.unwrap();
    let backlog = store.backlog().await.unwrap();
    assert_eq!(
        (backlog.pending, backlog.dead),
        (2, 1),
        "the key's later messages are parked"
    );

    // The copy: the key, why it died, where it was going; the payload dropped (too large).
    let copies = read_all(&dead_letters).await;
    assert_eq!(copies.len(), 1);
    let copy = &copies[0];
    assert_eq!(copy.key_str(), "parked");
    assert_eq!(copy.header("txoutbox-dead-letter-topic"), Some(topic.as_str()));
    assert_eq!(copy.header("txoutbox-dead-letter-attempts"), Some("1"));
    assert_eq!(copy.header("txoutbox-dead-letter-payload"), Some("dropped"));
    assert!(
        copy.header("txoutbox-dead-letter-error")
            .is_some_and(|e| e.contains("max.message.bytes")),
        "{:?}",
        copy.headers
    );
    assert!(copy.header("txoutbox-message-id").is_some());

    // A new relay knows the key is parked (from the table): new messages of other keys flow, the
    // parked ones still wait.
    let relay = Relay::new(store.clone(), small_sink(), config.clone())
        .unwrap()
        .start();
    let more: Vec<Event<0>> = (0..10)
        .map(|i| Event {
            key: format!("k{}", i % 5),
            seq: 100 + i,
        })
        .collect();
    outbox.publish_all(&db.pool, &more).await.unwrap();
    let flowed =
        txoutbox_testing::eventually(Duration::from_secs(30), || async { count(&topics).await == 60 }).await;
    assert!(flowed, "{:?}", store.backlog().await);
    // The records are in Kafka before the relay deletes their rows: wait for the completions.
    let completed = txoutbox_testing::eventually(Duration::from_secs(30), || async {
        store.backlog().await.is_ok_and(|b| b.pending <= 2)
    })
    .await;
    assert!(completed, "{:?}", store.backlog().await);
    assert_eq!(
        store.backlog().await.unwrap().pending,
        2,
        "still parked after a restart"
    );
    assert!(read_all(&topics).await.iter().all(|r| r.key_str() != "parked"));

    // The cause fixed (a producer that takes the size) and the dead message replayed: the key's
    // three messages arrive in order.
    relay.shutdown().await.unwrap();
    let relay = Relay::new(store.clone(), common::kafka_sink(), config)
        .unwrap()
        .start();
    assert_eq!(store.replay_dead(&DeadLetterFilter::all()).await.unwrap(), 1);
    drained(&store, Duration::from_secs(30)).await;
    relay.shutdown().await.unwrap();
    let records = read_all(&topics).await;
    let verdict = verify(&records);
    assert_eq!(
        (verdict.distinct, verdict.duplicates, verdict.order_violations),
        (63, 0, 0),
        "{verdict:?}"
    );
    let parked: Vec<u64> = records
        .iter()
        .filter(|r| r.key_str() == "parked")
        .map(|r| common::key_seq(r).1)
        .collect();
    assert_eq!(parked, [1, 2, 3]);
    assert_eq!(count(&dead_letters).await, 1, "no second copy");
    db.drop_schema().await;
}
