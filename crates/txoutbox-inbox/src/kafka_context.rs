//! The consumer's rdkafka context: rebalances drain and commit before partitions go, failed
//! commits are taken again, librdkafka's statistics give the lag.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaResult;
use rdkafka::statistics::Statistics;
use rdkafka::{Offset, TopicPartitionList};

use crate::metrics::{self, set};
use crate::progress::{Partition, Progress};

/// The rdkafka context of the inbox's consumer.
pub(crate) struct InboxContext {
    pub(crate) consumer: String,
    pub(crate) progress: Arc<Progress>,
    pub(crate) revoke_timeout: Duration,
}

impl ClientContext for InboxContext {
    fn stats(&self, statistics: Statistics) {
        let lag: i64 = statistics
            .topics
            .values()
            .flat_map(|t| t.partitions.values())
            .filter(|p| p.partition >= 0 && p.consumer_lag >= 0)
            .map(|p| p.consumer_lag)
            .sum();
        set(metrics::LAG, &self.consumer, lag as f64);
    }
}

impl ConsumerContext for InboxContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(list) = rebalance else {
            return;
        };
        let partitions = partitions_of(list);
        // Records queued for these partitions are skipped from now on (they come again to
        // whoever gets the partitions); the ones handlers run are waited for.
        if !self.progress.quiesce(&partitions, self.revoke_timeout) {
            tracing::warn!(consumer = self.consumer, revoke_timeout = ?self.revoke_timeout,
                "partitions revoked while handlers still ran their records; those come again \
                 (the inbox skips what was handled)");
        }
        let positions = self.progress.take_positions(Some(&partitions));
        if !positions.is_empty() {
            match commit_list(&positions) {
                Ok(list) => {
                    if let Err(e) = consumer.commit(&list, CommitMode::Sync) {
                        tracing::warn!(consumer = self.consumer, error = %e,
                            "could not commit the offsets of revoked partitions; their records come again");
                    }
                }
                Err(e) => tracing::warn!(consumer = self.consumer, error = %e, "bad offset list"),
            }
        }
        self.progress.revoke(&partitions);
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => {
                let partitions = partitions_of(list);
                tracing::info!(
                    consumer = self.consumer,
                    partitions = partitions.len(),
                    "partitions assigned"
                );
                self.progress.assign(partitions);
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => {
                tracing::warn!(consumer = self.consumer, error = %e, "rebalance failed");
            }
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        if let Err(e) = result {
            let positions: Vec<(Partition, i64)> = offsets
                .elements()
                .iter()
                .filter_map(|e| match e.offset() {
                    Offset::Offset(o) => Some(((e.topic().to_owned(), e.partition()), o)),
                    _ => None,
                })
                .collect();
            self.progress.untake(&positions);
            tracing::warn!(consumer = self.consumer, error = %e, "offset commit failed; retried at the next interval");
        }
    }
}

/// The partitions of a list.
pub(crate) fn partitions_of(list: &TopicPartitionList) -> Vec<Partition> {
    list.elements()
        .iter()
        .map(|e| (e.topic().to_owned(), e.partition()))
        .collect()
}

/// The list that commits these positions.
pub(crate) fn commit_list(positions: &[(Partition, i64)]) -> KafkaResult<TopicPartitionList> {
    let mut list = TopicPartitionList::with_capacity(positions.len());
    for ((topic, partition), position) in positions {
        list.add_partition_offset(topic, *partition, Offset::Offset(*position))?;
    }
    Ok(list)
}
