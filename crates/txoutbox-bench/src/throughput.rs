//! Scenario 1: raw producer vs. relay drain rate on PostgreSQL, SQLite and MySQL / MariaDB, plus
//! the relay's own ceiling with a discarding sink.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use serde::Serialize;
use txoutbox::kafka::{ExactlyOnceSettings, ExactlyOnceSink, KafkaConfig, KafkaSink};
use txoutbox::mysql::MySqlOutbox;
use txoutbox::postgres::PgOutbox;
use txoutbox::sqlite::SqliteOutbox;
use txoutbox::{CREATED_AT_HEADER, MESSAGE_ID_HEADER, Relay, RelayConfig, Sink, Store, Topics};
use txoutbox_testing::mysql::TestDatabase;
use txoutbox_testing::postgres::TestSchema;
use txoutbox_testing::sqlite::TestDb;

use crate::common::{
    BenchMsg, DiscardSink, Instrumented, StoreStats, StoreStatsReport, bootstrap, messages, producer_config,
    topic_def, wait_quiet,
};

/// Longest a relay run may take before it is reported as timed out.
const RUN_TIMEOUT: Duration = Duration::from_secs(180);
pub(crate) const PREWRITE_CHUNK: usize = 5_000;

#[derive(Debug, Clone, Serialize)]
pub(crate) struct RawResult {
    pub messages: usize,
    pub errors: usize,
    pub seconds: f64,
    pub msgs_per_sec: f64,
    pub cpu_busy_before: f64,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct RelayResult {
    pub store: String,
    pub sink: String,
    pub batch_size: usize,
    pub max_in_flight: usize,
    pub messages: usize,
    pub prewrite_seconds: f64,
    pub seconds: f64,
    pub msgs_per_sec: f64,
    pub ratio_to_raw: Option<f64>,
    pub timed_out: bool,
    pub pending_after: Option<u64>,
    pub records_in_topic: Option<i64>,
    pub store_stats: StoreStatsReport,
    /// CPU busy share (other work) just before timing began.
    pub cpu_busy_before: f64,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct ThroughputResult {
    pub messages: usize,
    pub keys: usize,
    pub partitions: i32,
    pub raw: RawResult,
    pub relays: Vec<RelayResult>,
}

struct CountCtx {
    target: usize,
    acked: AtomicUsize,
    errors: AtomicUsize,
    last: Mutex<Option<Instant>>,
}

impl ClientContext for CountCtx {}

impl ProducerContext for CountCtx {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if result.is_err() {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        if self.acked.fetch_add(1, Ordering::AcqRel) + 1 == self.target {
            *self.last.lock().unwrap() = Some(Instant::now());
        }
    }
}

/// Headers like the sink's: a message id and a creation time, so records are the same size.
pub(crate) fn sink_like_headers(id: &str) -> OwnedHeaders {
    let created = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    OwnedHeaders::new_with_capacity(2)
        .insert(Header {
            key: MESSAGE_ID_HEADER,
            value: Some(id.as_bytes()),
        })
        .insert(Header {
            key: CREATED_AT_HEADER,
            value: Some(created.as_bytes()),
        })
}

pub(crate) fn raw_producer(topic: &str, msgs: &[BenchMsg]) -> RawResult {
    let n = msgs.len();
    let producer: ThreadedProducer<CountCtx> = producer_config(&bootstrap())
        .create_with_context(CountCtx {
            target: n,
            acked: AtomicUsize::new(0),
            errors: AtomicUsize::new(0),
            last: Mutex::new(None),
        })
        .expect("producer");
    let start = Instant::now();
    for m in msgs {
        let id = uuid::Uuid::now_v7().to_string();
        let mut record = BaseRecord::<[u8], [u8], ()>::to(topic)
            .key(m.key.as_bytes())
            .payload(m.payload.as_slice())
            .headers(sink_like_headers(&id))
            .timestamp(chrono::Utc::now().timestamp_millis());
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, _)) => panic!("produce failed: {e}"),
            }
        }
    }
    let _ = producer.flush(Duration::from_secs(120));
    let ctx = producer.context();
    let end = ctx.last.lock().unwrap().unwrap_or_else(Instant::now);
    let seconds = (end - start).as_secs_f64();
    RawResult {
        messages: n,
        errors: ctx.errors.load(Ordering::Relaxed),
        seconds,
        msgs_per_sec: n as f64 / seconds,
        cpu_busy_before: 0.0,
    }
}

/// Runs a relay over `store` until every one of `n` rows is completed.
pub(crate) async fn drain<S: Store, K: Sink>(
    store: S,
    sink: K,
    n: usize,
    batch: usize,
    in_flight: usize,
) -> (f64, bool, Arc<StoreStats>) {
    let stats = Arc::new(StoreStats::default());
    let store = Instrumented {
        inner: store,
        stats: Arc::clone(&stats),
    };
    let config = RelayConfig::default()
        .with_batch_size(batch)
        .with_max_in_flight(in_flight)
        .with_poll_interval(Duration::from_secs(1));
    let start = Instant::now();
    let relay = Relay::new(store, sink, config).expect("relay config").start();
    let deadline = start + RUN_TIMEOUT;
    let mut timed_out = false;
    while (stats.completed.load(Ordering::Acquire) as usize) < n {
        if Instant::now() > deadline {
            timed_out = true;
            break;
        }
        let _ = tokio::time::timeout(Duration::from_millis(5), stats.done.notified()).await;
    }
    // The drain runs from the relay's first read: its start (creating producers, fencing older
    // transactions, reading the progress topic) is reported apart, as the raw producer's
    // creation is not timed either.
    let first_fetch = stats.first_fetch.get().copied().unwrap_or(start);
    stats
        .start_micros
        .store((first_fetch - start).as_micros() as u64, Ordering::Relaxed);
    let seconds = first_fetch.elapsed().as_secs_f64();
    if let Err(e) = relay.shutdown().await {
        eprintln!("relay stopped with an error: {e}");
    }
    (seconds, timed_out, stats)
}

pub(crate) async fn new_topic() -> String {
    txoutbox_testing::kafka::new_topic("bench-tp", 3).await
}

/// Where the PostgreSQL relay sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PgSink {
    /// At-least-once to Kafka.
    Kafka,
    /// Exactly-once to Kafka (transactions and progress records).
    ExactlyOnce,
    /// Nowhere: the relay's own ceiling.
    Discard,
}

impl PgSink {
    fn name(self) -> &'static str {
        match self {
            Self::Kafka => "kafka",
            Self::ExactlyOnce => "kafka-exactly-once",
            Self::Discard => "discard",
        }
    }
}

/// A fresh PostgreSQL outbox holding `msgs` on `topic` (one `publish_all` per
/// [`PREWRITE_CHUNK`]), settled as a backlog would be after a while (`VACUUM ANALYZE`: visibility
/// map and statistics), and the seconds the writes took.
pub(crate) async fn settled_postgres_backlog(topic: &str, msgs: &[BenchMsg]) -> (TestSchema, PgOutbox, f64) {
    let schema = TestSchema::with_pool_size(4).await;
    let outbox = PgOutbox::with_table(Topics::new().with(topic_def(topic)).unwrap(), schema.table());
    outbox.migrate(&schema.pool).await.expect("migrate");
    let t = Instant::now();
    for chunk in msgs.chunks(PREWRITE_CHUNK) {
        let mut tx = schema.pool.begin().await.unwrap();
        outbox.publish_all(&mut *tx, chunk).await.expect("publish_all");
        tx.commit().await.unwrap();
    }
    let prewrite_seconds = t.elapsed().as_secs_f64();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "VACUUM ANALYZE {}",
        schema.qualify("outbox_messages")
    )))
    .execute(&schema.pool)
    .await
    .unwrap();
    (schema, outbox, prewrite_seconds)
}

async fn relay_pg(msgs: &[BenchMsg], batch: usize, factor: usize, mode: PgSink, raw: f64) -> RelayResult {
    let kafka = mode != PgSink::Discard;
    let topic = new_topic().await;
    let (schema, outbox, prewrite_seconds) = settled_postgres_backlog(&topic, msgs).await;
    let store = outbox.store(schema.pool.clone());
    let progress_topic = txoutbox_testing::unique("bench-progress");
    let exactly_once = ExactlyOnceSettings::for_table(&schema.schema)
        .with_progress_topic(progress_topic)
        .with_create_progress_topic(true);
    // Each sink runs with the window it is meant to run with: the at-least-once one with the
    // scenario's, the exactly-once one with at least the window its settings recommend.
    let max_in_flight = match mode {
        PgSink::ExactlyOnce => (factor * batch).max(exactly_once.recommended_max_in_flight()),
        PgSink::Kafka | PgSink::Discard => factor * batch,
    };
    let cpu_busy_before = wait_quiet("throughput", Duration::from_secs(30)).await;
    let (seconds, timed_out, stats) = match mode {
        PgSink::Kafka => {
            let sink = KafkaSink::new(&KafkaConfig::new(bootstrap())).expect("sink");
            drain(store.clone(), sink, msgs.len(), batch, factor * batch).await
        }
        PgSink::ExactlyOnce => {
            let sink = ExactlyOnceSink::new(&KafkaConfig::new(bootstrap()), exactly_once).expect("sink");
            drain(store.clone(), sink, msgs.len(), batch, max_in_flight).await
        }
        PgSink::Discard => drain(store.clone(), DiscardSink, msgs.len(), batch, factor * batch).await,
    };
    let pending_after = store.backlog().await.ok().map(|b| b.pending);
    let records_in_topic = if kafka {
        Some(txoutbox_testing::kafka::count(&[topic]).await)
    } else {
        None
    };
    schema.drop_schema().await;
    let msgs_per_sec = msgs.len() as f64 / seconds;
    RelayResult {
        store: "postgres".into(),
        sink: mode.name().into(),
        batch_size: batch,
        max_in_flight,
        messages: msgs.len(),
        prewrite_seconds,
        seconds,
        msgs_per_sec,
        ratio_to_raw: kafka.then(|| msgs_per_sec / raw),
        timed_out,
        pending_after,
        records_in_topic,
        store_stats: stats.report(),
        cpu_busy_before,
    }
}

async fn relay_sqlite(msgs: &[BenchMsg], batch: usize, factor: usize, raw: f64) -> RelayResult {
    let topic = new_topic().await;
    let db = TestDb::new().await;
    let outbox = SqliteOutbox::new(Topics::new().with(topic_def(&topic)).unwrap());
    outbox.migrate(&db.pool).await.expect("migrate");
    let t = Instant::now();
    for chunk in msgs.chunks(PREWRITE_CHUNK) {
        let mut tx = db.pool.begin().await.unwrap();
        outbox.publish_all(&mut *tx, chunk).await.expect("publish_all");
        tx.commit().await.unwrap();
    }
    let prewrite_seconds = t.elapsed().as_secs_f64();
    sqlx::raw_sql("ANALYZE").execute(&db.pool).await.unwrap();
    let store = outbox.store(db.pool.clone());
    let cpu_busy_before = wait_quiet("throughput", Duration::from_secs(30)).await;
    let sink = KafkaSink::new(&KafkaConfig::new(bootstrap())).expect("sink");
    let (seconds, timed_out, stats) = drain(store.clone(), sink, msgs.len(), batch, factor * batch).await;
    let pending_after = store.backlog().await.ok().map(|b| b.pending);
    let records_in_topic = Some(txoutbox_testing::kafka::count(&[topic]).await);
    db.pool.close().await;
    drop(db);
    let msgs_per_sec = msgs.len() as f64 / seconds;
    RelayResult {
        store: "sqlite".into(),
        sink: "kafka".into(),
        batch_size: batch,
        max_in_flight: factor * batch,
        messages: msgs.len(),
        prewrite_seconds,
        seconds,
        msgs_per_sec,
        ratio_to_raw: Some(msgs_per_sec / raw),
        timed_out,
        pending_after,
        records_in_topic,
        store_stats: stats.report(),
        cpu_busy_before,
    }
}

async fn relay_mysql(msgs: &[BenchMsg], batch: usize, factor: usize, raw: f64) -> RelayResult {
    let topic = new_topic().await;
    let db = TestDatabase::with_pool_size(4).await;
    let outbox = MySqlOutbox::with_table(Topics::new().with(topic_def(&topic)).unwrap(), db.table());
    outbox.migrate(&db.pool).await.expect("migrate");
    let t = Instant::now();
    for chunk in msgs.chunks(PREWRITE_CHUNK) {
        let mut tx = db.pool.begin().await.unwrap();
        outbox.publish_all(&mut tx, chunk).await.expect("publish_all");
        tx.commit().await.unwrap();
    }
    let prewrite_seconds = t.elapsed().as_secs_f64();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "ANALYZE TABLE {}",
        db.qualify("outbox_messages")
    )))
    .execute(&db.pool)
    .await
    .unwrap();
    let store = outbox.store(db.pool.clone());
    let cpu_busy_before = wait_quiet("throughput", Duration::from_secs(30)).await;
    let sink = KafkaSink::new(&KafkaConfig::new(bootstrap())).expect("sink");
    let (seconds, timed_out, stats) = drain(store.clone(), sink, msgs.len(), batch, factor * batch).await;
    let pending_after = store.backlog().await.ok().map(|b| b.pending);
    let records_in_topic = Some(txoutbox_testing::kafka::count(&[topic]).await);
    drop(store);
    db.drop_database().await;
    let msgs_per_sec = msgs.len() as f64 / seconds;
    RelayResult {
        store: "mysql".into(),
        sink: "kafka".into(),
        batch_size: batch,
        max_in_flight: factor * batch,
        messages: msgs.len(),
        prewrite_seconds,
        seconds,
        msgs_per_sec,
        ratio_to_raw: Some(msgs_per_sec / raw),
        timed_out,
        pending_after,
        records_in_topic,
        store_stats: stats.report(),
        cpu_busy_before,
    }
}

pub(crate) async fn run(
    n: usize,
    keys: usize,
    batch_sizes: &[usize],
    factor: usize,
    sqlite: bool,
    mysql: bool,
) -> ThroughputResult {
    let msgs = messages(n, keys);
    let topic = new_topic().await;
    eprintln!("[throughput] raw producer, {n} messages ...");
    let busy = wait_quiet("throughput", Duration::from_secs(30)).await;
    let mut raw = {
        let msgs = msgs.clone();
        tokio::task::spawn_blocking(move || raw_producer(&topic, &msgs))
            .await
            .unwrap()
    };
    raw.cpu_busy_before = busy;
    eprintln!("[throughput] raw: {:.0} msg/s", raw.msgs_per_sec);
    let mut relays = Vec::new();
    for &batch in batch_sizes {
        for mode in [PgSink::Kafka, PgSink::ExactlyOnce, PgSink::Discard] {
            eprintln!(
                "[throughput] postgres relay, batch {batch}, sink {} ...",
                mode.name()
            );
            let r = relay_pg(&msgs, batch, factor, mode, raw.msgs_per_sec).await;
            eprintln!("[throughput]   {:.0} msg/s ({:.2} s)", r.msgs_per_sec, r.seconds);
            relays.push(r);
        }
        if sqlite {
            eprintln!("[throughput] sqlite relay, batch {batch} ...");
            let r = relay_sqlite(&msgs, batch, factor, raw.msgs_per_sec).await;
            eprintln!("[throughput]   {:.0} msg/s ({:.2} s)", r.msgs_per_sec, r.seconds);
            relays.push(r);
        }
        if mysql {
            eprintln!("[throughput] mysql relay, batch {batch} ...");
            let r = relay_mysql(&msgs, batch, factor, raw.msgs_per_sec).await;
            eprintln!("[throughput]   {:.0} msg/s ({:.2} s)", r.msgs_per_sec, r.seconds);
            relays.push(r);
        }
    }
    ThroughputResult {
        messages: n,
        keys,
        partitions: 3,
        raw,
        relays,
    }
}
