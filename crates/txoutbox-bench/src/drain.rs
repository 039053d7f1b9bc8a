//! Scenario `drain`: the relay with its default settings draining a backlog written just before
//! — a freshly filled table, as after a broker outage, never analyzed — against the raw producer
//! sending the same messages, round by round, on PostgreSQL, SQLite and MySQL / MariaDB.
//!
//! Each round measures the raw producer and then each store's relay, so that every ratio
//! compares figures taken minutes apart, not runs apart.

use std::time::{Duration, Instant};

use serde::Serialize;
use txoutbox::Topics;
use txoutbox::kafka::{KafkaConfig, KafkaSink};
use txoutbox::mysql::MySqlOutbox;
use txoutbox::postgres::PgOutbox;
use txoutbox::sqlite::SqliteOutbox;
use txoutbox::{RelayConfig, Store};
use txoutbox_testing::mysql::TestDatabase;
use txoutbox_testing::postgres::TestSchema;
use txoutbox_testing::sqlite::TestDb;

use crate::common::{BenchMsg, bootstrap, messages, topic_def, wait_quiet};
use crate::store_kind::Db;
use crate::throughput::{PREWRITE_CHUNK, drain, new_topic, raw_producer};

/// One store at one backlog size.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct StoreDrain {
    pub store: String,
    pub backlog: usize,
    /// The relay's messages per second, each round.
    pub msgs_per_sec: Vec<f64>,
    /// Relay / raw producer of the same round.
    pub ratio_to_raw: Vec<f64>,
    pub ratio_median: f64,
    pub ratio_worst: f64,
    /// Seconds the backlog took to write (one `publish_all` of 5,000 per transaction), each round.
    pub prewrite_seconds: Vec<f64>,
}

/// Every backlog size and store.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct DrainResult {
    pub rounds: usize,
    pub keys: usize,
    /// The raw producer's messages per second, per backlog size, each round.
    pub raw_msgs_per_sec: Vec<(usize, Vec<f64>)>,
    pub stores: Vec<StoreDrain>,
}

pub(crate) async fn run(
    backlogs: &[usize],
    rounds: usize,
    keys: usize,
    sqlite: bool,
    mysql: bool,
) -> DrainResult {
    let batch = RelayConfig::default().batch_size;
    let in_flight = RelayConfig::default().max_in_flight;
    let mut raws = Vec::new();
    let mut results = Vec::new();
    for &n in backlogs {
        let msgs = messages(n, keys);
        let stores = Db::selected(sqlite, mysql);
        let mut per_store: Vec<(Vec<f64>, Vec<f64>, Vec<f64>)> = vec![Default::default(); stores.len()];
        let mut raw_rates = Vec::new();
        for round in 0..rounds {
            let topic = new_topic().await;
            wait_quiet("drain", Duration::from_secs(30)).await;
            let raw = {
                let msgs = msgs.clone();
                tokio::task::spawn_blocking(move || raw_producer(&topic, &msgs))
                    .await
                    .unwrap()
            };
            eprintln!(
                "[drain] {n} round {}: raw {:.0} msg/s",
                round + 1,
                raw.msgs_per_sec
            );
            raw_rates.push(raw.msgs_per_sec);
            for (i, db) in stores.iter().enumerate() {
                let name = db.name();
                let (rate, prewrite) = match db {
                    Db::Postgres => postgres(&msgs, batch, in_flight).await,
                    Db::Sqlite => sqlite_run(&msgs, batch, in_flight).await,
                    Db::MySql => mysql_run(&msgs, batch, in_flight).await,
                };
                eprintln!(
                    "[drain] {n} round {}: {name} {rate:.0} msg/s ({:.2}x raw)",
                    round + 1,
                    rate / raw.msgs_per_sec
                );
                per_store[i].0.push(rate);
                per_store[i].1.push(rate / raw.msgs_per_sec);
                per_store[i].2.push(prewrite);
            }
        }
        for (db, (rates, ratios, prewrite)) in stores.into_iter().zip(per_store) {
            let mut sorted = ratios.clone();
            sorted.sort_by(f64::total_cmp);
            results.push(StoreDrain {
                store: db.name().into(),
                backlog: n,
                msgs_per_sec: rates,
                ratio_median: sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN),
                ratio_worst: sorted.first().copied().unwrap_or(f64::NAN),
                ratio_to_raw: ratios,
                prewrite_seconds: prewrite,
            });
        }
        raws.push((n, raw_rates));
    }
    DrainResult {
        rounds,
        keys,
        raw_msgs_per_sec: raws,
        stores: results,
    }
}

/// Drains `store` to a fresh topic; messages per second from the relay's first read.
async fn drain_to_kafka<S: Store + Clone>(store: S, n: usize, batch: usize, in_flight: usize) -> f64 {
    wait_quiet("drain", Duration::from_secs(30)).await;
    let sink = KafkaSink::new(&KafkaConfig::new(bootstrap())).expect("sink");
    let (seconds, timed_out, _) = drain(store, sink, n, batch, in_flight).await;
    assert!(!timed_out, "the relay did not drain {n} messages in time");
    n as f64 / seconds
}

async fn postgres(msgs: &[BenchMsg], batch: usize, in_flight: usize) -> (f64, f64) {
    let topic = new_topic().await;
    let schema = TestSchema::with_pool_size(4).await;
    let outbox = PgOutbox::with_table(Topics::new().with(topic_def(&topic)).unwrap(), schema.table());
    outbox.migrate(&schema.pool).await.expect("migrate");
    let started = Instant::now();
    for chunk in msgs.chunks(PREWRITE_CHUNK) {
        let mut tx = schema.pool.begin().await.unwrap();
        outbox.publish_all(&mut *tx, chunk).await.expect("publish_all");
        tx.commit().await.unwrap();
    }
    let prewrite = started.elapsed().as_secs_f64();
    // No VACUUM, no ANALYZE: the table as a backlog leaves it.
    let rate = drain_to_kafka(outbox.store(schema.pool.clone()), msgs.len(), batch, in_flight).await;
    schema.drop_schema().await;
    (rate, prewrite)
}

async fn sqlite_run(msgs: &[BenchMsg], batch: usize, in_flight: usize) -> (f64, f64) {
    let topic = new_topic().await;
    let db = TestDb::new().await;
    let outbox = SqliteOutbox::new(Topics::new().with(topic_def(&topic)).unwrap());
    outbox.migrate(&db.pool).await.expect("migrate");
    let started = Instant::now();
    for chunk in msgs.chunks(PREWRITE_CHUNK) {
        let mut tx = db.pool.begin().await.unwrap();
        outbox.publish_all(&mut *tx, chunk).await.expect("publish_all");
        tx.commit().await.unwrap();
    }
    let prewrite = started.elapsed().as_secs_f64();
    let rate = drain_to_kafka(outbox.store(db.pool.clone()), msgs.len(), batch, in_flight).await;
    (rate, prewrite)
}

async fn mysql_run(msgs: &[BenchMsg], batch: usize, in_flight: usize) -> (f64, f64) {
    let topic = new_topic().await;
    let db = TestDatabase::with_pool_size(4).await;
    let outbox = MySqlOutbox::with_table(Topics::new().with(topic_def(&topic)).unwrap(), db.table());
    outbox.migrate(&db.pool).await.expect("migrate");
    let started = Instant::now();
    for chunk in msgs.chunks(PREWRITE_CHUNK) {
        let mut tx = db.pool.begin().await.unwrap();
        outbox.publish_all(&mut tx, chunk).await.expect("publish_all");
        tx.commit().await.unwrap();
    }
    let prewrite = started.elapsed().as_secs_f64();
    let rate = drain_to_kafka(outbox.store(db.pool.clone()), msgs.len(), batch, in_flight).await;
    db.drop_database().await;
    (rate, prewrite)
}
