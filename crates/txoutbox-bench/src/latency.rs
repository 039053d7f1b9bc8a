//! Scenario 3: commit → Kafka latency through the PostgreSQL relay, beside the raw producer's
//! produce → ack latency, at steady rates.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use serde::Serialize;
use sqlx::postgres::PgPoolOptions;
use tokio::sync::mpsc;
use txoutbox::kafka::{ExactlyOnceSettings, ExactlyOnceSink, KafkaConfig, KafkaSink};
use txoutbox::postgres::PgOutbox;
use txoutbox::{MESSAGE_ID_HEADER, Relay, RelayConfig, Topics};
use txoutbox_testing::postgres::TestSchema;

use crate::common::{
    Percentiles, Watcher, bootstrap, messages, percentiles, producer_config, topic_def, wait_quiet,
};

const SEQ_HEADER: &str = "bench-seq";
const WRITERS: usize = 4;

#[derive(Debug, Clone, Serialize)]
pub struct RateResult {
    pub target_rate: f64,
    pub seconds: f64,
    /// Relay: commits per second achieved by the writers.
    pub relay_achieved_rate: f64,
    /// Commit returned → record read by an independent consumer.
    pub relay_commit_to_consume: Percentiles,
    /// The relay's own histogram: row created (in the writer's transaction) → acknowledged by
    /// Kafka and completed.
    pub relay_commit_to_ack: Percentiles,
    pub relay_missing: usize,
    /// The same through the exactly-once relay (Kafka transactions), read_committed.
    pub exactly_once_achieved_rate: f64,
    pub exactly_once_commit_to_consume: Percentiles,
    /// The same histogram for the exactly-once relay (acknowledged = transaction committed).
    pub exactly_once_commit_to_ack: Percentiles,
    pub exactly_once_missing: usize,
    /// Raw producer: send() → delivery callback.
    pub raw_produce_to_ack: Percentiles,
    /// Raw producer: send() → record read by an independent consumer (same consumer settings).
    pub raw_produce_to_consume: Percentiles,
    pub raw_achieved_rate: f64,
    pub raw_missing: usize,
    pub cpu_busy_before: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct LatencyResult {
    pub writers: usize,
    pub relay_batch_size: usize,
    pub relay_poll_interval_ms: u64,
    pub rates: Vec<RateResult>,
}

/// Sleeps until message `i` of a `rate`-per-second schedule that began at `start`.
async fn pace(start: Instant, rate: f64, i: usize) {
    let due = start + Duration::from_secs_f64(i as f64 / rate);
    if due > Instant::now() {
        tokio::time::sleep_until(due.into()).await;
    }
}

struct LatCtx {
    sent: Mutex<Vec<Instant>>,
    acks: Mutex<Vec<Duration>>,
}

impl ClientContext for LatCtx {}

impl ProducerContext for LatCtx {
    type DeliveryOpaque = usize;
    fn delivery(&self, result: &DeliveryResult<'_>, seq: usize) {
        let now = Instant::now();
        if result.is_ok() {
            let sent = self.sent.lock().unwrap()[seq];
            self.acks.lock().unwrap().push(now - sent);
        }
    }
}

/// Raw producer at `rate` for `secs`: (produce→ack, produce→consume, achieved rate, missing).
async fn raw(rate: f64, secs: f64) -> (Percentiles, Percentiles, f64, usize) {
    let topic = txoutbox_testing::kafka::new_topic("bench-lat-raw", 3).await;
    let producer: Arc<ThreadedProducer<LatCtx>> = Arc::new(
        producer_config(&bootstrap())
            .create_with_context(LatCtx {
                sent: Mutex::new(Vec::new()),
                acks: Mutex::new(Vec::new()),
            })
            .expect("producer"),
    );
    let watcher = Watcher::start(&bootstrap(), &topic, 3, SEQ_HEADER);
    let msgs = messages(1_000, 1_000);
    // Warm-up: connection and metadata, not measured.
    let warm = 50usize;
    let total = warm + (rate * secs) as usize;
    let mut start = Instant::now();
    for i in 0..total {
        if i == warm {
            producer.flush(Duration::from_secs(10)).ok();
            watcher.wait_for(warm, Duration::from_secs(30)).await;
            start = Instant::now();
        }
        if i >= warm {
            pace(start, rate, i - warm).await;
        }
        let m = &msgs[i % msgs.len()];
        let seq = i.to_string();
        let created = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let headers = OwnedHeaders::new_with_capacity(3)
            .insert(Header {
                key: SEQ_HEADER,
                value: Some(seq.as_bytes()),
            })
            .insert(Header {
                key: MESSAGE_ID_HEADER,
                value: Some(uuid::Uuid::now_v7().to_string().as_bytes()),
            })
            .insert(Header {
                key: txoutbox::CREATED_AT_HEADER,
                value: Some(created.as_bytes()),
            });
        let mut record = BaseRecord::<[u8], [u8], usize>::with_opaque_to(&topic, i)
            .key(m.key.as_bytes())
            .payload(m.payload.as_slice())
            .headers(headers);
        producer.context().sent.lock().unwrap().push(Instant::now());
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err((e, _)) => panic!("produce failed: {e}"),
            }
        }
    }
    let achieved = (total - warm) as f64 / start.elapsed().as_secs_f64();
    producer.flush(Duration::from_secs(30)).ok();
    let seen = watcher.finish(total, Duration::from_secs(30)).await;
    let sent = producer.context().sent.lock().unwrap().clone();
    let acks = producer.context().acks.lock().unwrap().clone();
    // Ack latencies arrive in callback order; drop the warm-up ones by count (they came first).
    let acks: Vec<Duration> = acks.into_iter().skip(warm).collect();
    let mut consume = Vec::new();
    let mut missing = 0;
    for (i, sent_at) in sent.iter().enumerate().skip(warm) {
        match seen.get(&i.to_string()) {
            Some(at) => consume.push(at.saturating_duration_since(*sent_at)),
            None => missing += 1,
        }
    }
    (percentiles(&acks), percentiles(&consume), achieved, missing)
}

/// Relay on PostgreSQL at `rate` commits per second for `secs`, woken after each commit; with the
/// exactly-once sink when `exactly_once` (the watcher reads read_committed, librdkafka's default).
async fn relay(rate: f64, secs: f64, exactly_once: bool) -> (Percentiles, Percentiles, f64, usize) {
    let topic = txoutbox_testing::kafka::new_topic("bench-lat-relay", 3).await;
    let schema = TestSchema::with_pool_size(WRITERS as u32 + 1).await;
    let outbox = PgOutbox::with_table(Topics::new().with(topic_def(&topic)).unwrap(), schema.table());
    outbox.migrate(&schema.pool).await.unwrap();
    let relay_pool = PgPoolOptions::new()
        .max_connections(4)
        .connect(&txoutbox_testing::postgres::url())
        .await
        .unwrap();
    let config = RelayConfig::default().with_poll_interval(Duration::from_secs(1));
    let store = outbox.store(relay_pool.clone());
    let relay = if exactly_once {
        let settings = ExactlyOnceSettings::for_table(&schema.schema)
            .with_progress_topic(txoutbox_testing::unique("bench-lat-progress"))
            .with_create_progress_topic(true);
        let config = config.with_max_in_flight(settings.recommended_max_in_flight());
        let sink = ExactlyOnceSink::new(&KafkaConfig::new(bootstrap()), settings).expect("sink");
        Relay::new(store, sink, config).unwrap().start()
    } else {
        let sink = KafkaSink::new(&KafkaConfig::new(bootstrap())).expect("sink");
        Relay::new(store, sink, config).unwrap().start()
    };
    let wakeup = relay.wakeup();
    let watcher = Watcher::start(&bootstrap(), &topic, 3, MESSAGE_ID_HEADER);
    let msgs = Arc::new(messages(1_000, 1_000));
    let commits: Arc<Mutex<Vec<(String, Instant, bool)>>> = Arc::new(Mutex::new(Vec::new()));
    let warm = 50usize;
    let total = warm + (rate * secs) as usize;
    let (tx, rx) = mpsc::channel::<usize>(100_000);
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let mut workers = Vec::new();
    for _ in 0..WRITERS {
        let (rx, pool, outbox, msgs, commits, wakeup) = (
            Arc::clone(&rx),
            schema.pool.clone(),
            outbox.clone(),
            Arc::clone(&msgs),
            Arc::clone(&commits),
            wakeup.clone(),
        );
        workers.push(tokio::spawn(async move {
            loop {
                let Some(i) = rx.lock().await.recv().await else {
                    break;
                };
                let mut t = pool.begin().await.unwrap();
                let id = outbox.publish(&mut *t, &msgs[i % msgs.len()]).await.unwrap();
                t.commit().await.unwrap();
                let at = Instant::now();
                wakeup.notify();
                commits.lock().unwrap().push((id.to_string(), at, i >= warm));
            }
        }));
    }
    for i in 0..warm {
        tx.send(i).await.unwrap();
    }
    // Timing begins once the relay delivered the warm-up, so its start (for exactly-once:
    // creating the producers, fencing, reading the progress topic) is not counted as latency.
    let warming = Instant::now();
    while crate::ack_latency::count() < warm && warming.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // And the watcher read it: its own start is not the relay's latency either.
    watcher.wait_for(warm, Duration::from_secs(30)).await;
    crate::ack_latency::take(); // the warm-up's
    let start = Instant::now();
    for i in warm..total {
        pace(start, rate, i - warm).await;
        tx.send(i).await.unwrap();
    }
    drop(tx);
    for w in workers {
        w.await.unwrap();
    }
    let achieved = (total - warm) as f64 / start.elapsed().as_secs_f64();
    let seen = watcher.finish(total, Duration::from_secs(30)).await;
    relay.shutdown().await.ok();
    let acks = percentiles(&crate::ack_latency::take());
    relay_pool.close().await;
    schema.drop_schema().await;
    let commits = commits.lock().unwrap().clone();
    let mut lat = Vec::new();
    let mut missing = 0;
    for (id, at, measured) in commits {
        if !measured {
            continue;
        }
        match seen.get(&id) {
            Some(seen_at) => lat.push(seen_at.saturating_duration_since(at)),
            None => missing += 1,
        }
    }
    (percentiles(&lat), acks, achieved, missing)
}

pub async fn run(rates: &[f64], secs: f64) -> LatencyResult {
    let mut out = Vec::new();
    for &rate in rates {
        let cpu_busy_before = wait_quiet("latency", Duration::from_secs(30)).await;
        eprintln!("[latency] relay at {rate}/s for {secs} s ...");
        let (relay_lat, relay_ack, relay_rate, relay_missing) = relay(rate, secs, false).await;
        eprintln!(
            "[latency]   relay p50 {:.0} µs p99 {:.0} µs, commit -> ack p99 {:.0} µs ({relay_rate:.0}/s)",
            relay_lat.p50_us, relay_lat.p99_us, relay_ack.p99_us
        );
        eprintln!("[latency] exactly-once relay at {rate}/s for {secs} s ...");
        let (eos_lat, eos_ack, eos_rate, eos_missing) = relay(rate, secs, true).await;
        eprintln!(
            "[latency]   exactly-once p50 {:.0} µs p99 {:.0} µs ({eos_rate:.0}/s)",
            eos_lat.p50_us, eos_lat.p99_us
        );
        eprintln!("[latency] raw producer at {rate}/s for {secs} s ...");
        let (ack, consume, raw_rate, raw_missing) = raw(rate, secs).await;
        eprintln!(
            "[latency]   raw ack p50 {:.0} µs p99 {:.0} µs ({raw_rate:.0}/s)",
            ack.p50_us, ack.p99_us
        );
        out.push(RateResult {
            target_rate: rate,
            seconds: secs,
            relay_achieved_rate: relay_rate,
            relay_commit_to_consume: relay_lat,
            relay_commit_to_ack: relay_ack,
            relay_missing,
            exactly_once_achieved_rate: eos_rate,
            exactly_once_commit_to_consume: eos_lat,
            exactly_once_commit_to_ack: eos_ack,
            exactly_once_missing: eos_missing,
            raw_produce_to_ack: ack,
            raw_produce_to_consume: consume,
            raw_achieved_rate: raw_rate,
            raw_missing,
            cpu_busy_before,
        });
    }
    LatencyResult {
        writers: WRITERS,
        relay_batch_size: RelayConfig::default().batch_size,
        relay_poll_interval_ms: 1_000,
        rates: out,
    }
}
