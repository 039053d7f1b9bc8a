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

use txoutbox_core::{Backlog, Completion, Error, Failure, OutboxMessage, ReadLimit, Result, Store};

use crate::world::{Shared, World, lock};

/// What a call does this time.
enum Fate {
    Answer(Duration),
    Fail,
    Hang,
    AnswerLate,
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
}

impl SimStore {
    /// A store over the world's table; calls that hang last longer than `store_timeout`.
    pub fn new(world: Shared, store_timeout: Duration) -> Self {
        Self {
            world,
            timeout: store_timeout,
            producer: 0,
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

    /// Runs one call: `apply` is the statement, applied (or not) as the call's fate says.
    async fn call<T>(&self, what: &str, write: bool, apply: impl FnOnce(&mut World) -> T) -> Result<T> {
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

impl Store for SimStore {
    async fn check(&self) -> Result<()> {
        Ok(())
    }

    async fn fetch_pending(&self, limit: ReadLimit) -> Result<Vec<OutboxMessage>> {
        self.call("fetch_pending", false, |world| {
            let read = world.table.fetch_pending(self.producer, limit);
            world.log(format_args!("store: read {} from the start", read.len()));
            read
        })
        .await
    }

    async fn fetch_after(&self, after: i64, limit: ReadLimit) -> Result<Vec<OutboxMessage>> {
        self.call("fetch_after", false, |world| {
            let read = world.table.fetch_after(self.producer, after, limit);
            if !read.is_empty() {
                world.log(format_args!("store: read {} after {after}", read.len()));
            }
            read
        })
        .await
    }

    async fn complete(&self, ids: &[i64], completion: Completion) -> Result<()> {
        self.call("complete", true, |world| {
            for id in ids {
                if !world.broker.may_be_completed_by(self.producer, *id) {
                    world.violation(format_args!(
                        "row {id} completed by the relay of producer {} without an acknowledgement \
                         to it (before its ack, or by a fenced relay)",
                        self.producer
                    ));
                }
            }
            world.table.complete(ids, completion);
            world.log(format_args!("store: completed {}", ids.len()));
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
            world.table.record_failures(failures, self.producer, now);
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
