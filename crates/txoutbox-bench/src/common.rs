//! Shared pieces: the benchmark message, producer settings, statistics, instrumented store,
//! discarding sink, an independent consumer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;
use tokio::sync::Notify;
use txoutbox::coordination::{Claimed, LeaseInfo, Leases, LiveNode, Ownership};
use txoutbox::{
    Backlog, BatchDelivery, Completion, DeliveryTracker, Failure, OutboxMessage, Sink, Store, Topic,
};

/// Payload size of every benchmark message.
pub(crate) const PAYLOAD_BYTES: usize = 100;

/// A benchmark message: a key among `keys` distinct ones and a 100-byte payload.
#[derive(Debug, Clone)]
pub(crate) struct BenchMsg {
    pub key: String,
    pub payload: Vec<u8>,
}

/// `n` messages cycling over `keys` keys.
pub(crate) fn messages(n: usize, keys: usize) -> Vec<BenchMsg> {
    (0..n)
        .map(|i| {
            let mut payload = format!("message-{i:012}-").into_bytes();
            payload.resize(PAYLOAD_BYTES, b'x');
            BenchMsg {
                key: format!("key-{:04}", i % keys),
                payload,
            }
        })
        .collect()
}

/// The topic definition of [`BenchMsg`]: raw payload bytes, keyed.
pub(crate) fn topic_def(name: &str) -> Topic<BenchMsg> {
    Topic::with_encoder(name, |m: &BenchMsg| Ok(m.payload.clone()))
        .expect("valid topic name")
        .key(|m: &BenchMsg| m.key.clone())
}

/// The properties `KafkaSink` uses by default (txoutbox-kafka `config.rs` DEFAULTS).
pub(crate) fn producer_config(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("client.id", "txoutbox-bench-raw")
        .set("partitioner", "murmur2_random")
        .set("queue.buffering.max.messages", "1000000");
    c
}

/// The median of the values that are numbers (the upper one of an even count); NaN if none.
pub(crate) fn median(values: &[f64]) -> f64 {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Percentiles of a set of durations, in microseconds.
#[derive(Debug, Clone, Serialize, Default)]
pub(crate) struct Percentiles {
    pub count: usize,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p95_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
}

pub(crate) fn percentiles(samples: &[Duration]) -> Percentiles {
    if samples.is_empty() {
        return Percentiles::default();
    }
    let mut us: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e6).collect();
    us.sort_by(f64::total_cmp);
    let at = |q: f64| us[((us.len() as f64 - 1.0) * q).round() as usize];
    Percentiles {
        count: us.len(),
        mean_us: us.iter().sum::<f64>() / us.len() as f64,
        p50_us: at(0.50),
        p95_us: at(0.95),
        p99_us: at(0.99),
        max_us: *us.last().unwrap(),
    }
}

/// Time and rows spent in the store's relay statements during a run.
#[derive(Debug, Default)]
pub(crate) struct StoreStats {
    pub completed: AtomicU64,
    pub fetch_calls: AtomicU64,
    pub fetch_rows: AtomicU64,
    pub fetch_nanos: AtomicU64,
    pub complete_calls: AtomicU64,
    pub complete_nanos: AtomicU64,
    pub done: Notify,
    /// When the relay first read the store: its start (sink recovery included) is over.
    pub first_fetch: std::sync::OnceLock<Instant>,
    /// Relay start to its first read, in microseconds (set by the runner).
    pub start_micros: AtomicU64,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct StoreStatsReport {
    pub fetch_calls: u64,
    pub fetch_rows: u64,
    pub fetch_total_ms: f64,
    pub fetch_mean_ms: f64,
    pub complete_calls: u64,
    pub complete_total_ms: f64,
    pub complete_mean_ms: f64,
    /// Relay start (sink recovery included) to its first read; not part of the drain time.
    pub start_ms: f64,
}

impl StoreStats {
    pub(crate) fn report(&self) -> StoreStatsReport {
        let fc = self.fetch_calls.load(Ordering::Relaxed);
        let cc = self.complete_calls.load(Ordering::Relaxed);
        let fms = self.fetch_nanos.load(Ordering::Relaxed) as f64 / 1e6;
        let cms = self.complete_nanos.load(Ordering::Relaxed) as f64 / 1e6;
        StoreStatsReport {
            fetch_calls: fc,
            fetch_rows: self.fetch_rows.load(Ordering::Relaxed),
            fetch_total_ms: fms,
            fetch_mean_ms: if fc > 0 { fms / fc as f64 } else { 0.0 },
            complete_calls: cc,
            complete_total_ms: cms,
            complete_mean_ms: if cc > 0 { cms / cc as f64 } else { 0.0 },
            start_ms: self.start_micros.load(Ordering::Relaxed) as f64 / 1e3,
        }
    }
}

/// A store wrapper that times the relay's statements and counts completed rows, so a run can end
/// the moment the last row is completed (no backlog polling load on the database).
pub(crate) struct Instrumented<S> {
    pub inner: S,
    pub stats: Arc<StoreStats>,
}

impl<S: Store> Instrumented<S> {
    async fn timed_fetch(
        &self,
        fetch: impl std::future::Future<Output = txoutbox::Result<Vec<OutboxMessage>>>,
    ) -> txoutbox::Result<Vec<OutboxMessage>> {
        let t = Instant::now();
        self.stats.first_fetch.get_or_init(|| t);
        let rows = fetch.await;
        self.stats
            .fetch_nanos
            .fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
        self.stats.fetch_calls.fetch_add(1, Ordering::Relaxed);
        if let Ok(rows) = &rows {
            self.stats
                .fetch_rows
                .fetch_add(rows.len() as u64, Ordering::Relaxed);
        }
        rows
    }
}

impl<S: Store> Store for Instrumented<S> {
    async fn check(&self) -> txoutbox::Result<()> {
        self.inner.check().await
    }

    async fn fetch_pending(&self, limit: txoutbox::ReadLimit) -> txoutbox::Result<Vec<OutboxMessage>> {
        self.timed_fetch(self.inner.fetch_pending(limit)).await
    }

    async fn fetch_after(
        &self,
        after: i64,
        limit: txoutbox::ReadLimit,
    ) -> txoutbox::Result<Vec<OutboxMessage>> {
        self.timed_fetch(self.inner.fetch_after(after, limit)).await
    }

    async fn complete(&self, ids: &[i64], completion: Completion) -> txoutbox::Result<()> {
        let t = Instant::now();
        let result = self.inner.complete(ids, completion).await;
        self.stats
            .complete_nanos
            .fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
        self.stats.complete_calls.fetch_add(1, Ordering::Relaxed);
        if result.is_ok() {
            self.stats
                .completed
                .fetch_add(ids.len() as u64, Ordering::Relaxed);
            self.stats.done.notify_one();
        }
        result
    }

    async fn record_failures(&self, failures: &[Failure]) -> txoutbox::Result<()> {
        self.inner.record_failures(failures).await
    }

    async fn backlog(&self) -> txoutbox::Result<Backlog> {
        self.inner.backlog().await
    }

    async fn lock_for_relay(&self) -> txoutbox::Result<()> {
        self.inner.lock_for_relay().await
    }

    async fn unlock_for_relay(&self) {
        self.inner.unlock_for_relay().await;
    }

    async fn dead_keys(&self) -> txoutbox::Result<Vec<(String, Vec<u8>)>> {
        self.inner.dead_keys().await
    }

    async fn relay_awake(&self, awake: bool) -> txoutbox::Result<()> {
        self.inner.relay_awake(awake).await
    }
    fn stream_positions(&self) -> Option<std::sync::Arc<dyn txoutbox::StreamPositions>> {
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

impl<S: Clone> Clone for Instrumented<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            stats: Arc::clone(&self.stats),
        }
    }
}

/// A coordinated relay's leases go to the wrapped store, which must also see the ownership.
impl<S: Store + Leases> Leases for Instrumented<S> {
    fn bucket_count(&self) -> i32 {
        self.inner.bucket_count()
    }

    fn attach(&mut self, ownership: Ownership) {
        self.inner.attach(ownership);
    }

    async fn join(&self, node: &str, mode: &str, ttl: Duration) -> txoutbox::Result<i64> {
        self.inner.join(node, mode, ttl).await
    }

    async fn heartbeat(
        &self,
        node: &str,
        epoch: i64,
        ttl: Duration,
    ) -> txoutbox::Result<Option<Vec<LiveNode>>> {
        self.inner.heartbeat(node, epoch, ttl).await
    }

    async fn claim(
        &self,
        node: &str,
        epoch: i64,
        buckets: &[i32],
        ttl: Duration,
    ) -> txoutbox::Result<Vec<i32>> {
        self.inner.claim(node, epoch, buckets, ttl).await
    }

    async fn claim_fresh(
        &self,
        node: &str,
        epoch: i64,
        buckets: &[i32],
        ttl: Duration,
    ) -> txoutbox::Result<Claimed> {
        self.inner.claim_fresh(node, epoch, buckets, ttl).await
    }

    async fn take_over(
        &self,
        node: &str,
        epoch: i64,
        from: i64,
        buckets: &[i32],
        ids: &[i64],
        completion: txoutbox::Completion,
        ttl: Duration,
    ) -> txoutbox::Result<Vec<i32>> {
        self.inner
            .take_over(node, epoch, from, buckets, ids, completion, ttl)
            .await
    }

    async fn release(&self, node: &str, epoch: i64, buckets: &[i32]) -> txoutbox::Result<()> {
        self.inner.release(node, epoch, buckets).await
    }

    async fn leave(&self, node: &str, epoch: i64) -> txoutbox::Result<()> {
        self.inner.leave(node, epoch).await
    }

    async fn leases(&self) -> txoutbox::Result<Vec<LeaseInfo>> {
        self.inner.leases().await
    }
}

/// A sink that reports every message delivered at once: the relay's own ceiling.
pub(crate) struct DiscardSink;

impl Sink for DiscardSink {
    async fn send_batch(&self, batch: Arc<[OutboxMessage]>) -> BatchDelivery {
        let tracker = DeliveryTracker::new(batch.len());
        for i in 0..batch.len() {
            tracker.complete(i, Ok(()));
        }
        tracker.delivery()
    }
}

/// An independent consumer reading a topic from the beginning on its own thread, recording when
/// each record arrived, keyed by the value of header `id_header`.
pub(crate) struct Watcher {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<HashMap<String, Instant>>>,
    thread: std::thread::JoinHandle<()>,
}

impl Watcher {
    pub(crate) fn start(bootstrap: &str, topic: &str, partitions: i32, id_header: &'static str) -> Self {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set(
                "group.id",
                format!("bench-watch-{}", uuid::Uuid::new_v4().simple()),
            )
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", "5")
            .set("fetch.min.bytes", "1")
            .create()
            .expect("consumer");
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset(topic, p, Offset::Beginning).unwrap();
        }
        consumer.assign(&tpl).expect("assign");
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(HashMap::new()));
        let (s, m) = (Arc::clone(&stop), Arc::clone(&seen));
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let Some(msg) = consumer.poll(Duration::from_millis(50)) else {
                    continue;
                };
                let now = Instant::now();
                let Ok(msg) = msg else { continue };
                let id = msg.headers().and_then(|hs| {
                    hs.iter()
                        .find(|h| h.key == id_header)
                        .and_then(|h| h.value)
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                });
                if let Some(id) = id {
                    m.lock().unwrap().entry(id).or_insert(now);
                }
            }
        });
        Self { stop, seen, thread }
    }

    pub(crate) fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// Waits until `n` distinct records were seen (or `timeout`): the consumer's own start
    /// (assignment, offset lookup, first fetch) must not count as the latency of the first
    /// measured records. Returns whether it saw them in time.
    pub(crate) async fn wait_for(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.count() < n {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    /// Waits until `n` distinct records were seen (or `timeout`), stops, returns what was seen.
    pub(crate) async fn finish(self, n: usize, timeout: Duration) -> HashMap<String, Instant> {
        let _ = self.wait_for(n, timeout).await;
        self.stop.store(true, Ordering::Relaxed);
        let _ = tokio::task::spawn_blocking(move || self.thread.join()).await;
        Arc::try_unwrap(self.seen)
            .map(|m| m.into_inner().unwrap())
            .unwrap_or_default()
    }
}

/// The Kafka bootstrap servers from the environment.
pub(crate) fn bootstrap() -> String {
    txoutbox_testing::kafka::bootstrap()
}

fn cpu_times() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let idle = v.get(3)? + v.get(4).copied().unwrap_or(0);
    Some((v.iter().sum(), idle))
}

/// Share of the machine's CPU busy over `window` (0.0 to 1.0), from /proc/stat.
pub(crate) async fn cpu_busy(window: Duration) -> f64 {
    let Some((t0, i0)) = cpu_times() else { return 0.0 };
    tokio::time::sleep(window).await;
    let Some((t1, i1)) = cpu_times() else { return 0.0 };
    let total = t1.saturating_sub(t0).max(1) as f64;
    1.0 - i1.saturating_sub(i0) as f64 / total
}

/// Waits (up to `max_wait`) until the machine is mostly idle, since other work on this small
/// machine skews every figure; returns the busy share seen last, to be reported with the run.
pub(crate) async fn wait_quiet(label: &str, max_wait: Duration) -> f64 {
    let deadline = Instant::now() + max_wait;
    loop {
        let busy = cpu_busy(Duration::from_millis(500)).await;
        if busy < 0.25 || Instant::now() >= deadline {
            if busy >= 0.25 {
                eprintln!(
                    "[{label}] machine still {:.0}% busy with other work; running anyway",
                    busy * 100.0
                );
            }
            return busy;
        }
    }
}

/// The `txoutbox` binary built beside this benchmark, which `scenario` runs.
pub(crate) fn daemon_binary(scenario: &str) -> anyhow::Result<std::path::PathBuf> {
    let path = std::env::current_exe()?.with_file_name("txoutbox");
    if !path.exists() {
        anyhow::bail!(
            "the {scenario} scenario runs the daemon binary {}: build it with \
             `cargo build --release -p txoutbox-cli -p txoutbox-bench`",
            path.display()
        );
    }
    Ok(path)
}
