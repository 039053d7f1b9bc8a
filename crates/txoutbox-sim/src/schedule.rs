//! One run: a seed draws the relay's settings, the faults, the writers and the relay's crashes
//! and restarts; the real engine runs through them on a current-thread runtime with tokio's
//! paused clock, so hours of retries pass in milliseconds and the run is a pure function of the
//! seed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;
use tokio::time::Instant;
use txoutbox_core::coordination::{Coordination, LeaseSettings};
use txoutbox_core::{Completion, OnDeadLetter, Relay, RelayConfig, RetryPolicy};

use crate::sim_sink::SimSink;
use crate::store::SimStore;
use crate::world::{Faults, Shared, World, lock};

/// What a run may vary beyond its seed.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// Keep the whole trace in the outcome (for a replay); otherwise only its last lines.
    pub full_trace: bool,
}

/// What one run did, and what broke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The seed.
    pub seed: u64,
    /// Broken invariants (empty: the run passed).
    pub violations: Vec<String>,
    /// What happened, line by line (the last 200 lines unless [`Settings::full_trace`]).
    pub trace: Vec<String>,
    /// Rows committed.
    pub committed: usize,
    /// Records that landed, copies included.
    pub landed: usize,
    /// Relay crashes and graceful restarts.
    pub restarts: usize,
    /// Virtual time the run took, in milliseconds.
    pub virtual_ms: u64,
}

/// How long writers write, in virtual time.
const WRITING: Duration = Duration::from_secs(5);
/// Faults strike until this long after writing ended; the final drain is calm.
const STORMY: Duration = Duration::from_secs(8);
/// A run that has not drained this long after writing ended is stuck (a key with several poison
/// rows drains one back-off after another).
const DEADLINE: Duration = Duration::from_secs(3_600);
/// A poison row's back-off between attempts: it holds its key at least this long.
const POISON_BACKOFF: Duration = Duration::from_secs(60);
/// What a row of a healthy key may wait at most: under [`POISON_BACKOFF`], above the relay's
/// transport back-off cap (30 s). A poison row fails the rows queued behind it in its partition
/// (other keys' too) and each such round grows the transport back-off that pauses every key:
/// measured up to about 21 s, hence not a tighter bound.
pub(crate) const HEALTHY_LATENCY: Duration = Duration::from_secs(45);

/// Runs the simulation of `seed`.
pub fn run(seed: u64, settings: &Settings) -> Outcome {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build();
    match runtime {
        Ok(runtime) => runtime.block_on(simulate(seed, settings)),
        Err(error) => Outcome {
            seed,
            violations: vec![format!("no runtime: {error}")],
            trace: Vec::new(),
            committed: 0,
            landed: 0,
            restarts: 0,
            virtual_ms: 0,
        },
    }
}

/// The relay's settings, drawn from the seed.
fn draw_config(rng: &mut impl Rng) -> RelayConfig {
    let batch = rng.random_range(1..=40);
    let on_dead_letter = if rng.random_bool(0.5) {
        OnDeadLetter::ParkKey
    } else {
        OnDeadLetter::ReleaseKey
    };
    let completion = if rng.random_bool(0.7) {
        Completion::Delete
    } else {
        Completion::MarkPublished
    };
    RelayConfig::default()
        .with_batch_size(batch)
        .with_max_in_flight(batch * rng.random_range(1..=5))
        .with_max_batch_bytes(rng.random_range(30..3_000))
        .with_poll_interval(Duration::from_millis(rng.random_range(50..1_000)))
        .with_completion(completion)
        .with_on_dead_letter(on_dead_letter)
        .with_retry(
            RetryPolicy::default()
                .with_max_attempts(rng.random_range(1..=3))
                .with_backoff(POISON_BACKOFF, POISON_BACKOFF)
                // Jitter draws from the thread's random source, not the seed's.
                .with_jitter(0.0),
        )
        .with_store_timeout(Duration::from_millis(rng.random_range(200..2_000)))
        .with_shutdown_timeout(Duration::from_secs(10))
}

/// How the relays of a coordinated run share the table.
#[derive(Debug, Clone)]
struct Nodes {
    /// How many relay nodes.
    count: usize,
    /// Exclusive or work-balance mode, with its lease timing.
    coordination: Coordination,
    /// When each node first starts, in virtual time since the start (node 0 at once).
    joins: Vec<Duration>,
    /// What happens to which node when: crashes, shutdowns, and cut-offs from the database.
    events: Vec<(Duration, usize, NodeEvent)>,
}

/// What happens to one node of a coordinated run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NodeEvent {
    /// Its life ends (a crash or a graceful shutdown); it starts again shortly after.
    End(End),
    /// It cannot reach the database for this long (a partition, or the process frozen): its
    /// leases lapse while it may still reach the broker.
    CutOff(Duration),
}

/// Draws a coordinated run's nodes: two or three relays in work-balance mode (or exclusive),
/// with a lease of 1.5 to 10 s renewed three to five times per lease.
fn draw_nodes(rng: &mut impl Rng) -> Nodes {
    let count = rng.random_range(2..=3);
    let lease = Duration::from_millis(rng.random_range(1_500..10_000));
    let heartbeat = lease / rng.random_range(3..=5);
    let settings = LeaseSettings::default().with_timing(lease, heartbeat);
    let coordination = if rng.random_bool(0.75) {
        Coordination::WorkBalance(settings)
    } else {
        Coordination::Exclusive(settings)
    };
    let stormy = STORMY.as_millis() as u64;
    let joins = (0..count)
        .map(|node| {
            if node == 0 || rng.random_bool(0.5) {
                Duration::ZERO
            } else {
                Duration::from_millis(rng.random_range(0..stormy / 2))
            }
        })
        .collect();
    let mut events: Vec<(Duration, usize, NodeEvent)> = (0..rng.random_range(0..=4))
        .map(|_| {
            let at = Duration::from_millis(rng.random_range(0..stormy));
            let node = rng.random_range(0..count);
            let event = match rng.random_range(0..3) {
                0 => NodeEvent::End(End::Crash),
                1 => NodeEvent::End(End::Shutdown),
                _ => NodeEvent::CutOff(lease.mul_f64(rng.random_range(0.5..2.5))),
            };
            (at, node, event)
        })
        .collect();
    events.sort_by_key(|(at, _, _)| *at);
    Nodes {
        count,
        coordination,
        joins,
        events,
    }
}

/// What ends one relay's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Its task is dropped where it stands (`kill -9`).
    Crash,
    /// A graceful shutdown.
    Shutdown,
    /// Exactly-once only: a new relay starts while this one goes on (a zombie, e.g. one that was
    /// frozen past its successor's start): the new producer fences it.
    Zombie,
}

async fn simulate(seed: u64, settings: &Settings) -> Outcome {
    let start: DateTime<Utc> = DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default();
    let _clock = txoutbox_core::virtual_clock::install(start);
    let started = Instant::now();
    let mut world = World::new(seed, 3);
    let config = draw_config(world.rng());
    world.parks_keys = config.on_dead_letter == OnDeadLetter::ParkKey;
    world.news_delay_ms =
        u64::try_from((config.poll_interval + config.store_timeout * 2).as_millis()).unwrap_or(u64::MAX);
    let exactly_once = world.chance(0.3);
    world.broker.transactions.enabled = exactly_once;
    // Several relay nodes share the table in a third of the at-least-once runs (exactly-once
    // runs on one active relay).
    let nodes = (!exactly_once && world.chance(0.35)).then(|| draw_nodes(world.rng()));
    let writers = world.rng().random_range(1..=4);
    let keys = world.rng().random_range(1..=5);
    // Ends of relay lives, in virtual time since the start.
    let mut ends: Vec<(Duration, End)> = (0..world.rng().random_range(0..=4))
        .map(|_| {
            let at = Duration::from_millis(world.rng().random_range(0..STORMY.as_millis() as u64));
            let end = if world.chance(0.25) {
                End::Shutdown
            } else if exactly_once && world.chance(0.4) {
                End::Zombie
            } else {
                End::Crash
            };
            (at, end)
        })
        .collect();
    ends.sort_by_key(|(at, _)| *at);
    let faults = world.faults;
    world.log(format_args!(
        "seed {seed}: {} writers × {keys} keys; {faults:?}; relay ends {ends:?}; {config:?}",
        if exactly_once { "exactly-once, " } else { "" }.to_owned() + &writers.to_string()
    ));
    if let Some(nodes) = &nodes {
        world.log(format_args!("{nodes:?}"));
    }
    let world: Shared = Arc::new(Mutex::new(world));
    let store = SimStore::new(Arc::clone(&world), config.store_timeout);
    let writer_tasks: Vec<_> = (0..writers)
        .map(|w| tokio::spawn(crate::writers::run(Arc::clone(&world), w, keys, WRITING, started)))
        .collect();

    let mut restarts = 0;
    let relays = match &nodes {
        Some(nodes) => run_nodes(&world, &store, &config, nodes, started, &mut restarts).await,
        None => run_one_at_a_time(&world, &store, &config, ends, started, &mut restarts).await,
    };
    for task in writer_tasks {
        if task.await.is_err() {
            lock(&world).violation("a writer panicked");
        }
    }
    tokio::time::sleep_until(started + STORMY).await;
    {
        let mut world = lock(&world);
        world.faults = Faults::CALM;
        world.cut_off.clear();
        world.log("calm: the final drain");
    }
    let deadline = started + WRITING + DEADLINE;
    loop {
        let done = {
            let world = lock(&world);
            world.table.is_drained(world.parks_keys) && world.broker.is_idle()
        };
        if done || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for relay in relays {
        stop_relay(&world, relay, End::Shutdown, &config).await;
    }

    let mut world = lock(&world);
    let latency = u64::try_from(HEALTHY_LATENCY.as_millis()).unwrap_or(u64::MAX);
    for broken in crate::invariants::check_end(&world, config.on_dead_letter, latency) {
        world.violation(broken);
    }
    let virtual_ms = world.now_ms();
    let trace = world.trace();
    let keep = if settings.full_trace { trace.len() } else { 200 };
    Outcome {
        seed,
        violations: world.violations().to_vec(),
        trace: trace[trace.len().saturating_sub(keep)..].to_vec(),
        committed: world.table.ledger().count(),
        landed: world.broker.logs().values().map(Vec::len).sum(),
        restarts,
        virtual_ms,
    }
}

/// One relay at a time: it ends as `ends` say (a zombie goes on beside its successor for a
/// while) and starts again; returns the relay running at the end.
async fn run_one_at_a_time(
    world: &Shared,
    store: &SimStore,
    config: &RelayConfig,
    ends: Vec<(Duration, End)>,
    started: Instant,
    restarts: &mut usize,
) -> Vec<Running> {
    let mut relay = start_relay(world, store, config, None);
    for (at, end) in ends {
        tokio::time::sleep_until(started + at).await;
        if end == End::Zombie {
            relay = replace_with_zombie_left(world, relay, store, config).await;
            *restarts += 1;
            continue;
        }
        stop_relay(world, relay, end, config).await;
        *restarts += 1;
        let pause = Duration::from_millis(lock(world).rng().random_range(0..500));
        tokio::time::sleep(pause).await;
        relay = start_relay(world, store, config, None);
    }
    vec![relay]
}

/// Several relay nodes on one table: each joins when `nodes.joins` says, and ends (then starts
/// again) or is cut off from the database when `nodes.events` say; returns the relays running
/// at the end.
async fn run_nodes(
    world: &Shared,
    store: &SimStore,
    config: &RelayConfig,
    nodes: &Nodes,
    started: Instant,
    restarts: &mut usize,
) -> Vec<Running> {
    #[derive(Debug)]
    enum Step {
        Join,
        Event(NodeEvent),
    }
    let mut steps: Vec<(Duration, usize, Step)> = nodes
        .joins
        .iter()
        .enumerate()
        .map(|(node, at)| (*at, node, Step::Join))
        .chain(
            nodes
                .events
                .iter()
                .map(|(at, node, event)| (*at, *node, Step::Event(*event))),
        )
        .collect();
    steps.sort_by_key(|(at, node, step)| (*at, matches!(step, Step::Event(_)), *node));
    let mut running: Vec<Option<Running>> = (0..nodes.count).map(|_| None).collect();
    let coordinated = |node: usize| Some((format!("node-{node}"), nodes.coordination.clone()));
    for (at, node, step) in steps {
        tokio::time::sleep_until(started + at).await;
        let Some(slot) = running.get_mut(node) else {
            continue;
        };
        match step {
            Step::Join => *slot = Some(start_relay(world, store, config, coordinated(node))),
            // A node that has not joined yet has nothing to lose.
            Step::Event(NodeEvent::End(end)) => {
                let Some(relay) = slot.take() else { continue };
                stop_relay(world, relay, end, config).await;
                *restarts += 1;
                let pause = Duration::from_millis(lock(world).rng().random_range(0..500));
                tokio::time::sleep(pause).await;
                *slot = Some(start_relay(world, store, config, coordinated(node)));
            }
            Step::Event(NodeEvent::CutOff(lasts)) => {
                let Some(relay) = slot.as_ref() else { continue };
                let mut world = lock(world);
                let until = world.now_ms() + u64::try_from(lasts.as_millis()).unwrap_or(u64::MAX);
                world.cut_off.insert(relay.producer, until);
                world.log(format_args!(
                    "node-{node}: cut off from the database for {} ms",
                    lasts.as_millis()
                ));
            }
        }
    }
    running.into_iter().flatten().collect()
}

/// A running relay: its task, the signal that shuts it down, and its producer.
struct Running {
    task: tokio::task::JoinHandle<txoutbox_core::Result<()>>,
    shutdown: tokio::sync::oneshot::Sender<()>,
    producer: u64,
}

/// Starts a new relay while `old` goes on; waits (a while) for the fenced old one to stop by
/// itself — an idle one never learns it is fenced, and is harmless: it is then dropped.
async fn replace_with_zombie_left(
    world: &Shared,
    mut old: Running,
    store: &SimStore,
    config: &RelayConfig,
) -> Running {
    lock(world).log(format_args!(
        "relay: a new relay starts while producer {}'s goes on",
        old.producer
    ));
    let new = start_relay(world, store, config, None);
    match tokio::time::timeout(Duration::from_secs(30), &mut old.task).await {
        Ok(Ok(Ok(()))) => lock(world).log("relay: the zombie stopped"),
        Ok(Ok(Err(error))) => lock(world).log(format_args!("relay: the zombie stopped: {error}")),
        Ok(Err(error)) => lock(world).violation(format_args!("the zombie relay panicked: {error}")),
        Err(_) => {
            old.task.abort();
            lock(world).log("relay: the zombie is still running (idle); dropped");
        }
    }
    crate::pump::producer_dies(&mut lock(world), old.producer);
    new
}

/// Starts a relay with a new producer: a single one, or node `name` of a coordinated run.
fn start_relay(
    world: &Shared,
    store: &SimStore,
    config: &RelayConfig,
    coordinated: Option<(String, Coordination)>,
) -> Running {
    let sink = SimSink::new(Arc::clone(world));
    let producer = sink.producer();
    let store = store.for_producer(producer);
    let (shutdown, signal) = tokio::sync::oneshot::channel::<()>();
    let relay = match coordinated {
        None => Relay::new(store, sink, config.clone()),
        Some((name, coordination)) => {
            lock(world).nodes.insert(producer, name.clone());
            let coordination = match coordination {
                Coordination::WorkBalance(settings) => Coordination::WorkBalance(settings.with_node_id(name)),
                Coordination::Exclusive(settings) => Coordination::Exclusive(settings.with_node_id(name)),
                other => other,
            };
            Relay::coordinated(store, sink, config.clone(), coordination)
        }
    };
    let task = match relay {
        Ok(relay) => {
            let mut world = lock(world);
            world.wakeups.insert(producer, relay.wakeup());
            world.log(format_args!("relay: producer {producer} started"));
            tokio::spawn(relay.run_until(async move {
                let _ = signal.await;
            }))
        }
        Err(error) => {
            lock(world).violation(format_args!("the relay refused its settings: {error}"));
            tokio::spawn(async { Ok(()) })
        }
    };
    Running {
        task,
        shutdown,
        producer,
    }
}

async fn stop_relay(world: &Shared, relay: Running, end: End, config: &RelayConfig) {
    let relay_producer = relay.producer;
    match end {
        End::Crash | End::Zombie => {
            lock(world).log("relay: crashes");
            relay.task.abort();
            let _ = relay.task.await;
        }
        End::Shutdown => {
            let began = {
                let mut world = lock(world);
                world.faults = Faults::CALM;
                world.log("relay: shuts down");
                world.now_ms()
            };
            let _ = relay.shutdown.send(());
            let result = relay.task.await;
            let mut world = lock(world);
            match result {
                Ok(Ok(())) => {}
                Ok(Err(error)) => world.violation(format_args!("the relay stopped with an error: {error}")),
                Err(error) => world.violation(format_args!("the relay panicked: {error}")),
            }
            let took = world.now_ms().saturating_sub(began);
            let timeout = u64::try_from(config.shutdown_timeout.as_millis()).unwrap_or(u64::MAX);
            // Within its timeout (an outage that began earlier may outlast it), the shutdown
            // completes every acknowledged row and leaves nothing queued.
            if took < timeout && !world.broker.is_out() {
                // (Rows whose completion the lease fence refused are their new owner's.)
                let unmarked: Vec<i64> = world
                    .broker
                    .acknowledged_to(relay_producer)
                    .into_iter()
                    .filter(|id| !world.table.is_completed(*id))
                    .filter(|id| !world.fenced.contains(&(relay_producer, *id)))
                    .collect();
                if !unmarked.is_empty() {
                    world.violation(format_args!(
                        "a graceful shutdown left acknowledged rows pending: {unmarked:?}"
                    ));
                }
                if !world.broker.holds_nothing(relay_producer) {
                    world.violation("a graceful shutdown left records queued in the producer");
                }
            }
            world.faults = world.drawn_faults;
        }
    }
    let mut world = lock(world);
    world.wakeups.remove(&relay_producer);
    world.cut_off.remove(&relay_producer);
    crate::pump::producer_dies(&mut world, relay_producer);
}
