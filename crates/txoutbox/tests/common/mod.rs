//! Shared parts of the end-to-end tests: message types, the relay under test, and the checks of
//! what a consumer read back from the broker.

#![allow(dead_code)] // reason: each test binary uses a different subset

pub(crate) mod broker;
pub(crate) mod cases;

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use txoutbox::kafka::{KafkaConfig, KafkaSink};
use txoutbox::{Relay, RelayConfig, RelayHandle, Store, Topic, Topics};
use txoutbox_testing::kafka::Record;

/// A test event; the const parameter gives each topic its own message type.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct Event<const TOPIC: usize> {
    pub key: String,
    pub seq: u64,
}

/// Topics `names[0..3]` for `Event<0>`, `Event<1>`, `Event<2>`, keyed by `key`, with a header.
pub(crate) fn three_topics(names: &[String]) -> Topics {
    Topics::new()
        .with(keyed::<0>(&names[0]))
        .unwrap()
        .with(keyed::<1>(&names[1]))
        .unwrap()
        .with(keyed::<2>(&names[2]))
        .unwrap()
}

pub(crate) fn keyed<const N: usize>(name: &str) -> Topic<Event<N>> {
    Topic::<Event<N>>::json(name)
        .unwrap()
        .key(|e| e.key.clone())
        .header("origin", "txoutbox-tests")
        .headers_with(|e| vec![("seq".into(), e.seq.to_string())])
}

/// The largest record [`small_sink`] takes.
pub(crate) const SMALL_SINK_MAX_BYTES: usize = 10_000;

/// A Kafka sink whose producer refuses records over [`SMALL_SINK_MAX_BYTES`]: a message padded
/// past it (see [`oversize`]) fails for good.
pub(crate) fn small_sink() -> KafkaSink {
    KafkaSink::new(
        &KafkaConfig::new(txoutbox_testing::kafka::bootstrap())
            .set("message.max.bytes", SMALL_SINK_MAX_BYTES.to_string()),
    )
    .unwrap()
}

/// `Event<0> { key, seq: 1 }` encoded for `topics`, its payload padded to twice what
/// [`small_sink`] takes.
pub(crate) fn oversize(topics: &Topics, key: &str) -> txoutbox::NewMessage {
    let mut message = topics
        .encode(&Event::<0> {
            key: key.into(),
            seq: 1,
        })
        .unwrap();
    let pad = "x".repeat(2 * SMALL_SINK_MAX_BYTES);
    message.payload = Some(format!(r#"{{"key":"{key}","seq":1,"pad":"{pad}"}}"#).into_bytes());
    message
}

/// The relay settings the tests use: small poll interval, so nothing waits long.
pub(crate) fn relay_config() -> RelayConfig {
    RelayConfig::default().with_poll_interval(Duration::from_millis(50))
}

pub(crate) fn kafka_sink() -> KafkaSink {
    KafkaSink::new(&KafkaConfig::new(txoutbox_testing::kafka::bootstrap())).unwrap()
}

pub(crate) fn start_relay<S: Store>(store: S, config: RelayConfig) -> RelayHandle {
    Relay::new(store, kafka_sink(), config).unwrap().start()
}

/// Waits until the store has no pending rows.
pub(crate) async fn drained<S: Store>(store: &S, timeout: Duration) {
    let ok = txoutbox_testing::eventually(timeout, || async {
        store.backlog().await.map(|b| b.pending == 0).unwrap_or(false)
    })
    .await;
    assert!(
        ok,
        "the relay did not drain the outbox within {timeout:?}: {:?}",
        store.backlog().await
    );
}

pub(crate) use txoutbox_testing::kafka::Verdict;

/// Checks every record's headers and key against its payload, then loss, duplicates and per-key
/// order (see [`txoutbox_testing::kafka::verdict`]); keys must stay on one partition.
pub(crate) fn verify(records: &[Record]) -> Verdict {
    let mut key_partition: HashMap<(String, String), i32> = HashMap::new();
    for r in records {
        assert!(
            r.header(txoutbox::CREATED_AT_HEADER).is_some(),
            "created-at header missing"
        );
        assert_eq!(
            r.header("origin"),
            Some("txoutbox-tests"),
            "static header missing"
        );
        let (key, seq) = key_seq(r);
        assert_eq!(r.key_str(), key, "record key differs from the message's key");
        assert_eq!(
            r.header("seq"),
            Some(seq.to_string().as_str()),
            "dynamic header wrong"
        );
        let first = key_partition
            .entry((r.topic.clone(), key.clone()))
            .or_insert(r.partition);
        assert_eq!(*first, r.partition, "key {key} spread over several partitions");
    }
    txoutbox_testing::kafka::verdict(records, key_seq)
}

/// The key and sequence number of an [`Event`] record.
pub(crate) fn key_seq(r: &Record) -> (String, u64) {
    let payload: serde_json::Value = serde_json::from_slice(r.payload.as_deref().unwrap()).unwrap();
    (
        payload["key"].as_str().unwrap().to_owned(),
        payload["seq"].as_u64().unwrap(),
    )
}
