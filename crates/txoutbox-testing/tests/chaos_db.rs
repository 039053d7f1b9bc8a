//! PostgreSQL restarted in the middle of a run: the relay (its own process) keeps going while
//! writers commit messages with many keys; the database (a private cluster, so the tests sharing
//! the common one are not disturbed) is stopped (`pg_ctl stop -m fast`, then `-m immediate`), left
//! down, and started again. Writers retry their transactions (a failed commit is looked up by its
//! marker row, so nothing is written twice). The relay must reconnect by itself, its LISTEN
//! connection included. An independent consumer checks that nothing was lost and no key went
//! backwards, and counts the duplicates; the recovery times are measured and printed.
//!
//! Light by default (part of the test command): 5,000 messages, 2 restarts with 3 s down. The full
//! run: `TXOUTBOX_CHAOS_MESSAGES=100000 TXOUTBOX_CHAOS_DB_RESTARTS=4 TXOUTBOX_CHAOS_DB_DOWN_SECS=10 TXOUTBOX_CHAOS_DB_GAP_SECS=10 scripts/test.sh -p txoutbox-testing --test chaos_db -- --nocapture`

mod chaos_common;

use std::time::{Duration, Instant, SystemTime};

use chaos_common::*;
use sqlx::postgres::PgPoolOptions;
use txoutbox_core::{Store, TableName, Topic, Topics};
use txoutbox_postgres::PgOutbox;
use txoutbox_testing::instances::{PgCluster, PgStopMode};
use txoutbox_testing::kafka::{LOG_APPEND_TIME, bootstrap, new_topic_on};

/// What one restart measured.
struct Restart {
    mode: PgStopMode,
    down: Duration,
    back: SystemTime,
    pending_at_return: i64,
    /// Until every row committed before the restart was delivered and completed.
    caught_up: Duration,
    /// When the sentinel committed right after the return was committed (after the return).
    sentinel_committed: Duration,
    /// When the relay's LISTEN connection was back (after the return).
    listening_again: Duration,
    sentinel_key: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_restarted_mid_run_loses_nothing_and_the_relay_reconnects() {
    txoutbox_testing::init_tracing();
    let total = env_number("TXOUTBOX_CHAOS_MESSAGES", 5_000);
    let restarts = env_number("TXOUTBOX_CHAOS_DB_RESTARTS", 2);
    let down = Duration::from_secs(env_number("TXOUTBOX_CHAOS_DB_DOWN_SECS", 3));
    let gap = Duration::from_secs(env_number("TXOUTBOX_CHAOS_DB_GAP_SECS", 5));
    const KEYS: u64 = 400;
    const WRITERS: u64 = 4;

    let pg = PgCluster::start().await;
    let url = pg.url();
    // Short acquire timeout: while the database is down, writers fail fast and retry.
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(2))
        .connect(&url)
        .await
        .unwrap();
    sqlx::raw_sql("CREATE SCHEMA chaos").execute(&pool).await.unwrap();
    let table_name = TableName::with_schema("chaos", "outbox_messages").unwrap();
    let table = table_name.quoted();
    let topic = new_topic_on(&bootstrap(), "chaos-db", 3, &[LOG_APPEND_TIME]).await;
    let topics = Topics::new()
        .with(Topic::<Event>::json(&topic).unwrap().key(|e| e.key.clone()))
        .unwrap();
    let outbox = PgOutbox::with_table(topics, table_name);
    outbox.migrate(&pool).await.unwrap();
    outbox.set_push_wakeups(&pool, true).await.unwrap();
    let store = outbox.store(pool.clone());

    // A 60 s poll interval: after a restart, new messages reach the relay through its LISTEN
    // connection (re-established by itself; push wake-ups are on) or they wait up to a minute.
    let mut relay = spawn_relay(&[
        ("TXOUTBOX_CHAOS_SCHEMA", "chaos"),
        ("TXOUTBOX_POSTGRES_URL", &url),
        ("TXOUTBOX_CHAOS_POLL_MS", "60000"),
    ]);
    let listening = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN %' AND pid <> pg_backend_pid()",
        )
        .fetch_one(&pool)
        .await
        .is_ok_and(|n| n > 0)
    };
    assert!(
        txoutbox_testing::eventually(Duration::from_secs(60), listening).await,
        "the relay never LISTENed"
    );
    // The writes span the run: `gap` of writing before each restart, the downtimes, and a gap after.
    let plan = PgWriters {
        total,
        keys: KEYS,
        writers: WRITERS,
        per_tx: 20,
        spread: (gap + down) * (restarts as u32 + 1),
        markers: "chaos.batches".into(),
    };
    plan.create_markers(&pool).await;
    let writers = plan.spawn(&pool, &outbox);

    let mut measured = Vec::new();
    for i in 0..restarts {
        tokio::time::sleep(gap).await; // the moment of the restart, by design
        let mode = if i % 2 == 0 {
            PgStopMode::Fast
        } else {
            PgStopMode::Immediate
        };
        let stopping = Instant::now();
        pg.stop(mode).await;
        tokio::time::sleep(down).await; // the downtime itself
        pg.start_again().await;
        let down_for = stopping.elapsed();
        let back = SystemTime::now();
        let back_instant = Instant::now();
        // A message committed right after the return: how long until it is in Kafka.
        let sentinel_key = format!("sentinel-{i}");
        let sentinel = Event {
            key: sentinel_key.clone(),
            seq: 1,
        };
        let committed = txoutbox_testing::eventually(Duration::from_secs(60), || async {
            let Ok(mut tx) = pool.begin().await else {
                return false;
            };
            outbox.publish(&mut *tx, &sentinel).await.is_ok() && tx.commit().await.is_ok()
        })
        .await;
        assert!(committed, "could not commit the sentinel after the restart");
        let sentinel_committed = back_instant.elapsed();
        let (max_id_at_return, pending_at_return) = loop {
            let row = sqlx::query_as::<_, (i64, i64)>(sqlx::AssertSqlSafe(format!(
                "SELECT coalesce(max(id), 0), count(*) FILTER (WHERE status = 'pending') FROM {table}"
            )))
            .fetch_one(&pool)
            .await;
            match row {
                Ok(row) => break row,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await, // the pool reconnects
            }
        };
        let caught_up = txoutbox_testing::eventually(Duration::from_secs(300), || async {
            pending_up_to(&pool, &table, max_id_at_return).await == Some(0)
        })
        .await;
        let caught_up_after = back_instant.elapsed();
        assert!(
            caught_up,
            "the relay did not catch up within 300 s of the database's return (restart {i}): {:?}\nrelay alive: {:?}",
            store.backlog().await,
            relay.try_wait()
        );
        assert!(
            txoutbox_testing::eventually(Duration::from_secs(60), listening).await,
            "the relay did not LISTEN again within 60 s of the database's return (restart {i})"
        );
        let listening_again = back_instant.elapsed();
        measured.push(Restart {
            listening_again,
            mode,
            down: down_for,
            back,
            pending_at_return,
            caught_up: caught_up_after,
            sentinel_committed,
            sentinel_key,
        });
    }

    let stats = join_writers(writers).await;
    let drained = drains(&store, Duration::from_secs(300)).await;

    let expected = total + restarts; // the writers' messages and one sentinel per restart
    let (records, v) = stop_and_read_back(relay, drained, &store, &bootstrap(), &topic).await;
    eprintln!(
        "chaos db: {total} messages over {KEYS} keys + {restarts} sentinels, {restarts} restarts; \
         {} records read, {} distinct, {} lost, {} duplicates, {} order violations; \
         writers: {} commits, {} failed attempts, {} failed commits that had committed",
        v.records,
        v.distinct,
        expected as i64 - v.distinct as i64,
        v.duplicates,
        v.order_violations,
        stats.commits,
        stats.failed_attempts,
        stats.ambiguous_commits,
    );
    for (i, r) in measured.iter().enumerate() {
        let back_ms = epoch_ms(r.back);
        let first = first_append_since(&records, back_ms).map(|t| t - back_ms);
        let sentinel = append_time_of_key(&records, &r.sentinel_key).map(|t| t - back_ms);
        eprintln!(
            "  restart {i} (-m {:?}): down {:.1} s; {} pending at the return; first record stored {} after the return; \
             a message committed {:.1} s after the return stored {} after the return; rows committed before the return all delivered {:.1} s after it; LISTEN again (seen) {:.1} s after it",
            r.mode,
            r.down.as_secs_f64(),
            r.pending_at_return,
            first.map_or("never".into(), secs),
            r.sentinel_committed.as_secs_f64(),
            sentinel.map_or("never".into(), secs),
            r.caught_up.as_secs_f64(),
            r.listening_again.as_secs_f64(),
        );
    }
    print_violations(&records, &v);
    assert_eq!(v.distinct as u64, expected, "messages lost (or extra): {v:?}");
    assert_eq!(v.order_violations, 0, "{v:?}");
    pool.close().await;
    drop(pg);
}
