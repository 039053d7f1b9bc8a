//! Progress records: written last in every Kafka transaction to a compacted one-partition topic,
//! keyed by the transactional id. Each names exactly the outbox rows its transaction holds, and
//! the rows of earlier transactions not yet confirmed marked in the database — never a bare
//! "highest id", since ids commit out of order.

use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use txoutbox_core::{Error, Result};

/// The format version written now. Version 2 writes runs of consecutive ids as `[first, last]`
/// pairs (version 1 listed every id); both are read.
pub(crate) const VERSION: u32 = 2;

/// One transaction's progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Progress {
    /// Format version.
    pub(crate) v: u32,
    /// The transaction (random, unique).
    pub(crate) txn: String,
    /// The outbox rows this transaction holds.
    #[serde(with = "id_runs")]
    pub(crate) ids: Vec<i64>,
    /// Rows of earlier committed transactions not yet confirmed marked in the database.
    #[serde(with = "id_runs")]
    pub(crate) unmarked: Vec<i64>,
    /// Instead of ids, for a store whose ids last one session (WAL mode): everything delivered
    /// so far, in the store's own positions ([`txoutbox_core::StreamPositions`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) stream: Option<serde_json::Value>,
}

/// A set of ids on the wire: sorted, each run of consecutive ids as `[first, last]`, a lone id as
/// a number. A transaction's rows are mostly consecutive, so a record of 10,000 rows is a few
/// bytes instead of 80 KB, and stays far below Kafka's record size limit however many rows are
/// still unmarked.
mod id_runs {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    /// No record names more rows than this (a corrupt run must not allocate without bound).
    const MAX_IDS: u64 = 50_000_000;

    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    enum Item {
        One(i64),
        Run(i64, i64),
    }

    pub(super) fn serialize<S: Serializer>(ids: &[i64], serializer: S) -> Result<S::Ok, S::Error> {
        let mut sorted = ids.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        let mut items: Vec<Item> = Vec::new();
        for id in sorted {
            let follows = |last: i64| last.checked_add(1) == Some(id);
            let extended = match items.last_mut() {
                Some(Item::Run(_, last)) if follows(*last) => {
                    *last = id;
                    true
                }
                Some(item) => match *item {
                    Item::One(first) if follows(first) => {
                        *item = Item::Run(first, id);
                        true
                    }
                    _ => false,
                },
                None => false,
            };
            if !extended {
                items.push(Item::One(id));
            }
        }
        items.serialize(serializer)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<i64>, D::Error> {
        let items = Vec::<Item>::deserialize(deserializer)?;
        let mut ids = Vec::new();
        let mut total: u64 = 0;
        for item in items {
            let (first, last) = match item {
                Item::One(id) => (id, id),
                Item::Run(first, last) => (first, last),
            };
            if last < first {
                return Err(serde::de::Error::custom(format!(
                    "the run [{first}, {last}] is reversed"
                )));
            }
            total = total.saturating_add(last.abs_diff(first) + 1);
            if total > MAX_IDS {
                return Err(serde::de::Error::custom(
                    "more rows than any progress record names",
                ));
            }
            ids.extend(first..=last);
        }
        Ok(ids)
    }
}

impl Progress {
    /// Every row a successor must complete: the transaction's and the unmarked ones.
    pub(crate) fn all_ids(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self.ids.iter().chain(&self.unmarked).copied().collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }
}

/// How long reading the progress topic may take at most.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a repair waits for a deleted progress topic to be gone before recreating it.
const RECREATE_TIMEOUT: Duration = Duration::from_secs(30);

/// `client` for the relay's own requests about the progress topic: none of them may make a
/// broker with `auto.create.topics.enable=true` (Kafka's default) create it, with the broker's
/// default settings (`cleanup.policy=delete`, several partitions), whatever the user configured.
fn no_auto_create(client: &ClientConfig) -> ClientConfig {
    let mut config = client.clone();
    config.set("allow.auto.create.topics", "false");
    config
}

/// What is wrong with an existing progress topic, if anything.
fn problems(partitions: usize, policy: Option<&str>) -> Vec<String> {
    let mut found = Vec::new();
    if partitions != 1 {
        found.push(format!("{partitions} partitions"));
    }
    // `compact,delete` would let retention remove an idle relay's last record: progress lost.
    let compact_only = policy.is_some_and(|p| {
        p.split(',').any(|p| p.trim() == "compact") && !p.split(',').any(|p| p.trim() == "delete")
    });
    if !compact_only {
        found.push(format!("cleanup.policy={}", policy.unwrap_or("?")));
    }
    found
}

/// Makes sure the progress topic exists, compacted, with one partition.
///
/// With `create`, the relay asks for the topic it needs first (an existing one is kept). An
/// existing topic with other settings (e.g. created by a broker's auto-creation before the relay
/// could) is repaired when it never held a record — deleted and created again as needed — and
/// refused otherwise, with the command that fixes it: its records may be the progress that keeps
/// rows from being sent twice. Without `create`, a missing topic is an error: it may have been
/// deleted.
pub(crate) async fn ensure_topic(
    client: &ClientConfig,
    topic: &str,
    replication: i32,
    create: bool,
) -> Result<()> {
    let client = no_auto_create(client);
    let admin: AdminClient<DefaultClientContext> = client
        .create()
        .map_err(|e| Error::Config(format!("cannot create a Kafka admin client: {e}")))?;
    if create && create_topic(&admin, topic, replication).await? {
        tracing::info!(topic, "created the exactly-once progress topic");
        return Ok(());
    }
    let Some(partitions) = partition_count(&admin, topic).await? else {
        return Err(Error::Config(format!(
            "the exactly-once progress topic `{topic}` does not exist. On the first exactly-once run, \
             let the relay create it (daemon: --create-progress-topic or --migrate; library: \
             ExactlyOnceSettings::with_create_progress_topic) or create it yourself with one partition \
             and cleanup.policy=compact. If it existed and was deleted, the rows Kafka committed but \
             the database had not marked yet are sent again once it is recreated: read_committed \
             consumers may see those twice"
        )));
    };
    let policy = cleanup_policy(&admin, topic).await?;
    let wrong = problems(partitions, policy.as_deref());
    if wrong.is_empty() {
        return Ok(());
    }
    let bootstrap = client.get("bootstrap.servers").unwrap_or("<brokers>").to_owned();
    let held = {
        let (client, name) = (client.clone(), topic.to_owned());
        tokio::task::spawn_blocking(move || has_ever_held_records(&client, &name, partitions))
            .await
            .map_err(|e| Error::Config(format!("cannot read the progress topic `{topic}`: {e}")))??
    };
    if held {
        let fix = if partitions == 1 {
            format!(
                "kafka-configs.sh --bootstrap-server {bootstrap} --alter --entity-type topics \
                 --entity-name {topic} --add-config cleanup.policy=compact"
            )
        } else {
            format!(
                "stop every relay that uses it, then `kafka-topics.sh --bootstrap-server {bootstrap} \
                 --delete --topic {topic}` and start the relay with --create-progress-topic (rows that \
                 Kafka committed but the database had not marked are then sent again: read_committed \
                 consumers may see those twice)"
            )
        };
        return Err(Error::Config(format!(
            "the exactly-once progress topic `{topic}` has {}; exactly-once needs one partition and \
             cleanup.policy=compact (with `delete` the progress of an idle relay expires and its rows \
             are sent twice). It holds records, which may be progress, so the relay does not change it. \
             Fix: {fix}",
            wrong.join(" and ")
        )));
    }
    if !create {
        return Err(Error::Config(format!(
            "the exactly-once progress topic `{topic}` has {} and holds no records; exactly-once needs \
             one partition and cleanup.policy=compact. Let the relay repair it (daemon: \
             --create-progress-topic; library: ExactlyOnceSettings::with_create_progress_topic), or \
             `kafka-topics.sh --bootstrap-server {bootstrap} --delete --topic {topic}` and create it \
             with one partition and cleanup.policy=compact",
            wrong.join(" and ")
        )));
    }
    tracing::warn!(
        topic,
        problems = %wrong.join(", "),
        "the exactly-once progress topic has the wrong settings and holds no records (a broker's \
         topic auto-creation made it?); deleting it and creating it compacted with one partition"
    );
    recreate(&admin, topic, replication).await
}

/// Asks for the topic with the settings exactly-once needs; whether it was created (`false`: it
/// exists already).
async fn create_topic(
    admin: &AdminClient<DefaultClientContext>,
    topic: &str,
    replication: i32,
) -> Result<bool> {
    let new = NewTopic::new(topic, 1, TopicReplication::Fixed(replication))
        .set("cleanup.policy", "compact")
        .set("min.compaction.lag.ms", "0");
    let results = admin
        .create_topics([&new], &AdminOptions::new())
        .await
        .map_err(|e| Error::Config(format!("cannot create the progress topic `{topic}`: {e}")))?;
    let mut created = false;
    for result in results {
        match result {
            Ok(_) => created = true,
            Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => {
                return Err(Error::Config(format!(
                    "cannot create the progress topic `{topic}`: {code:?}; create it with one partition and \
                     cleanup.policy=compact"
                )));
            }
        }
    }
    Ok(created)
}

/// Deletes the (empty) topic and creates it again with the right settings, once the broker
/// has let go of the old one.
async fn recreate(admin: &AdminClient<DefaultClientContext>, topic: &str, replication: i32) -> Result<()> {
    let refused = |e: String| {
        Error::Config(format!(
            "cannot repair the progress topic `{topic}` ({e}): delete it and create it with one partition \
             and cleanup.policy=compact"
        ))
    };
    for result in admin
        .delete_topics(&[topic], &AdminOptions::new())
        .await
        .map_err(|e| refused(e.to_string()))?
    {
        match result {
            Ok(_) | Err((_, rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
            Err((_, code)) => return Err(refused(format!("{code:?}"))),
        }
    }
    let deadline = Instant::now() + RECREATE_TIMEOUT;
    loop {
        // Until the deletion has propagated, the creation reports that the topic exists.
        if create_topic(admin, topic, replication).await? {
            tracing::info!(
                topic,
                "repaired the exactly-once progress topic: compacted, one partition"
            );
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(refused(format!(
                "it still existed {}s after its deletion",
                RECREATE_TIMEOUT.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The topic's partition count, `None` when it does not exist.
async fn partition_count(admin: &AdminClient<DefaultClientContext>, topic: &str) -> Result<Option<usize>> {
    let metadata = admin
        .inner()
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|e| {
            Error::Sink(txoutbox_core::SinkError::transient(format!(
                "cannot read Kafka metadata: {e}"
            )))
        })?;
    Ok(metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
        .map(|t| t.partitions().len()))
}

/// The topic's `cleanup.policy`.
async fn cleanup_policy(admin: &AdminClient<DefaultClientContext>, topic: &str) -> Result<Option<String>> {
    let resource = rdkafka::admin::ResourceSpecifier::Topic(topic);
    let described = admin
        .describe_configs([&resource], &AdminOptions::new())
        .await
        .map_err(|e| {
            Error::Config(format!(
                "cannot read the settings of the progress topic `{topic}`: {e}"
            ))
        })?;
    Ok(described
        .into_iter()
        .flatten()
        .flat_map(|r| r.entries)
        .find(|e| e.name == "cleanup.policy")
        .and_then(|e| e.value))
}

/// A consumer of the progress topic that never makes a broker create it.
fn progress_consumer(client: &ClientConfig) -> Result<BaseConsumer> {
    let mut config = no_auto_create(client);
    config
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .set("group.id", "txoutbox-progress-reader")
        .set("enable.partition.eof", "false");
    for key in [
        "transactional.id",
        "enable.idempotence",
        "acks",
        "linger.ms",
        "partitioner",
        "queue.buffering.max.messages",
        "transaction.timeout.ms",
        "compression.type",
        "message.max.bytes",
    ] {
        config.remove(key);
    }
    config
        .create()
        .map_err(|e| Error::Config(format!("cannot create the progress reader: {e}")))
}

/// Whether any partition of the topic ever held a record (a high watermark above zero: records
/// since deleted by retention count too). Blocking.
fn has_ever_held_records(client: &ClientConfig, topic: &str, partitions: usize) -> Result<bool> {
    let consumer = progress_consumer(client)?;
    for partition in 0..partitions {
        let partition = i32::try_from(partition).unwrap_or(i32::MAX);
        let (_, high) = consumer
            .fetch_watermarks(topic, partition, Duration::from_secs(10))
            .map_err(|e| {
                Error::Sink(txoutbox_core::SinkError::transient(format!(
                    "cannot read the progress topic `{topic}` (watermarks): {e}"
                )))
            })?;
        if high > 0 {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Reads the progress topic to its end with a read_committed consumer and returns the last
/// committed progress of `transactional_id`. Blocking: call it off the async runtime.
pub(crate) fn read_last(
    client: &ClientConfig,
    topic: &str,
    transactional_id: &str,
) -> Result<Option<Progress>> {
    let consumer = progress_consumer(client)?;
    let transient = |what: &str, e: rdkafka::error::KafkaError| {
        Error::Sink(txoutbox_core::SinkError::transient(format!(
            "cannot read the progress topic `{topic}` ({what}): {e}"
        )))
    };
    let (low, high) = consumer
        .fetch_watermarks(topic, 0, Duration::from_secs(10))
        .map_err(|e| transient("watermarks", e))?;
    if high <= low {
        return Ok(None);
    }
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, 0, Offset::Offset(low))
        .map_err(|e| transient("assign", e))?;
    consumer.assign(&assignment).map_err(|e| transient("assign", e))?;
    let started = Instant::now();
    let mut last = None;
    loop {
        let position = consumer
            .position()
            .ok()
            .and_then(|p| p.find_partition(topic, 0).map(|e| e.offset()));
        if let Some(Offset::Offset(at)) = position
            && at >= high
        {
            return Ok(last);
        }
        if started.elapsed() > READ_TIMEOUT {
            return Err(Error::Sink(txoutbox_core::SinkError::transient(format!(
                "reading the progress topic `{topic}` to its end took over {}s (an open transaction of \
                 another relay may hold it back)",
                READ_TIMEOUT.as_secs()
            ))));
        }
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(message)) => {
                if message.key() == Some(transactional_id.as_bytes())
                    && let Some(payload) = message.payload()
                {
                    let progress: Progress = serde_json::from_slice(payload).map_err(|e| {
                        Error::Config(format!(
                            "a progress record of `{transactional_id}` in `{topic}` is not readable ({e}): \
                             refusing to guess which rows Kafka holds"
                        ))
                    })?;
                    last = Some(progress);
                }
            }
            Some(Err(e)) => return Err(transient("poll", e)),
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_progress_topic_needs_one_compacted_partition() {
        assert!(problems(1, Some("compact")).is_empty());
        assert_eq!(
            problems(1, Some("compact,delete")),
            ["cleanup.policy=compact,delete"]
        );
        assert_eq!(problems(1, Some("delete")), ["cleanup.policy=delete"]);
        assert_eq!(problems(3, None), ["3 partitions", "cleanup.policy=?"]);
    }

    #[test]
    fn runs_of_consecutive_ids_are_written_as_pairs_and_read_back() {
        let progress = Progress {
            v: VERSION,
            txn: "t".into(),
            ids: (100..10_100).chain([7, 20_000, 20_001]).collect(),
            unmarked: vec![],
            stream: None,
        };
        let json = serde_json::to_string(&progress).unwrap();
        assert_eq!(
            json,
            r#"{"v":2,"txn":"t","ids":[7,[100,10099],[20000,20001]],"unmarked":[]}"#
        );
        let back: Progress = serde_json::from_str(&json).unwrap();
        let mut ids = progress.ids.clone();
        ids.sort_unstable();
        assert_eq!(back.ids, ids);
    }

    #[test]
    fn version_1_records_are_still_read() {
        let back: Progress =
            serde_json::from_str(r#"{"v":1,"txn":"t","ids":[3,1,2],"unmarked":[9]}"#).unwrap();
        assert_eq!(back.all_ids(), [1, 2, 3, 9]);
    }

    #[test]
    fn a_corrupt_run_is_refused() {
        for json in [
            r#"{"v":2,"txn":"t","ids":[[5,1]],"unmarked":[]}"#,
            r#"{"v":2,"txn":"t","ids":[[0,9000000000000]],"unmarked":[]}"#,
        ] {
            assert!(serde_json::from_str::<Progress>(json).is_err(), "{json}");
        }
    }

    #[test]
    fn a_successor_completes_the_rows_of_the_last_transaction_and_the_unmarked_ones() {
        let progress = Progress {
            v: 1,
            txn: "t".into(),
            ids: vec![7, 3, 9],
            unmarked: vec![1, 3],
            stream: None,
        };
        assert_eq!(progress.all_ids(), [1, 3, 7, 9]);
        let json = serde_json::to_string(&progress).unwrap();
        assert_eq!(
            serde_json::from_str::<Progress>(&json).unwrap().all_ids(),
            progress.all_ids()
        );
    }
}
