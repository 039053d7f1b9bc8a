//! The transport a relay sends messages through, and the per-batch delivery tracking it reports to.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::message::OutboxMessage;

/// How the relay should react to a failed delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SinkErrorKind {
    /// The transport is unavailable or slow (broker down, timeout, leader change). The message is
    /// retried later without counting an attempt against it.
    Transient,
    /// This message cannot be delivered as it is (too large, invalid or unauthorized topic,
    /// invalid record). Counts an attempt; after the last one the message is dead-lettered.
    Permanent,
    /// Not handed to the transport because an earlier message of its key failed in the same
    /// batch: sending it would let it overtake. Nothing is counted; it is read again later.
    Deferred,
    /// Another relay took over this relay's transport identity (e.g. its Kafka transactional
    /// id): nothing was delivered, and this relay must stop. The rows stay pending for it.
    Fenced,
    /// This message can never be delivered as it is, whenever it is tried: a row that could not
    /// be read, a topic name the transport refuses, a message larger than the transport takes, a
    /// topic outside the relay's allow-list. Dead-lettered at once (one attempt), with the reason.
    Rejected,
}

/// A failed delivery, classified by the sink at the boundary.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SinkError {
    kind: SinkErrorKind,
    code: Option<String>,
    message: String,
    unsent: bool,
}

impl SinkError {
    /// A transient failure.
    pub fn transient(message: impl Into<String>) -> Self {
        Self::new(SinkErrorKind::Transient, None, message)
    }

    /// A permanent failure of one message.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self::new(SinkErrorKind::Permanent, None, message)
    }

    /// A message that can never be delivered as it is ([`SinkErrorKind::Rejected`]), refused
    /// before the transport took it.
    pub fn rejected(message: impl Into<String>) -> Self {
        Self::new(SinkErrorKind::Rejected, None, message).unsent()
    }

    /// A message held back behind an earlier failure of its key, never handed to the transport.
    pub fn deferred() -> Self {
        Self::new(
            SinkErrorKind::Deferred,
            None,
            "held back: an earlier message of its key failed",
        )
        .unsent()
    }

    /// Marks the failure as one that happened before the transport took the message (refused
    /// when enqueued): nothing of it can be on its way, and the sink held back the later messages
    /// of its key in the batch, so the relay need not give up the other messages queued after it.
    #[must_use]
    pub fn unsent(mut self) -> Self {
        self.unsent = true;
        self
    }

    /// Whether the transport never took the message (see [`unsent`](Self::unsent)).
    pub fn is_unsent(&self) -> bool {
        self.unsent
    }

    /// A failure with the transport's own error code (e.g. `MessageSizeTooLarge`).
    pub fn new(kind: SinkErrorKind, code: Option<String>, message: impl Into<String>) -> Self {
        Self {
            kind,
            code,
            message: message.into(),
            unsent: false,
        }
    }

    /// The class of the failure.
    pub fn kind(&self) -> SinkErrorKind {
        self.kind
    }

    /// Whether the failure is transient.
    pub fn is_transient(&self) -> bool {
        self.kind == SinkErrorKind::Transient
    }

    /// The transport's error code, if it gave one.
    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }
}

/// The outcome of one message of a batch.
pub type DeliveryResult = Result<(), SinkError>;

/// Collects the outcomes of a batch's messages as the transport reports them, from any thread.
///
/// A sink creates one per batch with [`DeliveryTracker::new`], hands each message's index to its
/// transport, calls [`complete`](DeliveryTracker::complete) exactly once per index, and returns
/// [`DeliveryTracker::delivery`] to the relay.
#[derive(Debug)]
pub struct DeliveryTracker {
    results: Mutex<Vec<Option<DeliveryResult>>>,
    remaining: AtomicUsize,
    done: Notify,
}

impl DeliveryTracker {
    /// A tracker for a batch of `len` messages.
    pub fn new(len: usize) -> Arc<Self> {
        Arc::new(Self {
            results: Mutex::new(vec![None; len]),
            remaining: AtomicUsize::new(len),
            done: Notify::new(),
        })
    }

    /// Records the outcome of message `index`. A second outcome for the same index is ignored.
    pub fn complete(&self, index: usize, result: DeliveryResult) {
        let first = {
            let mut results = self.results.lock().unwrap_or_else(|p| p.into_inner());
            match results.get_mut(index) {
                Some(slot @ None) => {
                    *slot = Some(result);
                    true
                }
                _ => false,
            }
        };
        if first && self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.done.notify_one();
        }
    }

    /// The indexes that already failed permanently or were rejected (e.g. refused when
    /// enqueued), so the relay can hold their keys before it hands over the next batch.
    pub fn permanent_failures_so_far(&self) -> Vec<usize> {
        let results = self.results.lock().unwrap_or_else(|p| p.into_inner());
        results
            .iter()
            .enumerate()
            .filter(|(_, r)| {
                matches!(r, Some(Err(e)) if matches!(e.kind(), SinkErrorKind::Permanent | SinkErrorKind::Rejected))
            })
            .map(|(i, _)| i)
            .collect()
    }

    /// Whether every message has an outcome.
    pub fn is_done(&self) -> bool {
        self.remaining.load(Ordering::Acquire) == 0
    }

    /// Each message's outcome as reported so far (`None`: not reported yet).
    pub fn outcomes_so_far(&self) -> Vec<Option<DeliveryResult>> {
        self.results.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The handle the relay awaits.
    pub fn delivery(self: &Arc<Self>) -> BatchDelivery {
        BatchDelivery {
            tracker: Arc::clone(self),
        }
    }
}

/// The outcomes of a batch handed to a sink, available once the transport reported every message.
#[derive(Debug)]
pub struct BatchDelivery {
    tracker: Arc<DeliveryTracker>,
}

impl BatchDelivery {
    /// See [`DeliveryTracker::permanent_failures_so_far`].
    pub fn permanent_failures_so_far(&self) -> Vec<usize> {
        self.tracker.permanent_failures_so_far()
    }

    /// Whether every message has an outcome (so [`wait`](Self::wait) returns at once).
    pub fn is_done(&self) -> bool {
        self.tracker.is_done()
    }

    /// Waits for every outcome; they come back in the batch's order.
    pub async fn wait(self) -> Vec<DeliveryResult> {
        while !self.tracker.is_done() {
            self.tracker.done.notified().await;
        }
        let mut results = self.tracker.results.lock().unwrap_or_else(|p| p.into_inner());
        results
            .iter_mut()
            .map(|r| {
                r.take()
                    .unwrap_or_else(|| Err(SinkError::transient("no outcome reported")))
            })
            .collect()
    }
}

/// What a sink found of an earlier session when it took over its transport identity
/// ([`Sink::take_over`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TakenOver {
    /// The session's epoch.
    pub session: i64,
    /// The session's progress key and whether its progress was found.
    pub record: crate::ProgressRecord,
    /// The rows the session delivered for good (committed), marked or not.
    pub ids: Vec<i64>,
}

/// Where the relay sends messages: Kafka in production, anything in tests.
///
/// The relay works in batches so that a transactional transport (exactly-once mode) can wrap one
/// batch in one transaction. `send_batch` must hand the messages to the transport **in order**
/// before it returns (the relay relies on it for per-key order) and must not wait for their
/// delivery: that is what the returned [`BatchDelivery`] is for, so batches are pipelined.
pub trait Sink: Send + Sync + 'static {
    /// Enqueues a batch in order and returns the handle that resolves with each message's outcome.
    fn send_batch(&self, batch: Arc<[OutboxMessage]>) -> impl Future<Output = BatchDelivery> + Send;

    /// Checks that the transport answers (e.g. a metadata request to the brokers). The relay
    /// calls it now and then while nothing is in flight, so its health shows an unreachable
    /// transport even when there is nothing to send. The default answers `Ok`.
    fn probe(&self) -> impl Future<Output = Result<(), SinkError>> + Send {
        async { Ok(()) }
    }

    /// Called once when the relay starts, before it reads: the ids of rows the transport already
    /// holds for good (committed in an earlier run) that the store may still list as pending. The
    /// relay completes them without sending them again. A transactional sink learns them from
    /// its progress records; the default has none.
    fn recover(&self) -> impl Future<Output = crate::Result<Vec<i64>>> + Send {
        async { Ok(Vec::new()) }
    }

    /// Called after a delivery failed transiently: the transport should give up the messages it
    /// holds but has not sent yet (each then reports a transient failure), so none of them can
    /// overtake the failed one of its key, which the relay sends again. The default does nothing.
    fn discard_queued(&self) {}

    /// Called after [`discard_queued`](Self::discard_queued) when the relay has moved its send
    /// epoch on after a failure: every batch handed over from now on was read after the failed
    /// rows were given back (their keys are held until they go again). A sink that refuses
    /// batches after a failure of its own (the exactly-once sink after an abort) takes them
    /// again from here. The default does nothing.
    fn epoch_moved(&self) {}

    /// Called after the store confirmed the completion of delivered rows, so a transactional sink
    /// stops listing them as delivered-but-unmarked. The default does nothing.
    fn completed(&self, ids: &[i64]) {
        let _ = ids;
    }

    /// Called after the relay handed over the last batch of a burst: it has nothing more to send
    /// for now (its read came back short) or no room to send more (`max_in_flight` is reached).
    /// A sink that gathers batches (a Kafka transaction) should complete what it holds now
    /// instead of waiting for more. The default does nothing.
    fn end_of_burst(&self) {}

    /// Whether the relay may send copies of dead-lettered rows through this sink (to a
    /// dead-letter topic). A sink that records which rows each send delivered (a transactional
    /// sink's progress) says no: a copy would count as the row's delivery. The default: yes.
    fn accepts_dead_letter_copies(&self) -> bool {
        true
    }

    /// The largest message (topic, key, payload and headers, in bytes) this transport accepts,
    /// if it has a limit. The relay reads larger rows without their contents and dead-letters
    /// them at once (reading them would only hold them in memory). The default: no limit.
    fn max_message_bytes(&self) -> Option<usize> {
        None
    }

    /// The delivery this sink gives, when it is not at-least-once (`Some("exactly-once")`). A
    /// coordinated relay stores it with its node, so relays that deliver differently refuse to
    /// share a table. The default: `None` (at-least-once).
    fn delivery(&self) -> Option<&'static str> {
        None
    }
    /// Where this sink keeps its progress and whether its last [`recover`](Self::recover) found
    /// any, for a sink that records progress (a transactional sink). The relay checks it against
    /// the store's record of earlier deliveries ([`Store::progress_kept`](crate::Store::progress_kept)):
    /// progress that vanished while the table remembers deliveries under its key stops the relay,
    /// which cannot tell the rows the transport already holds from the others. The default:
    /// `None` (no progress).
    fn progress_record(&self) -> Option<crate::ProgressRecord> {
        None
    }

    /// Called once by an exactly-once relay in work-balance mode, before
    /// [`recover`](Self::recover), with its session's epoch (unique per table and session): the
    /// sink takes a transport identity of its own for the session (the Kafka sink: its
    /// transactional id followed by `-e<epoch>`), so that a node taking over the session's
    /// buckets later fences exactly it ([`take_over`](Self::take_over)). The default ignores it.
    fn use_session(&self, epoch: i64) {
        let _ = epoch;
    }

    /// Called by an exactly-once relay in work-balance mode before it reads buckets whose leases
    /// it took from earlier sessions that lost them (a node that died, froze or was cut off):
    /// fences each session's transport identity (its open transaction is aborted, and it can
    /// commit nothing more) and returns, per session, where its progress was looked for and the
    /// rows it delivered for good; the relay then takes the buckets and completes those rows of
    /// them in one database transaction. The default refuses
    /// (a sink that records progress must implement it to run in work-balance mode).
    fn take_over(&self, sessions: &[i64]) -> impl Future<Output = crate::Result<Vec<TakenOver>>> + Send {
        let _ = sessions;
        async {
            Err(crate::Error::Config(
                "this sink cannot take over the transport identity of a lost relay session, which \
                 its delivery needs in work-balance mode: run it in exclusive mode"
                    .into(),
            ))
        }
    }

    /// Called once when the relay starts, before [`recover`](Self::recover), when its store's
    /// row ids last one session only (see [`Store::stream_positions`](crate::Store::stream_positions)):
    /// a sink that records progress must record it in these positions instead of ids. The
    /// default ignores them.
    fn use_stream_positions(&self, positions: Arc<dyn crate::StreamPositions>) {
        let _ = positions;
    }

    /// Called once when the relay is created, with the labels of its metrics (its table, and in
    /// WAL mode its slot): a sink that records metrics of its own labels them the same way, so
    /// several relays in one process keep apart series. The default ignores them.
    fn use_metric_labels(&self, labels: &crate::MetricLabels) {
        let _ = labels;
    }
}

impl<S: Sink> Sink for Arc<S> {
    fn send_batch(&self, batch: Arc<[OutboxMessage]>) -> impl Future<Output = BatchDelivery> + Send {
        (**self).send_batch(batch)
    }

    fn probe(&self) -> impl Future<Output = Result<(), SinkError>> + Send {
        (**self).probe()
    }

    fn recover(&self) -> impl Future<Output = crate::Result<Vec<i64>>> + Send {
        (**self).recover()
    }

    fn progress_record(&self) -> Option<crate::ProgressRecord> {
        (**self).progress_record()
    }

    fn completed(&self, ids: &[i64]) {
        (**self).completed(ids);
    }

    fn discard_queued(&self) {
        (**self).discard_queued();
    }

    fn epoch_moved(&self) {
        (**self).epoch_moved();
    }

    fn end_of_burst(&self) {
        (**self).end_of_burst();
    }

    fn accepts_dead_letter_copies(&self) -> bool {
        (**self).accepts_dead_letter_copies()
    }

    fn delivery(&self) -> Option<&'static str> {
        (**self).delivery()
    }
    fn max_message_bytes(&self) -> Option<usize> {
        (**self).max_message_bytes()
    }
    fn use_stream_positions(&self, positions: Arc<dyn crate::StreamPositions>) {
        (**self).use_stream_positions(positions);
    }
    fn use_session(&self, epoch: i64) {
        (**self).use_session(epoch);
    }
    fn take_over(&self, sessions: &[i64]) -> impl Future<Output = crate::Result<Vec<TakenOver>>> + Send {
        (**self).take_over(sessions)
    }
    fn use_metric_labels(&self, labels: &crate::MetricLabels) {
        (**self).use_metric_labels(labels);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tracker_reports_in_batch_order_once_all_arrive() {
        let tracker = DeliveryTracker::new(3);
        let delivery = tracker.delivery();
        let t = Arc::clone(&tracker);
        let waiter = tokio::spawn(delivery.wait());
        t.complete(2, Err(SinkError::permanent("too big")));
        t.complete(0, Ok(()));
        assert!(!t.is_done());
        t.complete(0, Err(SinkError::transient("ignored: second outcome")));
        t.complete(1, Ok(()));
        let results = waiter.await.unwrap();
        assert_eq!(
            results,
            vec![Ok(()), Ok(()), Err(SinkError::permanent("too big"))]
        );
    }

    #[tokio::test]
    async fn empty_batch_is_done_at_once() {
        assert!(DeliveryTracker::new(0).delivery().wait().await.is_empty());
    }
}
