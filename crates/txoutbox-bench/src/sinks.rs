//! Scenario `sinks`: each sink other than Kafka against its broker's own client, round by round.
//!
//! Each round: the raw client publishes the messages (the sink's headers, every publish
//! acknowledged, as many in flight as the sink allows), then the relay with its default settings
//! drains the same messages from a settled PostgreSQL table through the sink, then through a
//! sink that completes everything at once (the relay's and the store's own ceiling on this
//! machine). Every figure of a round is taken minutes apart at most.

use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream::message::PublishMessage;
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use serde::Serialize;
use txoutbox::nats::{DEFAULT_MAX_ACKS_IN_FLIGHT, KEY_HEADER, NatsConfig, NatsSink};
use txoutbox::postgres::{PgOutbox, PgStore};
use txoutbox::{CREATED_AT_HEADER, MESSAGE_ID_HEADER, RelayConfig, Topics};
use txoutbox_testing::nats::TestStream;
use txoutbox_testing::postgres::TestSchema;

use crate::common::{BenchMsg, DiscardSink, median, messages, topic_def, wait_quiet};
use crate::throughput::{PREWRITE_CHUNK, drain};

/// The topic the messages name (the sink's subject is `<stream>.<topic>`).
const TOPIC: &str = "bench";

/// One sink's rounds.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct SinkRounds {
    pub sink: String,
    pub messages: usize,
    /// The broker's own client, messages per second, each round.
    pub raw_msgs_per_sec: Vec<f64>,
    /// The relay through the sink, each round.
    pub relay_msgs_per_sec: Vec<f64>,
    /// Relay / raw client of the same round.
    pub ratio_to_raw: Vec<f64>,
    pub ratio_median: f64,
    /// The relay through a sink that completes everything at once, each round.
    pub discard_msgs_per_sec: Vec<f64>,
}

/// Every sink's rounds.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct SinksResult {
    pub rounds: usize,
    pub keys: usize,
    pub sinks: Vec<SinkRounds>,
}

pub(crate) async fn run(n: usize, rounds: usize, keys: usize) -> SinksResult {
    let msgs = messages(n, keys);
    let mut raw = Vec::new();
    let mut relay = Vec::new();
    let mut discard = Vec::new();
    for round in 1..=rounds {
        let stream = TestStream::new("bench-nats").await;
        wait_quiet("sinks", Duration::from_secs(30)).await;
        let raw_rate = raw_nats(&stream, &msgs).await;
        stream.delete().await;
        let stream = TestStream::new("bench-nats").await;
        let config = NatsConfig::new(txoutbox_testing::nats::url())
            .subject(&stream.subject_template())
            .expect("template");
        let sink = NatsSink::connect(&config).await.expect("sink");
        let relay_rate = relay_through(&msgs, sink).await;
        assert_eq!(
            stream.count().await,
            n as u64,
            "every message reached the stream once"
        );
        stream.delete().await;
        let discard_rate = relay_through(&msgs, DiscardSink).await;
        eprintln!(
            "[sinks] nats round {round}: raw {raw_rate:.0} msg/s, relay {relay_rate:.0} msg/s ({:.2}x), \
             relay to a discard sink {discard_rate:.0} msg/s",
            relay_rate / raw_rate
        );
        raw.push(raw_rate);
        relay.push(relay_rate);
        discard.push(discard_rate);
    }
    let ratios: Vec<f64> = relay.iter().zip(&raw).map(|(r, w)| r / w).collect();
    SinksResult {
        rounds,
        keys,
        sinks: vec![SinkRounds {
            sink: "nats".into(),
            messages: n,
            raw_msgs_per_sec: raw,
            relay_msgs_per_sec: relay,
            ratio_median: median(&ratios),
            ratio_to_raw: ratios,
            discard_msgs_per_sec: discard,
        }],
    }
}

/// Publishes `msgs` to the stream with the NATS client alone, as the sink would (key, message
/// id, creation time and `Nats-Msg-Id` headers; up to the sink's acknowledgements in flight):
/// messages per second until the last acknowledgement.
async fn raw_nats(stream: &TestStream, msgs: &[BenchMsg]) -> f64 {
    let client = async_nats::connect(txoutbox_testing::nats::url())
        .await
        .expect("connect");
    let jetstream = async_nats::jetstream::ContextBuilder::new()
        .max_ack_inflight(DEFAULT_MAX_ACKS_IN_FLIGHT)
        .backpressure_on_inflight(true)
        .build(client);
    let subject = format!("{}.{TOPIC}", stream.prefix);
    let started = Instant::now();
    let mut acks = FuturesUnordered::new();
    for m in msgs {
        let id = uuid::Uuid::now_v7().to_string();
        let created = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let mut headers = HeaderMap::new();
        headers.append(KEY_HEADER, m.key.as_str());
        headers.append(MESSAGE_ID_HEADER, id.as_str());
        headers.append(CREATED_AT_HEADER, created.as_str());
        let publish = PublishMessage::build()
            .payload(m.payload.clone().into())
            .headers(headers)
            .message_id(&id);
        let ack = jetstream
            .send_publish(subject.clone(), publish)
            .await
            .expect("publish");
        acks.push(ack.into_future());
        while acks.len() >= DEFAULT_MAX_ACKS_IN_FLIGHT / 2 {
            acks.next().await.expect("an ack").expect("acknowledged");
        }
    }
    while let Some(ack) = acks.next().await {
        ack.expect("acknowledged");
    }
    msgs.len() as f64 / started.elapsed().as_secs_f64()
}

/// Writes `msgs` to a fresh PostgreSQL outbox, settles it (`VACUUM ANALYZE`), and drains it
/// through `sink` with the relay's default batch and window: messages per second.
async fn relay_through<K: txoutbox::Sink>(msgs: &[BenchMsg], sink: K) -> f64 {
    let schema = TestSchema::with_pool_size(4).await;
    let outbox = PgOutbox::with_table(Topics::new().with(topic_def(TOPIC)).unwrap(), schema.table());
    outbox.migrate(&schema.pool).await.expect("migrate");
    for chunk in msgs.chunks(PREWRITE_CHUNK) {
        let mut tx = schema.pool.begin().await.unwrap();
        outbox.publish_all(&mut *tx, chunk).await.expect("publish_all");
        tx.commit().await.unwrap();
    }
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "VACUUM ANALYZE {}",
        schema.qualify("outbox_messages")
    )))
    .execute(&schema.pool)
    .await
    .unwrap();
    let store: PgStore = outbox.store(schema.pool.clone());
    wait_quiet("sinks", Duration::from_secs(30)).await;
    let defaults = RelayConfig::default();
    let (seconds, timed_out, _) = drain(
        store,
        sink,
        msgs.len(),
        defaults.batch_size,
        defaults.max_in_flight,
    )
    .await;
    assert!(
        !timed_out,
        "the relay did not drain {} messages in time",
        msgs.len()
    );
    schema.drop_schema().await;
    msgs.len() as f64 / seconds
}
