//! The relay as its own process, killed with SIGKILL at random moments while writers commit
//! messages with many keys on PostgreSQL; an independent consumer checks that nothing was lost and
//! no key went backwards, and counts the duplicates.
//!
//! Light by default (part of the test command). The full run of the issue:
//! `TXOUTBOX_CHAOS_MESSAGES=100000 TXOUTBOX_CHAOS_KILLS=20 scripts/test.sh -p txoutbox-testing --test chaos_kill -- --nocapture`

mod chaos_common;

use std::time::{Duration, Instant};

use chaos_common::{RelayProcess, stop_relay};

use rand::Rng;
use serde::Serialize;
use txoutbox_core::{Store, Topic, Topics};
use txoutbox_postgres::PgOutbox;
use txoutbox_testing::kafka::{Record, new_topic, read_all, verdict};
use txoutbox_testing::postgres::TestSchema;

#[derive(Serialize)]
struct Event {
    key: String,
    seq: u64,
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn spawn_relay(schema: &str) -> RelayProcess {
    chaos_common::spawn_relay(&[("TXOUTBOX_CHAOS_SCHEMA", schema)])
}

fn key_seq(r: &Record) -> (String, u64) {
    let v: serde_json::Value = serde_json::from_slice(r.payload.as_deref().unwrap()).unwrap();
    (v["key"].as_str().unwrap().to_owned(), v["seq"].as_u64().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_relay_loses_nothing_and_keeps_key_order() {
    txoutbox_testing::init_tracing();
    let total = env_number("TXOUTBOX_CHAOS_MESSAGES", 20_000);
    let kills = env_number("TXOUTBOX_CHAOS_KILLS", 5);
    const KEYS: u64 = 400;
    const WRITERS: u64 = 4;

    let topic = new_topic("chaos-kill", 3).await;
    let db = TestSchema::new().await;
    let topics = Topics::new()
        .with(Topic::<Event>::json(&topic).unwrap().key(|e| e.key.clone()))
        .unwrap();
    let outbox = PgOutbox::with_table(topics, db.table());
    outbox.migrate(&db.pool).await.unwrap();
    let store = outbox.store(db.pool.clone());

    let mut relay = spawn_relay(&db.schema);
    let started = Instant::now();
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (pool, outbox) = (db.pool.clone(), outbox.clone());
        writers.push(tokio::spawn(async move {
            // Writer w owns the keys k with k % WRITERS == w: each key's writes are serialized.
            let mut seq = vec![0u64; KEYS as usize];
            let mut n = w;
            while n < total {
                let mut batch = Vec::new();
                while batch.len() < 20 && n < total {
                    let k = n % KEYS;
                    seq[k as usize] += 1;
                    batch.push(Event {
                        key: format!("key-{k}"),
                        seq: seq[k as usize],
                    });
                    n += WRITERS;
                }
                let mut tx = pool.begin().await.unwrap();
                outbox.publish_all(&mut *tx, &batch).await.unwrap();
                tx.commit().await.unwrap();
            }
        }));
    }

    // Kill the relay at random moments while the writers run, restarting it each time.
    let mut kill_times = Vec::new();
    for _ in 0..kills {
        let pause = rand::rng().random_range(100..700);
        tokio::time::sleep(Duration::from_millis(pause)).await; // a random moment, not a wait for a condition
        relay.kill().expect("SIGKILL the relay");
        relay.wait().unwrap();
        kill_times.push(started.elapsed());
        relay = spawn_relay(&db.schema);
    }
    for w in writers {
        w.await.unwrap();
    }
    let drained = txoutbox_testing::eventually(Duration::from_secs(180), || async {
        store.backlog().await.map(|b| b.pending == 0).unwrap_or(false)
    })
    .await;
    let drain_time = started.elapsed();
    // Graceful stop of the last relay.
    stop_relay(relay);
    assert!(
        drained,
        "the relay did not drain the outbox: {:?}",
        store.backlog().await
    );

    let records = read_all(std::slice::from_ref(&topic)).await;
    let v = verdict(&records, key_seq);
    eprintln!(
        "chaos kill -9: {total} messages, {kills} kills, {} records read, {} distinct, {} lost, \
         {} duplicates, {} order violations, drained after {drain_time:?} (kills at {kill_times:?})",
        v.records,
        v.distinct,
        total as usize - v.distinct.min(total as usize),
        v.duplicates,
        v.order_violations
    );
    for key in v.violating_keys.iter().take(3) {
        print_key(&records, key);
    }
    assert_eq!(v.distinct as u64, total, "messages lost: {v:?}");
    assert_eq!(v.order_violations, 0, "{v:?}");
    db.drop_schema().await;
}

/// For a failing run: one key's records in partition order, as `offset:seq`.
fn print_key(records: &[Record], key: &str) {
    let mut rs: Vec<(i64, u64)> = records
        .iter()
        .filter_map(|r| {
            let (k, seq) = key_seq(r);
            (k == key).then_some((r.offset, seq))
        })
        .collect();
    rs.sort();
    let seqs: Vec<String> = rs.iter().map(|(o, s)| format!("{o}:{s}")).collect();
    eprintln!("key {key} went backwards: offset:seq {}", seqs.join(" "));
}
