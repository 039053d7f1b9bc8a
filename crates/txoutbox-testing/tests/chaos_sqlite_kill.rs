//! The relay as its own process on a SQLite file, killed with SIGKILL at random moments while
//! this test process commits messages with many keys to the same file; an independent consumer
//! checks that nothing was lost and no key went backwards, and counts the duplicates.
//!
//! SQLite has one writer at a time, so one writer task commits here (the relay process is the
//! other writer of the file: its deletes).
//!
//! Light by default (part of the test command): 10,000 messages, 5 kills. The full run:
//! `TXOUTBOX_CHAOS_MESSAGES=100000 TXOUTBOX_CHAOS_KILLS=20 scripts/test.sh -p txoutbox-testing --test chaos_sqlite_kill -- --nocapture`

mod chaos_common;

use std::time::{Duration, Instant};

use chaos_common::*;
use rand::Rng;
use txoutbox_core::{Store, Topic, Topics};
use txoutbox_sqlite::SqliteOutbox;
use txoutbox_testing::kafka::{new_topic, read_all, verdict};
use txoutbox_testing::sqlite::TestDb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_relay_on_sqlite_loses_nothing_and_keeps_key_order() {
    txoutbox_testing::init_tracing();
    let total = env_number("TXOUTBOX_CHAOS_MESSAGES", 10_000);
    let kills = env_number("TXOUTBOX_CHAOS_KILLS", 5);
    const KEYS: u64 = 400;

    let topic = new_topic("chaos-sqlite-kill", 3).await;
    let db = TestDb::new().await;
    let topics = Topics::new()
        .with(Topic::<Event>::json(&topic).unwrap().key(|e| e.key.clone()))
        .unwrap();
    let outbox = SqliteOutbox::new(topics);
    outbox.migrate(&db.pool).await.unwrap();
    let store = outbox.store(db.pool.clone());
    let path = db.path.display().to_string();
    let relay_env = [
        ("TXOUTBOX_CHAOS_STORE", "sqlite"),
        ("TXOUTBOX_CHAOS_SQLITE", path.as_str()),
    ];

    let mut relay = spawn_relay(&relay_env);
    let started = Instant::now();
    // The writes are spread over the time the kills take (0.1–0.7 s apart), so every kill lands
    // while messages are still being written (faster when the writer cannot keep up).
    let spread = Duration::from_millis(400 * kills + 500);
    let writer = {
        let (pool, outbox) = (db.pool.clone(), outbox.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while n < total {
                let due = started + spread.mul_f64(n as f64 / total as f64);
                tokio::time::sleep_until(due.into()).await; // pacing
                let batch: Vec<Event> = (n..(n + 20).min(total)).map(|n| event(n, KEYS)).collect();
                n += batch.len() as u64;
                let mut tx = pool.begin().await.unwrap();
                outbox.publish_all(&mut *tx, &batch).await.unwrap();
                tx.commit().await.unwrap();
            }
        })
    };

    // Kill the relay at random moments while the writer runs, restarting it each time.
    let mut kill_times = Vec::new();
    for _ in 0..kills {
        let pause = rand::rng().random_range(100..700);
        tokio::time::sleep(Duration::from_millis(pause)).await; // a random moment, not a wait for a condition
        relay.kill().expect("SIGKILL the relay");
        relay.wait().unwrap();
        kill_times.push(started.elapsed());
        relay = spawn_relay(&relay_env);
    }
    writer.await.unwrap();
    let written = started.elapsed();
    let drained = txoutbox_testing::eventually(Duration::from_secs(180), || async {
        store.backlog().await.map(|b| b.pending == 0).unwrap_or(false)
    })
    .await;
    let drain_time = started.elapsed();
    stop_relay(relay);
    assert!(
        drained,
        "the relay did not drain the outbox: {:?}",
        store.backlog().await
    );

    let records = read_all(std::slice::from_ref(&topic)).await;
    let v = verdict(&records, key_seq);
    eprintln!(
        "chaos kill -9 (SQLite): {total} messages over {KEYS} keys, {kills} kills, {} records read, {} distinct, {} lost, \
         {} duplicates, {} order violations, written in {written:.1?}, drained after {drain_time:.1?} (kills at {kill_times:.1?})",
        v.records,
        v.distinct,
        total as i64 - v.distinct as i64,
        v.duplicates,
        v.order_violations
    );
    print_violations(&records, &v);
    assert_eq!(v.distinct as u64, total, "messages lost: {v:?}");
    assert_eq!(v.order_violations, 0, "{v:?}");
}
