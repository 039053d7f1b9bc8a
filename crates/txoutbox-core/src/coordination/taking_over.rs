//! Buckets a node took from sessions that lost their leases, until its take-over step (see
//! [`TakeOver`](super::ownership::TakeOver)) has run for them: they stay leased and unread, and are
//! never released. The step runs as a task of its own, so a slow one (a broker that is slow to
//! fence, a long progress topic) never holds back the node's lease renewals.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tracing::{info, warn};

use super::ownership::TakeOver;
use crate::child_task::ChildTask;
use crate::error::{Error, Result};

/// A take-over under way: the sessions it covers and its task.
struct Running {
    sessions: BTreeSet<i64>,
    task: ChildTask<Result<()>>,
}

/// The buckets still to take over (bucket → the lost sessions' epochs) and the step under way.
#[derive(Default)]
pub(crate) struct TakingOver {
    pending: BTreeMap<i32, BTreeSet<i64>>,
    running: Option<Running>,
}

impl TakingOver {
    /// Nothing to take over.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Records that `bucket` was taken from the lost session `epoch`.
    pub(crate) fn add(&mut self, bucket: i32, epoch: i64) {
        self.pending.entry(bucket).or_default().insert(epoch);
    }

    /// Whether `bucket` still waits for its take-over.
    pub(crate) fn contains(&self, bucket: i32) -> bool {
        self.pending.contains_key(&bucket)
    }

    /// The buckets still waiting.
    pub(crate) fn buckets(&self) -> impl Iterator<Item = i32> + '_ {
        self.pending.keys().copied()
    }

    /// Whether no bucket waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Starts the step for every waiting session when none runs, then waits up to `patience`
    /// for the running one: once it succeeded, its sessions' buckets may be read. A
    /// [`Config`](Error::Config) error is returned (the relay stops); any other failure is logged
    /// and the step starts again at the next call.
    pub(crate) async fn advance(
        &mut self,
        take_over: &TakeOver,
        node: &str,
        patience: Duration,
    ) -> Result<()> {
        if self.running.is_none() && !self.pending.is_empty() {
            let sessions: BTreeSet<i64> = self.pending.values().flatten().copied().collect();
            let task = ChildTask::spawn(take_over(sessions.iter().copied().collect()));
            self.running = Some(Running { sessions, task });
        }
        let Some(running) = self.running.as_mut() else {
            return Ok(());
        };
        let Ok(outcome) = tokio::time::timeout(patience, running.task.join()).await else {
            return Ok(());
        };
        let Some(Running { sessions, .. }) = self.running.take() else {
            return Ok(());
        };
        match outcome {
            Ok(Ok(())) => {
                let mut done = Vec::new();
                self.pending.retain(|bucket, waiting| {
                    waiting.retain(|epoch| !sessions.contains(epoch));
                    if waiting.is_empty() {
                        done.push(*bucket);
                    }
                    !waiting.is_empty()
                });
                info!(node, ?sessions, buckets = ?done, "took over the buckets of lost sessions");
                Ok(())
            }
            Ok(Err(error @ Error::Config(_))) => Err(error),
            Ok(Err(error)) => {
                warn!(%error, ?sessions, "could not take over the buckets of lost sessions yet; they stay unread, retrying");
                Ok(())
            }
            Err(error) => {
                warn!(%error, ?sessions, "the take-over of lost sessions failed; they stay unread, retrying");
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[tokio::test]
    async fn a_slow_take_over_goes_on_beside_the_rounds_and_frees_its_buckets_when_done() {
        let (open, gate) = tokio::sync::oneshot::channel::<()>();
        let gate = Arc::new(Mutex::new(Some(gate)));
        let calls = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&calls);
        let take_over: TakeOver = Arc::new(move |sessions| {
            seen.lock().unwrap().push(sessions);
            let gate = gate.lock().unwrap().take();
            Box::pin(async move {
                if let Some(gate) = gate {
                    let _ = gate.await;
                }
                Ok(())
            })
        });
        let mut taking_over = TakingOver::new();
        taking_over.add(7, 3);
        taking_over.add(9, 4);
        let patience = Duration::from_millis(20);
        for _ in 0..3 {
            taking_over.advance(&take_over, "me", patience).await.unwrap();
            assert!(
                taking_over.contains(7) && taking_over.contains(9),
                "unread while it runs"
            );
        }
        // A bucket taken from another session meanwhile waits for a take-over of its own.
        taking_over.add(11, 5);
        open.send(()).unwrap();
        taking_over.advance(&take_over, "me", patience).await.unwrap();
        assert_eq!(taking_over.buckets().collect::<Vec<_>>(), [11]);
        taking_over.advance(&take_over, "me", patience).await.unwrap();
        assert!(taking_over.is_empty());
        assert_eq!(
            *calls.lock().unwrap(),
            [vec![3, 4], vec![5]],
            "started once per round of sessions"
        );
    }
}
