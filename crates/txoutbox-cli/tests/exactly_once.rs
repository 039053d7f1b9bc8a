//! Exactly-once delivery through the real daemon, Kafka transactions and a read_committed
//! consumer: the relay crashes at each step of a transaction and at random, a paused relay is
//! fenced by its successor — and every committed message is read exactly once, in key order.
//! A read_uncommitted consumer of the same topic sees the aborted duplicates, which proves the
//! crashes really hit open transactions.

mod support;

use std::process::Command;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use sqlx::AssertSqlSafe;
use support::{Daemon, env_or, ok, rand_ms, txoutbox};
use txoutbox_testing::eventually;
use txoutbox_testing::kafka::{Record, new_topic, verdict};
use txoutbox_testing::postgres::TestSchema;

const KEYS: u64 = 100;

/// Two writers committing concurrently (so ids commit out of order), each its own keys.
struct Writers {
    stop: Arc<AtomicBool>,
    committed: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Writers {
    fn start(db: &TestSchema, topic: &str, limit: u64) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let committed = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for writer in 0..2u64 {
            let (pool, table, topic) = (db.pool.clone(), db.qualify("outbox_messages"), topic.to_owned());
            let (stop, committed) = (Arc::clone(&stop), Arc::clone(&committed));
            tasks.push(tokio::spawn(async move {
                let mut seq = 0u64;
                while !stop.load(Ordering::Relaxed) && committed.load(Ordering::Relaxed) < limit {
                    let mut tx = pool.begin().await.unwrap();
                    for k in 0..KEYS / 2 {
                        let key = format!("w{writer}-k{k}");
                        sqlx::query(AssertSqlSafe(format!(
                            "INSERT INTO {table} (topic, key, payload) VALUES ($1, convert_to($2, 'UTF8'), convert_to($3, 'UTF8'))"
                        )))
                        .bind(&topic)
                        .bind(&key)
                        .bind(format!("{key}:{seq}"))
                        .execute(&mut *tx)
                        .await
                        .unwrap();
                    }
                    tx.commit().await.unwrap();
                    committed.fetch_add(KEYS / 2, Ordering::Relaxed);
                    seq += 1;
                    tokio::time::sleep(Duration::from_millis(3)).await;
                }
            }));
        }
        Self {
            stop,
            committed,
            tasks,
        }
    }

    /// Waits until the writers reached their limit.
    async fn finish(self) -> u64 {
        for task in self.tasks {
            task.await.unwrap();
        }
        self.committed.load(Ordering::Relaxed)
    }

    /// Stops the writers now.
    async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.finish().await
    }
}

/// Reads a topic to its end with the given isolation level.
async fn read(topic: &str, isolation: &'static str) -> Vec<Record> {
    txoutbox_testing::kafka::read_with_isolation(topic, isolation).await
}

async fn pending(db: &TestSchema) -> i64 {
    sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT count(*) FROM {} WHERE status = 'pending'",
        db.qualify("outbox_messages")
    )))
    .fetch_one(&db.pool)
    .await
    .unwrap()
}

fn eos_args(progress: &str) -> Vec<String> {
    [
        "--delivery",
        "exactly-once",
        "--progress-topic",
        progress,
        "--create-progress-topic",
        "--poll-interval",
        "100ms",
    ]
    .map(String::from)
    .to_vec()
}

/// Runs `txoutbox relay <args>` on the test schema's outbox, which must stop with an error
/// within a minute (because of `why`); returns its standard error.
async fn relay_refusing_to_start(db: &TestSchema, args: &[&str], why: &str) -> String {
    let port = support::free_port().to_string();
    let listen = format!("127.0.0.1:{port}");
    let mut child = std::process::Command::new(support::binary())
        .args(["relay", "--http-listen", &listen])
        .args(args)
        .env("TXOUTBOX_DATABASE_URL", txoutbox_testing::postgres::url())
        .env("TXOUTBOX_TABLE", format!("{}.outbox_messages", db.schema))
        .env("TXOUTBOX_KAFKA_BOOTSTRAP", txoutbox_testing::kafka::bootstrap())
        .env_remove("TXOUTBOX_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start txoutbox relay");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("child status").is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().ok();
            panic!("the relay did not stop on {why}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let output = child.wait_with_output().expect("output");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "{stderr}");
    stderr
}

/// Checks exactly-once for read_committed and returns (committed read, uncommitted read).
async fn verify(topic: &str, committed: u64, what: &str) -> (usize, usize) {
    let records = read(topic, "read_committed").await;
    let v = verdict(&records, |r| {
        let (key, seq) = r.payload_str().split_once(':').unwrap();
        (key.to_owned(), seq.parse().unwrap())
    });
    let uncommitted = read(topic, "read_uncommitted").await.len();
    eprintln!(
        "{what}: committed {committed}; read_committed read {} (distinct {}, duplicates {}, order violations {}); \
         read_uncommitted read {uncommitted}",
        v.records, v.distinct, v.duplicates, v.order_violations
    );
    assert_eq!(v.distinct as u64, committed, "{what}: lost messages");
    assert_eq!(
        v.duplicates, 0,
        "{what}: a read_committed consumer saw duplicates"
    );
    assert_eq!(v.order_violations, 0, "{what}: {:?}", v.violating_keys);
    (v.records, uncommitted)
}

/// Runs `txoutbox relay` with a crash point; returns once the process died there.
async fn crash_at(db: &TestSchema, progress: &str, step: &str, after: u32) -> String {
    let log = std::env::temp_dir().join(format!("{}.log", txoutbox_testing::unique("eos-crash")));
    let mut child = Command::new(support::binary())
        .arg("relay")
        .args(eos_args(progress))
        .args(["--http-listen", "off"])
        .env("TXOUTBOX_DATABASE_URL", txoutbox_testing::postgres::url())
        .env("TXOUTBOX_TABLE", format!("{}.outbox_messages", db.schema))
        .env("TXOUTBOX_KAFKA_BOOTSTRAP", txoutbox_testing::kafka::bootstrap())
        .env("TXOUTBOX_CRASH_AT", step)
        .env("TXOUTBOX_CRASH_AFTER", after.to_string())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    let logs = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        !status.success(),
        "the relay should have crashed at {step}: {logs}"
    );
    assert!(logs.contains(&format!("crashing at {step}")), "{logs}");
    logs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_every_step_of_a_transaction_loses_nothing_and_repeats_nothing() {
    let db = TestSchema::new().await;
    let topic = new_topic("eos-steps", 3).await;
    let progress = txoutbox_testing::unique("eos-progress");
    ok(&txoutbox(&db, &["migrate"]));
    // The writers go on until every crash point was hit, so each run has rows to send.
    let writers = Writers::start(&db, &topic, u64::MAX);
    for (step, after) in [
        ("before-produce", 2),
        ("before-commit", 3),
        ("after-commit", 3),
        ("after-mark", 3),
    ] {
        crash_at(&db, &progress, step, after).await;
    }
    let committed = writers.stop().await;
    let args = eos_args(&progress);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let daemon = Daemon::start(&db, &args).await;
    let drained = eventually(Duration::from_secs(60), || async { pending(&db).await == 0 }).await;
    assert!(drained, "not drained: {}", daemon.logs());
    let logs = daemon.stop();
    assert!(
        logs.contains("completed rows that Kafka already held"),
        "the after-commit crash was recovered from the progress topic: {logs}"
    );
    let (read_committed, read_uncommitted) = verify(&topic, committed, "crash at each step").await;
    assert!(
        read_uncommitted > read_committed,
        "the crashes before the commit left aborted records for a read_uncommitted consumer"
    );
    db.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_loses_nothing_and_repeats_nothing() {
    let kills: usize = env_or("TXOUTBOX_EOS_KILLS", 4);
    let messages: u64 = env_or("TXOUTBOX_EOS_MESSAGES", 10_000);
    let db = TestSchema::new().await;
    let topic = new_topic("eos-kill", 3).await;
    let progress = txoutbox_testing::unique("eos-progress");
    ok(&txoutbox(&db, &["migrate"]));
    let writers = Writers::start(&db, &topic, messages);
    let args = eos_args(&progress);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    for kill in 0..kills {
        let daemon = Daemon::start(&db, &args).await;
        // Let it work a random while (between 0.3 and 1.5 s), then kill -9.
        let pause = 300 + (rand_ms(kill) % 1_200);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        daemon.kill9();
    }
    let committed = writers.finish().await;
    let daemon = Daemon::start(&db, &args).await;
    let drained = eventually(Duration::from_secs(90), || async { pending(&db).await == 0 }).await;
    assert!(drained, "not drained: {}", daemon.logs());
    daemon.stop();
    verify(&topic, committed, &format!("{kills} kill -9 at random moments")).await;
    db.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_relay_is_fenced_by_its_successor_and_stops() {
    let db = TestSchema::new().await;
    let topic = new_topic("eos-zombie", 3).await;
    let progress = txoutbox_testing::unique("eos-progress");
    ok(&txoutbox(&db, &["migrate"]));
    let writers = Writers::start(&db, &topic, u64::MAX);
    let args = eos_args(&progress);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let zombie = Daemon::start(&db, &args).await;
    let flowing = eventually(Duration::from_secs(30), || async {
        zombie.status().await["published_total"].as_u64() > Some(500)
    })
    .await;
    assert!(flowing, "{}", zombie.logs());
    zombie.signal("STOP");
    // The frozen relay still holds the table's relay lock, so a successor would stand by: the
    // frozen node's lock session ends too (a partition, or an operator who ends it).
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' \
         AND objid = $1::text::regclass::oid AND objsubid = 2 AND granted",
    )
    .bind(db.table().quoted())
    .execute(&db.pool)
    .await
    .unwrap();
    let successor = Daemon::start(&db, &args).await;
    let working = eventually(Duration::from_secs(30), || async {
        successor.status().await["published_total"].as_u64() > Some(500)
    })
    .await;
    assert!(working, "{}", successor.logs());
    zombie.signal("CONT");
    // The writers go on. The resumed relay either finds at its next read that its lock is gone
    // and stands by, or its next transactional call is refused and it stops with an error.
    let mut zombie = zombie;
    let resigned = eventually(Duration::from_secs(60), || async {
        zombie.status().await.is_null() || zombie.logs().contains("standing by")
    })
    .await;
    let committed = writers.stop().await;
    let zombie_logs = zombie.logs();
    assert!(
        resigned,
        "the frozen relay went on as if it were active: {zombie_logs}"
    );
    // Standing by, it stops cleanly when told to; fenced (even just after it stood by), it has
    // stopped with an error that says so.
    zombie.signal("TERM");
    let code = zombie.wait();
    let zombie_logs = zombie.logs();
    if code != Some(0) {
        assert!(
            zombie_logs.contains("this relay is fenced"),
            "the frozen relay failed for another reason ({code:?}): {zombie_logs}"
        );
    }
    let drained = eventually(Duration::from_secs(60), || async { pending(&db).await == 0 }).await;
    assert!(drained, "{}", successor.logs());
    successor.stop();
    verify(&topic, committed, "a paused relay and its successor").await;
    db.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_progress_topic_stops_the_relay_unless_it_may_create_it() {
    let db = TestSchema::new().await;
    let progress = txoutbox_testing::unique("eos-missing");
    ok(&txoutbox(&db, &["migrate"]));
    // It may have been deleted: the relay must not guess which rows Kafka already holds.
    let stderr = relay_refusing_to_start(
        &db,
        &["--delivery", "exactly-once", "--progress-topic", &progress],
        "a missing progress topic",
    )
    .await;
    assert!(
        stderr.contains(&format!(
            "the exactly-once progress topic `{progress}` does not exist"
        )) && stderr.contains("--create-progress-topic"),
        "{stderr}"
    );
    assert!(
        !txoutbox_testing::kafka::topic_exists(&progress).await,
        "the relay created the progress topic without leave"
    );

    // With leave to create it, the same relay starts and delivers.
    let topic = new_topic("eos-missing", 3).await;
    let args = eos_args(&progress);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let daemon = Daemon::start(&db, &args).await;
    let committed = Writers::start(&db, &topic, 100).finish().await;
    let drained = eventually(Duration::from_secs(60), || async { pending(&db).await == 0 }).await;
    let logs = daemon.stop();
    assert!(drained, "{logs}");
    assert!(
        txoutbox_testing::kafka::topic_exists(&progress).await,
        "created with leave"
    );
    verify(&topic, committed, "after creating the progress topic").await;
}

/// The progress topic deleted after the relay delivered (an operator's mistake, a cluster
/// rebuilt): the next start — allowed to create the topic — finds no progress while the table
/// records deliveries under its transactional id, and refuses to guess which pending rows Kafka
/// already holds. Once the record is deleted (accepting possible duplicates) it relays again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_progress_topic_stops_the_relay_until_its_record_is_deleted() {
    let db = TestSchema::new().await;
    let progress = txoutbox_testing::unique("eos-deleted");
    ok(&txoutbox(&db, &["migrate"]));
    let kept = || async {
        sqlx::query_scalar::<_, String>(AssertSqlSafe(format!(
            "SELECT progress_key FROM {}",
            db.qualify("outbox_messages_relay_progress")
        )))
        .fetch_all(&db.pool)
        .await
        .unwrap()
    };
    let args = eos_args(&progress);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let topic = new_topic("eos-deleted", 3).await;
    let daemon = Daemon::start(&db, &args).await;
    let committed = Writers::start(&db, &topic, 100).finish().await;
    let drained = eventually(Duration::from_secs(60), || async { pending(&db).await == 0 }).await;
    let logs = daemon.stop();
    assert!(drained, "{logs}");
    verify(&topic, committed, "before the progress topic was deleted").await;
    let key = format!("txoutbox-{}.outbox_messages", db.schema);
    assert_eq!(
        kept().await,
        std::slice::from_ref(&key),
        "the table records the transactional id after a delivery"
    );

    txoutbox_testing::kafka::delete_topic(&progress).await;
    let stderr = relay_refusing_to_start(&db, &args, "progress that is gone").await;
    assert!(
        stderr.contains(&format!(
            "the exactly-once progress of `{key}` is gone from the progress topic `{progress}`"
        )) && stderr.contains("DELETE FROM")
            && stderr.contains("outbox_messages_relay_progress"),
        "{stderr}"
    );

    // The operator accepts that read_committed consumers may see some rows twice.
    sqlx::query(AssertSqlSafe(format!(
        "DELETE FROM {} WHERE progress_key = $1",
        db.qualify("outbox_messages_relay_progress")
    )))
    .bind(&key)
    .execute(&db.pool)
    .await
    .unwrap();
    let topic = new_topic("eos-deleted-after", 3).await;
    let daemon = Daemon::start(&db, &args).await;
    let committed = Writers::start(&db, &topic, 100).finish().await;
    let drained = eventually(Duration::from_secs(60), || async { pending(&db).await == 0 }).await;
    let logs = daemon.stop();
    assert!(drained, "{logs}");
    verify(&topic, committed, "after the record was deleted").await;
    assert_eq!(kept().await, [key], "recorded again after the first delivery");
    db.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exactly_once_relay_refuses_a_table_an_at_least_once_relay_runs() {
    let db = TestSchema::new().await;
    let progress = txoutbox_testing::unique("eos-mixed");
    ok(&txoutbox(&db, &["migrate"]));
    // An at-least-once relay would send again the rows the exactly-once one's progress names.
    let at_least_once = Daemon::start(
        &db,
        &[
            "--coordination",
            "exclusive",
            "--poll-interval",
            "100ms",
            "--heartbeat",
            "250ms",
            "--lease",
            "3s",
        ],
    )
    .await;
    // Registered and leading before the newcomer comes.
    let leading = eventually(Duration::from_secs(30), || async {
        at_least_once.status().await["coordination"]["scope"] == "all"
    })
    .await;
    assert!(leading, "{}", at_least_once.logs());
    let mut args = vec!["--coordination".to_owned(), "exclusive".to_owned()];
    args.extend(eos_args(&progress));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let stderr = relay_refusing_to_start(&db, &args, "an at-least-once relay on the table").await;
    assert!(
        stderr.contains("runs in exclusive mode on this table and this one in exclusive (exactly-once) mode")
            && stderr.contains("run every relay of a table in the same mode"),
        "{stderr}"
    );
    // The relay already running goes on: after several of its heartbeats (each lists the live
    // nodes) it still leads, and it stops cleanly. Proving that nothing happens takes a wait.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        at_least_once.status().await["coordination"]["scope"],
        "all",
        "{}",
        at_least_once.logs()
    );
    at_least_once.stop();
}
