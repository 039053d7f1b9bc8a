//! End to end on PostgreSQL: application transaction → outbox table → relay → Kafka → consumer.
#![cfg(feature = "postgres")]

mod common;

use std::time::Duration;

use common::{Event, drained, relay_config, start_relay, three_topics, verify};
use sqlx::AssertSqlSafe;
use txoutbox::Store;
use txoutbox::postgres::PgOutbox;
use txoutbox_testing::kafka::{new_topic, read_all};
use txoutbox_testing::postgres::TestSchema;

async fn setup(topics: &[String]) -> (TestSchema, PgOutbox) {
    txoutbox_testing::init_tracing();
    let db = TestSchema::new().await;
    let outbox = PgOutbox::with_table(three_topics(topics), db.table());
    outbox.migrate(&db.pool).await.unwrap();
    sqlx::raw_sql(AssertSqlSafe(format!(
        "CREATE TABLE {} (id BIGINT PRIMARY KEY, key TEXT NOT NULL)",
        db.qualify("orders")
    )))
    .execute(&db.pool)
    .await
    .unwrap();
    (db, outbox)
}

async fn three_new_topics(prefix: &str) -> Vec<String> {
    let mut topics = Vec::new();
    for i in 0..3 {
        topics.push(new_topic(&format!("{prefix}{i}"), 3).await);
    }
    topics
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_back_transaction_publishes_nothing() {
    let topics = three_new_topics("pg-rollback").await;
    let (db, outbox) = setup(&topics).await;
    let orders = db.qualify("orders");

    let mut tx = db.pool.begin().await.unwrap();
    sqlx::query(AssertSqlSafe(format!("INSERT INTO {orders} VALUES (1, 'a')")))
        .execute(&mut *tx)
        .await
        .unwrap();
    outbox
        .publish(
            &mut *tx,
            &Event::<0> {
                key: "a".into(),
                seq: 1,
            },
        )
        .await
        .unwrap();
    tx.rollback().await.unwrap();

    let mut tx = db.pool.begin().await.unwrap();
    sqlx::query(AssertSqlSafe(format!("INSERT INTO {orders} VALUES (2, 'b')")))
        .execute(&mut *tx)
        .await
        .unwrap();
    outbox
        .publish(
            &mut *tx,
            &Event::<0> {
                key: "b".into(),
                seq: 2,
            },
        )
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let store = outbox.store(db.pool.clone());
    let relay = start_relay(store.clone(), relay_config());
    drained(&store, Duration::from_secs(30)).await;
    relay.shutdown().await.unwrap();

    let records = read_all(&topics).await;
    assert_eq!(
        records.len(),
        1,
        "only the committed message may reach Kafka: {records:?}"
    );
    assert_eq!(records[0].key_str(), "b");
    db.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_messages_over_three_topics_arrive_once_in_key_order() {
    const KEYS: u64 = 300;
    const TOTAL: u64 = 10_000;
    const WRITERS: u64 = 4;
    let topics = three_new_topics("pg-10k").await;
    let (db, outbox) = setup(&topics).await;
    let store = outbox.store(db.pool.clone());
    // The relay streams while the writers commit.
    let relay = start_relay(store.clone(), relay_config());

    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (pool, outbox) = (db.pool.clone(), outbox.clone());
        // Each writer owns the keys k with k % WRITERS == w, so each key's writes are serialized.
        writers.push(tokio::spawn(async move {
            let mut seq = vec![0u64; KEYS as usize];
            let mut written = 0;
            let mut n = w;
            while n < TOTAL {
                let mut tx = pool.begin().await.unwrap();
                // Mix single publishes and batches, over the three topics.
                let mut batch = Vec::new();
                for _ in 0..10 {
                    if n >= TOTAL {
                        break;
                    }
                    // KEYS is a multiple of WRITERS, so this key is one of this writer's own.
                    let key = n % KEYS;
                    seq[key as usize] += 1;
                    let event = (format!("key-{key}"), seq[key as usize]);
                    match key % 3 {
                        0 => batch.push(Event::<0> {
                            key: event.0,
                            seq: event.1,
                        }),
                        1 => {
                            outbox
                                .publish(
                                    &mut *tx,
                                    &Event::<1> {
                                        key: event.0,
                                        seq: event.1,
                                    },
                                )
                                .await
                                .unwrap();
                        }
                        _ => {
                            outbox
                                .publish(
                                    &mut *tx,
                                    &Event::<2> {
                                        key: event.0,
                                        seq: event.1,
                                    },
                                )
                                .await
                                .unwrap();
                        }
                    }
                    written += 1;
                    n += WRITERS;
                }
                outbox.publish_all(&mut *tx, &batch).await.unwrap();
                tx.commit().await.unwrap();
            }
            written
        }));
    }
    let mut written = 0;
    for w in writers {
        written += w.await.unwrap();
    }
    assert_eq!(written, TOTAL);

    drained(&store, Duration::from_secs(120)).await;
    relay.shutdown().await.unwrap();
    let records = read_all(&topics).await;
    let verdict = verify(&records);
    assert_eq!(verdict.distinct as u64, TOTAL, "{verdict:?}");
    assert_eq!(
        verdict.duplicates, 0,
        "a fault-free run sends each message once: {verdict:?}"
    );
    assert_eq!(verdict.order_violations, 0, "{verdict:?}");
    assert_eq!(store.backlog().await.unwrap().pending, 0);
    db.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_all_of_a_thousand_is_one_statement_and_all_arrive() {
    let topics = three_new_topics("pg-bulk").await;
    let (db, outbox) = setup(&topics).await;
    // A statement-level trigger counts the INSERT statements that reach the outbox table.
    let counter = db.qualify("insert_statements");
    let table = outbox.table().quoted();
    let func = db.qualify("count_insert");
    sqlx::raw_sql(AssertSqlSafe(format!(
        "CREATE TABLE {counter} (n INT NOT NULL); INSERT INTO {counter} VALUES (0);
         CREATE FUNCTION {func}() RETURNS trigger LANGUAGE plpgsql AS
           $$ BEGIN UPDATE {counter} SET n = n + 1; RETURN NULL; END $$;
         CREATE TRIGGER count_insert AFTER INSERT ON {table} FOR EACH STATEMENT EXECUTE FUNCTION {func}();"
    )))
    .execute(&db.pool)
    .await
    .unwrap();

    let events: Vec<Event<1>> = (0..1000)
        .map(|i| Event {
            key: format!("k{}", i % 37),
            seq: i,
        })
        .collect();
    let mut tx = db.pool.begin().await.unwrap();
    let ids = outbox.publish_all(&mut *tx, &events).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(ids.len(), 1000);
    let statements: i32 = sqlx::query_scalar(AssertSqlSafe(format!("SELECT n FROM {counter}")))
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(statements, 1, "publish_all must write the batch in one statement");

    let store = outbox.store(db.pool.clone());
    let relay = start_relay(store.clone(), relay_config());
    drained(&store, Duration::from_secs(60)).await;
    relay.shutdown().await.unwrap();
    let records = read_all(&topics[1..2].to_vec()).await;
    let verdict = verify(&records);
    assert_eq!(
        (verdict.distinct, verdict.duplicates, verdict.order_violations),
        (1000, 0, 0)
    );
    let sent: std::collections::HashSet<String> = ids.iter().map(|id| id.to_string()).collect();
    let got: std::collections::HashSet<String> = records
        .iter()
        .map(|r| r.header(txoutbox::MESSAGE_ID_HEADER).unwrap().to_owned())
        .collect();
    assert_eq!(
        sent, got,
        "the ids publish_all returned are the ids consumers see"
    );
    db.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_stopped_mid_stream_and_started_again_loses_nothing() {
    const TOTAL: u64 = 20_000;
    let topics = three_new_topics("pg-restart").await;
    let (db, outbox) = setup(&topics).await;
    let events: Vec<Event<0>> = (0..TOTAL)
        .map(|i| Event {
            key: format!("k{}", i % 101),
            seq: i,
        })
        .collect();
    for chunk in events.chunks(2_000) {
        outbox.publish_all(&db.pool, chunk).await.unwrap();
    }
    let store = outbox.store(db.pool.clone());
    // Small batches, so the stop lands mid-stream.
    let config = relay_config().with_batch_size(100).with_max_in_flight(200);
    let relay = start_relay(store.clone(), config.clone());
    let started = txoutbox_testing::eventually(Duration::from_secs(60), || async {
        store.backlog().await.unwrap().pending < TOTAL - 2_000
    })
    .await;
    assert!(started, "the relay made no progress");
    relay.shutdown().await.unwrap();
    let left = store.backlog().await.unwrap().pending;
    assert!(
        left > 0,
        "the stop should land mid-stream (all {TOTAL} were already sent)"
    );

    let relay = start_relay(store.clone(), config);
    drained(&store, Duration::from_secs(120)).await;
    relay.shutdown().await.unwrap();
    let verdict = verify(&read_all(&topics[..1].to_vec()).await);
    assert_eq!(verdict.distinct as u64, TOTAL, "{verdict:?}");
    assert_eq!(verdict.order_violations, 0, "{verdict:?}");
    assert_eq!(
        verdict.duplicates, 0,
        "a graceful stop completes what Kafka acknowledged: {verdict:?}"
    );
    db.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_on_a_missing_table_stops_with_a_clear_error() {
    txoutbox_testing::init_tracing();
    let db = TestSchema::new().await;
    let outbox = PgOutbox::with_table(txoutbox::Topics::new(), db.table());
    let relay = start_relay(outbox.store(db.pool.clone()), relay_config());
    let err = tokio::time::timeout(Duration::from_secs(30), async {
        while !relay.is_finished() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        relay.shutdown().await
    })
    .await
    .expect("the relay should stop by itself")
    .unwrap_err();
    assert!(matches!(err, txoutbox::Error::SchemaNotReady { .. }), "{err}");
    assert!(err.to_string().contains("run the migrations"), "{err}");
    db.drop_schema().await;
}
