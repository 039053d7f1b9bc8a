//! The relay's store over the simulated table, with injected faults.
//!
//! Each call draws its fate from the run's random source: it answers after a short delay, fails
//! with a retryable database error, hangs past the relay's `store_timeout` (the relay gives up on
//! it; a write is then not applied), or — writes only — is applied and answers too late (the
//! relay sees a timeout for a write that happened, and writes it again).
//!
//! `complete` checks the first invariant as it is called: no relay completes a row its producer
//! was not acknowledged (or, exactly-once, did not recover as committed) — not before the ack,
//! and not as a fenced zombie.

use std::time::Duration;

use txoutbox_core::coordination::{LeaseInfo, Leases, LiveNode, Ownership, Scope};
use txoutbox_core::{Backlog, Completion, Error, Failure, OutboxMessage, ReadLimit, Result, Store};

use crate::world::{Shared, World, lock};

/// What a call does this time.
enum Fate {
    Answer(Duration),
    Fail,
    Hang,
    AnswerLate,
}

/// What a store may read now.
enum Readable {
    /// Nothing: a coordinated relay that holds no lease.
    Nothing,
    /// Every row: a single relay, or one holding the whole table.
    Every,
    /// The rows of these buckets.
    Buckets(Vec<i32>),
}

impl Readable {
    /// `None` when nothing may be read; else the buckets a read keeps to (`None`: every row).
    fn buckets(self) -> Option<Option<Vec<i32>>> {
        match self {
            Self::Nothing => None,
            Self::Every => Some(None),
            Self::Buckets(buckets) => Some(Some(buckets)),
        }
    }
}

/// The simulated store: cheap to clone, all clones share the world.
#[derive(Debug, Clone)]
pub struct SimStore {
    world: Shared,
    /// The relay's `store_timeout`: a hang lasts longer.
    timeout: Duration,
    /// The producer of the relay using this store: it may complete only what that producer had
    /// acknowledged or recovered.
    producer: u64,
    /// A coordinated relay's right to read and write (see [`Leases`]).
    ownership: Option<Ownership>,
}

impl SimStore {
    /// A store over the world's table; calls that hang last longer than `store_timeout`.
    pub fn new(world: Shared, store_timeout: Duration) -> Self {
        Self {
            world,
            timeout: store_timeout,
            producer: 0,
            ownership: None,
        }
    }

    /// This store, for the relay whose sink is producer `producer`.
    pub fn for_producer(&self, producer: u64) -> Self {
        Self {
            producer,
            ..self.clone()
        }
    }

    fn fate(&self, what: &str, write: bool) -> Fate {
        let mut world = lock(&self.world);
        let faults = world.faults;
        let fate = if world.chance(faults.store_fails) {
            Fate::Fail
        } else if world.chance(faults.store_hangs) {
            Fate::Hang
        } else if write && world.chance(faults.store_answers_late) {
            Fate::AnswerLate
        } else {
            let micros = rand::Rng::random_range(world.rng(), 50..2_000);
            Fate::Answer(Duration::from_micros(micros))
        };
        match fate {
            Fate::Fail => world.log(format_args!("store: {what} fails")),
            Fate::Hang => world.log(format_args!("store: {what} hangs")),
            Fate::AnswerLate => world.log(format_args!("store: {what} is applied, answers late")),
            Fate::Answer(_) => {}
        }
        fate
    }

    /// Runs one call: `apply` is the statement, applied (or not) as the call's fate says. While
    /// this relay is cut off from the database, the call waits until it is reachable again.
    async fn call<T>(&self, what: &str, write: bool, apply: impl FnOnce(&mut World) -> T) -> Result<T> {
        loop {
            let cut_off_for = {
                let world = lock(&self.world);
                let now = world.now_ms();
                world
                    .cut_off
                    .get(&self.producer)
                    .map_or(0, |until| until.saturating_sub(now))
            };
            if cut_off_for == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(cut_off_for)).await;
        }
        match self.fate(what, write) {
            Fate::Answer(delay) => {
                tokio::time::sleep(delay).await;
                Ok(apply(&mut lock(&self.world)))
            }
            Fate::Fail => {
                tokio::time::sleep(Duration::from_millis(1)).await;
                Err(Error::database(format!("simulated failure of {what}"), true))
            }
            Fate::Hang => {
                tokio::time::sleep(self.timeout * 2).await;
                Ok(apply(&mut lock(&self.world)))
            }
            Fate::AnswerLate => {
                let answer = apply(&mut lock(&self.world));
                tokio::time::sleep(self.timeout * 2).await;
                Ok(answer)
            }
        }
    }
}

impl SimStore {
    /// What this store may read now: nothing (a coordinated relay holding no lease), every
    /// row, or the rows of some buckets.
    fn readable(&self) -> Readable {
        match self.ownership.as_ref().map(Ownership::scope) {
            None | Some(Scope::All) => Readable::Every,
            Some(Scope::Nothing) => Readable::Nothing,
            Some(Scope::Buckets(buckets)) => Readable::Buckets(buckets),
        }
    }

    /// Of `ids`, the rows a write may change: all for a single relay; for a coordinated one,
    /// those whose bucket it leases at its epoch now (the fence the database stores apply in the
    /// write's statement). Counts what the fence refused, as the stores do.
    fn fenced(&self, world: &mut World, ids: &[i64]) -> Vec<i64> {
        let Some(ownership) = &self.ownership else {
            return ids.to_vec();
        };
        let (node, epoch) = ownership.fence();
        let now = world.now_ms();
        // Rows gone from the table match no statement; the others pass the fence or are refused.
        let (mut allowed, mut live_refused) = (Vec::new(), Vec::new());
        for &id in ids {
            if let Some(row) = world.table.row(id) {
                if world.leases.holds(node, Some(epoch), row.message.bucket, now) {
                    allowed.push(id);
                } else {
                    live_refused.push(id);
                }
            }
        }
        if !live_refused.is_empty() {
            world.log(format_args!(
                "store: {node}@{epoch}: write of {live_refused:?} fenced (lease gone)"
            ));
            let producer = self.producer;
            world.fenced.extend(live_refused.iter().map(|id| (producer, *id)));
        }
        ownership.record_write(ids.len(), allowed.len() as u64);
        allowed
    }
}

impl Store for SimStore {
    async fn check(&self) -> Result<()> {
        Ok(())
    }

    async fn fetch_pending(&self, limit: ReadLimit) -> Result<Vec<OutboxMessage>> {
        let Some(scope) = self.readable().buckets() else {
            return Ok(Vec::new());
        };
        self.call("fetch_pending", false, |world| {
            let read = world.table.fetch_pending(self.producer, limit, scope.as_deref());
            world.log(format_args!(
                "store {}: read {} from the start {:?}",
                self.producer,
                read.len(),
                read.iter().map(|m| m.id).collect::<Vec<_>>()
            ));
            read
        })
        .await
    }

    async fn fetch_after(&self, after: i64, limit: ReadLimit) -> Result<Vec<OutboxMessage>> {
        let Some(scope) = self.readable().buckets() else {
            return Ok(Vec::new());
        };
        self.call("fetch_after", false, |world| {
            let read = world
                .table
                .fetch_after(self.producer, after, limit, scope.as_deref());
            if !read.is_empty() {
                world.log(format_args!(
                    "store {}: read {} after {after} {:?}",
                    self.producer,
                    read.len(),
                    read.iter().map(|m| m.id).collect::<Vec<_>>()
                ));
            }
            read
        })
        .await
    }

    async fn complete(&self, ids: &[i64], completion: Completion) -> Result<()> {
        self.call("complete", true, |world| {
            let audited = if world.audits_completions { ids } else { &[] };
            for id in audited {
                if !world.broker.may_be_completed_by(self.producer, *id) {
                    world.violation(format_args!(
                        "row {id} completed by the relay of producer {} without an acknowledgement \
                         to it (before its ack, or by a fenced relay)",
                        self.producer
                    ));
                }
            }
            let at = world.wall_now();
            let allowed = self.fenced(world, ids);
            world.table.complete(&allowed, completion, at);
            world.log(format_args!("store {}: completed {allowed:?}", self.producer));
        })
        .await
    }

    async fn record_failures(&self, failures: &[Failure]) -> Result<()> {
        self.call("record_failures", true, |world| {
            for failure in failures {
                let fate = if failure.next_attempt_at.is_some() {
                    "retry"
                } else {
                    "dead"
                };
                world.log(format_args!(
                    "store: row {} failed ({}), {fate}",
                    failure.id, failure.attempts
                ));
            }
            let now = world.now_ms();
            let ids: Vec<i64> = failures.iter().map(|f| f.id).collect();
            let allowed = self.fenced(world, &ids);
            let failures: Vec<Failure> = failures
                .iter()
                .filter(|f| allowed.contains(&f.id))
                .cloned()
                .collect();
            world.table.record_failures(&failures, self.producer, now);
        })
        .await
    }

    async fn backlog(&self) -> Result<Backlog> {
        self.call("backlog", false, |world| world.table.backlog()).await
    }

    async fn dead_keys(&self) -> Result<Vec<(String, Vec<u8>)>> {
        self.call("dead_keys", false, |world| world.table.dead_keys())
            .await
    }
}

impl Leases for SimStore {
    fn bucket_count(&self) -> i32 {
        crate::leases::BUCKETS
    }

    fn attach(&mut self, ownership: Ownership) {
        self.ownership = Some(ownership);
    }

    async fn join(&self, node: &str, mode: &str, ttl: Duration) -> Result<i64> {
        self.call("join", true, |world| {
            let now = world.now_ms();
            let epoch = world.leases.join(node, mode, ttl, now);
            world.log(format_args!("leases: {node} joined at epoch {epoch}"));
            epoch
        })
        .await
    }

    async fn heartbeat(&self, node: &str, epoch: i64, ttl: Duration) -> Result<Option<Vec<LiveNode>>> {
        self.call("heartbeat", true, |world| {
            let now = world.now_ms();
            let live = world.leases.heartbeat(node, epoch, ttl, now);
            if live.is_none() {
                world.log(format_args!("leases: {node}@{epoch} lost its session"));
            }
            live
        })
        .await
    }

    async fn claim(&self, node: &str, epoch: i64, buckets: &[i32], ttl: Duration) -> Result<Vec<i32>> {
        self.call("claim", true, |world| {
            let now = world.now_ms();
            let held = world.leases.claim(node, epoch, buckets, ttl, now);
            if held.len() < buckets.len() {
                world.log(format_args!(
                    "leases: {node}@{epoch} wanted {buckets:?}, holds {held:?}"
                ));
            }
            held
        })
        .await
    }

    async fn release(&self, node: &str, epoch: i64, buckets: &[i32]) -> Result<()> {
        self.call("release", true, |world| {
            world.leases.release(node, epoch, buckets);
            world.log(format_args!("leases: {node}@{epoch} released {buckets:?}"));
        })
        .await
    }

    async fn leave(&self, node: &str, epoch: i64) -> Result<()> {
        self.call("leave", true, |world| {
            world.leases.leave(node, epoch);
            world.log(format_args!("leases: {node}@{epoch} left"));
        })
        .await
    }

    async fn leases(&self) -> Result<Vec<LeaseInfo>> {
        self.call("leases", false, |world| {
            let start = world.wall_now()
                - chrono::TimeDelta::milliseconds(i64::try_from(world.now_ms()).unwrap_or(i64::MAX));
            world.leases.list(start)
        })
        .await
    }
}
