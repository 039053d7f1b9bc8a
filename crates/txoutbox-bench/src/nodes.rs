//! Scenario `nodes`: one backlog drained by 1, 2 and 3 work-balanced relay nodes, beside one
//! single-mode relay, one exactly-once relay in exclusive mode and 1, 2 and 3 exactly-once
//! work-balanced nodes (PostgreSQL) and the raw producer,
//! round by round (PostgreSQL, MySQL / MariaDB).
//!
//! The nodes run in this process, each with its own connection pool, producer and store — what
//! separate processes on this machine would share is its cores, the database and the broker,
//! and so they do here. Each run reports its rate from the first read to the last completion,
//! and its steady rate: from the moment every node holds its share of the buckets (the nodes
//! join within a heartbeat of each other; until then the first one to join reads everything).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::Serialize;
use txoutbox::coordination::{Coordination, LeaseSettings, Leases};
use txoutbox::kafka::{ExactlyOnceSettings, ExactlyOnceSink, KafkaConfig, KafkaSink};
use txoutbox::mysql::MySqlOutbox;
use txoutbox::postgres::PgOutbox;
use txoutbox::{Relay, RelayConfig, RelayHandle, Sink, Store, Topics};
use txoutbox_testing::mysql::TestDatabase;
use txoutbox_testing::postgres::TestSchema;

use crate::common::{BenchMsg, Instrumented, StoreStats, bootstrap, median, messages, topic_def, wait_quiet};
use crate::throughput::{PREWRITE_CHUNK, new_topic, raw_producer};

/// Longest one run may take.
const RUN_TIMEOUT: Duration = Duration::from_secs(300);

/// Lease timing of the nodes: a short heartbeat, so that they settle their shares quickly.
const LEASE: Duration = Duration::from_secs(3);
const HEARTBEAT: Duration = Duration::from_millis(500);

/// Connections per node (the daemon's default pool is larger; a node uses a few at a time).
const POOL_PER_NODE: u32 = 4;

/// How relays share the table in one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Setup {
    /// One relay, no leases (the default).
    Single,
    /// `n` work-balanced nodes, at-least-once.
    WorkBalance(usize),
    /// One exclusive node, exactly-once (Kafka transactions).
    ExactlyOnce,
    /// `n` work-balanced nodes, exactly-once (a transactional id per node session).
    ExactlyOnceBalance(usize),
}

impl Setup {
    fn name(self) -> String {
        match self {
            Self::Single => "single".into(),
            Self::WorkBalance(n) => format!("work-balance x{n}"),
            Self::ExactlyOnce => "exclusive, exactly-once".into(),
            Self::ExactlyOnceBalance(n) => format!("work-balance x{n}, exactly-once"),
        }
    }

    fn nodes(self) -> usize {
        match self {
            Self::WorkBalance(n) | Self::ExactlyOnceBalance(n) => n,
            Self::Single | Self::ExactlyOnce => 1,
        }
    }

    fn coordination(self, node: usize) -> Coordination {
        let lease = LeaseSettings::default()
            .with_timing(LEASE, HEARTBEAT)
            .with_node_id(format!("node-{node}"));
        match self {
            Self::Single => Coordination::Single,
            Self::WorkBalance(_) | Self::ExactlyOnceBalance(_) => Coordination::WorkBalance(lease),
            Self::ExactlyOnce => Coordination::Exclusive(lease),
        }
    }

    /// Whether the nodes send in Kafka transactions.
    fn exactly_once(self) -> bool {
        matches!(self, Self::ExactlyOnce | Self::ExactlyOnceBalance(_))
    }

    /// Whether the nodes share the buckets (so their shares settle during the run).
    fn balanced(self) -> bool {
        matches!(self, Self::WorkBalance(_) | Self::ExactlyOnceBalance(_))
    }
}

/// One store and setup over every round.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct NodesRun {
    pub store: String,
    pub setup: String,
    pub nodes: usize,
    /// Messages per second from the first read to the last completion, each round.
    pub msgs_per_sec: Vec<f64>,
    /// Messages per second once every node held its share, each round (the whole run for one node).
    pub steady_msgs_per_sec: Vec<f64>,
    /// Seconds from the first read until every node held its share, each round (NaN: the
    /// backlog was drained before).
    pub settle_seconds: Vec<f64>,
    /// `msgs_per_sec` / raw producer of the same round.
    pub ratio_to_raw: Vec<f64>,
    pub ratio_median: f64,
    pub steady_ratio_median: f64,
}

/// Every store and setup.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct NodesResult {
    pub rounds: usize,
    pub backlog: usize,
    pub keys: usize,
    pub raw_msgs_per_sec: Vec<f64>,
    pub runs: Vec<NodesRun>,
}

/// One run's figures.
struct Measured {
    rate: f64,
    steady: f64,
    settle: f64,
}

pub(crate) async fn run(backlog: usize, rounds: usize, keys: usize, mysql: bool) -> NodesResult {
    let msgs = messages(backlog, keys);
    let mut plan: Vec<(&'static str, Setup)> = [
        Setup::Single,
        Setup::WorkBalance(1),
        Setup::WorkBalance(2),
        Setup::WorkBalance(3),
        Setup::ExactlyOnce,
        Setup::ExactlyOnceBalance(1),
        Setup::ExactlyOnceBalance(2),
        Setup::ExactlyOnceBalance(3),
    ]
    .into_iter()
    .map(|setup| ("postgres", setup))
    .collect();
    if mysql {
        plan.extend(
            [
                Setup::Single,
                Setup::WorkBalance(1),
                Setup::WorkBalance(2),
                Setup::WorkBalance(3),
            ]
            .into_iter()
            .map(|setup| ("mysql", setup)),
        );
    }
    let mut figures: Vec<Vec<(Measured, f64)>> = (0..plan.len()).map(|_| Vec::new()).collect();
    let mut raw_rates = Vec::new();
    for round in 0..rounds {
        let topic = new_topic().await;
        wait_quiet("nodes", Duration::from_secs(30)).await;
        let raw = {
            let msgs = msgs.clone();
            tokio::task::spawn_blocking(move || raw_producer(&topic, &msgs))
                .await
                .unwrap()
        };
        eprintln!("[nodes] round {}: raw {:.0} msg/s", round + 1, raw.msgs_per_sec);
        raw_rates.push(raw.msgs_per_sec);
        for (i, (store, setup)) in plan.iter().enumerate() {
            let measured = match *store {
                "postgres" => postgres(&msgs, *setup).await,
                _ => mysql_run(&msgs, *setup).await,
            };
            eprintln!(
                "[nodes] round {}: {store} {}: {:.0} msg/s ({:.2}x raw), steady {:.0} msg/s after {:.1} s",
                round + 1,
                setup.name(),
                measured.rate,
                measured.rate / raw.msgs_per_sec,
                measured.steady,
                measured.settle
            );
            figures[i].push((measured, raw.msgs_per_sec));
        }
    }
    let runs = plan
        .into_iter()
        .zip(figures)
        .map(|((store, setup), rounds)| {
            let ratios: Vec<f64> = rounds.iter().map(|(m, raw)| m.rate / raw).collect();
            let steady_ratios: Vec<f64> = rounds.iter().map(|(m, raw)| m.steady / raw).collect();
            NodesRun {
                store: store.into(),
                setup: setup.name(),
                nodes: setup.nodes(),
                msgs_per_sec: rounds.iter().map(|(m, _)| m.rate).collect(),
                steady_msgs_per_sec: rounds.iter().map(|(m, _)| m.steady).collect(),
                settle_seconds: rounds.iter().map(|(m, _)| m.settle).collect(),
                ratio_median: median(&ratios),
                steady_ratio_median: median(&steady_ratios),
                ratio_to_raw: ratios,
            }
        })
        .collect();
    NodesResult {
        rounds,
        backlog,
        keys,
        raw_msgs_per_sec: raw_rates,
        runs,
    }
}

/// Starts one relay per node over the stores `store_for(node)` gives, sending with `sink_for(node)`.
fn start<S, K>(
    setup: Setup,
    stats: &Arc<StoreStats>,
    mut store_for: impl FnMut(usize) -> S,
    mut sink_for: impl FnMut(usize) -> K,
    max_in_flight: usize,
) -> Vec<RelayHandle>
where
    S: Store + Leases,
    K: Sink,
{
    let config = RelayConfig::default()
        .with_max_in_flight(max_in_flight)
        .with_poll_interval(Duration::from_secs(1));
    (0..setup.nodes())
        .map(|node| {
            let store = Instrumented {
                inner: store_for(node),
                stats: Arc::clone(stats),
            };
            Relay::coordinated(store, sink_for(node), config.clone(), setup.coordination(node))
                .expect("relay config")
                .start()
        })
        .collect()
}

/// Whether the live leases give each of `nodes` owners its even share of the buckets.
fn settled(leases: &[txoutbox::coordination::LeaseInfo], nodes: usize) -> bool {
    let now = chrono::Utc::now();
    let mut held: BTreeMap<&str, usize> = BTreeMap::new();
    for lease in leases {
        if let (Some(owner), Some(until)) = (&lease.owner, lease.lease_until)
            && until > now
            && lease.bucket >= 0
        {
            *held.entry(owner.as_str()).or_default() += 1;
        }
    }
    let (low, high) = (64 / nodes, 64usize.div_ceil(nodes));
    held.len() == nodes && held.values().all(|n| (low..=high).contains(n))
}

/// Waits until the relays completed `n` rows and `probe` shows nothing pending; then stops them.
async fn measure<P: Store + Leases>(
    setup: Setup,
    relays: Vec<RelayHandle>,
    stats: &StoreStats,
    probe: &P,
    n: usize,
) -> Measured {
    let started = Instant::now();
    let mut settled_at: Option<(Instant, u64)> = None;
    let mut last_look = Instant::now();
    loop {
        let completed = stats.completed.load(Ordering::Acquire);
        if settled_at.is_none() && setup.balanced() && last_look.elapsed() >= Duration::from_millis(50) {
            last_look = Instant::now();
            if probe
                .leases()
                .await
                .is_ok_and(|leases| settled(&leases, setup.nodes()))
            {
                settled_at = Some((Instant::now(), completed));
            }
        }
        if completed as usize >= n && probe.backlog().await.is_ok_and(|b| b.pending == 0) {
            break;
        }
        assert!(
            started.elapsed() < RUN_TIMEOUT,
            "{}: {completed} of {n} rows completed in {RUN_TIMEOUT:?}",
            setup.name()
        );
        let _ = tokio::time::timeout(Duration::from_millis(5), stats.done.notified()).await;
    }
    let end = Instant::now();
    for relay in relays {
        if let Err(e) = relay.shutdown().await {
            eprintln!("relay stopped with an error: {e}");
        }
    }
    let first = stats.first_fetch.get().copied().unwrap_or(started);
    let rate = n as f64 / (end - first).as_secs_f64();
    // Shares that settled before the first read (exactly-once nodes start their producers once
    // they hold a lease, so they read later) count from the first read.
    let settled_at = settled_at.map(|(at, done)| (at.max(first), done));
    match (setup.balanced(), settled_at) {
        (true, Some((settled, done_then))) => Measured {
            rate,
            steady: (n as f64 - done_then as f64) / (end - settled).as_secs_f64(),
            settle: settled.saturating_duration_since(first).as_secs_f64(),
        },
        // The backlog was drained before the shares settled: no steady rate.
        (true, None) => Measured {
            rate,
            steady: f64::NAN,
            settle: f64::NAN,
        },
        (false, _) => Measured {
            rate,
            steady: rate,
            settle: 0.0,
        },
    }
}

async fn postgres(msgs: &[BenchMsg], setup: Setup) -> Measured {
    let topic = new_topic().await;
    let schema = TestSchema::with_pool_size(POOL_PER_NODE).await;
    let outbox = PgOutbox::with_table(Topics::new().with(topic_def(&topic)).unwrap(), schema.table());
    outbox.migrate(&schema.pool).await.expect("migrate");
    for chunk in msgs.chunks(PREWRITE_CHUNK) {
        let mut tx = schema.pool.begin().await.unwrap();
        outbox.publish_all(&mut *tx, chunk).await.expect("publish_all");
        tx.commit().await.unwrap();
    }
    let mut pools = Vec::new();
    for _ in 0..setup.nodes() {
        pools.push(
            sqlx::postgres::PgPoolOptions::new()
                .max_connections(POOL_PER_NODE)
                .connect(&txoutbox_testing::postgres::url())
                .await
                .expect("node pool"),
        );
    }
    wait_quiet("nodes", Duration::from_secs(30)).await;
    let stats = Arc::new(StoreStats::default());
    let default_window = RelayConfig::default().max_in_flight;
    let relays = if setup.exactly_once() {
        let settings = ExactlyOnceSettings::for_table(&schema.schema)
            .with_progress_topic(txoutbox_testing::unique("bench-progress"))
            .with_create_progress_topic(true);
        let window = default_window.max(settings.recommended_max_in_flight());
        start(
            setup,
            &stats,
            |node| outbox.store(pools[node].clone()),
            |_| ExactlyOnceSink::new(&KafkaConfig::new(bootstrap()), settings.clone()).expect("sink"),
            window,
        )
    } else {
        start(
            setup,
            &stats,
            |node| outbox.store(pools[node].clone()),
            |_| KafkaSink::new(&KafkaConfig::new(bootstrap())).expect("sink"),
            default_window,
        )
    };
    let measured = measure(
        setup,
        relays,
        &stats,
        &outbox.store(schema.pool.clone()),
        msgs.len(),
    )
    .await;
    for pool in pools {
        pool.close().await;
    }
    schema.drop_schema().await;
    measured
}

async fn mysql_run(msgs: &[BenchMsg], setup: Setup) -> Measured {
    let topic = new_topic().await;
    let db = TestDatabase::with_pool_size(POOL_PER_NODE).await;
    let outbox = MySqlOutbox::with_table(Topics::new().with(topic_def(&topic)).unwrap(), db.table());
    outbox.migrate(&db.pool).await.expect("migrate");
    for chunk in msgs.chunks(PREWRITE_CHUNK) {
        let mut tx = db.pool.begin().await.unwrap();
        outbox.publish_all(&mut tx, chunk).await.expect("publish_all");
        tx.commit().await.unwrap();
    }
    let mut pools = Vec::new();
    for _ in 0..setup.nodes() {
        pools.push(TestDatabase::connect(&db.database, POOL_PER_NODE).await);
    }
    wait_quiet("nodes", Duration::from_secs(30)).await;
    let stats = Arc::new(StoreStats::default());
    // One outbox per node, as in separate processes: the stores of one outbox share its relay lock.
    let relays = start(
        setup,
        &stats,
        |node| MySqlOutbox::with_table(Topics::new(), db.table()).store(pools[node].clone()),
        |_| KafkaSink::new(&KafkaConfig::new(bootstrap())).expect("sink"),
        RelayConfig::default().max_in_flight,
    );
    let probe = MySqlOutbox::with_table(Topics::new(), db.table()).store(db.pool.clone());
    let measured = measure(setup, relays, &stats, &probe, msgs.len()).await;
    for pool in pools {
        pool.close().await;
    }
    db.drop_database().await;
    measured
}
