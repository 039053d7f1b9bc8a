//! The table contract's online upgrade on PostgreSQL: a version 4 table (generated `bucket`
//! column, CHECKs, no read functions, three partial indexes, the wake-up trigger on) is migrated to
//! versions 5, 6 and 7 while applications keep writing, then a relay sends everything: nothing
//! lost, nothing twice, every key in order.
#![cfg(feature = "postgres")]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::cases::three_new_topics;
use common::{Event, drained, relay_config, start_relay, three_topics, verify};
use sqlx::AssertSqlSafe;
use txoutbox::Store;
use txoutbox::postgres::PgOutbox;
use txoutbox_testing::kafka::read_all;
use txoutbox_testing::postgres::TestSchema;

/// Puts a freshly migrated table back to version 4, as an earlier txoutbox left it.
async fn back_to_version_4(db: &TestSchema) {
    let table = db.qualify("outbox_messages");
    sqlx::raw_sql(AssertSqlSafe(format!(
        "ALTER TABLE {table} ADD COLUMN bucket INTEGER NOT NULL GENERATED ALWAYS AS ( \
           (hashtextextended(encode(coalesce(key, '\\x'::bytea), 'hex'), 0) & 63)::integer) STORED; \
         ALTER TABLE {table} ADD CONSTRAINT outbox_messages_topic_check CHECK (topic <> ''); \
         ALTER TABLE {table} ADD CONSTRAINT outbox_messages_status_check \
           CHECK (status IN ('pending', 'published', 'dead')); \
         DROP FUNCTION {after}; DROP FUNCTION {late}; DROP TABLE {progress}; \
         DROP INDEX {status_id}; DROP INDEX {xid}; \
         CREATE INDEX outbox_messages_pending ON {table} (id) WHERE status = 'pending'; \
         CREATE INDEX outbox_messages_pending_xid ON {table} (xid) WHERE status = 'pending'; \
         CREATE INDEX outbox_messages_dead ON {table} (id) WHERE status = 'dead'; \
         ALTER TABLE {table} ENABLE TRIGGER outbox_messages_notify; \
         DELETE FROM {migrations} WHERE version >= 5;",
        progress = db.qualify("outbox_messages_relay_progress"),
        status_id = db.qualify("outbox_messages_status_id"),
        xid = db.qualify("outbox_messages_xid"),
        after = db.qualify("outbox_messages_pending_after"),
        late = db.qualify("outbox_messages_pending_late"),
        migrations = db.qualify("outbox_messages_migrations"),
    )))
    .execute(&db.pool)
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_4_table_upgrades_while_applications_write_and_nothing_is_lost_or_repeated() {
    const WRITERS: u64 = 4;
    const KEYS_PER_WRITER: u64 = 5;
    txoutbox_testing::init_tracing();
    let topics = three_new_topics("pg-upgrade").await;
    let db = Arc::new(TestSchema::new().await);
    let outbox = PgOutbox::with_table(three_topics(&topics), db.table());
    outbox.migrate(&db.pool).await.unwrap();
    back_to_version_4(&db).await;
    let store = outbox.store(db.pool.clone());
    let err = store.check().await.unwrap_err();
    assert!(err.to_string().contains("schema version 4"), "{err}");

    // Writers commit transactions of ten messages until told to stop, and note their slowest.
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (db, outbox, stop, written) = (
                Arc::clone(&db),
                outbox.clone(),
                Arc::clone(&stop),
                Arc::clone(&written),
            );
            tokio::spawn(async move {
                let mut slowest = Duration::ZERO;
                let mut seq = 0;
                while !stop.load(Ordering::Relaxed) {
                    let batch: Vec<Event<0>> = (0..10)
                        .map(|j| {
                            seq += 1;
                            Event {
                                key: format!("key-{}", w + WRITERS * (j % KEYS_PER_WRITER)),
                                seq,
                            }
                        })
                        .collect();
                    let started = Instant::now();
                    let mut tx = db.pool.begin().await.unwrap();
                    outbox.publish_all(&mut *tx, &batch).await.unwrap();
                    tx.commit().await.unwrap();
                    slowest = slowest.max(started.elapsed());
                    written.fetch_add(10, Ordering::Relaxed);
                }
                slowest
            })
        })
        .collect();
    let rows_written = |at_least| {
        let written = Arc::clone(&written);
        txoutbox_testing::eventually(Duration::from_secs(60), move || {
            let written = Arc::clone(&written);
            async move { written.load(Ordering::Relaxed) >= at_least }
        })
    };
    assert!(rows_written(2_000).await, "the writers made no progress");

    // The upgrade, under the writers' load.
    let started = Instant::now();
    outbox.migrate(&db.pool).await.unwrap();
    let took = started.elapsed();
    store.check().await.unwrap();
    let relay = start_relay(store.clone(), relay_config());
    let so_far = written.load(Ordering::Relaxed);
    assert!(
        rows_written(so_far + 2_000).await,
        "the writers stopped after the upgrade"
    );
    // Migrating again while the relay runs changes nothing.
    outbox.migrate(&db.pool).await.unwrap();
    stop.store(true, Ordering::Relaxed);
    let mut slowest = Duration::ZERO;
    for w in writers {
        slowest = slowest.max(w.await.unwrap());
    }
    drained(&store, Duration::from_secs(120)).await;
    relay.shutdown().await.unwrap();

    let total = written.load(Ordering::Relaxed);
    let verdict = verify(&read_all(&topics[..1]).await);
    eprintln!("upgrade took {took:?}; {total} messages; slowest writer transaction {slowest:?}; {verdict:?}");
    assert_eq!(verdict.distinct as u64, total, "{verdict:?}");
    assert_eq!(verdict.duplicates, 0, "{verdict:?}");
    assert_eq!(verdict.order_violations, 0, "{verdict:?}");
    let (bucket_columns, checks): (i64, i64) = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT (SELECT count(*) FROM pg_attribute WHERE attrelid = '{t}'::regclass \
                   AND attname = 'bucket' AND NOT attisdropped), \
                (SELECT count(*) FROM pg_constraint WHERE conrelid = '{t}'::regclass AND contype = 'c')",
        t = db.qualify("outbox_messages")
    )))
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        (bucket_columns, checks),
        (0, 0),
        "version 5 has no bucket column and no CHECK"
    );
    let (indexes, push): (Vec<String>, bool) = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT (SELECT array_agg(indexrelid::regclass::text) FROM pg_index \
                   WHERE indrelid = '{t}'::regclass), \
                (SELECT tgenabled <> 'D' FROM pg_trigger WHERE tgrelid = '{t}'::regclass \
                   AND tgname = 'outbox_messages_notify')",
        t = db.qualify("outbox_messages")
    )))
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let mut indexes: Vec<&str> = indexes
        .iter()
        .map(|i| i.rsplit('.').next().unwrap_or(i))
        .collect();
    indexes.sort_unstable();
    assert_eq!(
        (indexes, push),
        (
            vec![
                "outbox_messages_pkey",
                "outbox_messages_status_id",
                "outbox_messages_xid"
            ],
            false
        ),
        "version 7 has two plain indexes instead of three partial ones, and the wake-up trigger off"
    );
    drop(outbox);
    drop(store);
    if let Ok(db) = Arc::try_unwrap(db) {
        db.drop_schema().await;
    }
}
