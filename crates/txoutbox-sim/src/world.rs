//! The simulated world one seed builds: its random source, table, broker, fault settings and
//! the trace of what happened, shared by every simulated part behind one lock.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

use crate::broker::Broker;
use crate::leases::LeaseTable;
use crate::table::Table;

/// How often each fault strikes in one run (drawn from the seed: some runs are calm, some
/// stormy).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Faults {
    /// A store call fails (a retryable database error).
    pub store_fails: f64,
    /// A store call does not answer within the relay's `store_timeout`.
    pub store_hangs: f64,
    /// A store write is applied and its answer comes too late (the relay sees a timeout).
    pub store_answers_late: f64,
    /// A record fails transiently at the head of its partition (the ones behind it fail too).
    pub broker_transient: f64,
    /// A record lands and its acknowledgement is lost (reported as a transient failure).
    pub broker_lost_ack: f64,
    /// The broker stops answering for a while, per second of virtual time.
    pub outages_per_second: f64,
}

impl Faults {
    /// Draws the fault rates of one run.
    fn draw(rng: &mut StdRng) -> Self {
        let mut rate = |most: f64| {
            if rng.random_bool(0.3) {
                0.0
            } else {
                rng.random_range(0.0..most)
            }
        };
        Self {
            store_fails: rate(0.05),
            store_hangs: rate(0.01),
            store_answers_late: rate(0.02),
            broker_transient: rate(0.02),
            broker_lost_ack: rate(0.02),
            outages_per_second: rate(0.2),
        }
    }

    /// No faults (a graceful shutdown's window, the final drain).
    pub const CALM: Self = Self {
        store_fails: 0.0,
        store_hangs: 0.0,
        store_answers_late: 0.0,
        broker_transient: 0.0,
        broker_lost_ack: 0.0,
        outages_per_second: 0.0,
    };
}

/// Everything one seed's run shares.
#[derive(Debug)]
pub struct World {
    rng: StdRng,
    started: Instant,
    trace: Vec<String>,
    violations: Vec<String>,
    /// The fault rates drawn for this run.
    pub drawn_faults: Faults,
    /// The fault rates in force now (`Faults::CALM` while a graceful shutdown drains).
    pub faults: Faults,
    /// The outbox table.
    pub table: Table,
    /// The broker: what landed, what the producer holds.
    pub broker: Broker,
    /// Whether dead rows park their key (`OnDeadLetter::ParkKey`).
    pub parks_keys: bool,
    /// How long another relay's dead letter may take to reach a relay, in milliseconds (its
    /// poll interval and a store call).
    pub news_delay_ms: u64,
    /// Whether each completion is checked against the broker's acknowledgements (off when a
    /// test drives the store by hand, without a broker).
    pub audits_completions: bool,
    /// Relay nodes and their bucket leases (coordinated runs).
    pub leases: LeaseTable,
    /// Per producer, the node its relay runs as (coordinated runs): what it hands to the broker
    /// must be in buckets that node leases.
    pub nodes: BTreeMap<u64, String>,
    /// Per producer, until when (virtual ms) its relay cannot reach the database: its store
    /// calls wait, as over a network partition or while the process is frozen.
    pub cut_off: BTreeMap<u64, u64>,
    /// Rows whose completion by a producer's relay the lease fence refused (its new owner
    /// completes them).
    pub fenced: BTreeSet<(u64, i64)>,
    /// Every running relay's wake-up, which writers call after they commit.
    pub wakeups: BTreeMap<u64, txoutbox_core::Wakeup>,
}

/// The world behind its lock, as the simulated parts hold it.
pub type Shared = Arc<Mutex<World>>;

/// Locks the world (a panic elsewhere poisoned nothing worth stopping for: the run reports it).
pub fn lock(world: &Shared) -> MutexGuard<'_, World> {
    world.lock().unwrap_or_else(|p| p.into_inner())
}

impl World {
    /// The world of `seed`, its clock starting now (call inside the paused runtime).
    pub(crate) fn new(seed: u64, partitions: u32) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let faults = Faults::draw(&mut rng);
        Self {
            rng,
            started: Instant::now(),
            trace: Vec::new(),
            violations: Vec::new(),
            drawn_faults: faults,
            faults,
            table: Table::default(),
            broker: Broker::new(partitions),
            parks_keys: false,
            news_delay_ms: 0,
            audits_completions: true,
            leases: LeaseTable::default(),
            nodes: BTreeMap::new(),
            cut_off: BTreeMap::new(),
            fenced: BTreeSet::new(),
            wakeups: BTreeMap::new(),
        }
    }

    /// A world without faults, relay or broker checks, for driving the store by hand (the store
    /// conformance suite runs its cases on it).
    pub fn calm() -> Shared {
        let mut world = Self::new(0, 1);
        world.drawn_faults = Faults::CALM;
        world.faults = Faults::CALM;
        world.audits_completions = false;
        Arc::new(Mutex::new(world))
    }

    /// The wall clock's time: virtual inside a simulated run, the system's outside one.
    pub fn wall_now(&self) -> DateTime<Utc> {
        txoutbox_core::virtual_clock::now().unwrap_or_else(Utc::now)
    }

    /// The run's one random source.
    pub fn rng(&mut self) -> &mut StdRng {
        &mut self.rng
    }

    /// Whether an event of probability `p` happens now.
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.rng.random_bool(p.min(1.0))
    }

    /// Milliseconds of virtual time since the run began.
    pub fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Appends a line to the trace, stamped with the virtual time.
    pub fn log(&mut self, line: impl std::fmt::Display) {
        let at = self.now_ms();
        self.trace.push(format!("{at:>7} ms  {line}"));
    }

    /// Records a broken invariant (the run fails, naming it).
    pub fn violation(&mut self, what: impl std::fmt::Display) {
        let what = what.to_string();
        self.log(format_args!("VIOLATION: {what}"));
        self.violations.push(what);
    }

    /// The broken invariants so far.
    pub fn violations(&self) -> &[String] {
        &self.violations
    }

    /// The trace so far.
    pub fn trace(&self) -> &[String] {
        &self.trace
    }
}
