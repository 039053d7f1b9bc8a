//! Retention never holds a long lock and leaves pending and dead rows alone.
//!
//! A table holds many old published rows, interleaved with dead rows, pending rows that are
//! backing off, and recently published rows. While `Retention::purge_published` deletes the old
//! published rows batch by batch, writers keep committing (PostgreSQL: with a short
//! `lock_timeout`, so a writer that had to wait for a lock fails) and a relay (keeping rows,
//! `Completion::MarkPublished`) keeps marking what it delivers. Checked:
//! - every purge call deletes at most `batch` rows (counted independently, before and after);
//! - PostgreSQL: a monitor samples `pg_locks` throughout: no lock on the table stronger than
//!   `RowExclusiveLock`, and no session of this test waits for a lock; no writer hit its
//!   `lock_timeout`;
//! - the dead rows, the backing-off pending rows and the recent published rows are all still there,
//!   unchanged; every old published row is gone;
//! - every message the writers committed meanwhile reached Kafka (read back by a consumer).
//!
//! Purge durations and writer commit latencies are measured and printed, not asserted.
//! Light by default: 30,000 seeded rows. Larger: `TXOUTBOX_CHAOS_RETENTION_ROWS=1000000
//! TXOUTBOX_CHAOS_RETENTION_BATCH=5000 scripts/test.sh -p txoutbox-testing --test chaos_retention -- --nocapture`

mod chaos_common;

use std::collections::BTreeSet;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chaos_common::*;
use chrono::{TimeDelta, Utc};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use txoutbox_core::{Completion, Relay, RelayConfig, Retention, Store, Topic, Topics};
use txoutbox_kafka::{KafkaConfig, KafkaSink};
use txoutbox_postgres::PgOutbox;
use txoutbox_sqlite::SqliteOutbox;
use txoutbox_testing::kafka::{new_topic, read_all};
use txoutbox_testing::postgres::TestSchema;
use txoutbox_testing::sqlite::TestDb;

/// Seeded row kinds, by `id % 100`: 1 dead, 2 pending and backing off, 3 recently published, every
/// other one published two hours ago (purged).
const SEED_STATES_PG: &str = "status = CASE id % 100 WHEN 1 THEN 'dead' WHEN 2 THEN 'pending' ELSE 'published' END, \
     attempts = CASE id % 100 WHEN 1 THEN 10 WHEN 2 THEN 1 ELSE 0 END, \
     last_error = CASE id % 100 WHEN 1 THEN 'seeded dead' WHEN 2 THEN 'seeded retry' END, \
     next_attempt_at = CASE id % 100 WHEN 2 THEN now() + interval '1 day' END, \
     published_at = CASE id % 100 WHEN 1 THEN NULL WHEN 2 THEN NULL WHEN 3 THEN now() \
       ELSE now() - interval '2 hours' END";

/// The survivors' identity: id, status, attempts, last error (as text, for either database).
const SURVIVORS: &str = "SELECT id, status, attempts, coalesce(last_error, '') FROM {t} \
     WHERE status <> 'published' OR id % 100 = 3 ORDER BY id";

type Survivor = (i64, String, i32, String);

fn seeded_rows() -> u64 {
    env_number("TXOUTBOX_CHAOS_RETENTION_ROWS", 30_000)
}

fn purge_batch() -> usize {
    env_number("TXOUTBOX_CHAOS_RETENTION_BATCH", 1_000) as usize
}

/// Durations in ms: max and 99th percentile.
fn max_p99(mut ms: Vec<f64>) -> (f64, f64) {
    if ms.is_empty() {
        return (0.0, 0.0);
    }
    ms.sort_by(f64::total_cmp);
    let p99 = ms[((ms.len() as f64 * 0.99) as usize).min(ms.len() - 1)];
    (*ms.last().unwrap(), p99)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_purge_takes_no_strong_lock_blocks_nobody_and_spares_pending_and_dead_rows() {
    txoutbox_testing::init_tracing();
    let rows = seeded_rows();
    let batch = purge_batch();
    let topic = new_topic("chaos-retention-pg", 3).await;
    let db = TestSchema::new().await;
    let table = db.table().quoted();
    let topics = Topics::new()
        .with(Topic::<Event>::json(&topic).unwrap().key(|e| e.key.clone()))
        .unwrap();
    let outbox = PgOutbox::with_table(topics, db.table());
    outbox.migrate(&db.pool).await.unwrap();

    // Seed, before any relay runs: pending rows, then their final states in one statement.
    let seed_started = Instant::now();
    let mut n = 0;
    while n < rows {
        let chunk: Vec<Event> = (n..(n + 5_000).min(rows)).map(|n| event(n, 400)).collect();
        n += chunk.len() as u64;
        outbox.publish_all(&db.pool, &chunk).await.unwrap();
    }
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE {table} SET {SEED_STATES_PG}"
    )))
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("VACUUM ANALYZE {table}")))
        .execute(&db.pool)
        .await
        .unwrap();
    let survivors_sql = SURVIVORS.replace("{t}", &table);
    let survivors_before: Vec<Survivor> = sqlx::query_as(sqlx::AssertSqlSafe(survivors_sql.clone()))
        .fetch_all(&db.pool)
        .await
        .unwrap();
    let seed_time = seed_started.elapsed();

    // Every connection of this test carries this application name, so the monitor sees only us.
    let app = txoutbox_testing::unique("retention");
    let options = PgConnectOptions::from_str(&txoutbox_testing::postgres::url())
        .unwrap()
        .application_name(&app);
    // Writers wait at most 2 s for any lock, then fail: a wait that long would be a conflict.
    let writer_pool = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(options.clone().options([("lock_timeout", "2s")]))
        .await
        .unwrap();
    let relay_pool = PgPoolOptions::new()
        .max_connections(4)
        .connect_with(options.clone())
        .await
        .unwrap();
    let purge_pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options.clone())
        .await
        .unwrap();

    let relay = Relay::new(
        outbox.store(relay_pool.clone()),
        KafkaSink::new(&KafkaConfig::new(txoutbox_testing::kafka::bootstrap())).unwrap(),
        RelayConfig::default()
            .with_completion(Completion::MarkPublished)
            .with_poll_interval(Duration::from_millis(100)),
    )
    .unwrap()
    .start();

    // The monitor: samples the locks this test's sessions hold on the table, and any they wait for.
    let done = Arc::new(AtomicBool::new(false));
    let monitor = {
        let (pool, done, app, table) = (db.pool.clone(), Arc::clone(&done), app.clone(), table.clone());
        tokio::spawn(async move {
            let mut modes = BTreeSet::new();
            let mut waits = Vec::new();
            let mut notify_waits = 0u64;
            let mut samples = 0u64;
            let sql = format!(
                "SELECT l.mode, l.granted, l.locktype, coalesce(l.relation = '{}'::regclass, false), left(a.query, 80), \
                   (l.locktype = 'object' AND l.classid = 'pg_database'::regclass AND l.objid = 0) \
                 FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
                 WHERE a.application_name = $1 AND (l.relation = '{}'::regclass OR NOT l.granted)",
                table.replace('\'', "''"),
                table.replace('\'', "''")
            );
            while !done.load(Ordering::Acquire) {
                let locks: Vec<(String, bool, String, bool, String, bool)> =
                    sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()))
                        .bind(&app)
                        .fetch_all(&pool)
                        .await
                        .unwrap();
                samples += 1;
                for (mode, granted, locktype, on_table, query, notify_queue) in locks {
                    if on_table {
                        modes.insert(mode.clone());
                    }
                    if !granted && notify_queue {
                        // PostgreSQL serializes the commits of transactions that sent a NOTIFY
                        // (the outbox trigger does) on one lock: committers wait for each
                        // other there, not for the purge.
                        notify_waits += 1;
                    } else if !granted {
                        waits.push(format!("{locktype} {mode} by `{query}`"));
                    }
                }
                tokio::time::sleep(Duration::from_millis(2)).await; // sampling interval
            }
            (modes, waits, notify_waits, samples)
        })
    };

    // Writers: commit messages on their own keys until the purge is over.
    let written = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for w in 0..2u64 {
        let (pool, outbox, done, written) = (
            writer_pool.clone(),
            outbox.clone(),
            Arc::clone(&done),
            Arc::clone(&written),
        );
        writers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut lock_timeouts = 0u64;
            let mut seq = 0u64;
            while !done.load(Ordering::Acquire) {
                let events: Vec<Event> = (0..10)
                    .map(|i| Event {
                        key: format!("live-{w}-{i}"),
                        seq: seq + 1,
                    })
                    .collect();
                let t = Instant::now();
                let result = async {
                    let mut tx = pool.begin().await?;
                    outbox
                        .publish_all(&mut *tx, &events)
                        .await
                        .map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
                    tx.commit().await
                }
                .await;
                match result {
                    Ok(()) => {
                        seq += 1;
                        written.fetch_add(10, Ordering::Relaxed);
                        latencies.push(t.elapsed().as_secs_f64() * 1000.0);
                    }
                    Err(e) if e.as_database_error().and_then(|d| d.code()).as_deref() == Some("55P03") => {
                        lock_timeouts += 1;
                    }
                    Err(e) => panic!("writer failed: {e}"),
                }
                tokio::time::sleep(Duration::from_millis(5)).await; // a steady trickle of commits
            }
            (latencies, lock_timeouts)
        }));
    }

    // Purge, counting the old published rows independently before and after each call.
    let store = outbox.store(purge_pool.clone());
    let cutoff = Utc::now() - TimeDelta::hours(1);
    let count_old = format!("SELECT count(*) FROM {table} WHERE status = 'published' AND published_at < $1");
    let old_count = |pool: sqlx::PgPool| {
        let sql = count_old.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql))
                .bind(cutoff)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    let old_at_start = old_count(db.pool.clone()).await;
    let purge_started = Instant::now();
    let mut durations = Vec::new();
    let mut calls = 0u64;
    let mut purged = 0i64;
    let mut largest = 0i64;
    loop {
        let before = old_count(db.pool.clone()).await;
        let t = Instant::now();
        let n = store.purge_published(cutoff, batch).await.unwrap();
        durations.push(t.elapsed().as_secs_f64() * 1000.0);
        let after = old_count(db.pool.clone()).await;
        calls += 1;
        assert_eq!(
            before - after,
            n as i64,
            "call {calls}: the purge said {n}, the table lost {}",
            before - after
        );
        assert!(
            n as usize <= batch,
            "call {calls} deleted {n} rows, more than the batch of {batch}"
        );
        purged += n as i64;
        largest = largest.max(n as i64);
        if (n as usize) < batch {
            break;
        }
    }
    let purge_time = purge_started.elapsed();
    done.store(true, Ordering::Release);
    let (modes, waits, notify_waits, samples) = monitor.await.unwrap();
    let mut latencies = Vec::new();
    let mut lock_timeouts = 0;
    for w in writers {
        let (l, t) = w.await.unwrap();
        latencies.extend(l);
        lock_timeouts += t;
    }

    // What survived.
    let old_left = old_count(db.pool.clone()).await;
    let survivors_after: Vec<Survivor> = sqlx::query_as(sqlx::AssertSqlSafe(survivors_sql.clone()))
        .fetch_all(&db.pool)
        .await
        .unwrap();
    // Rows the writers added are not seeded: compare the seeded ids only.
    let max_seeded = survivors_before.last().map_or(0, |s| s.0).max(rows as i64);
    let after_seeded: Vec<Survivor> = survivors_after
        .into_iter()
        .filter(|s| s.0 <= max_seeded)
        .collect();

    // Everything the writers committed reaches Kafka (the relay kept working).
    let written = written.load(Ordering::Relaxed);
    let delivered = txoutbox_testing::eventually(Duration::from_secs(120), || async {
        store
            .backlog()
            .await
            .map(|b| b.pending == (rows / 100))
            .unwrap_or(false)
    })
    .await;
    relay.shutdown().await.unwrap();
    let records = read_all(std::slice::from_ref(&topic)).await;
    let live = records
        .iter()
        .filter(|r| r.key_str().starts_with("live-"))
        .count() as u64;
    let (max_purge, p99_purge) = max_p99(durations);
    let (max_write, p99_write) = max_p99(latencies);
    eprintln!(
        "retention (PostgreSQL): {rows} seeded rows ({old_at_start} old published) in {seed_time:.1?}; purged {purged} in {calls} calls of at most {batch} \
         (largest {largest}) in {purge_time:.1?}; purge statement max {max_purge:.1} ms, p99 {p99_purge:.1} ms; \
         lock modes on the table: {modes:?}; lock waits seen: {} in {samples} samples \
         (and {notify_waits} commits waiting for another's NOTIFY); writer lock timeouts: {lock_timeouts}; \
         writers committed {written} messages meanwhile, commit max {max_write:.1} ms, p99 {p99_write:.1} ms; {live} read back from Kafka",
        waits.len()
    );
    for w in waits.iter().take(5) {
        eprintln!("  waited: {w}");
    }
    assert_eq!(old_left, 0, "old published rows left behind");
    assert_eq!(purged, old_at_start);
    assert_eq!(
        after_seeded, survivors_before,
        "dead, pending or recent published rows changed"
    );
    let allowed = ["AccessShareLock", "RowShareLock", "RowExclusiveLock"];
    assert!(
        modes.iter().all(|m| allowed.contains(&m.as_str())),
        "a lock stronger than RowExclusiveLock was taken on the table: {modes:?}"
    );
    assert!(
        waits.iter().all(|w| w.starts_with("extend ")),
        "sessions waited for locks: {waits:?}"
    );
    assert_eq!(lock_timeouts, 0, "writers waited 2 s for a lock");
    assert!(delivered, "the relay did not deliver the writers' messages");
    assert_eq!(
        live as u64, written,
        "messages written during the purge missing in Kafka"
    );
    writer_pool.close().await;
    relay_pool.close().await;
    purge_pool.close().await;
    db.drop_schema().await;
}

/// SQLite has one writer at a time: each purge call holds the database's write lock for one short
/// statement. Checked: every call deletes at most `batch` rows, writers keep committing between
/// the calls, and dead, backing-off pending and recent published rows survive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_purge_deletes_bounded_batches_and_spares_pending_and_dead_rows() {
    txoutbox_testing::init_tracing();
    let rows = seeded_rows();
    let batch = purge_batch();
    let topic = new_topic("chaos-retention-sqlite", 3).await;
    let db = TestDb::new().await;
    let topics = Topics::new()
        .with(Topic::<Event>::json(&topic).unwrap().key(|e| e.key.clone()))
        .unwrap();
    let outbox = SqliteOutbox::new(topics);
    outbox.migrate(&db.pool).await.unwrap();
    let table = outbox.table().quoted();

    let mut n = 0;
    while n < rows {
        let chunk: Vec<Event> = (n..(n + 5_000).min(rows)).map(|n| event(n, 400)).collect();
        n += chunk.len() as u64;
        outbox.publish_all(&db.pool, &chunk).await.unwrap();
    }
    let now_ms = Utc::now().timestamp_millis();
    let two_hours = 2 * 3600 * 1000;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE {table} SET \
           status = CASE id % 100 WHEN 1 THEN 'dead' WHEN 2 THEN 'pending' ELSE 'published' END, \
           attempts = CASE id % 100 WHEN 1 THEN 10 WHEN 2 THEN 1 ELSE 0 END, \
           last_error = CASE id % 100 WHEN 1 THEN 'seeded dead' WHEN 2 THEN 'seeded retry' END, \
           next_attempt_at = CASE id % 100 WHEN 2 THEN {day_later} END, \
           published_at = CASE id % 100 WHEN 1 THEN NULL WHEN 2 THEN NULL WHEN 3 THEN {now_ms} ELSE {old} END",
        day_later = now_ms + 24 * 3600 * 1000,
        old = now_ms - two_hours,
    )))
    .execute(&db.pool)
    .await
    .unwrap();
    let survivors_sql = SURVIVORS.replace("{t}", &table);
    let survivors_before: Vec<Survivor> = sqlx::query_as(sqlx::AssertSqlSafe(survivors_sql.clone()))
        .fetch_all(&db.pool)
        .await
        .unwrap();

    let relay = Relay::new(
        outbox.store(TestDb::connect(&db.path, 2).await),
        KafkaSink::new(&KafkaConfig::new(txoutbox_testing::kafka::bootstrap())).unwrap(),
        RelayConfig::default()
            .with_completion(Completion::MarkPublished)
            .with_poll_interval(Duration::from_millis(100)),
    )
    .unwrap()
    .start();

    let done = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writer = {
        let (pool, outbox, done, written) = (
            TestDb::connect(&db.path, 1).await,
            outbox.clone(),
            Arc::clone(&done),
            Arc::clone(&written),
        );
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut seq = 0;
            while !done.load(Ordering::Acquire) {
                let events: Vec<Event> = (0..10)
                    .map(|i| Event {
                        key: format!("live-{i}"),
                        seq: seq + 1,
                    })
                    .collect();
                let t = Instant::now();
                let mut tx = pool.begin().await.unwrap();
                outbox.publish_all(&mut *tx, &events).await.unwrap();
                tx.commit().await.unwrap();
                seq += 1;
                written.fetch_add(10, Ordering::Relaxed);
                latencies.push(t.elapsed().as_secs_f64() * 1000.0);
                tokio::time::sleep(Duration::from_millis(5)).await; // a steady trickle of commits
            }
            latencies
        })
    };

    let store = outbox.store(TestDb::connect(&db.path, 1).await);
    let cutoff = Utc::now() - TimeDelta::hours(1);
    let count_old = format!(
        "SELECT count(*) FROM {table} WHERE status = 'published' AND published_at < {}",
        cutoff.timestamp_millis()
    );
    let old = || async {
        sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(count_old.clone()))
            .fetch_one(&db.pool)
            .await
            .unwrap()
    };
    let old_at_start = old().await;
    let started = Instant::now();
    let (mut calls, mut purged, mut durations) = (0u64, 0i64, Vec::new());
    loop {
        let before = old().await;
        let t = Instant::now();
        let n = store.purge_published(cutoff, batch).await.unwrap();
        durations.push(t.elapsed().as_secs_f64() * 1000.0);
        let after = old().await;
        calls += 1;
        assert_eq!(
            before - after,
            n as i64,
            "call {calls}: the purge said {n}, the table lost {}",
            before - after
        );
        assert!(
            n as usize <= batch,
            "call {calls} deleted {n} rows, more than the batch of {batch}"
        );
        purged += n as i64;
        if (n as usize) < batch {
            break;
        }
    }
    let purge_time = started.elapsed();
    done.store(true, Ordering::Release);
    let latencies = writer.await.unwrap();
    let written = written.load(Ordering::Relaxed);

    let survivors_after: Vec<Survivor> = sqlx::query_as(sqlx::AssertSqlSafe(survivors_sql))
        .fetch_all(&db.pool)
        .await
        .unwrap();
    let max_seeded = rows as i64;
    let after_seeded: Vec<Survivor> = survivors_after
        .into_iter()
        .filter(|s| s.0 <= max_seeded)
        .collect();
    let delivered = txoutbox_testing::eventually(Duration::from_secs(120), || async {
        store
            .backlog()
            .await
            .map(|b| b.pending == rows / 100)
            .unwrap_or(false)
    })
    .await;
    relay.shutdown().await.unwrap();
    let records = read_all(std::slice::from_ref(&topic)).await;
    let live = records
        .iter()
        .filter(|r| r.key_str().starts_with("live-"))
        .count() as u64;
    let (max_purge, p99_purge) = max_p99(durations);
    let (max_write, p99_write) = max_p99(latencies);
    eprintln!(
        "retention (SQLite): {rows} seeded rows ({old_at_start} old published); purged {purged} in {calls} calls of at most {batch} in {purge_time:.1?}; \
         purge statement max {max_purge:.1} ms, p99 {p99_purge:.1} ms; writers committed {written} messages meanwhile, \
         commit max {max_write:.1} ms, p99 {p99_write:.1} ms; {live} read back from Kafka"
    );
    assert_eq!(old().await, 0, "old published rows left behind");
    assert_eq!(purged, old_at_start);
    assert_eq!(
        after_seeded, survivors_before,
        "dead, pending or recent published rows changed"
    );
    assert!(delivered, "the relay did not deliver the writers' messages");
    assert_eq!(
        live, written,
        "messages written during the purge missing in Kafka"
    );
}
