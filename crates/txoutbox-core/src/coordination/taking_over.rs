//! Buckets a node wants whose leases ran out under sessions that lost them, until it has taken
//! them over: fenced the sessions' transport identities ([`TakeOver`](super::ownership::TakeOver))
//! and, in one database transaction, taken the leases and completed what the sessions delivered
//! ([`Leases::take_over`]). The step runs as a task of its own, so a slow one (a broker slow to
//! fence, a long progress topic) never holds back the node's lease renewals.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tracing::{info, warn};

use super::Leases;
use super::ownership::TakeOver;
use crate::child_task::ChildTask;
use crate::error::{Error, Result};
use crate::store::Completion;

/// A take-over under way: the buckets and sessions it covers, and its task (which returns the
/// buckets it took).
struct Running {
    covered: BTreeMap<i32, BTreeSet<i64>>,
    task: ChildTask<Result<Vec<i32>>>,
}

/// The buckets still to take over (bucket → the lost sessions' epochs) and the step under way.
#[derive(Default)]
pub(crate) struct TakingOver {
    pending: BTreeMap<i32, BTreeSet<i64>>,
    running: Option<Running>,
}

/// Who takes over: the node's session and how it completes rows.
pub(crate) struct Taker<'a, L> {
    pub(crate) leases: &'a L,
    pub(crate) node: &'a str,
    pub(crate) epoch: i64,
    pub(crate) completion: Completion,
    pub(crate) ttl: Duration,
}

impl TakingOver {
    /// Nothing to take over.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Records that `bucket`'s lease ran out under the lost session `epoch`.
    pub(crate) fn add(&mut self, bucket: i32, epoch: i64) {
        self.pending.entry(bucket).or_default().insert(epoch);
    }

    /// Forgets buckets no longer wanted that no running step covers.
    pub(crate) fn keep_only(&mut self, wanted: &BTreeSet<i32>) {
        let covered = self.running.as_ref().map(|r| &r.covered);
        self.pending
            .retain(|bucket, _| wanted.contains(bucket) || covered.is_some_and(|c| c.contains_key(bucket)));
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
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Starts the step for every waiting bucket when none runs, then waits up to `patience` for
    /// the running one; returns the buckets it took once it finished. A
    /// [`Config`](Error::Config) error is returned (the relay stops); any other failure is logged
    /// and the step starts again at the next call.
    pub(crate) async fn advance<L: Leases>(
        &mut self,
        take_over: &TakeOver,
        taker: Taker<'_, L>,
        patience: Duration,
    ) -> Result<Vec<i32>> {
        if self.running.is_none() && !self.pending.is_empty() {
            let covered = self.pending.clone();
            let task = ChildTask::spawn(run(take_over.clone(), &taker, covered.clone()));
            self.running = Some(Running { covered, task });
        }
        let Some(running) = self.running.as_mut() else {
            return Ok(Vec::new());
        };
        let Ok(outcome) = tokio::time::timeout(patience, running.task.join()).await else {
            return Ok(Vec::new());
        };
        let Some(Running { covered, .. }) = self.running.take() else {
            return Ok(Vec::new());
        };
        let sessions: BTreeSet<i64> = covered.values().flatten().copied().collect();
        match outcome {
            Ok(Ok(taken)) => {
                // Covered buckets not taken went to another node meanwhile (or were taken in a
                // step whose answer was lost): the next claim says which are this session's.
                self.pending.retain(|bucket, waiting| {
                    if let Some(ran) = covered.get(bucket) {
                        waiting.retain(|epoch| !ran.contains(epoch));
                    }
                    !waiting.is_empty()
                });
                info!(node = taker.node, ?sessions, buckets = ?taken, "took over the buckets of lost sessions");
                Ok(taken)
            }
            Ok(Err(error @ Error::Config(_))) => Err(error),
            Ok(Err(error)) => {
                warn!(%error, ?sessions, "could not take over the buckets of lost sessions yet; retrying");
                Ok(Vec::new())
            }
            Err(error) => {
                warn!(%error, ?sessions, "the take-over of lost sessions failed; retrying");
                Ok(Vec::new())
            }
        }
    }
}

/// The step: fence the sessions and learn what they delivered, then take each one's buckets
/// with its rows completed.
fn run<L: Leases>(
    take_over: TakeOver,
    taker: &Taker<'_, L>,
    covered: BTreeMap<i32, BTreeSet<i64>>,
) -> impl std::future::Future<Output = Result<Vec<i32>>> + Send + 'static {
    let (leases, node, epoch, completion, ttl) = (
        taker.leases.clone(),
        taker.node.to_owned(),
        taker.epoch,
        taker.completion,
        taker.ttl,
    );
    async move {
        let mut buckets_of: BTreeMap<i64, Vec<i32>> = BTreeMap::new();
        for (bucket, sessions) in &covered {
            for session in sessions {
                buckets_of.entry(*session).or_default().push(*bucket);
            }
        }
        let found = take_over(buckets_of.keys().copied().collect()).await?;
        let mut taken = Vec::new();
        for session in found {
            let Some(buckets) = buckets_of.get(&session.session) else {
                continue;
            };
            let got = leases
                .take_over(
                    &node,
                    epoch,
                    session.session,
                    buckets,
                    &session.ids,
                    completion,
                    ttl,
                )
                .await?;
            taken.extend(got);
        }
        taken.sort_unstable();
        taken.dedup();
        Ok(taken)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::coordination::{LeaseInfo, LiveNode, Ownership};

    /// Leases whose take-overs take what they are asked for.
    #[derive(Clone, Default)]
    struct Takes(TakenLog);

    /// The take-overs asked for: (lost session, buckets).
    type TakenLog = Arc<Mutex<Vec<(i64, Vec<i32>)>>>;

    impl Leases for Takes {
        fn bucket_count(&self) -> i32 {
            64
        }
        fn attach(&mut self, _: Ownership) {}
        async fn join(&self, _: &str, _: &str, _: Duration) -> Result<i64> {
            Ok(1)
        }
        async fn heartbeat(&self, _: &str, _: i64, _: Duration) -> Result<Option<Vec<LiveNode>>> {
            Ok(Some(Vec::new()))
        }
        async fn claim(&self, _: &str, _: i64, buckets: &[i32], _: Duration) -> Result<Vec<i32>> {
            Ok(buckets.to_vec())
        }
        async fn take_over(
            &self,
            _: &str,
            _: i64,
            from: i64,
            buckets: &[i32],
            _: &[i64],
            _: Completion,
            _: Duration,
        ) -> Result<Vec<i32>> {
            self.0.lock().unwrap().push((from, buckets.to_vec()));
            Ok(buckets.to_vec())
        }
        async fn release(&self, _: &str, _: i64, _: &[i32]) -> Result<()> {
            Ok(())
        }
        async fn leave(&self, _: &str, _: i64) -> Result<()> {
            Ok(())
        }
        async fn leases(&self) -> Result<Vec<LeaseInfo>> {
            Ok(Vec::new())
        }
    }

    /// What a sink answers for the lost session `session` that delivered `ids`.
    pub(crate) fn taken_over(session: i64, ids: Vec<i64>) -> crate::TakenOver {
        crate::TakenOver {
            session,
            record: crate::ProgressRecord {
                key: format!("id-e{session}"),
                location: "the topic".into(),
                found: true,
            },
            ids,
        }
    }

    fn taker(leases: &Takes) -> Taker<'_, Takes> {
        Taker {
            leases,
            node: "me",
            epoch: 9,
            completion: Completion::default(),
            ttl: Duration::from_secs(10),
        }
    }

    #[tokio::test]
    async fn a_slow_take_over_goes_on_beside_the_rounds_and_takes_its_buckets_when_done() {
        let (open, gate) = tokio::sync::oneshot::channel::<()>();
        let gate = Arc::new(Mutex::new(Some(gate)));
        let calls = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&calls);
        let take_over: TakeOver = Arc::new(move |sessions: Vec<i64>| {
            seen.lock().unwrap().push(sessions.clone());
            let gate = gate.lock().unwrap().take();
            Box::pin(async move {
                if let Some(gate) = gate {
                    let _ = gate.await;
                }
                Ok(sessions.into_iter().map(|s| taken_over(s, Vec::new())).collect())
            })
        });
        let leases = Takes::default();
        let mut taking_over = TakingOver::new();
        taking_over.add(7, 3);
        taking_over.add(9, 4);
        let patience = Duration::from_millis(20);
        for _ in 0..3 {
            let taken = taking_over
                .advance(&take_over, taker(&leases), patience)
                .await
                .unwrap();
            assert!(taken.is_empty());
            assert!(
                taking_over.contains(7) && taking_over.contains(9),
                "waiting while it runs"
            );
        }
        // Buckets found meanwhile — of another session, or of one the step covers — wait for a
        // step of their own.
        taking_over.add(11, 5);
        taking_over.add(12, 3);
        open.send(()).unwrap();
        let taken = taking_over
            .advance(&take_over, taker(&leases), patience)
            .await
            .unwrap();
        assert_eq!(taken, [7, 9]);
        assert_eq!(taking_over.buckets().collect::<Vec<_>>(), [11, 12]);
        let taken = taking_over
            .advance(&take_over, taker(&leases), patience)
            .await
            .unwrap();
        assert_eq!(taken, [11, 12]);
        assert!(taking_over.is_empty());
        assert_eq!(
            *calls.lock().unwrap(),
            [vec![3, 4], vec![3, 5]],
            "started once per round of sessions"
        );
        assert_eq!(
            *leases.0.lock().unwrap(),
            [(3, vec![7]), (4, vec![9]), (3, vec![12]), (5, vec![11])],
            "each session's buckets taken with its rows"
        );
    }
}
