//! The store conformance suite on SQLite (each case in a fresh database file, the table in its
//! `main` schema), plus what only SQLite has.

use txoutbox_core::{Store, TableName};
use txoutbox_sqlite::SqliteOutbox;
use txoutbox_store_tests::sqlite::SqliteHarness;
use txoutbox_store_tests::{OrderCreated, topics};
use txoutbox_testing::sqlite::TestDb;

txoutbox_store_tests::store_conformance!(SqliteHarness);

/// Naming the `main` schema explicitly is the same table as naming none.
#[tokio::test]
async fn explicit_main_schema_is_the_default_table() {
    txoutbox_testing::init_tracing();
    let db = TestDb::new().await;
    let qualified = SqliteOutbox::with_table(
        topics(),
        TableName::with_schema("main", "outbox_messages").unwrap(),
    );
    let plain = SqliteOutbox::new(topics());
    qualified
        .migrate(&db.pool)
        .await
        .expect("migrate main.outbox_messages");
    plain.migrate(&db.pool).await.expect("migrate outbox_messages");
    plain.store(db.pool.clone()).check().await.expect("check");

    let id = qualified.publish(&db.pool, &OrderCreated::new(1)).await.unwrap();
    let pending = plain
        .store(db.pool.clone())
        .fetch_pending(txoutbox_core::ReadLimit::rows(10))
        .await
        .unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(&*pending[0].message_id, id.to_string());
    assert_eq!(pending[0].bucket, 0);
    db.pool.close().await;
}
