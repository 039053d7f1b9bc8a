//! The coordinator: one task per coordinated relay that keeps the node's session and leases
//! alive, follows the live nodes, drains and hands over buckets, and tells the relay engine
//! (through [`Ownership`]) what it may read and until when it may send.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::assign::assign_buckets;
use super::leases::{EXCLUSIVE_LEASE, Leases};
use super::ownership::{Ownership, Scope};
use super::taking_over::{Taker, TakingOver};
use super::{Coordination, LeaseSettings};
use crate::error::{Error, Result};
use crate::store::Completion;

/// Runs until `engine_done` fires (then leaves: its leases go at once to the other nodes), or
/// returns an error the relay must stop with (nodes of another `mode` on the table: the
/// coordination, and the delivery when it is not at-least-once, e.g. `exclusive (exactly-once)`).
///
/// `session_bound`: the relay's transport identity belongs to its session (an exactly-once relay
/// in work-balance mode): a lost session stops the relay instead of starting a new one, since
/// the node that took its buckets may have fenced that identity; it takes over what lost
/// sessions delivered (as `completion` says) before it reads their buckets, and once `stopping`
/// fires (the relay shuts down) it releases nothing and leaves its leases to expire.
#[allow(clippy::too_many_arguments)] // The coordinator's inputs, each used once; a struct would only rename them.
pub(crate) async fn run<L: Leases>(
    leases: L,
    ownership: Ownership,
    coordination: Coordination,
    mode: String,
    session_bound: bool,
    completion: Completion,
    stopping: CancellationToken,
    engine_done: CancellationToken,
) -> Result<()> {
    let Some(settings) = coordination.lease_settings().cloned() else {
        return Ok(());
    };
    let node = ownership.node().to_owned();
    let mode = mode.as_str();
    let exclusive = matches!(coordination, Coordination::Exclusive(_));
    let mut epoch = None;
    // Wanted buckets whose leases ran out under lost sessions, until taken over (not read before).
    let mut taking_over = TakingOver::new();
    loop {
        let session = match epoch {
            Some(epoch) => epoch,
            None => match leases.join(&node, mode, settings.lease).await {
                Ok(new) => {
                    info!(node = %node, epoch = new, mode, "relay node joined");
                    ownership.begin(new);
                    epoch = Some(new);
                    new
                }
                Err(error) => {
                    warn!(%error, "cannot join the relay nodes of this table; retrying");
                    if wait(&engine_done, settings.heartbeat).await {
                        return Ok(());
                    }
                    continue;
                }
            },
        };
        let ticked = tick(
            &leases,
            &ownership,
            &settings,
            &node,
            session,
            mode,
            exclusive,
            &mut taking_over,
            completion,
            session_bound && stopping.is_cancelled(),
        )
        .await;
        match ticked {
            Ok(Tick::Held) => {}
            Ok(Tick::SessionLost) if session_bound => {
                ownership.lose();
                return Err(Error::Config(format!(
                    "relay node `{node}` lost its leases (it was paused or cut off from the database for \
                     longer than the lease): the node that took its buckets fenced this session's Kafka \
                     transactional id, so this exactly-once relay stops; start it again (a supervisor \
                     restarts it) and it joins with a new session"
                )));
            }
            Ok(Tick::SessionLost) => {
                warn!(node = %node, epoch = session, "this relay lost its leases (paused or cut off too long); rejoining with a new epoch");
                ownership.lose();
                epoch = None;
                continue;
            }
            Err(error @ Error::Config(_)) => {
                // Unregister at once, so the other nodes stop listing this one — unless the
                // session holds leases: its sends may still be in flight, and releasing them
                // now would let another node send later rows first. Those expire instead.
                let holds_nothing = ownership.scope() == Scope::Nothing && ownership.draining().is_empty();
                ownership.lose();
                if holds_nothing && let Err(e) = leases.leave(&node, session).await {
                    warn!(error = %e, "could not unregister this relay node; its entry expires by itself");
                }
                return Err(error);
            }
            Err(error) => warn!(%error, "could not renew the relay's leases; retrying"),
        }
        if wait(&engine_done, settings.heartbeat).await {
            ownership.lose();
            if session_bound {
                // Rows Kafka committed may be unmarked (a shutdown timeout, a failed mark), and
                // only a take-over reads this session's progress: the leases expire, and the nodes
                // that take them fence this session and complete what it delivered.
                info!(node = %node, "exactly-once relay node stopped; its leases expire and are taken over");
                return Ok(());
            }
            if let Err(error) = leases.leave(&node, session).await {
                warn!(%error, "could not release the leases on the way out; they expire by themselves");
            } else {
                info!(node = %node, "relay node left; its leases are free");
            }
            return Ok(());
        }
    }
}

/// Waits for `delay`; true when the engine finished meanwhile.
async fn wait(engine_done: &CancellationToken, delay: Duration) -> bool {
    tokio::select! {
        biased;
        _ = engine_done.cancelled() => true,
        _ = tokio::time::sleep(delay) => false,
    }
}

enum Tick {
    Held,
    SessionLost,
}

/// One round: heartbeat, compute the wanted buckets, release drained ones, claim and renew, and
/// take over what lost sessions left (when the relay set a take-over step).
#[allow(clippy::too_many_arguments)] // One round's inputs; a struct would only rename them.
async fn tick<L: Leases>(
    leases: &L,
    ownership: &Ownership,
    settings: &LeaseSettings,
    node: &str,
    epoch: i64,
    mode: &str,
    exclusive: bool,
    taking_over: &mut TakingOver,
    completion: Completion,
    hold_on: bool,
) -> Result<Tick> {
    let started = Instant::now();
    let Some(live) = leases.heartbeat(node, epoch, settings.lease).await? else {
        return Ok(Tick::SessionLost);
    };
    // Of nodes in different modes, the one that joined later stops: a misconfigured newcomer
    // must not stop the relays already running.
    if let Some(other) = live.iter().find(|n| n.mode != mode && n.epoch < epoch) {
        return Err(Error::Config(format!(
            "relay node `{}` runs in {} mode on this table and this one in {mode} mode; run every relay of \
             a table in the same mode",
            other.node_id, other.mode
        )));
    }
    // A later node of another mode stops at its own first heartbeat: it gets no buckets meanwhile.
    let live: Vec<_> = live.into_iter().filter(|n| n.mode == mode).collect();
    let held: BTreeSet<i32> = match ownership.scope() {
        Scope::Nothing => BTreeSet::new(),
        Scope::All => BTreeSet::from([EXCLUSIVE_LEASE]),
        Scope::Buckets(buckets) => buckets.into_iter().collect(),
    };
    let draining_held = ownership.draining();
    let held: BTreeSet<i32> = held.union(&draining_held).copied().collect();
    let desired: BTreeSet<i32> = if exclusive {
        BTreeSet::from([EXCLUSIVE_LEASE])
    } else {
        let ids: Vec<String> = live.iter().map(|n| n.node_id.clone()).collect();
        assign_buckets(&ids, node, leases.bucket_count())
            .into_iter()
            .collect()
    };

    // Buckets that now belong to another node: stop reading them at once (before anything that
    // can fail or wait); release each once its in-flight messages have settled, so its new owner
    // starts after the last send. A row read meanwhile is either counted in flight before the
    // bucket stopped being read, or passed over.
    let draining: BTreeSet<i32> = held.difference(&desired).copied().collect();
    #[cfg(not(txoutbox_sim_mutant = "released_while_read"))]
    ownership.stop_reading(&draining);
    // A session-bound relay that is stopping releases nothing: a mark it gave up at the
    // shutdown timeout leaves its bucket with nothing in flight but rows Kafka committed.
    let (drained, still_draining): (Vec<i32>, Vec<i32>) = draining
        .iter()
        .partition(|&&b| ownership.in_flight(b) == 0 && !hold_on);
    if !drained.is_empty() {
        leases.release(node, epoch, &drained).await?;
        info!(node, buckets = ?drained, "released drained buckets");
        ownership.set_draining(still_draining.iter().copied().collect());
    }
    // Buckets waiting for a take-over are asked for too: one a lost answer left this session
    // holding is renewed (a fresh claim never takes a lease that ran out under another session).
    let wanted: BTreeSet<i32> = desired
        .iter()
        .chain(still_draining.iter())
        .copied()
        .chain(taking_over.buckets())
        .collect();
    let wanted: Vec<i32> = wanted.into_iter().collect();
    let take_over = ownership.take_over();
    let mut got: BTreeSet<i32> = match &take_over {
        // Leases that ran out under other sessions are not claimed but taken over below.
        Some(_) => {
            let claimed = leases.claim_fresh(node, epoch, &wanted, settings.lease).await?;
            for expired in claimed.expired.into_iter().filter(|e| e.epoch != epoch) {
                if desired.contains(&expired.bucket) && !taking_over.contains(expired.bucket) {
                    info!(node, bucket = expired.bucket, from = %expired.node_id, epoch = expired.epoch, "taking over a lease a lost session held");
                }
                taking_over.add(expired.bucket, expired.epoch);
            }
            claimed.held.into_iter().collect()
        }
        None => leases
            .claim(node, epoch, &wanted, settings.lease)
            .await?
            .into_iter()
            .collect(),
    };
    // Fast take-overs finish within this round; a slow one goes on while the leases are renewed.
    // What it took is held from now on.
    if let Some(take_over) = &take_over {
        taking_over.keep_only(&desired);
        let taker = Taker {
            leases,
            node,
            epoch,
            completion,
            ttl: settings.lease,
        };
        for bucket in taking_over
            .advance(take_over, taker, settings.heartbeat / 2)
            .await?
        {
            got.insert(bucket);
        }
    }
    // Held but no longer wanted (taken over, or renewed after a lost answer, while the
    // assignment changed): drained and released like any bucket that moves.
    let adopted_unwanted: Vec<i32> = got
        .iter()
        .copied()
        .filter(|b| !desired.contains(b) && !still_draining.contains(b))
        .collect();
    let kept_from_before: BTreeSet<i32> = held.difference(&draining).copied().collect();
    if kept_from_before
        .iter()
        .chain(&still_draining)
        .any(|b| !got.contains(b))
    {
        // A lease this session held went to another node: our view is stale, start afresh.
        return Ok(Tick::SessionLost);
    }
    let newly: Vec<i32> = got.difference(&held).copied().collect();
    if !newly.is_empty() {
        info!(node, buckets = ?newly, "took over buckets");
    }
    let readable: Vec<i32> = got
        .intersection(&desired)
        .filter(|b| !taking_over.contains(**b))
        .copied()
        .collect();
    let scope = if exclusive {
        if got.contains(&EXCLUSIVE_LEASE) {
            Scope::All
        } else {
            Scope::Nothing
        }
    } else if readable.is_empty() && still_draining.is_empty() && adopted_unwanted.is_empty() {
        Scope::Nothing
    } else {
        Scope::Buckets(readable)
    };
    ownership.set_draining(still_draining.into_iter().chain(adopted_unwanted).collect());
    // Sends stop a heartbeat before the lease could end, whatever happens to the next renewal.
    let valid_until = started + settings.lease.saturating_sub(settings.heartbeat);
    ownership.set(scope, valid_until);
    Ok(Tick::Held)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coordination::{Claimed, ExpiredLease, LeaseInfo, LiveNode};

    /// Leases whose heartbeat lists fixed nodes and whose claims all succeed.
    #[derive(Clone)]
    struct Fixed(Vec<LiveNode>);

    impl Leases for Fixed {
        fn bucket_count(&self) -> i32 {
            4
        }
        fn attach(&mut self, _: Ownership) {}
        async fn join(&self, _: &str, _: &str, _: Duration) -> Result<i64> {
            Ok(1)
        }
        async fn heartbeat(&self, _: &str, _: i64, _: Duration) -> Result<Option<Vec<LiveNode>>> {
            Ok(Some(self.0.clone()))
        }
        async fn claim(&self, _: &str, _: i64, buckets: &[i32], _: Duration) -> Result<Vec<i32>> {
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

    fn node(id: &str, mode: &str, epoch: i64) -> LiveNode {
        LiveNode {
            node_id: id.into(),
            mode: mode.into(),
            epoch,
        }
    }

    async fn tick_as(live: Vec<LiveNode>, epoch: i64, mode: &str) -> Result<Scope> {
        let ownership = Ownership::new("me");
        ownership.begin(epoch);
        let exclusive = mode == "exclusive";
        tick(
            &Fixed(live),
            &ownership,
            &LeaseSettings::default(),
            "me",
            epoch,
            mode,
            exclusive,
            &mut TakingOver::new(),
            crate::Completion::default(),
            false,
        )
        .await
        .map(|_| ownership.scope())
    }

    /// The take-overs a test's leases were asked for: (lost session, buckets).
    type TakenLog = std::sync::Arc<std::sync::Mutex<Vec<(i64, Vec<i32>)>>>;

    /// [`Fixed`] whose first claim finds bucket 2's lease run out under the lost session of
    /// epoch 3, and whose take-overs take what they are asked for.
    #[derive(Clone)]
    struct ExpiredOnce {
        fixed: Fixed,
        expired: std::sync::Arc<std::sync::Mutex<Option<ExpiredLease>>>,
        taken: TakenLog,
    }

    impl Leases for ExpiredOnce {
        fn bucket_count(&self) -> i32 {
            4
        }
        fn attach(&mut self, _: Ownership) {}
        async fn join(&self, node: &str, mode: &str, ttl: Duration) -> Result<i64> {
            self.fixed.join(node, mode, ttl).await
        }
        async fn heartbeat(&self, node: &str, epoch: i64, ttl: Duration) -> Result<Option<Vec<LiveNode>>> {
            self.fixed.heartbeat(node, epoch, ttl).await
        }
        async fn claim(&self, _: &str, _: i64, _: &[i32], _: Duration) -> Result<Vec<i32>> {
            panic!("a relay that takes over claims with claim_fresh")
        }
        async fn claim_fresh(&self, _: &str, _: i64, buckets: &[i32], _: Duration) -> Result<Claimed> {
            let expired = self.expired.lock().unwrap().take();
            let taken: Vec<i32> = self
                .taken
                .lock()
                .unwrap()
                .iter()
                .flat_map(|(_, b)| b.clone())
                .collect();
            Ok(Claimed {
                // Bucket 2 is held only once taken over.
                held: buckets
                    .iter()
                    .copied()
                    .filter(|b| *b != 2 || taken.contains(b))
                    .collect(),
                expired: expired.into_iter().collect(),
            })
        }
        async fn take_over(
            &self,
            _: &str,
            _: i64,
            from: i64,
            buckets: &[i32],
            _: &[i64],
            _: crate::Completion,
            _: Duration,
        ) -> Result<Vec<i32>> {
            self.taken.lock().unwrap().push((from, buckets.to_vec()));
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

    #[tokio::test]
    async fn a_bucket_whose_lease_ran_out_is_read_only_once_taken_over() {
        let leases = ExpiredOnce {
            fixed: Fixed(vec![node("me", "work-balance (exactly-once)", 5)]),
            expired: std::sync::Arc::new(std::sync::Mutex::new(Some(ExpiredLease {
                bucket: 2,
                node_id: "gone".into(),
                epoch: 3,
            }))),
            taken: std::sync::Arc::default(),
        };
        let ownership = Ownership::new("me");
        ownership.begin(5);
        let calls = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = std::sync::Arc::clone(&calls);
        ownership.set_take_over(std::sync::Arc::new(move |sessions: Vec<i64>| {
            let mut seen = seen.lock().unwrap();
            seen.push(sessions.clone());
            let first = seen.len() == 1;
            Box::pin(async move {
                if first {
                    return Err(Error::Shutdown);
                }
                Ok(sessions
                    .into_iter()
                    .map(|s| crate::coordination::taking_over::tests::taken_over(s, vec![7]))
                    .collect())
            })
        }));
        let settings = LeaseSettings::default();
        let mut taking_over = TakingOver::new();
        // One heartbeat of session 5, in work balance.
        async fn round(
            leases: &ExpiredOnce,
            ownership: &Ownership,
            settings: &LeaseSettings,
            taking_over: &mut TakingOver,
        ) {
            let mode = "work-balance (exactly-once)";
            let completion = crate::Completion::default();
            tick(
                leases,
                ownership,
                settings,
                "me",
                5,
                mode,
                false,
                taking_over,
                completion,
                false,
            )
            .await
            .unwrap();
        }
        // The take-over fails: bucket 2 is neither held nor read, and is remembered.
        round(&leases, &ownership, &settings, &mut taking_over).await;
        assert_eq!(ownership.scope(), Scope::Buckets(vec![0, 1, 3]));
        assert_eq!(taking_over.buckets().collect::<Vec<_>>(), [2]);
        assert!(leases.taken.lock().unwrap().is_empty());
        // The next round tries again, takes it over (lease and rows at once) and reads it.
        round(&leases, &ownership, &settings, &mut taking_over).await;
        assert_eq!(ownership.scope(), Scope::Buckets(vec![0, 1, 2, 3]));
        assert!(taking_over.is_empty());
        assert_eq!(*calls.lock().unwrap(), [vec![3], vec![3]]);
        assert_eq!(*leases.taken.lock().unwrap(), [(3, vec![2])]);
    }

    #[tokio::test]
    async fn of_nodes_in_different_modes_only_the_later_one_stops() {
        let earlier = node("old", "exclusive (exactly-once)", 3);
        let later = node("new", "exclusive (exactly-once)", 9);
        let me = node("me", "exclusive", 5);
        // A newcomer of another mode does not stop the running node, which keeps the table.
        let scope = tick_as(vec![me.clone(), later], 5, "exclusive").await.unwrap();
        assert_eq!(scope, Scope::All);
        // The node that joined after one of another mode stops, saying why.
        let error = tick_as(vec![me, earlier], 5, "exclusive").await.unwrap_err();
        assert!(
            error
                .to_string()
                .contains("relay node `old` runs in exclusive (exactly-once) mode"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn a_later_node_of_another_mode_gets_no_buckets() {
        let live = vec![node("me", "work-balance", 5), node("zz-other", "exclusive", 8)];
        let scope = tick_as(live, 5, "work-balance").await.unwrap();
        assert_eq!(scope, Scope::Buckets(vec![0, 1, 2, 3]));
    }
}
