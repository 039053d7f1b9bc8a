//! The poll thread: reads records, hands them to lanes, commits finished offsets. A thread of its
//! own, so that a rebalance can wait for the handlers without holding up the async runtime. It
//! polls all the time — rebalances and commits are served even while the lanes are full: then
//! it pauses fetching instead of blocking.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{BorrowedMessage, Headers};
use tokio::sync::mpsc;

use crate::kafka_context::{InboxContext, commit_list};
use crate::message::{InboxMessage, position_id};
use crate::message_id::MessageIdSource;
use crate::metrics::{self, count, set};
use crate::progress::Progress;
use crate::worker::{Work, lane_of};

/// What the poll thread owns.
pub(crate) struct Poller {
    pub(crate) consumer: BaseConsumer<InboxContext>,
    pub(crate) lanes: Vec<mpsc::UnboundedSender<Work>>,
    pub(crate) progress: Arc<Progress>,
    pub(crate) name: String,
    pub(crate) message_id: MessageIdSource,
    pub(crate) max_in_flight_bytes: usize,
    pub(crate) commit_interval: Duration,
    pub(crate) stop: Arc<AtomicBool>,
}

/// Whether fetching is paused, and for which assignment.
#[derive(Debug, Default)]
struct Paused {
    /// `Progress::assignments` when the pause was made (a rebalance assigns partitions unpaused).
    assignments: Option<u64>,
}

impl Poller {
    /// Polls until `stop`; then lets the lanes go, waits for `lanes_done`, and commits last.
    pub(crate) fn run(mut self, lanes_done: std::sync::mpsc::Receiver<()>) {
        let mut last_commit = Instant::now();
        let mut paused = Paused::default();
        while !self.stop.load(Ordering::Acquire) {
            if last_commit.elapsed() >= self.commit_interval {
                self.commit(CommitMode::Async);
                set(
                    metrics::IN_FLIGHT,
                    &self.name,
                    self.progress.in_flight_records() as f64,
                );
                last_commit = Instant::now();
            }
            // Memory bound: fetch no further while the records in hand fill it, but keep polling.
            self.pause_while_full(&mut paused);
            match self.consumer.poll(Duration::from_millis(100)) {
                None => {}
                Some(Err(e)) => {
                    tracing::warn!(consumer = self.name, error = %e, "Kafka consumer error");
                }
                Some(Ok(record)) => {
                    let message = self.message_of(&record);
                    drop(record);
                    self.dispatch(message);
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

    /// Pauses every assigned partition while the bound is reached (again after a rebalance) and
    /// resumes them once it is not.
    fn pause_while_full(&self, paused: &mut Paused) {
        let full = self.progress.is_full(self.max_in_flight_bytes);
        let assignments = self.progress.assignments();
        let wanted = full && paused.assignments != Some(assignments);
        let release = !full && paused.assignments.is_some();
        if !wanted && !release {
            return;
        }
        let Ok(assignment) = self.consumer.assignment() else {
            return;
        };
        let result = if wanted {
            self.consumer.pause(&assignment)
        } else {
            self.consumer.resume(&assignment)
        };
        match result {
            Ok(()) => paused.assignments = wanted.then_some(assignments),
            Err(e) => tracing::warn!(consumer = self.name, error = %e, "could not pause or resume fetching"),
        }
    }

    /// The record as the handler sees it, with its id. A record whose headers librdkafka's
    /// binding cannot read (a header name that is not UTF-8) is handed on without headers, and
    /// a message-id function that panics leaves the record its position.
    fn message_of(&self, record: &BorrowedMessage<'_>) -> InboxMessage {
        let headers = catch_unwind(AssertUnwindSafe(|| {
            record
                .headers()
                .map(|headers| {
                    headers
                        .iter()
                        .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                        .collect()
                })
                .unwrap_or_default()
        }));
        let headers = headers.unwrap_or_else(|_| {
            tracing::warn!(
                consumer = self.name,
                topic = record.topic(),
                partition = record.partition(),
                offset = record.offset(),
                "a header name is not UTF-8: the record is handled without its headers"
            );
            Vec::new()
        });
        let mut message = InboxMessage {
            id: String::new(),
            topic: record.topic().to_owned(),
            partition: record.partition(),
            offset: record.offset(),
            key: record.key().map(<[u8]>::to_vec),
            payload: record.payload().map(<[u8]>::to_vec),
            headers,
            timestamp_millis: record.timestamp().to_millis(),
            replay: false,
        };
        // `assign` gives a record without a usable id its position itself; only a panicking
        // derive function leaves that to be done here.
        match catch_unwind(AssertUnwindSafe(|| self.message_id.assign(&mut message))) {
            Ok(true) => {}
            Ok(false) => count(metrics::POSITION_IDS, &self.name),
            Err(_) => {
                count(metrics::POSITION_IDS, &self.name);
                message.id = position_id(&message.topic, message.partition, message.offset);
            }
        }
        message
    }

    fn dispatch(&mut self, message: InboxMessage) {
        let partition = (message.topic.clone(), message.partition);
        let Some(ticket) = self
            .progress
            .start(&partition, message.offset, message.size_bytes())
        else {
            // Read across a rebalance for a partition no longer assigned: it comes again.
            return;
        };
        let lane = lane_of(&message, self.lanes.len());
        let work = Work { message, ticket };
        if let Some(sender) = self.lanes.get(lane)
            && let Err(refused) = sender.send(work)
        {
            // The lane stopped (shutdown): the record stays uncommitted and comes again.
            self.progress.skip(&refused.0.ticket);
        }
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
