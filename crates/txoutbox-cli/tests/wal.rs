//! The `txoutbox` daemon in PostgreSQL WAL mode (`--source wal`), against real PostgreSQL and
//! Kafka: migrate / relay / status / drop-slot on the shared server (own schema, slot and prefix
//! per test), a private server restarted under a running relay (`pg_ctl stop -m fast` and
//! `immediate`), a slot invalidated by `max_slot_wal_keep_size` under a running relay (which stops
//! with exit code 2), and the replication connection over TLS (`sslmode=verify-full`).

mod support;

use std::collections::HashSet;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use support::{Daemon, binary, env_or, metric, ok, rand_ms};
use txoutbox_core::{NewMessage, PublishStrategy, Store, Topics};
use txoutbox_postgres_wal::{PgWalOutbox, WalConfig};
use txoutbox_testing::eventually;
use txoutbox_testing::instances::{PgCluster, PgStopMode};
use txoutbox_testing::kafka::{count, new_topic, read_all, verdict};
use txoutbox_testing::postgres::TestSchema;
use uuid::Uuid;

/// One test's WAL-mode coordinates.
struct Wal {
    url: String,
    table: String,
    slot: String,
    prefix: String,
}

impl Wal {
    fn new(url: String, table: String) -> Self {
        Self {
            url,
            table,
            slot: txoutbox_testing::unique("cli_wal"),
            prefix: txoutbox_testing::unique("txoutbox"),
        }
    }

    /// `--source wal --wal-slot … --wal-prefix …`.
    fn flags(&self) -> Vec<&str> {
        vec![
            "--source",
            "wal",
            "--wal-slot",
            &self.slot,
            "--wal-prefix",
            &self.prefix,
        ]
    }

    /// `txoutbox <args> <WAL flags>`.
    fn run(&self, args: &[&str]) -> Output {
        Command::new(binary())
            .args(args)
            .args(self.flags())
            .env("TXOUTBOX_DATABASE_URL", &self.url)
            .env("TXOUTBOX_TABLE", &self.table)
            .env("TXOUTBOX_KAFKA_BOOTSTRAP", txoutbox_testing::kafka::bootstrap())
            .env_remove("TXOUTBOX_CONFIG")
            .env_remove("TXOUTBOX_SOURCE")
            .output()
            .expect("run txoutbox")
    }

    /// The relay daemon with the WAL flags and `extra` ones.
    async fn daemon(&self, extra: &[&str]) -> Daemon {
        let mut args = self.flags();
        args.extend_from_slice(&["--health-interval", "200ms"]);
        args.extend_from_slice(extra);
        Daemon::start_on(&self.url, &self.table, &args).await
    }

    /// The publisher applications would use.
    fn outbox(&self) -> PgWalOutbox {
        PgWalOutbox::new(
            Topics::new(),
            WalConfig::default()
                .with_slot(self.slot.clone())
                .with_prefix(self.prefix.clone()),
        )
        .unwrap()
    }
}

/// A message on `topic` with key `key` and payload `key:seq`.
fn message(topic: &str, key: &str, seq: u64) -> NewMessage {
    NewMessage {
        message_id: Uuid::now_v7(),
        topic: topic.to_owned(),
        key: Some(key.as_bytes().to_vec()),
        payload: Some(format!("{key}:{seq}").into_bytes()),
        headers: vec![("source".into(), "wal-test".into())],
        strategy: PublishStrategy::default(),
    }
}

/// Commits transactions `seqs` of `keys` messages each (one per key, seq = transaction number).
async fn publish(
    outbox: &PgWalOutbox,
    pool: &PgPool,
    topic: &str,
    seqs: std::ops::Range<u64>,
    keys: usize,
) -> Vec<Uuid> {
    let mut ids = Vec::new();
    for seq in seqs {
        let messages: Vec<NewMessage> = (0..keys)
            .map(|k| message(topic, &format!("key-{k}"), seq))
            .collect();
        let mut tx = pool.begin().await.unwrap();
        ids.extend(outbox.publish_messages(&mut *tx, messages).await.unwrap());
        tx.commit().await.unwrap();
    }
    ids
}

fn key_seq(r: &txoutbox_testing::kafka::Record) -> (String, u64) {
    let (key, seq) = r.payload_str().split_once(':').unwrap();
    (key.to_owned(), seq.parse().unwrap())
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_mode_migrate_relay_status_and_drop_slot() {
    let db = TestSchema::new().await;
    let wal = Wal::new(
        txoutbox_testing::postgres::url(),
        format!("{}.outbox_messages", db.schema),
    );
    let topic = new_topic("cli_wal", 3).await;

    let migrated = ok(&wal.run(&["migrate"]));
    assert!(
        migrated.contains(&wal.slot) && migrated.contains("ready"),
        "{migrated}"
    );
    ok(&wal.run(&["migrate"])); // idempotent
    let ids = publish(&wal.outbox(), &db.pool, &topic, 0..50, 10).await;

    // Before any relay: the slot keeps the messages' WAL, nobody streams it.
    let status = json(&ok(&wal.run(&["status", "--json", "--relay-url", "127.0.0.1:1"])));
    let slot = &status["wal_slot"];
    assert_eq!(slot["slot"], wal.slot.as_str(), "{status}");
    assert_eq!(slot["active"], false, "{status}");
    assert!(slot["lag_bytes"].as_u64().unwrap() > 0, "{status}");
    assert_eq!(slot["wal_status"], "reserved", "{status}");
    let human = ok(&wal.run(&["status", "--relay-url", "127.0.0.1:1"]));
    assert!(
        human.contains(&format!("replication slot {}", wal.slot)),
        "{human}"
    );

    // What WAL mode cannot do is refused before anything runs.
    for (args, why) in [
        (
            &["relay", "--coordination", "work-balance"][..],
            "--coordination single",
        ),
        (&["relay", "--on-dead-letter", "park-key"][..], "park-key"),
    ] {
        let refused = wal.run(args);
        assert_eq!(refused.status.code(), Some(2), "{args:?}: {}", stderr(&refused));
        assert!(stderr(&refused).contains(why), "{args:?}: {}", stderr(&refused));
    }
    let sqlite = Command::new(binary())
        .args([
            "--database-url",
            "sqlite:///tmp/never.db",
            "--source",
            "wal",
            "migrate",
        ])
        .output()
        .unwrap();
    assert_eq!(sqlite.status.code(), Some(2));
    assert!(
        stderr(&sqlite).contains("needs a PostgreSQL database"),
        "{}",
        stderr(&sqlite)
    );

    // The daemon relays what the slot holds, then what is committed while it runs.
    let daemon = wal.daemon(&[]).await;
    let more = publish(&wal.outbox(), &db.pool, &topic, 50..100, 10).await;
    let topics = [topic.clone()];
    let n = (ids.len() + more.len()) as i64;
    let delivered = eventually(Duration::from_secs(60), || async { count(&topics).await >= n }).await;
    assert!(delivered, "not delivered: {}", daemon.logs());
    let v = verdict(&read_all(&topics).await, key_seq);
    assert_eq!(
        (v.distinct as i64, v.duplicates, v.order_violations),
        (n, 0, 0),
        "{v:?}"
    );

    // /status, /health and /metrics show the slot.
    let streamed = eventually(Duration::from_secs(20), || async {
        let s = daemon.status().await;
        s["wal_slot"]["active"] == true && s["wal_slot"]["lag_bytes"].as_u64().is_some()
    })
    .await;
    assert!(streamed, "{}", daemon.status().await);
    let healthy = eventually(Duration::from_secs(20), || async {
        matches!(daemon.get("/health").await, Some((200, _)))
    })
    .await;
    assert!(healthy, "{:?}", daemon.get("/health").await);
    let (_, metrics) = daemon.get("/metrics").await.unwrap();
    let labels = [("slot", wal.slot.as_str())];
    assert!(
        metric(&metrics, "txoutbox_wal_slot_lag_bytes", &labels).is_some(),
        "{metrics}"
    );
    assert!(
        metric(&metrics, "txoutbox_wal_slot_lag_seconds", &labels).is_some(),
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "txoutbox_wal_slot_invalidated", &labels),
        Some(0.0)
    );

    // Dropping the slot needs --confirm, and no relay on it.
    let unconfirmed = wal.run(&["wal", "drop-slot"]);
    assert_eq!(unconfirmed.status.code(), Some(2));
    assert!(
        stderr(&unconfirmed).contains("--confirm"),
        "{}",
        stderr(&unconfirmed)
    );
    let busy = wal.run(&["wal", "drop-slot", "--confirm"]);
    assert!(
        !busy.status.success() && stderr(&busy).contains("stop it first"),
        "{}",
        stderr(&busy)
    );
    daemon.stop();
    let released = eventually(Duration::from_secs(20), || async {
        let status = wal.run(&["status", "--json", "--relay-url", "127.0.0.1:1"]);
        status.status.success() && json(&ok(&status))["wal_slot"]["active"] == false
    })
    .await;
    assert!(released, "the slot stays active after the relay stopped");
    let dropped = ok(&wal.run(&["wal", "drop-slot", "--confirm"]));
    assert!(dropped.contains("dropped the replication slot"), "{dropped}");
    let gone = wal.run(&["status", "--json", "--relay-url", "127.0.0.1:1"]);
    assert!(
        !gone.status.success() && stderr(&gone).contains("txoutbox migrate --source wal"),
        "{}",
        stderr(&gone)
    );
    let again = ok(&wal.run(&["wal", "drop-slot", "--confirm"]));
    assert!(again.contains("nothing to drop"), "{again}");
    db.drop_schema().await;
}

/// Commits transactions of one message per key until stopped, retrying through outages; keeps
/// the ids of the commits PostgreSQL acknowledged.
struct Writer {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<Uuid>>>,
    task: tokio::task::JoinHandle<u64>,
}

impl Writer {
    fn start(outbox: PgWalOutbox, pool: PgPool, topic: String, keys: usize) -> Self {
        Self::start_named(outbox, pool, topic, "key", keys)
    }

    /// A writer whose keys are `<name>-<k>`, so several writers commit concurrently without
    /// sharing keys.
    fn start_named(
        outbox: PgWalOutbox,
        pool: PgPool,
        topic: String,
        name: &'static str,
        keys: usize,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let (s, a) = (Arc::clone(&stop), Arc::clone(&acked));
        let task = tokio::spawn(async move {
            let mut seq = 0;
            let mut failures = 0;
            while !s.load(Ordering::Relaxed) {
                let messages: Vec<NewMessage> = (0..keys)
                    .map(|k| message(&topic, &format!("{name}-{k}"), seq))
                    .collect();
                let attempt = async {
                    let mut tx = pool.begin().await?;
                    let ids = outbox
                        .publish_messages(&mut *tx, messages)
                        .await
                        .map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
                    tx.commit().await?;
                    Ok::<_, sqlx::Error>(ids)
                };
                match attempt.await {
                    Ok(ids) => {
                        a.lock().unwrap().extend(ids);
                        seq += 1;
                    }
                    // The server is down: the same seq again once it is back (an ambiguous
                    // commit may then land twice, under other message ids).
                    Err(_) => {
                        failures += 1;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
            failures
        });
        Self { stop, acked, task }
    }

    async fn finish(self) -> (Vec<Uuid>, u64) {
        self.stop.store(true, Ordering::Relaxed);
        let failures = self.task.await.unwrap();
        (
            Arc::try_unwrap(self.acked).unwrap().into_inner().unwrap(),
            failures,
        )
    }
}

async fn cluster_pool(cluster: &PgCluster) -> PgPool {
    PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(5))
        .connect(&cluster.url())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_relay_survives_database_restarts_without_loss_or_reordering() {
    let cluster = PgCluster::start_with(&[("wal_level", "logical")]).await;
    let wal = Wal::new(cluster.url(), "outbox_messages".into());
    let topic = new_topic("cli_wal_restart", 3).await;
    let topics = [topic.clone()];
    let probe_topic = new_topic("cli_wal_probe", 1).await;
    ok(&wal.run(&["migrate"]));
    let pool = cluster_pool(&cluster).await;
    let daemon = wal.daemon(&[]).await;
    let writer = Writer::start(wal.outbox(), pool.clone(), topic.clone(), 20);

    let mut recoveries = Vec::new();
    for mode in [PgStopMode::Fast, PgStopMode::Immediate, PgStopMode::Fast] {
        // Writers and relay busy: something delivered since the last restart.
        let before = count(&topics).await;
        let busy = eventually(Duration::from_secs(60), || async {
            count(&topics).await > before + 500
        })
        .await;
        assert!(
            busy,
            "nothing relayed before the {mode:?} stop: {}",
            daemon.logs()
        );
        cluster.stop(mode).await;
        cluster.start_again().await;
        let restarted = Instant::now();
        // Recovered: a message committed after the restart reached Kafka (through the stream
        // reconnected to the restarted server, behind what the slot still held).
        let probes = recoveries.len() as i64 + 1;
        let committed = eventually(Duration::from_secs(30), || async {
            let mut tx = match pool.begin().await {
                Ok(tx) => tx,
                Err(_) => return false,
            };
            let probe = vec![message(&probe_topic, "probe", probes as u64)];
            wal.outbox().publish_messages(&mut *tx, probe).await.is_ok() && tx.commit().await.is_ok()
        })
        .await;
        assert!(committed, "the restarted server takes no commits");
        let recovered = eventually(Duration::from_secs(90), || async {
            count(std::slice::from_ref(&probe_topic)).await >= probes
        })
        .await;
        assert!(
            recovered,
            "no recovery after the {mode:?} restart: {}",
            daemon.logs()
        );
        recoveries.push((mode, restarted.elapsed()));
    }
    let (acked, write_failures) = writer.finish().await;
    let all = eventually(Duration::from_secs(90), || async {
        count(&topics).await >= acked.len() as i64
    })
    .await;
    let records = read_all(&topics).await;
    let seen: HashSet<&str> = records
        .iter()
        .filter_map(|r| r.header("txoutbox-message-id"))
        .collect();
    let lost = acked
        .iter()
        .filter(|id| !seen.contains(id.to_string().as_str()))
        .count();
    let v = verdict(&records, key_seq);
    println!(
        "WAL relay over database restarts: {} acknowledged, {} records, {} distinct, lost {lost}, \
         duplicates {}, order violations {}, writer retries {write_failures}, recoveries {recoveries:?}",
        acked.len(),
        records.len(),
        v.distinct,
        v.duplicates,
        v.order_violations
    );
    assert!(all, "not all acknowledged messages arrived: {}", daemon.logs());
    assert_eq!(lost, 0, "lost messages: {v:?}\n{}", daemon.logs());
    assert_eq!(v.order_violations, 0, "{v:?}");
    let (code, _) = eventually_health(&daemon, 200).await;
    assert_eq!(code, 200, "unhealthy after the restarts: {}", daemon.logs());
    daemon.stop();
}

/// Exactly-once in WAL mode: the relay is killed with `kill -9` at random moments, and the
/// database crashes (`immediate` stop) while a relay runs and is then killed too, so the next one
/// starts on a slot whose confirmed position may have moved back. Its Kafka progress (WAL
/// positions) is the truth: a read_committed consumer reads every acknowledged message exactly
/// once, in key order, while a read_uncommitted one sees the aborted duplicates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_exactly_once_survives_kill_9_and_database_crashes_without_duplicates() {
    let rounds: usize = env_or("TXOUTBOX_EOS_KILLS", 6);
    let cluster = PgCluster::start_with(&[("wal_level", "logical")]).await;
    let wal = Wal::new(cluster.url(), "outbox_messages".into());
    let topic = new_topic("cli_wal_eos", 3).await;
    let progress = txoutbox_testing::unique("wal-eos-progress");
    ok(&wal.run(&["migrate"]));
    let pool = cluster_pool(&cluster).await;
    let eos = [
        "--delivery",
        "exactly-once",
        "--progress-topic",
        &progress,
        "--create-progress-topic",
    ];
    // Two writers: their transactions interleave in the WAL and commit out of order.
    let writers = [
        Writer::start_named(wal.outbox(), pool.clone(), topic.clone(), "a", 10),
        Writer::start_named(wal.outbox(), pool.clone(), topic.clone(), "b", 10),
    ];
    let topics = [topic.clone()];
    let mut crashes = 0;
    // One life ends at a crash point inside an open Kafka transaction, after its records were
    // produced and acknowledged (the random kills may or may not land in one).
    {
        let mut daemon = Daemon::start_with_env(
            &wal.url,
            &wal.table,
            &[wal.flags(), vec!["--health-interval", "200ms"], eos.to_vec()].concat(),
            &[
                ("TXOUTBOX_CRASH_AT", "before-commit"),
                ("TXOUTBOX_CRASH_AFTER", "3"),
            ],
        )
        .await;
        let died = eventually(Duration::from_secs(60), || {
            let exited = daemon.has_exited();
            async move { exited }
        })
        .await;
        assert!(died, "the relay did not reach its crash point: {}", daemon.logs());
        let logs = daemon.logs();
        assert!(logs.contains("crashing at before-commit"), "{logs}");
    }
    for round in 0..rounds {
        let daemon = wal.daemon(&eos).await;
        let before = count(&topics).await;
        let busy = eventually(Duration::from_secs(60), || async {
            count(&topics).await > before + 300
        })
        .await;
        assert!(busy, "round {round}: nothing relayed: {}", daemon.logs());
        tokio::time::sleep(Duration::from_millis(rand_ms(round) % 700)).await;
        if round % 3 == 1 {
            // The database crashes under the relay, which dies before it is back.
            cluster.stop(PgStopMode::Immediate).await;
            daemon.kill9();
            cluster.start_again().await;
            crashes += 1;
        } else {
            daemon.kill9();
        }
    }
    let mut acked = Vec::new();
    let mut write_failures = 0;
    for writer in writers {
        let (ids, failures) = writer.finish().await;
        acked.extend(ids);
        write_failures += failures;
    }
    let daemon = wal.daemon(&eos).await;
    let wanted: HashSet<String> = acked.iter().map(Uuid::to_string).collect();
    let all = eventually(Duration::from_secs(120), || async {
        let records = txoutbox_testing::kafka::read_committed(&topic).await;
        let seen: HashSet<&str> = records
            .iter()
            .filter_map(|r| r.header("txoutbox-message-id"))
            .collect();
        wanted.iter().all(|id| seen.contains(id.as_str()))
    })
    .await;
    let logs = daemon.stop();
    assert!(all, "not every acknowledged message arrived: {logs}");
    let committed = txoutbox_testing::kafka::read_committed(&topic).await;
    let uncommitted = read_all(&topics).await.len();
    let (ids, distinct, v) = read_once(&committed);
    println!(
        "WAL exactly-once over {rounds} kill -9 ({crashes} with a database crash): {} acknowledged; \
         read_committed read {} ({} distinct ids, {} duplicates, order violations {}); \
         read_uncommitted read {uncommitted}; writer retries {write_failures}",
        acked.len(),
        committed.len(),
        distinct,
        ids - distinct,
        v.order_violations
    );
    assert_eq!(ids, committed.len(), "every record has its message id");
    assert_eq!(ids, distinct, "a read_committed consumer saw duplicates");
    assert_eq!(v.order_violations, 0, "{v:?}");
    assert!(
        uncommitted > committed.len(),
        "the crash point left an open Kafka transaction (aborted records for read_uncommitted)"
    );
}

/// Exactly-once with a transaction many times larger than the relay's buffer (100,000 messages,
/// 256 KB of buffer): its messages stream out, in Kafka transactions whose progress names them by
/// where the WAL transaction's commit will start, before its commit is read. The relay is killed
/// with `kill -9` twice in the middle of it; a read_committed consumer still reads each message
/// exactly once, in key order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_larger_than_the_buffer_is_delivered_exactly_once_across_kills() {
    const MESSAGES: u64 = 100_000;
    let db = TestSchema::new().await;
    let wal = Wal::new(
        txoutbox_testing::postgres::url(),
        format!("{}.outbox_messages", db.schema),
    );
    let topic = new_topic("cli_wal_large", 3).await;
    let progress = txoutbox_testing::unique("wal-large-progress");
    ok(&wal.run(&["migrate"]));
    let eos = [
        "--delivery",
        "exactly-once",
        "--progress-topic",
        &progress,
        "--create-progress-topic",
        "--wal-max-buffered-bytes",
        "256KB",
    ];
    let messages: Vec<NewMessage> = (0..MESSAGES)
        .map(|seq| message(&topic, &format!("key-{}", seq % 50), seq))
        .collect();
    let ids: HashSet<String> = messages.iter().map(|m| m.message_id.to_string()).collect();
    let mut tx = db.pool.begin().await.unwrap();
    wal.outbox().publish_messages(&mut *tx, messages).await.unwrap();
    tx.commit().await.unwrap();
    let topics = [topic.clone()];
    for (round, share) in [(0, 5), (1, 2)] {
        let daemon = wal.daemon(&eos).await;
        let before = count(&topics).await;
        let part = eventually(Duration::from_secs(120), || async {
            count(&topics).await > before + (MESSAGES / share / 4) as i64
        })
        .await;
        assert!(part, "round {round}: nothing relayed: {}", daemon.logs());
        daemon.kill9();
    }
    let daemon = wal.daemon(&eos).await;
    let all = eventually(Duration::from_secs(180), || async {
        let records = txoutbox_testing::kafka::read_committed(&topic).await;
        let seen: HashSet<&str> = records
            .iter()
            .filter_map(|r| r.header("txoutbox-message-id"))
            .collect();
        ids.iter().all(|id| seen.contains(id.as_str()))
    })
    .await;
    let logs = daemon.stop();
    assert!(all, "not every message arrived: {logs}");
    let committed = txoutbox_testing::kafka::read_committed(&topic).await;
    let (read, distinct, v) = read_once(&committed);
    assert_eq!(
        (read, distinct, v.order_violations),
        (MESSAGES as usize, MESSAGES as usize, 0),
        "{v:?}"
    );
    let _ = wal.run(&["wal", "drop-slot"]);
    db.drop_schema().await;
}

/// Of records read back: how many carry a message id, how many distinct ids, and the verdict on
/// per-key order.
fn read_once(
    records: &[txoutbox_testing::kafka::Record],
) -> (usize, usize, txoutbox_testing::kafka::Verdict) {
    let ids: Vec<&str> = records
        .iter()
        .filter_map(|r| r.header("txoutbox-message-id"))
        .collect();
    let distinct: HashSet<&str> = ids.iter().copied().collect();
    (ids.len(), distinct.len(), verdict(records, key_seq))
}

/// Waits for `/health` to answer `code`; returns the last answer.
async fn eventually_health(daemon: &Daemon, code: u16) -> (u16, String) {
    let _ = eventually(Duration::from_secs(30), || async {
        matches!(daemon.get("/health").await, Some((c, _)) if c == code)
    })
    .await;
    daemon.get("/health").await.unwrap_or((0, String::new()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidated_slot_is_reported_and_refused_never_skipped() {
    let cluster =
        PgCluster::start_with(&[("wal_level", "logical"), ("max_slot_wal_keep_size", "32MB")]).await;
    let wal = Wal::new(cluster.url(), "outbox_messages".into());
    let topic = new_topic("cli_wal_lost", 1).await;
    ok(&wal.run(&["migrate"]));
    let pool = cluster_pool(&cluster).await;

    // A relay whose Kafka does not answer (started without waiting for it): what it read stays
    // unconfirmed, so the slot keeps WAL.
    let nowhere = format!("127.0.0.1:{}", support::free_port());
    let daemon = wal
        .daemon(&[
            "--kafka-bootstrap",
            &nowhere,
            "--broker-wait",
            "0s",
            "--health-min-safe-wal-size",
            "1kB",
        ])
        .await;
    let stuck = publish(&wal.outbox(), &pool, &topic, 0..1, 5).await;
    let streamed = eventually(Duration::from_secs(20), || async {
        daemon.status().await["wal_slot"]["buffered"].as_u64() == Some(5)
    })
    .await;
    assert!(streamed, "{}", daemon.status().await);

    // Other work writes WAL past max_slot_wal_keep_size; a checkpoint invalidates the slot.
    let invalidated = eventually(Duration::from_secs(120), || async {
        for _ in 0..4 {
            sqlx::query("SELECT pg_logical_emit_message(false, 'filler', repeat('x', 4 * 1024 * 1024))")
                .execute(&pool)
                .await
                .unwrap();
            sqlx::query("SELECT pg_switch_wal()")
                .execute(&pool)
                .await
                .unwrap();
        }
        sqlx::query("CHECKPOINT").execute(&pool).await.unwrap();
        let status: Option<String> =
            sqlx::query_scalar("SELECT wal_status FROM pg_replication_slots WHERE slot_name = $1")
                .bind(&wal.slot)
                .fetch_one(&pool)
                .await
                .unwrap();
        status.as_deref() == Some("lost")
    })
    .await;
    assert!(invalidated, "the slot was not invalidated: {}", daemon.logs());

    // The running relay stops by itself, naming the cause and the recovery at error level, with
    // the exit code of the refusal at start.
    let invalidated_at = Instant::now();
    let (code, logs) = exit_within(daemon, &wal.slot, Duration::from_secs(120)).await;
    println!(
        "the running relay exited {:.1?} after the slot was seen invalidated",
        invalidated_at.elapsed()
    );
    assert_eq!(code, Some(2), "the relay did not stop with exit code 2: {logs}");
    let stopped = logs
        .lines()
        .find(|l| l.contains("ERROR") && l.contains("the WAL relay cannot go on"))
        .unwrap_or_else(|| panic!("no error-level line on the stop: {logs}"));
    assert!(
        stopped.contains("was invalidated")
            && stopped.contains("max_slot_wal_keep_size")
            && stopped.contains("txoutbox wal drop-slot --confirm")
            && stopped.contains("txoutbox migrate --source wal"),
        "{stopped}"
    );
    println!("{stopped}");
    assert!(
        logs.lines()
            .any(|l| l.starts_with("error: ") && l.contains("was invalidated")),
        "{logs}"
    );

    // `status` shows it; a new relay refuses to start, naming the cause and the recovery.
    let status = json(&ok(&wal.run(&["status", "--json", "--relay-url", "127.0.0.1:1"])));
    assert_eq!(status["wal_slot"]["wal_status"], "lost", "{status}");
    let refused = wal.run(&["relay", "--http-listen", "off"]);
    let err = stderr(&refused);
    assert_eq!(refused.status.code(), Some(2), "{err}");
    assert!(
        err.contains("was invalidated")
            && err.contains("max_slot_wal_keep_size")
            && err.contains("txoutbox wal drop-slot --confirm")
            && err.contains("txoutbox migrate --source wal"),
        "{err}"
    );

    // The recovery it names works: recreate the slot, relay again (the stuck messages are gone
    // from the WAL: the application re-publishes them).
    ok(&wal.run(&["wal", "drop-slot", "--confirm"]));
    ok(&wal.run(&["migrate"]));
    let daemon = wal.daemon(&[]).await;
    let again = publish(&wal.outbox(), &pool, &topic, 0..1, 5).await;
    let topics = [topic.clone()];
    let delivered = eventually(Duration::from_secs(60), || async { count(&topics).await >= 5 }).await;
    assert!(delivered, "{}", daemon.logs());
    let records = read_all(&topics).await;
    let ids: HashSet<&str> = records
        .iter()
        .filter_map(|r| r.header("txoutbox-message-id"))
        .collect();
    assert!(again.iter().all(|id| ids.contains(id.to_string().as_str())));
    assert!(stuck.iter().all(|id| !ids.contains(id.to_string().as_str())));
    daemon.stop();
}

/// Waits up to `timeout` for the daemon to exit by itself; its exit code and log. One still
/// running then is killed (found by its unique slot name: only the process this test started)
/// and the test fails.
async fn exit_within(mut daemon: Daemon, slot: &str, timeout: Duration) -> (Option<i32>, String) {
    let (tx, mut rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let code = daemon.wait();
        let _ = tx.send((code, daemon.logs()));
    });
    if let Ok(Ok(exited)) = tokio::time::timeout(timeout, &mut rx).await {
        return exited;
    }
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let args: Vec<String> = cmdline
            .split(|&b| b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.first().is_some_and(|a| a == binary()) && args.iter().any(|a| a == slot) {
            let _ = Command::new("kill")
                .args(["-KILL", &entry.file_name().to_string_lossy()])
                .status();
        }
    }
    let logs = rx.await.map(|(_, logs)| logs).unwrap_or_default();
    panic!("the daemon did not stop by itself within {timeout:?}: {logs}");
}

const TLS_PASSWORD: &str = "wal-Tls-s3cret-4410";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_relay_streams_over_verify_full_tls_and_refuses_an_untrusted_ca() {
    // A private server that takes TLS connections only, with wal_level = logical (set over TLS,
    // then a restart).
    let (cluster, tls) = PgCluster::start_tls(TLS_PASSWORD).await;
    let url = tls.url(TLS_PASSWORD, &tls.ca);
    assert!(
        url.contains("sslmode=verify-full") && url.contains("@127.0.0.1:"),
        "{url}"
    );
    let admin = PgPool::connect(&url).await.expect("connect with verify-full");
    sqlx::query("ALTER SYSTEM SET wal_level = logical")
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    cluster.stop(PgStopMode::Fast).await;
    cluster.start_again().await;
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect(&url)
        .await
        .unwrap();
    let level: String = sqlx::query_scalar("SHOW wal_level")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(level, "logical");

    let wal = Wal::new(url.clone(), "outbox_messages".into());
    let topic = new_topic("cli_wal_tls", 3).await;
    let topics = [topic.clone()];
    ok(&wal.run(&["migrate"]));
    let before = publish(&wal.outbox(), &pool, &topic, 0..20, 10).await;

    // A replication connection that does not trust the server's CA is refused, with the cause
    // and what to check, and without the password (the server also refuses plain text).
    let untrusted = wal
        .outbox()
        .store(pool.clone(), &tls.url(TLS_PASSWORD, &tls.untrusted_ca))
        .unwrap();
    let refused = tokio::time::timeout(Duration::from_secs(30), untrusted.lock_for_relay())
        .await
        .expect("the refusal comes at once, not after retries")
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("certificate")
            && refused.contains("sslmode=verify-full")
            && refused.contains("sslrootcert"),
        "{refused}"
    );
    assert!(!refused.contains(TLS_PASSWORD), "{refused}");
    eprintln!("untrusted CA: {refused}");
    drop(untrusted);

    // The daemon streams over verify-full: what was committed before, and while it runs.
    let daemon = wal.daemon(&[]).await;
    let during = publish(&wal.outbox(), &pool, &topic, 20..40, 10).await;
    let n = (before.len() + during.len()) as i64;
    assert_eq!(n, 400);
    let delivered = eventually(Duration::from_secs(60), || async { count(&topics).await >= n }).await;
    assert!(delivered, "{}", daemon.logs());
    let records = read_all(&topics).await;
    let seen: HashSet<&str> = records
        .iter()
        .filter_map(|r| r.header("txoutbox-message-id"))
        .collect();
    let lost = before
        .iter()
        .chain(&during)
        .filter(|id| !seen.contains(id.to_string().as_str()))
        .count();
    let v = verdict(&records, key_seq);
    assert_eq!(
        (lost, v.distinct as i64, v.duplicates, v.order_violations),
        (0, n, 0, 0),
        "{v:?}"
    );
    // The walsender's session is encrypted.
    let application = format!("txoutbox-wal-{}", wal.slot);
    let ssl: Option<bool> = sqlx::query_scalar(
        "SELECT s.ssl FROM pg_stat_replication r JOIN pg_stat_ssl s ON s.pid = r.pid \
         WHERE r.application_name = $1",
    )
    .bind(&application)
    .fetch_optional(&pool)
    .await
    .unwrap();
    assert_eq!(ssl, Some(true), "{}", daemon.logs());
    let logs = daemon.stop();
    assert!(!logs.contains(TLS_PASSWORD), "{logs}");
    pool.close().await;
}
