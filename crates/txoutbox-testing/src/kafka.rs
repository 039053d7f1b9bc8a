//! Topics per test and independent consumers that read back what reached the broker.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

/// The test broker (`TXOUTBOX_KAFKA_BOOTSTRAP`).
pub fn bootstrap() -> String {
    crate::required_env("TXOUTBOX_KAFKA_BOOTSTRAP")
}

/// A record as a consumer saw it.
#[derive(Debug, Clone)]
pub struct Record {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
    pub timestamp_ms: Option<i64>,
}

impl Record {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    pub fn key_str(&self) -> &str {
        self.key
            .as_deref()
            .map(|k| std::str::from_utf8(k).unwrap())
            .unwrap_or("")
    }

    pub fn payload_str(&self) -> &str {
        self.payload
            .as_deref()
            .map(|k| std::str::from_utf8(k).unwrap())
            .unwrap_or("")
    }
}

/// Creates topics with `partitions` partitions each and the broker's default replication factor
/// (1 on the single test broker, 3 on the test cluster, so a test can run on either).
pub async fn create_topics(names: &[&str], partitions: i32) {
    create_topics_on(&bootstrap(), names, partitions, &[]).await;
}

/// Creates topics on the broker at `bootstrap`, with `partitions` partitions each (the broker's
/// default replication factor) and the given topic configs (e.g. `("message.timestamp.type", "LogAppendTime")`).
pub async fn create_topics_on(bootstrap: &str, names: &[&str], partitions: i32, configs: &[(&str, &str)]) {
    create(bootstrap, names, partitions, configs, false).await;
}

/// Creates topics; with `existing_ok`, a topic that exists already is no error.
async fn create(
    bootstrap: &str,
    names: &[&str],
    partitions: i32,
    configs: &[(&str, &str)],
    existing_ok: bool,
) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client");
    let topics: Vec<NewTopic<'_>> = names
        .iter()
        .map(|n| {
            configs.iter().fold(
                // -1: the broker's `default.replication.factor`.
                NewTopic::new(n, partitions, TopicReplication::Fixed(-1)),
                |t, (k, v)| t.set(k, v),
            )
        })
        .collect();
    let results = admin
        .create_topics(
            &topics,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await
        .expect("create topics");
    for r in results {
        match r {
            Ok(_) => {}
            Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) if existing_ok => {}
            Err((topic, e)) => panic!("cannot create topic {topic}: {e}"),
        }
    }
}

/// Deletes `topic` and waits until the broker no longer lists it.
pub async fn delete_topic(topic: &str) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .create()
        .expect("admin client");
    for result in admin
        .delete_topics(
            &[topic],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await
        .expect("delete topic")
    {
        if let Err((topic, e)) = result {
            panic!("cannot delete topic {topic}: {e}");
        }
    }
    let gone = crate::eventually(Duration::from_secs(30), || async { !topic_exists(topic).await }).await;
    assert!(gone, "topic {topic} still listed 30 s after its deletion");
}

/// Creates the topics that do not exist yet (with `partitions` partitions each); existing ones
/// are kept as they are.
pub async fn create_topics_if_missing(names: &[&str], partitions: i32) {
    create(&bootstrap(), names, partitions, &[], true).await;
}

/// A fresh topic name with the given prefix, created with `partitions` partitions.
pub async fn new_topic(prefix: &str, partitions: i32) -> String {
    new_topic_on(&bootstrap(), prefix, partitions, &[]).await
}

/// A fresh topic on the broker at `bootstrap`, with `partitions` partitions and topic configs.
pub async fn new_topic_on(
    bootstrap: &str,
    prefix: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) -> String {
    let name = crate::unique(prefix).replace('_', "-");
    create_topics_on(bootstrap, &[&name], partitions, configs).await;
    name
}

/// Topic config that makes each record's timestamp the broker's append time: read back, it says
/// when the broker stored the record (used to measure recovery times).
pub const LOG_APPEND_TIME: (&str, &str) = ("message.timestamp.type", "LogAppendTime");

/// The partitions of `topic`, once the broker's metadata lists them (retried for up to 30 s: a
/// topic just created may not be in it yet).
fn partitions(consumer: &BaseConsumer, topic: &str) -> Vec<i32> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let listed = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .map(|m| {
                m.topics()
                    .first()
                    .filter(|t| t.error().is_none())
                    .map(|t| t.partitions().iter().map(|p| p.id()).collect::<Vec<_>>())
                    .unwrap_or_default()
            });
        match listed {
            Ok(ids) if !ids.is_empty() => return ids,
            other if Instant::now() < deadline => {
                eprintln!("metadata of {topic}: {other:?}; retrying");
                std::thread::sleep(Duration::from_millis(200));
            }
            other => panic!("metadata of {topic}: {other:?}"),
        }
    }
}

/// A partition's low and high watermarks. Right after a topic was created (or while a leader
/// moves) the broker may answer "not leader" or "unknown partition" for a moment: retried for up
/// to 30 s.
fn watermarks(consumer: &BaseConsumer, topic: &str, partition: i32) -> (i64, i64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match consumer.fetch_watermarks(topic, partition, Duration::from_secs(10)) {
            Ok(marks) => return marks,
            Err(e) if Instant::now() < deadline => {
                eprintln!("watermarks of {topic}/{partition}: {e}; retrying");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("watermarks of {topic}/{partition}: {e}"),
        }
    }
}

fn consumer_on(bootstrap: &str, isolation: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", crate::unique("readback"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation)
        .create()
        .expect("consumer")
}

/// Reads every record of `topics` up to their current end (the high watermarks at the call).
pub async fn read_all(topics: &[String]) -> Vec<Record> {
    read_all_from(&bootstrap(), topics).await
}

/// Reads every record of `topics` on the broker at `bootstrap` up to their current end.
pub async fn read_all_from(bootstrap: &str, topics: &[String]) -> Vec<Record> {
    let topics = topics.to_vec();
    let bootstrap = bootstrap.to_owned();
    tokio::task::spawn_blocking(move || read_all_blocking(&bootstrap, &topics, "read_uncommitted"))
        .await
        .unwrap()
}

/// Reads every record of `topic` up to its current end as a `read_committed` consumer sees it:
/// records of aborted or still open Kafka transactions are left out.
pub async fn read_committed(topic: &str) -> Vec<Record> {
    read_with_isolation(topic, "read_committed").await
}

/// Reads every record of `topic` up to its current end with the given `isolation.level`
/// (`read_committed` or `read_uncommitted`).
pub async fn read_with_isolation(topic: &str, isolation: &'static str) -> Vec<Record> {
    read_with_isolation_on(&bootstrap(), topic, isolation).await
}

/// [`read_with_isolation`] on the broker at `bootstrap`.
pub async fn read_with_isolation_on(bootstrap: &str, topic: &str, isolation: &'static str) -> Vec<Record> {
    let topics = [topic.to_owned()];
    let bootstrap = bootstrap.to_owned();
    tokio::task::spawn_blocking(move || read_all_blocking(&bootstrap, &topics, isolation))
        .await
        .unwrap()
}

fn read_all_blocking(bootstrap: &str, topics: &[String], isolation: &str) -> Vec<Record> {
    let consumer = consumer_on(bootstrap, isolation);
    let mut assignment = TopicPartitionList::new();
    let mut ends: HashMap<(String, i32), i64> = HashMap::new();
    for topic in topics {
        for p in partitions(&consumer, topic) {
            let (_, high) = watermarks(&consumer, topic, p);
            assignment
                .add_partition_offset(topic, p, Offset::Beginning)
                .unwrap();
            ends.insert((topic.clone(), p), high);
        }
    }
    consumer.assign(&assignment).unwrap();
    let mut records = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    // Done by the consumer's position, not by the last record read: transaction markers (and,
    // read_committed, aborted records) take offsets that are never returned.
    let done = |consumer: &BaseConsumer| {
        let positions = consumer.position().expect("positions");
        ends.iter().all(|((topic, partition), high)| {
            *high == 0
                || matches!(
                    positions.find_partition(topic, *partition).map(|e| e.offset()),
                    Some(Offset::Offset(at)) if at >= *high
                )
        })
    };
    while !done(&consumer) {
        assert!(
            Instant::now() < deadline,
            "timed out reading back {topics:?} ({isolation})"
        );
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message.expect("consume");
        let headers = message
            .headers()
            .map(|hs| {
                hs.iter()
                    .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec).unwrap_or_default()))
                    .collect()
            })
            .unwrap_or_default();
        records.push(Record {
            topic: message.topic().to_owned(),
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().map(<[u8]>::to_vec),
            headers,
            timestamp_ms: message.timestamp().to_millis(),
        });
    }
    records
}

/// Whether `topic` exists on the broker (a metadata request; it never creates the topic).
pub async fn topic_exists(topic: &str) -> bool {
    topic_exists_on(&bootstrap(), topic).await
}

/// [`topic_exists`] on the broker at `bootstrap`.
pub async fn topic_exists_on(bootstrap: &str, topic: &str) -> bool {
    let topic = topic.to_owned();
    let bootstrap = bootstrap.to_owned();
    tokio::task::spawn_blocking(move || {
        let consumer = consumer_on(&bootstrap, "read_uncommitted");
        let metadata = consumer
            .fetch_metadata(Some(&topic), Duration::from_secs(10))
            .expect("metadata");
        metadata
            .topics()
            .iter()
            .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
    })
    .await
    .unwrap()
}

/// A topic's partition count and the value of one of its configs (e.g. `cleanup.policy`), as
/// the broker at `bootstrap` describes them; `None` when the topic does not exist.
pub async fn topic_settings_on(
    bootstrap: &str,
    topic: &str,
    config: &str,
) -> Option<(usize, Option<String>)> {
    if !topic_exists_on(bootstrap, topic).await {
        return None;
    }
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client");
    let partitions = {
        let (bootstrap, topic) = (bootstrap.to_owned(), topic.to_owned());
        tokio::task::spawn_blocking(move || {
            partitions(&consumer_on(&bootstrap, "read_uncommitted"), &topic).len()
        })
        .await
        .unwrap()
    };
    let described = admin
        .describe_configs(
            [&rdkafka::admin::ResourceSpecifier::Topic(topic)],
            &AdminOptions::new(),
        )
        .await
        .expect("describe configs");
    let value = described
        .into_iter()
        .flatten()
        .flat_map(|r| r.entries)
        .find(|e| e.name == config)
        .and_then(|e| e.value);
    Some((partitions, value))
}

/// Counts the records currently in `topics` (sum of high watermarks minus low watermarks). Each
/// topic must exist: one the broker does not list within 30 s fails the test (use
/// [`topic_exists`] to check for absence).
pub async fn count(topics: &[String]) -> i64 {
    count_on(&bootstrap(), topics).await
}

/// Counts the records currently in `topics` on the broker at `bootstrap`.
pub async fn count_on(bootstrap: &str, topics: &[String]) -> i64 {
    let topics = topics.to_vec();
    let bootstrap = bootstrap.to_owned();
    tokio::task::spawn_blocking(move || {
        let consumer = consumer_on(&bootstrap, "read_uncommitted");
        let mut total = 0;
        for topic in &topics {
            for p in partitions(&consumer, topic) {
                let (low, high) = watermarks(&consumer, topic, p);
                total += high - low;
            }
        }
        total
    })
    .await
    .unwrap()
}

/// What a consumer saw, checked for loss, duplicates and per-key order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Records read.
    pub records: usize,
    /// Distinct messages (by the `txoutbox-message-id` header).
    pub distinct: usize,
    /// Records whose message id was seen before.
    pub duplicates: usize,
    /// New messages whose sequence number is below one already delivered for their key.
    pub order_violations: usize,
    /// The keys that went backwards, for a failing test's report.
    pub violating_keys: Vec<String>,
}

/// Counts distinct messages, duplicates and per-key order violations. `key_seq` reads a record's
/// key and its sequence number within the key (written in increasing order). A duplicate may
/// repeat an earlier message; a key must never go backwards past what was already delivered.
pub fn verdict(records: &[Record], key_seq: impl Fn(&Record) -> (String, u64)) -> Verdict {
    let mut by_partition: HashMap<(String, i32), Vec<&Record>> = HashMap::new();
    for r in records {
        by_partition
            .entry((r.topic.clone(), r.partition))
            .or_default()
            .push(r);
    }
    let mut seen = std::collections::HashSet::new();
    let mut verdict = Verdict {
        records: records.len(),
        ..Verdict::default()
    };
    for (_, mut rs) in by_partition {
        rs.sort_by_key(|r| r.offset);
        let mut highest: HashMap<String, u64> = HashMap::new();
        for r in rs {
            let id = r
                .header("txoutbox-message-id")
                .expect("message-id header")
                .to_owned();
            if !seen.insert(id) {
                verdict.duplicates += 1;
                continue;
            }
            let (key, seq) = key_seq(r);
            let top = highest.entry(key.clone()).or_insert(0);
            if seq < *top {
                verdict.order_violations += 1;
                verdict.violating_keys.push(key);
            }
            *top = (*top).max(seq);
        }
    }
    verdict.violating_keys.sort();
    verdict.violating_keys.dedup();
    verdict.distinct = seen.len();
    verdict
}
