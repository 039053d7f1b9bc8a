//! Rows written with plain SQL by applications in other languages, as the table contract allows.
#![cfg(all(feature = "postgres", feature = "sqlite"))]

mod common;

use std::time::Duration;

use common::{drained, relay_config, start_relay};
use sqlx::AssertSqlSafe;
use txoutbox::Store;
use txoutbox::postgres::PgOutbox;
use txoutbox::sqlite::SqliteOutbox;
use txoutbox_testing::kafka::{new_topic, read_all};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_inserted_with_plain_sql_on_postgres_reaches_kafka() {
    txoutbox_testing::init_tracing();
    let topic = new_topic("foreign-pg", 3).await;
    let db = txoutbox_testing::postgres::TestSchema::new().await;
    let outbox = PgOutbox::with_table(txoutbox::Topics::new(), db.table());
    outbox.migrate(&db.pool).await.unwrap();
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {} (topic, key, payload, headers) \
         VALUES ($1, convert_to('customer-7', 'UTF8'), convert_to('{{\"total\": 12}}', 'UTF8'), \
                 '{{\"z-first\": \"1\", \"a-second\": \"2\"}}')",
        outbox.table().quoted()
    )))
    .bind(&topic)
    .execute(&db.pool)
    .await
    .unwrap();

    let store = outbox.store(db.pool.clone());
    let relay = start_relay(store.clone(), relay_config());
    drained(&store, Duration::from_secs(30)).await;
    relay.shutdown().await.unwrap();
    let records = read_all(&[topic]).await;
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!((r.key_str(), r.payload_str()), ("customer-7", "{\"total\": 12}"));
    let names: Vec<&str> = r.headers.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        &names[..2],
        ["z-first", "a-second"],
        "headers keep the order they were written in"
    );
    assert_eq!(
        r.header(txoutbox::MESSAGE_ID_HEADER).map(str::len),
        Some(36),
        "a generated UUID"
    );
    db.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_that_breaks_the_contract_is_dead_lettered_and_the_others_flow() {
    txoutbox_testing::init_tracing();
    let topic = new_topic("foreign-lite", 1).await;
    let db = txoutbox_testing::sqlite::TestDb::new().await;
    let outbox = SqliteOutbox::new(txoutbox::Topics::new());
    outbox.migrate(&db.pool).await.unwrap();
    // Written by another application: a good row, one with an INTEGER key (SQLite accepts it,
    // the contract says BLOB or TEXT), and another good row after it.
    for key in ["'k1'", "42", "'k2'"] {
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO outbox_messages (topic, key, payload) VALUES (?1, {key}, CAST('p' AS BLOB))"
        )))
        .bind(&topic)
        .execute(&db.pool)
        .await
        .unwrap();
    }
    let store = outbox.store(db.pool.clone());
    let relay = start_relay(store.clone(), relay_config());
    drained(&store, Duration::from_secs(30)).await;
    relay.shutdown().await.unwrap();

    let keys: Vec<String> = read_all(&[topic])
        .await
        .iter()
        .map(|r| r.key_str().to_owned())
        .collect();
    assert_eq!(keys, ["k1", "k2"]);
    assert_eq!(store.backlog().await.unwrap().dead, 1);
    let (status, error): (String, String) =
        sqlx::query_as("SELECT status, last_error FROM outbox_messages WHERE typeof(key) = 'integer'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(status, "dead");
    assert!(error.contains("table contract"), "{error}");
}
