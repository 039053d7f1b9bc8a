//! Scenario `drain`: the relay with its default settings draining a backlog written just before
//! — a freshly filled table, as after a broker outage, never analyzed — against the raw producer
//! sending the same messages, round by round, on PostgreSQL, SQLite and MySQL / MariaDB.
//!
//! Each round measures the raw producer and then, on each store, a plain relay draining the same
//! backlog from a plain outbox table ([`crate::plain_table`]) and the relay, so that every ratio
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

use crate::common::{BenchMsg, bootstrap, median, messages, topic_def, wait_quiet};
use crate::plain_table::{self, PLAIN_TABLE};
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
    /// The plain relay's messages per second on the plain table, each round.
    pub plain_msgs_per_sec: Vec<f64>,
    /// Relay / plain relay of the same round.
    pub ratio_to_plain: Vec<f64>,
    pub ratio_to_plain_median: f64,
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
    postgres_too: bool,
    sqlite: bool,
    mysql: bool,
) -> DrainResult {
    let batch = RelayConfig::default().batch_size;
    let in_flight = RelayConfig::default().max_in_flight;
    let mut raws = Vec::new();
    let mut results = Vec::new();
    for &n in backlogs {
        let msgs = messages(n, keys);
        let stores = Db::selected(postgres_too, sqlite, mysql);
        let mut per_store: Vec<[Vec<f64>; 4]> = vec![Default::default(); stores.len()];
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
                let (rate, prewrite, plain) = match db {
                    Db::Postgres => postgres(&msgs, batch, in_flight).await,
                    Db::Sqlite => sqlite_run(&msgs, batch, in_flight).await,
                    Db::MySql => mysql_run(&msgs, batch, in_flight).await,
                };
                eprintln!(
                    "[drain] {n} round {}: {name} {rate:.0} msg/s ({:.2}x raw, {:.2}x the plain relay's {plain:.0})",
                    round + 1,
                    rate / raw.msgs_per_sec,
                    rate / plain
                );
                for (series, value) in
                    per_store[i]
                        .iter_mut()
                        .zip([rate, rate / raw.msgs_per_sec, prewrite, plain])
                {
                    series.push(value);
                }
            }
        }
        for (db, [rates, ratios, prewrite, plain]) in stores.into_iter().zip(per_store) {
            let to_plain: Vec<f64> = rates.iter().zip(&plain).map(|(r, p)| r / p).collect();
            results.push(StoreDrain {
                store: db.name().into(),
                backlog: n,
                ratio_to_plain_median: median(&to_plain),
                ratio_to_plain: to_plain,
                plain_msgs_per_sec: plain,
                msgs_per_sec: rates,
                ratio_median: median(&ratios),
                ratio_worst: ratios.iter().copied().fold(f64::NAN, f64::min),
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

/// The relay's rate, the backlog's write time and the plain relay's rate on PostgreSQL.
async fn postgres(msgs: &[BenchMsg], batch: usize, in_flight: usize) -> (f64, f64, f64) {
    let topic = new_topic().await;
    let schema = TestSchema::with_pool_size(4).await;
    let plain = schema.qualify(PLAIN_TABLE);
    let plain_rate = plain_table::postgres(&schema.pool, &plain, &new_topic().await, msgs).await;
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
    (rate, prewrite, plain_rate)
}

/// [`postgres`] on SQLite.
async fn sqlite_run(msgs: &[BenchMsg], batch: usize, in_flight: usize) -> (f64, f64, f64) {
    let topic = new_topic().await;
    let db = TestDb::new().await;
    let plain_rate = plain_table::sqlite(&db.pool, &new_topic().await, msgs).await;
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
    (rate, prewrite, plain_rate)
}

/// [`postgres`] on MySQL / MariaDB.
async fn mysql_run(msgs: &[BenchMsg], batch: usize, in_flight: usize) -> (f64, f64, f64) {
    let topic = new_topic().await;
    let db = TestDatabase::with_pool_size(4).await;
    let plain = db.qualify(PLAIN_TABLE);
    let plain_rate = plain_table::mysql(&db.pool, &plain, &new_topic().await, msgs).await;
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
    (rate, prewrite, plain_rate)
}
