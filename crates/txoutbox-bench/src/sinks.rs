//! Scenario `sinks`: each sink other than Kafka (NATS JetStream, RabbitMQ, Redis Streams) against
//! its broker's own client, round by round.
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
use txoutbox::postgres::PgStore;
use txoutbox::rabbitmq::{RabbitMqConfig, RabbitMqSink};
use txoutbox::redis::{RedisConfig, RedisSink};
use txoutbox::{CREATED_AT_HEADER, MESSAGE_ID_HEADER, RelayConfig};
use txoutbox_testing::nats::TestStream;
use txoutbox_testing::rabbitmq::TestQueues;
use txoutbox_testing::redis::TestStreams;

use crate::common::{BenchMsg, DiscardSink, median, messages, wait_quiet};
use crate::throughput::{drain, settled_postgres_backlog};

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

/// The sinks the scenario measures.
const SINKS: [&str; 3] = ["nats", "rabbitmq", "redis"];

pub(crate) async fn run(n: usize, rounds: usize, keys: usize) -> SinksResult {
    let msgs = messages(n, keys);
    let mut raw = vec![Vec::new(); SINKS.len()];
    let mut relay = vec![Vec::new(); SINKS.len()];
    let mut discard = Vec::new();
    for round in 1..=rounds {
        for (i, sink) in SINKS.iter().enumerate() {
            let (raw_rate, relay_rate) = match *sink {
                "nats" => nats_round(&msgs).await,
                "rabbitmq" => rabbitmq_round(&msgs).await,
                _ => redis_round(&msgs).await,
            };
            eprintln!(
                "[sinks] {sink} round {round}: raw {raw_rate:.0} msg/s, relay {relay_rate:.0} msg/s ({:.2}x)",
                relay_rate / raw_rate
            );
            raw[i].push(raw_rate);
            relay[i].push(relay_rate);
        }
        let discard_rate = relay_through(&msgs, DiscardSink).await;
        eprintln!("[sinks] round {round}: relay to a discard sink {discard_rate:.0} msg/s");
        discard.push(discard_rate);
    }
    let sinks = SINKS
        .iter()
        .zip(raw.into_iter().zip(relay))
        .map(|(sink, (raw, relay))| {
            let ratios: Vec<f64> = relay.iter().zip(&raw).map(|(r, w)| r / w).collect();
            SinkRounds {
                sink: (*sink).into(),
                messages: n,
                raw_msgs_per_sec: raw,
                relay_msgs_per_sec: relay,
                ratio_median: median(&ratios),
                ratio_to_raw: ratios,
                discard_msgs_per_sec: discard.clone(),
            }
        })
        .collect();
    SinksResult { rounds, keys, sinks }
}

/// One round on NATS: the raw client, then the relay, each into a stream of its own.
async fn nats_round(msgs: &[BenchMsg]) -> (f64, f64) {
    let stream = TestStream::new("bench-nats").await;
    wait_quiet("sinks", Duration::from_secs(30)).await;
    let raw = raw_nats(&stream, msgs).await;
    stream.delete().await;
    let stream = TestStream::new("bench-nats").await;
    let config = NatsConfig::new(txoutbox_testing::nats::url())
        .subject(&stream.subject_template())
        .expect("template");
    let sink = NatsSink::connect(&config).await.expect("sink");
    let relay = relay_through(msgs, sink).await;
    assert_eq!(
        stream.count().await,
        msgs.len() as u64,
        "every message reached the stream once"
    );
    stream.delete().await;
    (raw, relay)
}

/// One round on RabbitMQ: the raw client, then the relay, each into a quorum queue of its own.
async fn rabbitmq_round(msgs: &[BenchMsg]) -> (f64, f64) {
    let topics = [TOPIC.to_owned()];
    let queues = TestQueues::new("bench-rabbitmq", &topics).await;
    wait_quiet("sinks", Duration::from_secs(30)).await;
    let raw = raw_rabbitmq(&queues, msgs).await;
    queues.delete().await;
    let queues = TestQueues::new("bench-rabbitmq", &topics).await;
    let config = RabbitMqConfig::new(txoutbox_testing::rabbitmq::url())
        .routing_key(&queues.routing_key_template())
        .expect("template");
    let relay = relay_through(msgs, RabbitMqSink::new(&config).expect("sink")).await;
    assert!(
        queues.count(TOPIC).await as usize >= msgs.len(),
        "every message reached the queue"
    );
    queues.delete().await;
    (raw, relay)
}

/// One round on Redis: the raw client, then the relay, each into a stream of its own.
async fn redis_round(msgs: &[BenchMsg]) -> (f64, f64) {
    let streams = TestStreams::new("bench-redis").await;
    wait_quiet("sinks", Duration::from_secs(30)).await;
    let raw = raw_redis(&streams, msgs).await;
    streams.delete(&[TOPIC.to_owned()]).await;
    let streams = TestStreams::new("bench-redis").await;
    let config = RedisConfig::new(txoutbox_testing::redis::url())
        .stream_key(&streams.stream_key_template())
        .expect("template");
    let relay = relay_through(msgs, RedisSink::new(&config).expect("sink")).await;
    assert_eq!(
        streams.count(TOPIC).await,
        msgs.len() as u64,
        "every message reached the stream"
    );
    streams.delete(&[TOPIC.to_owned()]).await;
    (raw, relay)
}

/// The headers every raw client sends: the key, a fresh message id and the creation time, as
/// the sinks send them.
fn raw_headers(m: &BenchMsg) -> [(&'static str, Vec<u8>); 3] {
    let id = uuid::Uuid::now_v7().to_string();
    let created = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    [
        (KEY_HEADER, m.key.as_bytes().to_vec()),
        (MESSAGE_ID_HEADER, id.into_bytes()),
        (CREATED_AT_HEADER, created.into_bytes()),
    ]
}

/// Publishes `msgs` to the queue with the AMQP client alone, as the sink would (persistent,
/// mandatory, the same headers, publisher confirms; at most 16,384 unconfirmed): messages per
/// second until the last confirm.
async fn raw_rabbitmq(queues: &TestQueues, msgs: &[BenchMsg]) -> f64 {
    use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
    use lapin::types::{AMQPValue, FieldTable, ShortString};
    let connection = lapin::Connection::connect(
        &txoutbox_testing::rabbitmq::url(),
        lapin::ConnectionProperties::default(),
    )
    .await
    .expect("connect");
    let channel = connection.create_channel().await.expect("channel");
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    let routing_key = format!("{}.{TOPIC}", queues.prefix);
    let started = Instant::now();
    let mut confirms = FuturesUnordered::new();
    for m in msgs {
        let mut headers = FieldTable::default();
        for (name, value) in raw_headers(m) {
            headers.insert(ShortString::from(name), AMQPValue::LongString(value.into()));
        }
        let properties = lapin::BasicProperties::default()
            .with_delivery_mode(2)
            .with_headers(headers);
        let options = BasicPublishOptions {
            mandatory: true,
            ..BasicPublishOptions::default()
        };
        let confirm = channel
            .basic_publish(
                "".into(),
                routing_key.as_str().into(),
                options,
                &m.payload,
                properties,
            )
            .await
            .expect("publish");
        confirms.push(confirm);
        while confirms.len() >= 16_384 {
            confirms.next().await.expect("a confirm").expect("confirmed");
        }
    }
    while let Some(confirm) = confirms.next().await {
        confirm.expect("confirmed");
    }
    msgs.len() as f64 / started.elapsed().as_secs_f64()
}

/// Adds `msgs` to the stream with the Redis client alone, as the sink does (one `XADD` per
/// message with the same fields, a pipeline of 1,000 at a time): messages per second until the
/// last reply.
async fn raw_redis(streams: &TestStreams, msgs: &[BenchMsg]) -> f64 {
    let client = redis::Client::open(txoutbox_testing::redis::url()).expect("url");
    let mut connection = client.get_multiplexed_async_connection().await.expect("connect");
    let stream = format!("{}:{TOPIC}", streams.prefix);
    let started = Instant::now();
    for chunk in msgs.chunks(RelayConfig::default().batch_size) {
        let mut pipeline = redis::pipe();
        for m in chunk {
            let command = pipeline.cmd("XADD").arg(&stream).arg("*");
            for (name, value) in raw_headers(m) {
                command.arg(name).arg(value);
            }
            command.arg("payload").arg(&m.payload);
        }
        let _: Vec<String> = pipeline.query_async(&mut connection).await.expect("XADD");
    }
    msgs.len() as f64 / started.elapsed().as_secs_f64()
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
        let mut headers = HeaderMap::new();
        let mut id = String::new();
        for (name, value) in raw_headers(m) {
            let value = String::from_utf8(value).expect("text");
            if name == MESSAGE_ID_HEADER {
                id.clone_from(&value);
            }
            headers.append(name, value);
        }
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
    let (schema, outbox, _) = settled_postgres_backlog(TOPIC, msgs).await;
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
