//! PostgreSQL push wake-ups: a commit wakes an idle relay through LISTEN/NOTIFY, also after its
//! listening connection was killed.
#![cfg(feature = "postgres")]

mod common;

use std::time::{Duration, Instant};

use common::{Event, keyed, relay_config, start_relay, verify};
use sqlx::{AssertSqlSafe, PgPool};
use txoutbox::Topics;
use txoutbox::postgres::PgOutbox;
use txoutbox_testing::kafka::{count, new_topic, read_all};
use txoutbox_testing::postgres::TestSchema;

/// The backend pids listening on `channel`.
async fn listeners(pool: &PgPool, channel: &str) -> Vec<i32> {
    sqlx::query_scalar("SELECT pid FROM pg_stat_activity WHERE query = $1")
        .bind(format!("LISTEN \"{channel}\""))
        .fetch_all(pool)
        .await
        .unwrap()
}

/// Commits one message and returns how long until a consumer can read it.
async fn commit_and_time(outbox: &PgOutbox, pool: &PgPool, topic: &str, seq: u64) -> Duration {
    let before = count(&[topic.to_owned()]).await;
    let started = Instant::now();
    let mut tx = pool.begin().await.unwrap();
    outbox
        .publish(&mut *tx, &Event::<0> { key: "k".into(), seq })
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let arrived = txoutbox_testing::eventually(Duration::from_secs(10), || async {
        count(&[topic.to_owned()]).await > before
    })
    .await;
    assert!(arrived, "message {seq} did not arrive");
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_wakes_an_idle_relay_at_once_also_after_its_listener_was_killed() {
    txoutbox_testing::init_tracing();
    let topic = new_topic("push", 1).await;
    let db = TestSchema::new().await;
    let outbox = PgOutbox::with_table(Topics::new().with(keyed::<0>(&topic)).unwrap(), db.table());
    outbox.migrate(&db.pool).await.unwrap();
    outbox.set_push_wakeups(&db.pool, true).await.unwrap();
    let channel = format!("txoutbox_{}_outbox_messages", db.schema);
    // A poll interval far beyond the test: only a push can deliver in time.
    let relay = start_relay(
        outbox.store(db.pool.clone()),
        relay_config().with_poll_interval(Duration::from_secs(60)),
    );
    let listening = txoutbox_testing::eventually(Duration::from_secs(10), || async {
        listeners(&db.pool, &channel).await.len() == 1
    })
    .await;
    assert!(listening, "the relay should LISTEN on {channel}");

    let first = commit_and_time(&outbox, &db.pool, &topic, 1).await;
    assert!(
        first < Duration::from_secs(1),
        "commit to Kafka took {first:?} with a 60 s poll interval"
    );

    // Kill the listening connection; the relay reconnects by itself.
    let old = listeners(&db.pool, &channel).await;
    sqlx::query(AssertSqlSafe(format!("SELECT pg_terminate_backend({})", old[0])))
        .execute(&db.pool)
        .await
        .unwrap();
    let back = txoutbox_testing::eventually(Duration::from_secs(10), || async {
        let now = listeners(&db.pool, &channel).await;
        now.len() == 1 && now != old
    })
    .await;
    assert!(
        back,
        "the relay should listen again after its connection was killed"
    );
    let second = commit_and_time(&outbox, &db.pool, &topic, 2).await;
    assert!(
        second < Duration::from_secs(1),
        "after reconnecting, commit to Kafka took {second:?}"
    );

    relay.shutdown().await.unwrap();
    let verdict = verify(&read_all(&[topic]).await);
    assert_eq!(
        (verdict.distinct, verdict.duplicates, verdict.order_violations),
        (2, 0, 0),
        "{verdict:?}"
    );
    db.drop_schema().await;
}
