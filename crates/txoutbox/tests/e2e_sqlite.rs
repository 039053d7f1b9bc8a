//! End to end on SQLite (the embedded default): transaction → outbox table → relay → Kafka.
#![cfg(feature = "sqlite")]

mod common;

use std::sync::Arc;

use common::cases::{self, three_new_topics};
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

cases::impl_e2e_db!(Lite, SqliteStore, sqlx::Sqlite, |_: &Lite| "orders".to_owned());

impl Lite {
    /// The relay's store.
    fn store_over_pool(&self) -> SqliteStore {
        self.outbox.store(self.db.pool.clone())
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
    let counted = async {
        let mut tx = lite.db.pool.begin().await.unwrap();
        let ids = lite
            .outbox
            .publish_all(&mut *tx, &cases::thousand_events())
            .await
            .unwrap();
        // changes() counts the rows of the connection's most recent statement: all 1,000 means
        // one statement wrote them all.
        let last_statement_rows: i64 = sqlx::query_scalar("SELECT changes()")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        (ids, last_statement_rows == 1000)
    };
    cases::publish_all_is_one_statement_and_all_arrive(lite.clone(), &topics, counted).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_on_a_missing_table_stops_with_a_clear_error() {
    txoutbox_testing::init_tracing();
    let db = TestDb::new().await;
    let outbox = SqliteOutbox::new(txoutbox::Topics::new());
    cases::relay_on_a_missing_table_stops_with_a_clear_error(outbox.store(db.pool.clone())).await;
}

/// SQLite has no push notifications: an outbox transaction's commit wakes the relay of the same
/// process directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_wakes_the_in_process_relay_at_once() {
    let topics = three_new_topics("lite-wake").await;
    let lite = Lite::new(&topics).await;
    let commit_woken = |wakeup, seq| {
        let lite = lite.clone();
        async move {
            let outbox = lite.outbox.clone().with_wakeup(wakeup);
            let mut tx = outbox.begin(&lite.db.pool).await.unwrap();
            sqlx::query("INSERT INTO orders (note) VALUES ('order')")
                .execute(&mut *tx)
                .await
                .unwrap();
            tx.publish(&Event::<0> { key: "k".into(), seq }).await.unwrap();
            tx.commit().await.unwrap();
        }
    };
    cases::a_commit_wakes_the_in_process_relay(lite.clone(), &topics, commit_woken).await;
}
