//! End to end on MySQL / MariaDB: application transaction → outbox table → relay → Kafka →
//! consumer. MySQL has no LISTEN/NOTIFY: relays find rows by polling and by in-process wake-ups.
#![cfg(feature = "mysql")]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::cases::{self, E2eDb, three_new_topics};
use common::{Event, relay_config, start_relay, three_topics};
use sqlx::AssertSqlSafe;
use txoutbox::mysql::{MySqlOutbox, MySqlStore};
use txoutbox_testing::kafka::read_all;
use txoutbox_testing::mysql::TestDatabase;

#[derive(Clone)]
struct My {
    db: Arc<TestDatabase>,
    outbox: MySqlOutbox,
    topics: Vec<String>,
}

impl My {
    async fn new(topics: &[String]) -> Self {
        txoutbox_testing::init_tracing();
        let db = TestDatabase::new().await;
        let outbox = MySqlOutbox::with_table(three_topics(topics), db.table());
        outbox.migrate(&db.pool).await.unwrap();
        sqlx::raw_sql(AssertSqlSafe(format!(
            "CREATE TABLE {} (id BIGINT AUTO_INCREMENT PRIMARY KEY, note TEXT NOT NULL)",
            db.qualify("orders")
        )))
        .execute(&db.pool)
        .await
        .unwrap();
        Self {
            db: Arc::new(db),
            outbox,
            topics: topics.to_vec(),
        }
    }

    /// Another outbox over the same table, as another process would have: its stores do not
    /// share this outbox's relay lock.
    fn other_outbox(&self) -> MySqlOutbox {
        MySqlOutbox::with_table(three_topics(&self.topics), self.db.table())
    }

    async fn teardown(self) {
        drop(self.outbox);
        if let Ok(db) = Arc::try_unwrap(self.db) {
            db.drop_database().await;
        }
    }
}

cases::impl_e2e_db!(My, MySqlStore, sqlx::MySql, |db: &My| db.db.qualify("orders"));

impl My {
    /// The relay's store.
    fn store_over_pool(&self) -> MySqlStore {
        self.outbox.store(self.db.pool.clone())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_back_transaction_publishes_nothing() {
    let topics = three_new_topics("my-rollback").await;
    let db = My::new(&topics).await;
    cases::rolled_back_transaction_publishes_nothing(db.clone(), &topics).await;
    db.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_messages_over_three_topics_arrive_once_in_key_order() {
    let topics = three_new_topics("my-10k").await;
    let db = My::new(&topics).await;
    cases::ten_thousand_messages_arrive_once_in_key_order(db.clone(), &topics).await;
    db.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_stopped_mid_stream_and_started_again_loses_nothing() {
    let topics = three_new_topics("my-restart").await;
    let db = My::new(&topics).await;
    cases::relay_stopped_mid_stream_and_restarted_loses_nothing(db.clone(), &topics).await;
    db.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_all_of_a_thousand_is_one_statement_and_all_arrive() {
    let topics = three_new_topics("my-bulk").await;
    let my = My::new(&topics).await;
    let counted = async {
        let mut tx = my.db.pool.begin().await.unwrap();
        let ids = my
            .outbox
            .publish_all(&mut tx, &cases::thousand_events())
            .await
            .unwrap();
        // ROW_COUNT() is the row count of the connection's previous statement: all 1,000 means
        // one statement wrote them all.
        let last_statement_rows: i64 = sqlx::query_scalar("SELECT ROW_COUNT()")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        (ids, last_statement_rows == 1000)
    };
    cases::publish_all_is_one_statement_and_all_arrive(my.clone(), &topics, counted).await;
    my.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_on_a_missing_table_stops_with_a_clear_error() {
    txoutbox_testing::init_tracing();
    let db = TestDatabase::new().await;
    let outbox = MySqlOutbox::with_table(txoutbox::Topics::new(), db.table());
    cases::relay_on_a_missing_table_stops_with_a_clear_error(outbox.store(db.pool.clone())).await;
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_committing_transaction_keeps_its_key_in_order() {
    let topics = three_new_topics("my-late").await;
    let my = My::new(&topics).await;
    cases::late_committing_transaction_keeps_its_key_in_order(my.clone(), &topics).await;
    my.teardown().await;
}

/// MySQL has no push notifications: an outbox transaction's commit wakes the relay of the same
/// process directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_wakes_the_in_process_relay_at_once() {
    let topics = three_new_topics("my-wake").await;
    let my = My::new(&topics).await;
    let commit_woken = |wakeup, seq| {
        let my = my.clone();
        async move {
            let outbox = my.outbox.clone().with_wakeup(wakeup);
            let mut tx = outbox.begin(&my.db.pool).await.unwrap();
            sqlx::query(AssertSqlSafe(format!(
                "INSERT INTO {} (note) VALUES ('order')",
                my.db.qualify("orders")
            )))
            .execute(&mut *tx)
            .await
            .unwrap();
            tx.publish(&Event::<0> { key: "k".into(), seq }).await.unwrap();
            tx.commit().await.unwrap();
        }
    };
    cases::a_commit_wakes_the_in_process_relay(my.clone(), &topics, commit_woken).await;
    my.teardown().await;
}

/// Two relays on one table (two outboxes, as two processes would have) while writers commit:
/// one holds the table's relay lock and sends, the other stands by, so no row is sent twice and
/// every key stays in order. When the active relay stops, the standby one takes over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_on_one_table_never_send_a_row_twice() {
    const WRITERS: u64 = 4;
    const PER_WRITER: u64 = 1_000;
    let topics = three_new_topics("my-two").await;
    let my = My::new(&topics).await;
    // Backlog checks go through a third outbox, whose store never fetches (never takes the lock).
    let watcher = my.other_outbox().store(my.db.pool.clone());
    // The first relay takes the lock (it has sent a message), then the second one starts.
    let first = start_relay(my.other_outbox().store(my.db.pool.clone()), relay_config());
    my.write(
        vec![],
        vec![Event {
            key: "key-0".into(),
            seq: 0,
        }],
        true,
    )
    .await;
    common::drained(&watcher, Duration::from_secs(30)).await;
    let second = start_relay(my.other_outbox().store(my.db.pool.clone()), relay_config());

    let write_round = |round: u64| {
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let my = my.clone();
                tokio::spawn(async move {
                    // Writer w owns keys w, w + WRITERS, ...: each key's writes are serialized.
                    for i in 0..PER_WRITER / 10 {
                        let batch: Vec<Event<0>> = (0..10)
                            .map(|j| Event {
                                key: format!("key-{}", w + WRITERS * (j % 5)),
                                seq: round * 1_000_000 + i * 10 + j,
                            })
                            .collect();
                        my.write(vec![], batch, true).await;
                    }
                })
            })
            .collect();
        futures::future::join_all(writers)
    };
    for w in write_round(0).await {
        w.unwrap();
    }
    common::drained(&watcher, Duration::from_secs(120)).await;

    // The active one stops; the standby one takes over for the next round.
    first.shutdown().await.unwrap();
    for w in write_round(1).await {
        w.unwrap();
    }
    common::drained(&watcher, Duration::from_secs(120)).await;
    second.shutdown().await.unwrap();

    let verdict = common::verify(&read_all(&topics[..1]).await);
    assert_eq!(
        verdict.distinct as u64,
        2 * WRITERS * PER_WRITER + 1,
        "{verdict:?}"
    );
    assert_eq!(
        verdict.duplicates, 0,
        "two relays on one table sent rows twice: {verdict:?}"
    );
    assert_eq!(verdict.order_violations, 0, "{verdict:?}");
    drop(watcher);
    my.teardown().await;
}

/// The idle cost of a relay on MySQL (no LISTEN/NOTIFY, so it polls): the server-wide statement
/// count (`Questions`) over ten poll intervals with nothing to send. Server-wide, so run it alone:
/// `cargo test -p txoutbox --features mysql --test e2e_mysql -- --ignored --nocapture idle`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; needs the server to itself"]
async fn idle_relay_query_cost() {
    let topics = three_new_topics("my-idle").await;
    let my = My::new(&topics).await;
    let poll = Duration::from_millis(500);
    let relay = start_relay(my.store(), relay_config().with_poll_interval(poll));
    tokio::time::sleep(2 * poll).await; // past the start-up (check, first lock)
    let questions = || async {
        let (_, v): (String, String) = sqlx::query_as("SHOW GLOBAL STATUS LIKE 'Questions'")
            .fetch_one(&my.db.pool)
            .await
            .unwrap();
        v.parse::<i64>().unwrap()
    };
    let before = questions().await;
    tokio::time::sleep(20 * poll).await;
    // Minus the second SHOW STATUS itself.
    let statements = questions().await - before - 1;
    relay.shutdown().await.unwrap();
    println!(
        "idle relay: {statements} statements in 20 poll intervals of {poll:?} ({:.2} per interval)",
        statements as f64 / 20.0
    );
    assert!(
        statements <= 2 * 20,
        "{statements} statements in 20 idle intervals"
    );
    my.teardown().await;
}
