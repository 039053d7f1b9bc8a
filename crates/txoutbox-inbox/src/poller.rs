//! The poll thread: reads records, hands them to lanes, commits finished offsets. A thread of its
//! own, so that a rebalance can wait for the handlers without holding up the async runtime.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Headers;
use tokio::sync::mpsc;

use crate::kafka_context::{InboxContext, commit_list};
use crate::message::InboxMessage;
use crate::message_id::MessageIdSource;
use crate::metrics::{self, count, set};
use crate::progress::Progress;
use crate::worker::{Work, lane_of};

/// What the poll thread owns.
pub(crate) struct Poller {
    pub(crate) consumer: BaseConsumer<InboxContext>,
    pub(crate) lanes: Vec<mpsc::Sender<Work>>,
    pub(crate) progress: Arc<Progress>,
    pub(crate) name: String,
    pub(crate) message_id: MessageIdSource,
    pub(crate) max_in_flight_bytes: usize,
    pub(crate) commit_interval: Duration,
    pub(crate) stop: Arc<AtomicBool>,
}

impl Poller {
    /// Polls until `stop`; then lets the lanes go, waits for `lanes_done`, and commits last.
    pub(crate) fn run(mut self, lanes_done: std::sync::mpsc::Receiver<()>) {
        let mut last_commit = Instant::now();
        while !self.stop.load(Ordering::Acquire) {
            if last_commit.elapsed() >= self.commit_interval {
                self.commit(CommitMode::Async);
                last_commit = Instant::now();
            }
            // Memory bound: read no further while the records in hand fill it.
            if !self
                .progress
                .wait_for_room(0, self.max_in_flight_bytes, Duration::from_millis(100))
            {
                continue;
            }
            match self.consumer.poll(Duration::from_millis(100)) {
                None => {}
                Some(Err(e)) => {
                    tracing::warn!(consumer = self.name, error = %e, "Kafka consumer error");
                }
                Some(Ok(record)) => {
                    let mut message = InboxMessage {
                        id: String::new(),
                        topic: record.topic().to_owned(),
                        partition: record.partition(),
                        offset: record.offset(),
                        key: record.key().map(<[u8]>::to_vec),
                        payload: record.payload().map(<[u8]>::to_vec),
                        headers: record
                            .headers()
                            .map(|headers| {
                                headers
                                    .iter()
                                    .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                                    .collect()
                            })
                            .unwrap_or_default(),
                        timestamp_millis: record.timestamp().to_millis(),
                    };
                    drop(record);
                    self.dispatch(&mut message);
                }
            }
        }
        // Closing the channels lets idle lanes end; busy ones finish their record first.
        self.lanes.clear();
        let _ = lanes_done.recv();
        self.commit(CommitMode::Sync);
        set(metrics::IN_FLIGHT, &self.name, 0.0);
        // Dropping the consumer closes it: it leaves the group at once, not after a timeout.
    }

    fn dispatch(&mut self, message: &mut InboxMessage) {
        if !self.message_id.assign(message) {
            count(metrics::POSITION_IDS, &self.name);
        }
        let partition = (message.topic.clone(), message.partition);
        let Some(ticket) = self
            .progress
            .start(&partition, message.offset, message.size_bytes())
        else {
            // Read across a rebalance for a partition no longer assigned: it comes again.
            return;
        };
        let lane = lane_of(message, self.lanes.len());
        let work = Work {
            message: std::mem::replace(message, InboxMessage::new("", 0, 0)),
            ticket,
        };
        if let Some(sender) = self.lanes.get(lane)
            && let Err(refused) = sender.blocking_send(work)
        {
            // The lane stopped (shutdown): the record stays uncommitted and comes again.
            self.progress.abandon(&refused.0.ticket);
        }
        set(
            metrics::IN_FLIGHT,
            &self.name,
            self.progress.in_flight_records() as f64,
        );
    }

    fn commit(&self, mode: CommitMode) {
        let positions = self.progress.take_positions(None);
        if positions.is_empty() {
            return;
        }
        let result = commit_list(&positions).and_then(|list| self.consumer.commit(&list, mode));
        if let Err(e) = result {
            self.progress.untake(&positions);
            tracing::warn!(consumer = self.name, error = %e, "offset commit failed; retried at the next interval");
        }
    }
}
