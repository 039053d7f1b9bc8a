//! End to end on PostgreSQL: application transaction → outbox table → relay → Kafka → consumer.
#![cfg(feature = "postgres")]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::cases::{self, E2eDb, Msg, three_new_topics};
use common::{Event, relay_config, start_relay, three_topics};
use sqlx::AssertSqlSafe;
use txoutbox::postgres::{PgOutbox, PgStore};
use txoutbox_testing::postgres::TestSchema;

#[derive(Clone)]
struct Pg {
    db: Arc<TestSchema>,
    outbox: PgOutbox,
}

impl Pg {
    async fn new(topics: &[String]) -> Self {
        txoutbox_testing::init_tracing();
        let db = TestSchema::new().await;
        let outbox = PgOutbox::with_table(three_topics(topics), db.table());
        outbox.migrate(&db.pool).await.unwrap();
        sqlx::raw_sql(AssertSqlSafe(format!(
            "CREATE TABLE {} (id BIGSERIAL PRIMARY KEY, note TEXT NOT NULL)",
            db.qualify("orders")
        )))
        .execute(&db.pool)
        .await
        .unwrap();
        Self {
            db: Arc::new(db),
            outbox,
        }
    }

    async fn teardown(self) {
        drop(self.outbox);
        if let Ok(db) = Arc::try_unwrap(self.db) {
            db.drop_schema().await;
        }
    }
}

impl E2eDb for Pg {
    type Store = PgStore;

    fn store(&self) -> PgStore {
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
    let topics = three_new_topics("pg-rollback").await;
    let db = Pg::new(&topics).await;
    cases::rolled_back_transaction_publishes_nothing(db.clone(), &topics).await;
    db.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_messages_over_three_topics_arrive_once_in_key_order() {
    let topics = three_new_topics("pg-10k").await;
    let db = Pg::new(&topics).await;
    cases::ten_thousand_messages_arrive_once_in_key_order(db.clone(), &topics).await;
    db.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_stopped_mid_stream_and_started_again_loses_nothing() {
    let topics = three_new_topics("pg-restart").await;
    let db = Pg::new(&topics).await;
    cases::relay_stopped_mid_stream_and_restarted_loses_nothing(db.clone(), &topics).await;
    db.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_all_of_a_thousand_is_one_statement_and_all_arrive() {
    let topics = three_new_topics("pg-bulk").await;
    let pg = Pg::new(&topics).await;
    // A statement-level trigger counts the INSERT statements that reach the outbox table.
    let counter = pg.db.qualify("insert_statements");
    let func = pg.db.qualify("count_insert");
    let table = pg.outbox.table().quoted();
    sqlx::raw_sql(AssertSqlSafe(format!(
        "CREATE TABLE {counter} (n INT NOT NULL); INSERT INTO {counter} VALUES (0);
         CREATE FUNCTION {func}() RETURNS trigger LANGUAGE plpgsql AS
           $$ BEGIN UPDATE {counter} SET n = n + 1; RETURN NULL; END $$;
         CREATE TRIGGER count_insert AFTER INSERT ON {table} FOR EACH STATEMENT EXECUTE FUNCTION {func}();"
    )))
    .execute(&pg.db.pool)
    .await
    .unwrap();

    let events: Vec<Event<1>> = (0..1000)
        .map(|i| Event {
            key: format!("k{}", i % 37),
            seq: i,
        })
        .collect();
    let mut tx = pg.db.pool.begin().await.unwrap();
    let ids = pg.outbox.publish_all(&mut *tx, &events).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(ids.len(), 1000);
    let statements: i32 = sqlx::query_scalar(AssertSqlSafe(format!("SELECT n FROM {counter}")))
        .fetch_one(&pg.db.pool)
        .await
        .unwrap();
    assert_eq!(statements, 1, "publish_all must write the batch in one statement");
    cases::bulk_batch_arrives_whole(pg.clone(), &topics, &ids).await;
    pg.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_on_a_missing_table_stops_with_a_clear_error() {
    txoutbox_testing::init_tracing();
    let db = TestSchema::new().await;
    let outbox = PgOutbox::with_table(txoutbox::Topics::new(), db.table());
    let relay = start_relay(outbox.store(db.pool.clone()), relay_config());
    let stopped =
        txoutbox_testing::eventually(Duration::from_secs(30), || async { relay.is_finished() }).await;
    assert!(stopped, "the relay should stop by itself");
    let err = relay.shutdown().await.unwrap_err();
    assert!(matches!(err, txoutbox::Error::SchemaNotReady { .. }), "{err}");
    assert!(err.to_string().contains("run the migrations"), "{err}");
    db.drop_schema().await;
}

/// Commit order is not id order: a transaction that took its id early and commits late must
/// still go before the later messages of its key, even when the relay has read past its id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_committing_transaction_keeps_its_key_in_order() {
    let topics = three_new_topics("pg-late").await;
    let pg = Pg::new(&topics).await;
    let store = pg.store();
    // A long poll interval: only wake-ups and the cursor's late-commit lookup can find rows.
    let relay = start_relay(
        store.clone(),
        relay_config().with_poll_interval(Duration::from_secs(60)),
    );
    let wakeup = relay.wakeup();

    let mut early = pg.db.pool.begin().await.unwrap();
    pg.outbox
        .publish(
            &mut *early,
            &Event::<0> {
                key: "k".into(),
                seq: 1,
            },
        )
        .await
        .unwrap();
    pg.write(
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
    pg.write(
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

    let records = txoutbox_testing::kafka::read_all(&topics[..1]).await;
    let verdict = common::verify(&records);
    assert_eq!((verdict.distinct, verdict.duplicates), (3, 0), "{verdict:?}");
    assert_eq!(
        verdict.order_violations, 0,
        "k:2 overtook the late-committing k:1: {records:?}"
    );
    pg.teardown().await;
}
