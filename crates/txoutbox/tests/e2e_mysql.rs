//! End to end on MySQL / MariaDB: application transaction → outbox table → relay → Kafka →
//! consumer. MySQL has no LISTEN/NOTIFY: relays find rows by polling and by in-process wake-ups.
#![cfg(feature = "mysql")]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::cases::{self, E2eDb, Msg, three_new_topics};
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

impl E2eDb for My {
    type Store = MySqlStore;

    fn store(&self) -> MySqlStore {
        self.outbox.store(self.db.pool.clone())
    }

    async fn write(&self, singles: Vec<Msg>, batch: Vec<Event<0>>, commit: bool) {
        let mut tx = self.db.pool.begin().await.unwrap();
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {} (note) VALUES ('order')",
            self.db.qualify("orders")
        )))
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
        self.outbox.publish_all(&mut tx, &batch).await.unwrap();
        if commit {
            tx.commit().await.unwrap();
        } else {
            tx.rollback().await.unwrap();
        }
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
    let events: Vec<Event<1>> = (0..1000)
        .map(|i| Event {
            key: format!("k{}", i % 37),
            seq: i,
        })
        .collect();
    let mut tx = my.db.pool.begin().await.unwrap();
    let ids = my.outbox.publish_all(&mut tx, &events).await.unwrap();
    // ROW_COUNT() is the row count of the connection's previous statement: all 1,000 means one
    // statement wrote them all.
    let last_statement_rows: i64 = sqlx::query_scalar("SELECT ROW_COUNT()")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        last_statement_rows, 1000,
        "publish_all must write the batch in one statement"
    );
    cases::bulk_batch_arrives_whole(my.clone(), &topics, &ids).await;
    my.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_on_a_missing_table_stops_with_a_clear_error() {
    txoutbox_testing::init_tracing();
    let db = TestDatabase::new().await;
    let outbox = MySqlOutbox::with_table(txoutbox::Topics::new(), db.table());
    let relay = start_relay(outbox.store(db.pool.clone()), relay_config());
    let stopped =
        txoutbox_testing::eventually(Duration::from_secs(30), || async { relay.is_finished() }).await;
    assert!(stopped, "the relay should stop by itself");
    let err = relay.shutdown().await.unwrap_err();
    assert!(matches!(err, txoutbox::Error::SchemaNotReady { .. }), "{err}");
    assert!(err.to_string().contains("run the migrations"), "{err}");
    db.drop_database().await;
}

/// Commit order is not id order: a transaction that took its id early and commits late must
/// still go before the later messages of its key, even when the relay has read past its id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_committing_transaction_keeps_its_key_in_order() {
    let topics = three_new_topics("my-late").await;
    let my = My::new(&topics).await;
    let store = my.store();
    // A long poll interval: only wake-ups and the cursor's late-commit lookup can find rows.
    let relay = start_relay(
        store.clone(),
        relay_config().with_poll_interval(Duration::from_secs(60)),
    );
    let wakeup = relay.wakeup();

    let mut early = my.db.pool.begin().await.unwrap();
    my.outbox
        .publish(
            &mut *early,
            &Event::<0> {
                key: "k".into(),
                seq: 1,
            },
        )
        .await
        .unwrap();
    my.write(
        vec![Msg::T0(Event {
            key: "other".into(),
            seq: 1,
        })],
        vec![],
        true,
    )
    .await;
    wakeup.notify();
    // The relay reads past the early row's id while it is still invisible.
    common::drained(&store, Duration::from_secs(30)).await;
    early.commit().await.unwrap();
    my.write(
        vec![Msg::T0(Event {
            key: "k".into(),
            seq: 2,
        })],
        vec![],
        true,
    )
    .await;
    wakeup.notify();
    common::drained(&store, Duration::from_secs(30)).await;
    relay.shutdown().await.unwrap();

    let records = read_all(&topics[..1]).await;
    let verdict = common::verify(&records);
    assert_eq!((verdict.distinct, verdict.duplicates), (3, 0), "{verdict:?}");
    assert_eq!(
        verdict.order_violations, 0,
        "k:2 overtook the late-committing k:1: {records:?}"
    );
    my.teardown().await;
}

/// MySQL has no push notifications: an outbox transaction's commit wakes the relay of the same
/// process directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_wakes_the_in_process_relay_at_once() {
    let topics = three_new_topics("my-wake").await;
    let my = My::new(&topics).await;
    // A poll interval far beyond the test: only the wake-up can deliver in time.
    let relay = start_relay(
        my.store(),
        relay_config().with_poll_interval(Duration::from_secs(60)),
    );
    let outbox = my.outbox.clone().with_wakeup(relay.wakeup());
    // (The first message may also be found by the relay's first look at start; the next two
    // can only be found through the wake-up.)
    for seq in 1..=3 {
        let started = Instant::now();
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
    let verdict = common::verify(&read_all(&topics[..1]).await);
    assert_eq!(
        (verdict.distinct, verdict.duplicates, verdict.order_violations),
        (3, 0, 0)
    );
    drop(outbox);
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
