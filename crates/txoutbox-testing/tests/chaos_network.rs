//! Network faults between the relay (its own process) and Kafka, and between the relay and
//! PostgreSQL, through a real TCP proxy (Toxiproxy, started by the test): latency of hundreds of
//! milliseconds, connections reset, connections that hang with no answer. Writers commit messages
//! with many keys on PostgreSQL (directly, not through the proxy) while the fault lasts; an
//! independent consumer then checks that nothing was lost and no key went backwards, counts the
//! duplicates, and the recovery time after the fault is lifted is printed.
//!
//! Kafka: a private node advertises the proxy's port, so the relay's every connection to it goes
//! through the proxy. PostgreSQL: the relay's database URL names the proxy in front of the test
//! database.
//!
//! Light by default. Longer: `TXOUTBOX_CHAOS_MESSAGES=20000 TXOUTBOX_CHAOS_FAULT_SECS=30`.
//! The tests run one at a time (each starts its own broker).

mod chaos_common;

use std::time::{Duration, Instant, SystemTime};

use chaos_common::*;
use txoutbox_core::{Store, Topic, Topics};
use txoutbox_postgres::PgOutbox;
use txoutbox_testing::instances::KafkaNode;
use txoutbox_testing::kafka::{LOG_APPEND_TIME, new_topic_on};
use txoutbox_testing::postgres::TestSchema;
use txoutbox_testing::toxiproxy::{Toxiproxy, free_port};

/// One test at a time: each runs its own broker on the shared 2 cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Kafka,
    Postgres,
}

#[derive(Debug, Clone, Copy)]
struct Fault {
    target: Target,
    /// Toxiproxy toxic type.
    kind: &'static str,
    /// Its attributes (JSON).
    attributes: &'static str,
    /// How long it lasts by default, seconds.
    secs: u64,
}

const LATENCY: &str = r#"{"latency":300,"jitter":100}"#;
/// Every connection, open or new, is reset (RST) at once.
const RESET: &str = r#"{"timeout":0}"#;
/// No data passes and connections stay open: a hang.
const HANG: &str = r#"{"timeout":0}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_latency_300ms() {
    fault_run(Fault {
        target: Target::Kafka,
        kind: "latency",
        attributes: LATENCY,
        secs: 8,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_connections_reset() {
    fault_run(Fault {
        target: Target::Kafka,
        kind: "reset_peer",
        attributes: RESET,
        secs: 15,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_connections_hang() {
    fault_run(Fault {
        target: Target::Kafka,
        kind: "timeout",
        attributes: HANG,
        secs: 15,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_latency_300ms() {
    fault_run(Fault {
        target: Target::Postgres,
        kind: "latency",
        attributes: LATENCY,
        secs: 8,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_connections_reset() {
    fault_run(Fault {
        target: Target::Postgres,
        kind: "reset_peer",
        attributes: RESET,
        secs: 15,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_connections_hang() {
    fault_run(Fault {
        target: Target::Postgres,
        kind: "timeout",
        attributes: HANG,
        secs: 15,
    })
    .await;
}

/// `(epoch ms, sink, store)` changes recorded by the relay process.
fn health_changes(path: &std::path::Path) -> Vec<(i64, String, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some((
                f.next()?.parse().ok()?,
                f.next()?.to_owned(),
                f.next()?.to_owned(),
            ))
        })
        .collect()
}

/// `postgres://user:pw@host:port/db` → (`host:port`, the URL with `127.0.0.1:<port>` instead).
fn through_proxy(url: &str, port: u16) -> (String, String) {
    let (head, rest) = url.rsplit_once('@').expect("a database URL with user@host");
    let (hostport, tail) = rest.split_once('/').unwrap_or((rest, ""));
    (hostport.to_owned(), format!("{head}@127.0.0.1:{port}/{tail}"))
}

async fn fault_run(fault: Fault) {
    let _serial = SERIAL.lock().await;
    txoutbox_testing::init_tracing();
    const KEYS: u64 = 200;
    const WRITERS: u64 = 4;
    let total = env_number("TXOUTBOX_CHAOS_MESSAGES", 1_500);
    let phase = Duration::from_secs(env_number("TXOUTBOX_CHAOS_FAULT_SECS", fault.secs));

    let proxy = tokio::task::block_in_place(Toxiproxy::start);
    let kafka_port = free_port();
    let broker = KafkaNode::start_advertising(kafka_port).await;
    tokio::task::block_in_place(|| {
        proxy.proxy(
            "kafka",
            kafka_port,
            &format!("127.0.0.1:{}", broker.broker_port()),
        )
    });
    let bootstrap = format!("127.0.0.1:{kafka_port}");
    let topic = new_topic_on(&bootstrap, "chaos-network", 3, &[LOG_APPEND_TIME]).await;

    let db = TestSchema::new().await;
    let pg_port = free_port();
    let (pg_upstream, relay_db_url) = through_proxy(&txoutbox_testing::postgres::url(), pg_port);
    tokio::task::block_in_place(|| proxy.proxy("postgres", pg_port, &pg_upstream));
    let topics = Topics::new()
        .with(Topic::<Event>::json(&topic).unwrap().key(|e| e.key.clone()))
        .unwrap();
    let outbox = PgOutbox::with_table(topics, db.table());
    outbox.migrate(&db.pool).await.unwrap();
    let store = outbox.store(db.pool.clone());
    let table = db.table().quoted();

    let health_file = std::env::temp_dir().join(txoutbox_testing::unique("network-health"));
    let relay = spawn_relay(&[
        ("TXOUTBOX_CHAOS_SCHEMA", &db.schema),
        ("TXOUTBOX_KAFKA_BOOTSTRAP", &bootstrap),
        ("TXOUTBOX_POSTGRES_URL", &relay_db_url),
        // Deliveries that cannot finish fail after 10 s (librdkafka's default is 300 s).
        ("TXOUTBOX_CHAOS_KAFKA", "message.timeout.ms=10000"),
        // A database call that hangs fails after 3 s (the default is 30 s).
        ("TXOUTBOX_CHAOS_STORE_TIMEOUT_MS", "3000"),
        ("TXOUTBOX_CHAOS_HEALTH_FILE", health_file.to_str().unwrap()),
    ]);
    let plan = PgWriters {
        total,
        keys: KEYS,
        writers: WRITERS,
        per_tx: 10,
        spread: phase * 3,
        markers: db.qualify("chaos_batches"),
    };
    plan.create_markers(&db.pool).await;
    let writers = plan.spawn(&db.pool, &outbox);

    tokio::time::sleep(phase).await; // the fault begins a third into the run, by design
    let proxy_name = match fault.target {
        Target::Kafka => "kafka",
        Target::Postgres => "postgres",
    };
    let began = SystemTime::now();
    tokio::task::block_in_place(|| {
        for stream in ["upstream", "downstream"] {
            proxy.add_toxic(proxy_name, stream, fault.kind, stream, fault.attributes);
        }
    });
    tokio::time::sleep(phase).await; // the fault lasts a third of the run
    tokio::task::block_in_place(|| {
        for stream in ["upstream", "downstream"] {
            proxy.remove_toxic(proxy_name, stream);
        }
    });
    let lifted = SystemTime::now();
    let lifted_instant = Instant::now();
    let (max_id_at_lift, pending_at_lift) = max_id_and_pending(&db.pool, &table).await;

    let caught_up = txoutbox_testing::eventually(Duration::from_secs(240), || async {
        pending_up_to(&db.pool, &table, max_id_at_lift).await == Some(0)
    })
    .await;
    let catch_up = lifted_instant.elapsed();
    let changes = health_changes(&health_file);
    assert!(
        caught_up,
        "{fault:?}: the relay did not deliver what was committed before the fault was lifted within 240 s: {:?}; health {changes:?}",
        store.backlog().await
    );
    let stats = join_writers(writers).await;
    let drained = drains(&store, Duration::from_secs(240)).await;

    let (records, v) = stop_and_read_back(relay, drained, &store, &bootstrap, &topic).await;
    let (began_ms, lifted_ms) = (epoch_ms(began), epoch_ms(lifted));
    let first_after = first_append_since(&records, lifted_ms).map(|t| t - lifted_ms);
    let during = records
        .iter()
        .filter_map(|r| r.timestamp_ms)
        .filter(|&t| t >= began_ms && t < lifted_ms)
        .count();
    let mut times: Vec<i64> = records
        .iter()
        .filter_map(|r| r.timestamp_ms)
        .filter(|&t| t >= began_ms)
        .collect();
    times.push(began_ms); // a stall right from the start counts too
    times.sort_unstable();
    let longest_stall = times.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
    let changes = health_changes(&health_file);
    let _ = std::fs::remove_file(&health_file);
    let rel: Vec<String> = changes
        .iter()
        .map(|(t, sink, st)| format!("sink={sink},store={st}@{}", secs(t - began_ms)))
        .collect();
    eprintln!(
        "chaos network {:?} {} {}: {total} messages over {KEYS} keys, fault for {:.1} s; \
         {} records read, {} distinct, {} lost, {} duplicates, {} order violations; \
         {during} records stored during the fault, {pending_at_lift} pending when lifted; longest stall {}; \
         first record {} after the fault was lifted, rows committed before it all delivered {:.1} s after it; \
         health (relative to the fault's start): {}; writers: {} commits, {} failed attempts",
        fault.target,
        fault.kind,
        fault.attributes,
        lifted.duration_since(began).unwrap().as_secs_f64(),
        v.records,
        v.distinct,
        total as i64 - v.distinct as i64,
        v.duplicates,
        v.order_violations,
        secs(longest_stall),
        first_after.map_or("never".into(), secs),
        catch_up.as_secs_f64(),
        rel.join(" "),
        stats.commits,
        stats.failed_attempts,
    );
    print_violations(&records, &v);
    assert_eq!(v.distinct as u64, total, "messages lost (or extra): {v:?}");
    assert_eq!(v.order_violations, 0, "{v:?}");
    let last = changes
        .last()
        .map(|(_, sink, store)| (sink.as_str(), store.as_str()));
    assert_eq!(last, Some(("ok", "ok")), "health after the fault: {changes:?}");
    // While the relay cannot reach a dependency at all, its health says so. (A hung database
    // connection is not seen: see docs/guarantees.md, "Network faults".)
    let failing_during = |which: Target| {
        changes.iter().any(|(t, sink, store)| {
            *t >= began_ms
                && *t <= lifted_ms
                && match which {
                    Target::Kafka => sink == "failing",
                    Target::Postgres => store == "failing",
                }
        })
    };
    // Latency only slows the relay down; a reset or a hang on either path must show in health.
    if matches!(fault.kind, "reset_peer" | "timeout") {
        assert!(
            failing_during(fault.target),
            "{fault:?}: the relay's health did not report the fault while it lasted: {changes:?}"
        );
    }
    drop(broker);
    db.drop_schema().await;
}
