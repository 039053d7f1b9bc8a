//! SQLite supports one relay per table and database file, and enforces it.
#![cfg(feature = "sqlite")]

mod common;

use common::{kafka_sink, relay_config};
use txoutbox::sqlite::SqliteOutbox;
use txoutbox::{Relay, Topics};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_relay_on_the_same_sqlite_outbox_is_refused_until_the_first_stops() {
    let db = txoutbox_testing::sqlite::TestDb::new().await;
    let outbox = SqliteOutbox::new(Topics::new());
    outbox.migrate(&db.pool).await.unwrap();

    let first = Relay::new(outbox.store(db.pool.clone()), kafka_sink(), relay_config()).unwrap();
    let monitor = first.monitor();
    let first = first.start();
    assert!(
        txoutbox_testing::eventually(std::time::Duration::from_secs(10), || async {
            monitor.store() == txoutbox::Condition::Ok
        })
        .await,
        "the first relay never started"
    );
    // A second process would open its own pool; a second store over the same file is the same.
    let pool = txoutbox_testing::sqlite::TestDb::connect(&db.path, 2).await;
    let second = Relay::new(outbox.store(pool), kafka_sink(), relay_config()).unwrap();
    let error = second.start().shutdown().await.unwrap_err();
    assert!(
        error
            .to_string()
            .contains("another relay already runs on this SQLite outbox"),
        "{error}"
    );

    first.shutdown().await.unwrap();
    let third = Relay::new(outbox.store(db.pool.clone()), kafka_sink(), relay_config())
        .unwrap()
        .start();
    tokio::task::yield_now().await;
    third.shutdown().await.unwrap();
}
