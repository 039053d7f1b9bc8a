//! End to end on SQLite (the embedded default): transaction → outbox table → relay → Kafka.
#![cfg(feature = "sqlite")]

mod common;

use std::sync::Arc;

use common::cases::{self, E2eDb, Msg, three_new_topics};
use common::{Event, three_topics};
use txoutbox::sqlite::{SqliteOutbox, SqliteStore};
use txoutbox_testing::sqlite::TestDb;

#[derive(Clone)]
struct Lite {
    db: Arc<TestDb>,
    outbox: SqliteOutbox,
}

impl Lite {
    async fn new(topics: &[String]) -> Self {
        txoutbox_testing::init_tracing();
        let db = TestDb::new().await;
        let outbox = SqliteOutbox::new(three_topics(topics));
        outbox.migrate(&db.pool).await.unwrap();
        sqlx::raw_sql("CREATE TABLE orders (id INTEGER PRIMARY KEY, note TEXT NOT NULL)")
            .execute(&db.pool)
            .await
            .unwrap();
        Self {
            db: Arc::new(db),
            outbox,
        }
    }
}

impl E2eDb for Lite {
    type Store = SqliteStore;

    fn store(&self) -> SqliteStore {
        self.outbox.store(self.db.pool.clone())
    }

    async fn write(&self, singles: Vec<Msg>, batch: Vec<Event<0>>, commit: bool) {
        let mut tx = self.db.pool.begin().await.unwrap();
        sqlx::query("INSERT INTO orders (note) VALUES ('order')")
            .execute(&mut *tx)
            .await
            .unwrap();
        for m in &singles {
            match m {
                Msg::T0(e) => self.outbox.publish(&mut *tx, e).await,
                Msg::T1(e) => self.outbox.publish(&mut *tx, e).await,
                Msg::T2(e) => self.outbox.publish(&mut *tx, e).await,
            }
            .unwrap();
        }
        self.outbox.publish_all(&mut *tx, &batch).await.unwrap();
        if commit {
            tx.commit().await.unwrap();
        } else {
            tx.rollback().await.unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_back_transaction_publishes_nothing() {
    let topics = three_new_topics("lite-rollback").await;
    cases::rolled_back_transaction_publishes_nothing(Lite::new(&topics).await, &topics).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_messages_over_three_topics_arrive_once_in_key_order() {
    let topics = three_new_topics("lite-10k").await;
    cases::ten_thousand_messages_arrive_once_in_key_order(Lite::new(&topics).await, &topics).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_stopped_mid_stream_and_started_again_loses_nothing() {
    let topics = three_new_topics("lite-restart").await;
    cases::relay_stopped_mid_stream_and_restarted_loses_nothing(Lite::new(&topics).await, &topics).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_all_of_a_thousand_is_one_statement_and_all_arrive() {
    let topics = three_new_topics("lite-bulk").await;
    let lite = Lite::new(&topics).await;
    let events: Vec<Event<1>> = (0..1000)
        .map(|i| Event {
            key: format!("k{}", i % 37),
            seq: i,
        })
        .collect();
    let mut tx = lite.db.pool.begin().await.unwrap();
    let ids = lite.outbox.publish_all(&mut *tx, &events).await.unwrap();
    // changes() counts the rows of the connection's most recent statement: all 1,000 means one
    // statement wrote them all.
    let last_statement_rows: i64 = sqlx::query_scalar("SELECT changes()")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        last_statement_rows, 1000,
        "publish_all must write the batch in one statement"
    );
    cases::bulk_batch_arrives_whole(lite, &topics, &ids).await;
}

/// SQLite has no push notifications: an outbox transaction's commit wakes the relay of the same
/// process directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_wakes_the_in_process_relay_at_once() {
    use std::time::{Duration, Instant};
    let topics = three_new_topics("lite-wake").await;
    let lite = Lite::new(&topics).await;
    // A poll interval far beyond the test: only the wake-up can deliver in time.
    let relay = common::start_relay(
        lite.store(),
        common::relay_config().with_poll_interval(Duration::from_secs(60)),
    );
    let outbox = lite.outbox.clone().with_wakeup(relay.wakeup());
    // (The first message may also be found by the relay's first look at start; the next two
    // can only be found through the wake-up.)
    for seq in 1..=3 {
        let started = Instant::now();
        let mut tx = outbox.begin(&lite.db.pool).await.unwrap();
        sqlx::query("INSERT INTO orders (note) VALUES ('order')")
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.publish(&Event::<0> { key: "k".into(), seq }).await.unwrap();
        tx.commit().await.unwrap();
        // Well below the 60 s poll interval, so only the wake-up can make it; loose enough for a
        // loaded machine (a fresh topic's first write can wait for its leader).
        let arrived = txoutbox_testing::eventually(Duration::from_secs(20), || async {
            txoutbox_testing::kafka::count(&topics[..1]).await >= seq as i64
        })
        .await;
        assert!(
            arrived && started.elapsed() < Duration::from_secs(20),
            "took {:?}",
            started.elapsed()
        );
    }
    relay.shutdown().await.unwrap();
    let verdict = common::verify(&txoutbox_testing::kafka::read_all(&topics[..1]).await);
    assert_eq!(
        (verdict.distinct, verdict.duplicates, verdict.order_violations),
        (3, 0, 0)
    );
}
