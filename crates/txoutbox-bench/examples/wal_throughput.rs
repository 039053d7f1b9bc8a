//! Relay throughput in PostgreSQL WAL mode beside the polling relay and the raw producer, in one
//! run against the same broker:
//!
//! ```sh
//! eval "$(scripts/services.sh env)"
//! cargo run --release -p txoutbox-bench --example wal_throughput -- [messages] [batch] [rounds]
//! ```
//!
//! Each relay drains a prewritten backlog of `messages` (default 200,000; 100-byte payloads,
//! 1,000 keys, 3 partitions) to a fresh topic; the WAL relay also runs exactly-once (Kafka
//! transactions, progress in WAL positions) and with a discarding sink (its own ceiling). Every
//! relay run is paired with a raw-producer run of the same messages just before it, and its ratio
//! taken against that run; `rounds` (default 5) rounds of all of them give per-round lines and
//! the medians. Then commit→ack latency of both relays with writers committing 500
//! single-message transactions per second for 10 s. Prints a JSON summary last: each figure
//! there is its own median over the rounds (`raw_msgs_per_sec` is that of the raw runs paired
//! with the WAL relay), so the rates and ratios need not come from one round; `per_round` has
//! them round by round.
//! `WAL_BENCH_PROFILE=wal` (or `poll`) runs only the raw producer and that relay (to profile it);
//! `WAL_BENCH_CPU=1` prints the CPU time each command used during every raw and relay run.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use tokio::sync::Notify;
use txoutbox::kafka::{ExactlyOnceSettings, ExactlyOnceSink, KafkaConfig, KafkaSink};
use txoutbox::postgres::PgOutbox;
use txoutbox::postgres_wal::{PgWalOutbox, WalConfig};
use txoutbox::{
    BatchDelivery, Completion, DeliveryTracker, Failure, OutboxMessage, Relay, RelayConfig, Sink, Store,
    Topic, Topics,
};
use txoutbox_testing::postgres::{TestSchema, url};

const KEYS: usize = 1_000;
const PAYLOAD: usize = 100;
const CHUNK: usize = 5_000;

struct Msg {
    key: String,
    payload: Vec<u8>,
}

fn topic_def(name: &str) -> Topic<Msg> {
    Topic::with_encoder(name, |m: &Msg| Ok(m.payload.clone()))
        .unwrap()
        .key(|m: &Msg| m.key.clone())
}

/// One round of the throughput runs: rates in msg/s, ratios against the raw run just before.
struct Round {
    raw: f64,
    polling: f64,
    polling_ratio: f64,
    wal: f64,
    wal_ratio: f64,
    exactly_once: f64,
    exactly_once_ratio: f64,
    discard: f64,
    polling_prewrite: f64,
    wal_prewrite: f64,
}

async fn new_raw_topic() -> String {
    txoutbox_testing::kafka::new_topic("bench-wal-raw", 3).await
}

/// Counts completed messages and wakes the waiter; with a probe, also records commit→ack times.
#[derive(Clone)]
struct Counting<S> {
    inner: S,
    done: Arc<AtomicU64>,
    notify: Arc<Notify>,
    probe: Option<Arc<Probe>>,
    /// When the relay first read: drains are timed from there, so a sink's start (the
    /// exactly-once fencing and progress read) is not counted, as in the main harness.
    first_read: Arc<std::sync::OnceLock<Instant>>,
}

/// Commit→ack latency: the writer notes when each message (by payload sequence number)
/// committed; the store wrapper maps the relay's ids to sequence numbers as it reads them and
/// takes the time when the relay completes them (after Kafka acknowledged them).
#[derive(Default)]
struct Probe {
    committed: std::sync::Mutex<std::collections::HashMap<u64, Instant>>,
    ids: std::sync::Mutex<std::collections::HashMap<i64, u64>>,
    acked: std::sync::Mutex<Vec<(u64, Instant)>>,
}

impl Probe {
    fn seen(&self, rows: &[OutboxMessage]) {
        let mut ids = self.ids.lock().unwrap();
        for r in rows {
            if let Some(seq) = r.payload.as_deref().and_then(seq_of) {
                ids.insert(r.id, seq);
            }
        }
    }

    fn completed(&self, done: &[i64]) {
        let now = Instant::now();
        let mut ids = self.ids.lock().unwrap();
        let mut acked = self.acked.lock().unwrap();
        acked.extend(done.iter().filter_map(|id| ids.remove(id)).map(|seq| (seq, now)));
    }

    /// (p50, p95, p99) in ms. An ack noted before its writer noted the commit (the relay can be
    /// that fast) counts as 0.
    fn percentiles(&self) -> (f64, f64, f64) {
        let committed = self.committed.lock().unwrap();
        let mut lat: Vec<u128> = self
            .acked
            .lock()
            .unwrap()
            .iter()
            .filter_map(|(seq, at)| {
                committed
                    .get(seq)
                    .map(|c| at.saturating_duration_since(*c).as_micros())
            })
            .collect();
        lat.sort_unstable();
        let p = |q: f64| {
            let i = ((lat.len() as f64 * q) as usize).min(lat.len().saturating_sub(1));
            lat.get(i).copied().unwrap_or(0) as f64 / 1000.0
        };
        (p(0.5), p(0.95), p(0.99))
    }
}

/// The sequence number at the start of a payload (`message-000000000042-xxx…`).
fn seq_of(payload: &[u8]) -> Option<u64> {
    std::str::from_utf8(payload.get(8..20)?).ok()?.parse().ok()
}

impl<S: Store> Store for Counting<S> {
    fn check(&self) -> impl Future<Output = txoutbox::Result<()>> + Send {
        self.inner.check()
    }
    fn lock_for_relay(&self) -> impl Future<Output = txoutbox::Result<()>> + Send {
        self.inner.lock_for_relay()
    }
    fn unlock_for_relay(&self) -> impl Future<Output = ()> + Send {
        self.inner.unlock_for_relay()
    }
    async fn fetch_pending(&self, limit: txoutbox::ReadLimit) -> txoutbox::Result<Vec<OutboxMessage>> {
        self.first_read.get_or_init(Instant::now);
        let rows = self.inner.fetch_pending(limit).await?;
        if let Some(p) = &self.probe {
            p.seen(&rows);
        }
        Ok(rows)
    }
    async fn fetch_after(
        &self,
        after: i64,
        limit: txoutbox::ReadLimit,
    ) -> txoutbox::Result<Vec<OutboxMessage>> {
        self.first_read.get_or_init(Instant::now);
        let rows = self.inner.fetch_after(after, limit).await?;
        if let Some(p) = &self.probe {
            p.seen(&rows);
        }
        Ok(rows)
    }
    async fn complete(&self, ids: &[i64], completion: Completion) -> txoutbox::Result<()> {
        self.inner.complete(ids, completion).await?;
        if let Some(p) = &self.probe {
            p.completed(ids);
        }
        self.done.fetch_add(ids.len() as u64, Ordering::AcqRel);
        self.notify.notify_one();
        Ok(())
    }
    fn record_failures(&self, failures: &[Failure]) -> impl Future<Output = txoutbox::Result<()>> + Send {
        self.inner.record_failures(failures)
    }
    fn backlog(&self) -> impl Future<Output = txoutbox::Result<txoutbox::Backlog>> + Send {
        self.inner.backlog()
    }
    fn watch(&self, wakeup: txoutbox::Wakeup) -> Option<tokio::task::JoinHandle<()>> {
        self.inner.watch(wakeup)
    }
    fn dead_keys(&self) -> impl Future<Output = txoutbox::Result<Vec<(String, Vec<u8>)>>> + Send {
        self.inner.dead_keys()
    }
    fn relay_awake(&self, awake: bool) -> impl Future<Output = txoutbox::Result<()>> + Send {
        self.inner.relay_awake(awake)
    }
    fn stream_positions(&self) -> Option<Arc<dyn txoutbox::StreamPositions>> {
        self.inner.stream_positions()
    }

    async fn progress_kept(&self, key: &str) -> txoutbox::Result<Option<bool>> {
        self.inner.progress_kept(key).await
    }

    async fn keep_progress(&self, key: &str) -> txoutbox::Result<()> {
        self.inner.keep_progress(key).await
    }

    fn metric_labels(&self) -> txoutbox::MetricLabels {
        self.inner.metric_labels()
    }
}

struct Discard;

impl Sink for Discard {
    async fn send_batch(&self, batch: Arc<[OutboxMessage]>) -> BatchDelivery {
        let tracker = DeliveryTracker::new(batch.len());
        for i in 0..batch.len() {
            tracker.complete(i, Ok(()));
        }
        tracker.delivery()
    }
}

/// Runs a relay until `n` messages are completed; returns the seconds it took.
async fn drain<S: Store + Clone, K: Sink>(store: S, sink: K, n: u64, batch: usize) -> f64 {
    drain_with(store, sink, n, batch, batch * 8).await
}

/// [`drain`] with `in_flight` messages in flight at most.
async fn drain_with<S: Store + Clone, K: Sink>(
    store: S,
    sink: K,
    n: u64,
    batch: usize,
    in_flight: usize,
) -> f64 {
    let counting = Counting {
        inner: store,
        done: Arc::new(AtomicU64::new(0)),
        notify: Arc::new(Notify::new()),
        probe: None,
        first_read: Arc::default(),
    };
    let config = RelayConfig::default()
        .with_batch_size(batch)
        .with_max_in_flight(in_flight)
        .with_poll_interval(Duration::from_secs(1));
    let cpu_before = CpuSplit::sample();
    let start = Instant::now();
    let relay = Relay::new(counting.clone(), sink, config).unwrap().start();
    while counting.done.load(Ordering::Acquire) < n {
        assert!(start.elapsed() < Duration::from_secs(300), "the relay timed out");
        let _ = tokio::time::timeout(Duration::from_millis(5), counting.notify.notified()).await;
    }
    let first_read = *counting.first_read.get().unwrap_or(&start);
    let seconds = first_read.elapsed().as_secs_f64();
    eprintln!("  (started in {} ms)", (first_read - start).as_millis());
    CpuSplit::sample().print_since(&cpu_before, "relay");
    relay.shutdown().await.unwrap();
    seconds
}

struct Acks(AtomicUsize);
impl rdkafka::ClientContext for Acks {}
impl ProducerContext for Acks {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        assert!(result.is_ok(), "raw produce failed");
        self.0.fetch_add(1, Ordering::AcqRel);
    }
}

/// CPU time per command (`/proc/<pid>/stat`, user + system), printed with `WAL_BENCH_CPU=1`:
/// how the machine's cores were shared during a run (the benchmark process, PostgreSQL, the
/// broker). Processes are told apart by pid and start time, so one that ends or starts during
/// the run counts only for its own time in it; times are in the kernel's 100 ticks per second
/// (`USER_HZ`, 100 on Linux).
struct CpuSplit(Option<(Instant, ProcessTimes)>);

/// CPU ticks and command name per process, keyed by pid and start time.
type ProcessTimes = std::collections::HashMap<(u32, u64), (String, u64)>;

impl CpuSplit {
    fn sample() -> Self {
        if std::env::var_os("WAL_BENCH_CPU").is_none() {
            return Self(None);
        }
        let mut processes = std::collections::HashMap::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            // Only the numbered entries: `self` and `thread-self` would count this process again.
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|name| name.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // pid (comm) state … utime stime … starttime: fields 14, 15 and 22 of the line, so
            // 12, 13 and 20 counted from the state after the comm (index 11, 12 and 19).
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
                continue;
            };
            let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
            let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
            // Kernel workers rename themselves by their current queue: one name for them all.
            let comm = &stat[open + 1..close];
            let comm = comm.split_once('/').map_or(comm, |(name, _)| name);
            processes.insert((pid, field(19)), (comm.to_owned(), field(11) + field(12)));
        }
        Self(Some((Instant::now(), processes)))
    }

    fn print_since(&self, before: &Self, what: &str) {
        let (Some((end, now)), Some((start, before))) = (&self.0, &before.0) else {
            return;
        };
        let mut by_name: std::collections::HashMap<&str, u64> = std::collections::HashMap::new();
        for (process, (comm, ticks)) in now {
            let earlier = before.get(process).map_or(0, |(_, t)| *t);
            *by_name.entry(comm.as_str()).or_insert(0) += ticks.saturating_sub(earlier);
        }
        let mut used: Vec<(u64, &str)> = by_name
            .into_iter()
            .map(|(comm, t)| (t, comm))
            .filter(|(t, _)| *t > 0)
            .collect();
        used.sort_unstable_by(|a, b| b.cmp(a));
        let split: Vec<String> = used
            .iter()
            .take(6)
            .map(|(t, comm)| format!("{comm} {:.2} s", *t as f64 / 100.0))
            .collect();
        let wall = (*end - *start).as_secs_f64();
        eprintln!("  CPU during the {what} run ({wall:.2} s): {}", split.join(", "));
    }
}

fn raw_producer(topic: &str, msgs: &[Msg]) -> f64 {
    let producer: ThreadedProducer<Acks> = ClientConfig::new()
        .set("bootstrap.servers", txoutbox_testing::kafka::bootstrap())
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("partitioner", "murmur2_random")
        .set("queue.buffering.max.messages", "1000000")
        .create_with_context(Acks(AtomicUsize::new(0)))
        .unwrap();
    let cpu_before = CpuSplit::sample();
    let start = Instant::now();
    for m in msgs {
        let id = uuid::Uuid::now_v7().to_string();
        let headers = rdkafka::message::OwnedHeaders::new()
            .insert(rdkafka::message::Header {
                key: txoutbox::MESSAGE_ID_HEADER,
                value: Some(id.as_bytes()),
            })
            .insert(rdkafka::message::Header {
                key: txoutbox::CREATED_AT_HEADER,
                value: Some(chrono::Utc::now().to_rfc3339().as_bytes()),
            });
        let mut record = BaseRecord::<[u8], [u8], ()>::to(topic)
            .key(m.key.as_bytes())
            .payload(m.payload.as_slice())
            .headers(headers);
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
    assert_eq!(producer.context().0.load(Ordering::Acquire), msgs.len());
    let seconds = start.elapsed().as_secs_f64();
    CpuSplit::sample().print_since(&cpu_before, "raw producer");
    seconds
}

async fn polling(msgs: &[Msg], batch: usize) -> (f64, f64) {
    let topic = txoutbox_testing::kafka::new_topic("bench-wal-poll", 3).await;
    let db = TestSchema::with_pool_size(4).await;
    let outbox = PgOutbox::with_table(Topics::new().with(topic_def(&topic)).unwrap(), db.table());
    outbox.migrate(&db.pool).await.unwrap();
    let t = Instant::now();
    for chunk in msgs.chunks(CHUNK) {
        let mut tx = db.pool.begin().await.unwrap();
        outbox.publish_all(&mut *tx, chunk).await.unwrap();
        tx.commit().await.unwrap();
    }
    let write = t.elapsed().as_secs_f64();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "VACUUM ANALYZE {}",
        db.table().quoted()
    )))
    .execute(&db.pool)
    .await
    .unwrap();
    let sink = KafkaSink::new(&KafkaConfig::new(txoutbox_testing::kafka::bootstrap())).unwrap();
    let secs = drain(outbox.store(db.pool.clone()), sink, msgs.len() as u64, batch).await;
    db.drop_schema().await;
    (write, secs)
}

/// Where the WAL relay sends.
#[derive(Clone, Copy)]
enum WalSink {
    Kafka,
    ExactlyOnce,
    Discard,
}

async fn wal(msgs: &[Msg], batch: usize, to: WalSink) -> (f64, f64) {
    let topic = txoutbox_testing::kafka::new_topic("bench-wal", 3).await;
    let db = TestSchema::with_pool_size(4).await;
    let config = WalConfig::default()
        .with_slot(txoutbox_testing::unique("bench_wal"))
        .with_dead_letter_table(db.table());
    let outbox = PgWalOutbox::new(Topics::new().with(topic_def(&topic)).unwrap(), config).unwrap();
    outbox.migrate(&db.pool).await.unwrap();
    let t = Instant::now();
    for chunk in msgs.chunks(CHUNK) {
        let mut tx = db.pool.begin().await.unwrap();
        outbox.publish_all(&mut *tx, chunk).await.unwrap();
        tx.commit().await.unwrap();
    }
    let write = t.elapsed().as_secs_f64();
    let store = outbox.store(db.pool.clone(), &url()).unwrap();
    let kafka = KafkaConfig::new(txoutbox_testing::kafka::bootstrap());
    let n = msgs.len() as u64;
    let secs = match to {
        WalSink::Kafka => drain(store.clone(), KafkaSink::new(&kafka).unwrap(), n, batch).await,
        WalSink::ExactlyOnce => {
            let settings = ExactlyOnceSettings::for_wal_slot(&txoutbox_testing::unique("bench_wal_eos"))
                .with_progress_topic(txoutbox_testing::unique("bench-wal-progress"))
                .with_create_progress_topic(true);
            let in_flight = (batch * 8).max(settings.recommended_max_in_flight());
            let sink = ExactlyOnceSink::new(&kafka, settings).unwrap();
            drain_with(store.clone(), sink, n, batch, in_flight).await
        }
        WalSink::Discard => drain(store.clone(), Discard, n, batch).await,
    };
    drop(store);
    for _ in 0..100 {
        if outbox.drop_slot(&db.pool).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    db.drop_schema().await;
    (write, secs)
}

/// The writer side of a latency run: `rate` single-message transactions per second for
/// `seconds`, each noted in the probe when its commit returned.
async fn write_at_rate<F, Fut>(probe: &Probe, rate: u64, seconds: u64, mut publish: F)
where
    F: FnMut(Msg) -> Fut,
    Fut: Future<Output = ()>,
{
    let n = rate * seconds;
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    for i in 0..n {
        tick.tick().await;
        let mut payload = format!("message-{i:012}-").into_bytes();
        payload.resize(PAYLOAD, b'x');
        publish(Msg {
            key: format!("key-{:04}", i as usize % KEYS),
            payload,
        })
        .await;
        probe.committed.lock().unwrap().insert(i, Instant::now());
    }
}

/// Runs a relay over `store` while writing at `rate`; returns (p50, p95, p99) commit→ack in ms.
async fn latency<S: Store + Clone, F, Fut>(store: S, rate: u64, seconds: u64, publish: F) -> (f64, f64, f64)
where
    F: FnMut(Msg) -> Fut,
    Fut: Future<Output = ()>,
{
    let probe = Arc::new(Probe::default());
    let counting = Counting {
        inner: store,
        done: Arc::new(AtomicU64::new(0)),
        notify: Arc::new(Notify::new()),
        probe: Some(Arc::clone(&probe)),
        first_read: Arc::default(),
    };
    let sink = KafkaSink::new(&KafkaConfig::new(txoutbox_testing::kafka::bootstrap())).unwrap();
    let relay = Relay::new(counting.clone(), sink, RelayConfig::default())
        .unwrap()
        .start();
    write_at_rate(&probe, rate, seconds, publish).await;
    let n = rate * seconds;
    let start = Instant::now();
    while counting.done.load(Ordering::Acquire) < n && start.elapsed() < Duration::from_secs(60) {
        let _ = tokio::time::timeout(Duration::from_millis(5), counting.notify.notified()).await;
    }
    relay.shutdown().await.unwrap();
    probe.percentiles()
}

async fn latency_polling(rate: u64, seconds: u64) -> (f64, f64, f64) {
    let topic = txoutbox_testing::kafka::new_topic("bench-wal-lat-poll", 3).await;
    let db = TestSchema::with_pool_size(4).await;
    let outbox = PgOutbox::with_table(Topics::new().with(topic_def(&topic)).unwrap(), db.table());
    outbox.migrate(&db.pool).await.unwrap();
    let store = outbox.store(db.pool.clone());
    let result = latency(store, rate, seconds, |m| {
        let (outbox, pool) = (outbox.clone(), db.pool.clone());
        async move {
            let mut tx = pool.begin().await.unwrap();
            outbox.publish(&mut *tx, &m).await.unwrap();
            tx.commit().await.unwrap();
        }
    })
    .await;
    db.drop_schema().await;
    result
}

async fn latency_wal(rate: u64, seconds: u64) -> (f64, f64, f64) {
    let topic = txoutbox_testing::kafka::new_topic("bench-wal-lat", 3).await;
    let db = TestSchema::with_pool_size(4).await;
    let config = WalConfig::default()
        .with_slot(txoutbox_testing::unique("bench_wal_lat"))
        .with_dead_letter_table(db.table());
    let outbox = PgWalOutbox::new(Topics::new().with(topic_def(&topic)).unwrap(), config).unwrap();
    outbox.migrate(&db.pool).await.unwrap();
    let store = outbox.store(db.pool.clone(), &url()).unwrap();
    let result = latency(store.clone(), rate, seconds, |m| {
        let (outbox, pool) = (outbox.clone(), db.pool.clone());
        async move {
            let mut tx = pool.begin().await.unwrap();
            outbox.publish(&mut *tx, &m).await.unwrap();
            tx.commit().await.unwrap();
        }
    })
    .await;
    drop(store);
    for _ in 0..100 {
        if outbox.drop_slot(&db.pool).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    db.drop_schema().await;
    result
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map_or(200_000, |a| a.parse().expect("messages"));
    let batch: usize = args.next().map_or(2_000, |a| a.parse().expect("batch"));
    let rounds_wanted: usize = args.next().map_or(5, |a| a.parse().expect("rounds")).max(1);
    let msgs: Vec<Msg> = (0..n)
        .map(|i| {
            let mut payload = format!("message-{i:012}-").into_bytes();
            payload.resize(PAYLOAD, b'x');
            Msg {
                key: format!("key-{:04}", i % KEYS),
                payload,
            }
        })
        .collect();
    // Warm the broker, then measure the raw producer.
    let warm = txoutbox_testing::kafka::new_topic("bench-wal-warm", 3).await;
    raw_producer(&warm, &msgs[..n.min(50_000)]);
    if let Ok(only) = std::env::var("WAL_BENCH_PROFILE") {
        let raw = raw_producer(&new_raw_topic().await, &msgs);
        // One relay to Kafka only, for a profiler: `poll`, or the WAL relay.
        let secs = if only == "poll" {
            polling(&msgs, batch).await.1
        } else {
            wal(&msgs, batch, WalSink::Kafka).await.1
        };
        println!("relay {:.0} msg/s, raw {:.0}", n as f64 / secs, n as f64 / raw);
        return;
    }
    let rate = |s: f64| n as f64 / s;
    // Each relay is paired with a raw-producer run just before it: the broker's speed drifts
    // by ±20 % over minutes on this machine, so ratios of runs far apart would measure the
    // drift. Medians over the rounds are the figures.
    let mut rounds = Vec::new();
    for round in 1..=rounds_wanted {
        let raw_poll = raw_producer(&new_raw_topic().await, &msgs);
        let (pw, poll) = polling(&msgs, batch).await;
        let raw_wal = raw_producer(&new_raw_topic().await, &msgs);
        let (ww, walk) = wal(&msgs, batch, WalSink::Kafka).await;
        let raw_eos = raw_producer(&new_raw_topic().await, &msgs);
        let (_, wale) = wal(&msgs, batch, WalSink::ExactlyOnce).await;
        let (_, wald) = wal(&msgs, batch, WalSink::Discard).await;
        let r = Round {
            raw: rate(raw_wal),
            polling: rate(poll),
            polling_ratio: raw_poll / poll,
            wal: rate(walk),
            wal_ratio: raw_wal / walk,
            exactly_once: rate(wale),
            exactly_once_ratio: raw_eos / wale,
            discard: rate(wald),
            polling_prewrite: rate(pw),
            wal_prewrite: rate(ww),
        };
        println!(
            "round {round}: raw {:.0}k msg/s | polling {:.0}k ({:.2}x its raw) | WAL {:.0}k ({:.2}x) | \
             WAL exactly-once {:.0}k ({:.2}x) | WAL discard {:.0}k",
            r.raw / 1e3,
            r.polling / 1e3,
            r.polling_ratio,
            r.wal / 1e3,
            r.wal_ratio,
            r.exactly_once / 1e3,
            r.exactly_once_ratio,
            r.discard / 1e3
        );
        rounds.push(r);
    }
    let median = |f: fn(&Round) -> f64| {
        let mut v: Vec<f64> = rounds.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (raw, poll, poll_ratio) = (
        median(|r| r.raw),
        median(|r| r.polling),
        median(|r| r.polling_ratio),
    );
    let (walk, wal_ratio) = (median(|r| r.wal), median(|r| r.wal_ratio));
    let (wale, eos_ratio) = (median(|r| r.exactly_once), median(|r| r.exactly_once_ratio));
    let wald = median(|r| r.discard);
    println!("medians over {rounds_wanted} rounds (each relay ÷ the raw run just before it):");
    println!("raw producer            {raw:>9.0} msg/s");
    println!("polling relay (pg)      {poll:>9.0} msg/s  ratio {poll_ratio:.2}");
    println!("WAL relay (pg)          {walk:>9.0} msg/s  ratio {wal_ratio:.2}");
    println!("WAL relay, exactly-once {wale:>9.0} msg/s  ratio {eos_ratio:.2}");
    println!("WAL relay, discard sink {wald:>9.0} msg/s");
    let (lat_rate, lat_secs) = (500, 10);
    let lp = latency_polling(lat_rate, lat_secs).await;
    println!(
        "commit→ack at {lat_rate}/s, polling relay: p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms",
        lp.0, lp.1, lp.2
    );
    let lw = latency_wal(lat_rate, lat_secs).await;
    println!(
        "commit→ack at {lat_rate}/s, WAL relay:     p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms",
        lw.0, lw.1, lw.2
    );
    println!(
        "{}",
        serde_json::json!({
            "messages": n, "batch": batch, "rounds": rounds_wanted, "raw_msgs_per_sec": raw,
            "polling_msgs_per_sec": poll, "polling_ratio": poll_ratio,
            "wal_msgs_per_sec": walk, "wal_ratio": wal_ratio,
            "wal_exactly_once_msgs_per_sec": wale, "wal_exactly_once_ratio": eos_ratio,
            "wal_discard_msgs_per_sec": wald,
            "polling_prewrite_msgs_per_sec": median(|r| r.polling_prewrite),
            "wal_prewrite_msgs_per_sec": median(|r| r.wal_prewrite),
            "per_round": rounds.iter().map(|r| serde_json::json!({
                "raw": r.raw, "polling": r.polling, "polling_ratio": r.polling_ratio,
                "wal": r.wal, "wal_ratio": r.wal_ratio, "exactly_once": r.exactly_once,
                "exactly_once_ratio": r.exactly_once_ratio, "discard": r.discard,
            })).collect::<Vec<_>>(),
            "latency_rate": lat_rate, "polling_latency_ms_p50_p95_p99": [lp.0, lp.1, lp.2],
            "wal_latency_ms_p50_p95_p99": [lw.0, lw.1, lw.2],
        })
    );
}
