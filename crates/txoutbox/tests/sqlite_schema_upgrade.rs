//! The table contract's upgrade on SQLite: a version 2 table (with the status CHECK), created by version 2's own migrations and holding pending rows, is migrated to version
//! 3 while an application writes through other connections; then a relay sends everything:
//! nothing lost, nothing twice, every key in order, and the file passes `integrity_check`.
#![cfg(feature = "sqlite")]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::cases::three_new_topics;
use common::{Event, drained, relay_config, start_relay, three_topics, verify};
use txoutbox::Store;
use txoutbox::sqlite::SqliteOutbox;
use txoutbox_testing::kafka::read_all;
use txoutbox_testing::sqlite::TestDb;

/// Version 2's migrations as it applied them (the default table, no schema).
async fn create_version_2(db: &TestDb) {
    let render = |template: &str| {
        template
            .replace("{{table}}", "\"outbox_messages\"")
            .replace("{{schema_prefix}}", "")
            .replace("{{name}}", "outbox_messages")
    };
    let script = format!(
        "CREATE TABLE outbox_messages_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, \
           applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))); \
         {} {} \
         INSERT INTO outbox_messages_migrations (version, name) VALUES (1, 'outbox table'), (2, 'relay progress');",
        render(include_str!(
            "../../txoutbox-sqlite/migrations/0001_outbox_table.sql"
        )),
        render(include_str!(
            "../../txoutbox-sqlite/migrations/0002_relay_progress.sql"
        )),
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(script))
        .execute(&db.pool)
        .await
        .unwrap();
}

/// The table's definition and its indexes, as the schema table holds them.
async fn definition(pool: &sqlx::SqlitePool) -> (String, Vec<String>) {
    let table: String =
        sqlx::query_scalar("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'outbox_messages'")
            .fetch_one(pool)
            .await
            .unwrap();
    let indexes: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'outbox_messages' \
           AND sql IS NOT NULL ORDER BY name",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    (table, indexes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_2_table_upgrades_while_an_application_writes_and_nothing_is_lost_or_repeated() {
    txoutbox_testing::init_tracing();
    let topics = three_new_topics("lite-upgrade").await;
    let db = TestDb::new().await;
    create_version_2(&db).await;
    let outbox = SqliteOutbox::new(three_topics(&topics));
    let store = outbox.store(db.pool.clone());
    let err = store.check().await.unwrap_err();
    assert!(err.to_string().contains("schema version 2"), "{err}");
    let (before, indexes) = definition(&db.pool).await;
    assert!(
        before.contains("CHECK (status IN ('pending', 'published', 'dead'))"),
        "{before}"
    );
    assert!(
        indexes.contains(&"outbox_messages_pending".to_owned()),
        "{indexes:?}"
    );

    // An application writes single rows through its own pool (a connection that read the old
    // definition) before, during and after the upgrade.
    let app = TestDb::connect(&db.path, 2).await;
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writer = {
        let (app, outbox, stop, written) = (
            app.clone(),
            outbox.clone(),
            Arc::clone(&stop),
            Arc::clone(&written),
        );
        tokio::spawn(async move {
            let mut seq = 0;
            while !stop.load(Ordering::Relaxed) {
                let mut tx = app.begin().await.unwrap();
                for _ in 0..10 {
                    seq += 1;
                    let event = Event::<0> {
                        key: format!("key-{}", seq % 7),
                        seq,
                    };
                    outbox.publish(&mut *tx, &event).await.unwrap();
                }
                tx.commit().await.unwrap();
                written.fetch_add(10, Ordering::Relaxed);
            }
        })
    };
    let rows_written = |at_least| {
        let written = Arc::clone(&written);
        txoutbox_testing::eventually(Duration::from_secs(60), move || {
            let written = Arc::clone(&written);
            async move { written.load(Ordering::Relaxed) >= at_least }
        })
    };
    assert!(rows_written(1_000).await, "the writer made no progress");
    outbox.migrate(&db.pool).await.unwrap();
    store.check().await.unwrap();
    let so_far = written.load(Ordering::Relaxed);
    assert!(
        rows_written(so_far + 1_000).await,
        "the writer stopped after the upgrade"
    );
    // Migrating again changes nothing.
    outbox.migrate(&db.pool).await.unwrap();
    let relay = start_relay(store.clone(), relay_config());
    let so_far = written.load(Ordering::Relaxed);
    assert!(
        rows_written(so_far + 1_000).await,
        "the writer stopped beside the relay"
    );
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    drained(&store, Duration::from_secs(120)).await;
    relay.shutdown().await.unwrap();

    let total = written.load(Ordering::Relaxed);
    let verdict = verify(&read_all(&topics[..1]).await);
    eprintln!("{total} messages; {verdict:?}");
    assert_eq!(verdict.distinct as u64, total, "{verdict:?}");
    assert_eq!(verdict.duplicates, 0, "{verdict:?}");
    assert_eq!(verdict.order_violations, 0, "{verdict:?}");

    let (after, indexes) = definition(&db.pool).await;
    assert!(
        !after.contains("status IN"),
        "version 3 has no status CHECK: {after}"
    );
    assert!(
        after.contains("CHECK (topic <> '')"),
        "the other CHECKs stay: {after}"
    );
    assert!(
        after.contains("json_valid(headers)"),
        "the other CHECKs stay: {after}"
    );
    assert_eq!(
        indexes,
        vec![
            "outbox_messages_dead".to_owned(),
            "outbox_messages_pending".to_owned()
        ]
    );
    let integrity: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(integrity, "ok");
    // The application's connections read the new definition too: a status the CHECK refused is
    // taken now (only the relay writes status; the row is never sent).
    sqlx::query("INSERT INTO outbox_messages (topic, status) VALUES ('t', 'elsewhere')")
        .execute(&app)
        .await
        .unwrap();
    app.close().await;
}
