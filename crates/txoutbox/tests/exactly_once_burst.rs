//! The relay tells an exactly-once sink when a burst ends, so a transaction commits as soon as
//! the relay has nothing more to send, not when its commit interval runs out.
#![cfg(all(feature = "sqlite", feature = "kafka"))]

mod common;

use std::time::{Duration, Instant};

use common::{Event, drained, keyed, relay_config};
use txoutbox::Relay;
use txoutbox::kafka::{ExactlyOnceSettings, ExactlyOnceSink, KafkaConfig};
use txoutbox::sqlite::SqliteOutbox;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_message_commits_at_the_end_of_its_burst_not_after_the_commit_interval() {
    let topic = txoutbox_testing::kafka::new_topic("eos-burst", 3).await;
    let db = txoutbox_testing::sqlite::TestDb::new().await;
    let outbox = SqliteOutbox::new(txoutbox::Topics::new().with(keyed::<0>(&topic)).unwrap());
    outbox.migrate(&db.pool).await.unwrap();
    // Without the end-of-burst signal these transactions would stay open for an hour.
    let settings = ExactlyOnceSettings::for_table(&txoutbox_testing::unique("eos_burst"))
        .with_progress_topic(txoutbox_testing::unique("eos-burst-progress"))
        .with_commit(Duration::from_secs(3600), 100_000)
        .with_create_progress_topic(true);
    let sink =
        ExactlyOnceSink::new(&KafkaConfig::new(txoutbox_testing::kafka::bootstrap()), settings).unwrap();
    let store = outbox.store(db.pool.clone());
    let relay = Relay::new(store.clone(), sink, relay_config()).unwrap().start();

    for round in 0..3u64 {
        let started = Instant::now();
        let mut tx = db.pool.begin().await.unwrap();
        let event = Event::<0> {
            key: format!("k{round}"),
            seq: round,
        };
        outbox.publish(&mut *tx, &event).await.unwrap();
        tx.commit().await.unwrap();
        // The row is marked only after its Kafka transaction committed.
        drained(&store, Duration::from_secs(30)).await;
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "round {round} took {:?}",
            started.elapsed()
        );
    }
    relay.shutdown().await.unwrap();

    let records = txoutbox_testing::kafka::read_committed(&topic).await;
    let mut keys: Vec<&str> = records.iter().map(|r| r.key_str()).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["k0", "k1", "k2"],
        "each message once, in its own transaction"
    );
}
