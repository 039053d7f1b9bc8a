//! Several `txoutbox relay` processes on one PostgreSQL table: work balance over buckets with
//! kills, joins and a frozen node; exclusive mode with a leader killed. Verified by a Kafka
//! consumer: nothing lost, no key out of order; duplicates and take-over times are reported. A
//! trigger audits every write about a message: each was made by the node holding its lease.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sqlx::AssertSqlSafe;
use support::{Daemon, ok, txoutbox};
use txoutbox_testing::eventually;
use txoutbox_testing::kafka::{count, new_topic, read_all, verdict};
use txoutbox_testing::postgres::TestSchema;

const KEYS: u64 = 200;

/// How soon after a node dies (or freezes) its buckets must have a new owner: the lease (3 s)
/// runs out, the next heartbeat (every 0.5 s) of a live node takes them; 1.5 s of slack for a busy
/// machine and the test's own polling.
const TAKEOVER_BOUND: Duration = Duration::from_secs(5);

/// Commits rows continuously (10 per transaction, keys in rotation, payload `key:seq`) until
/// stopped; counts what committed.
struct Writer {
    stop: Arc<AtomicBool>,
    committed: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    fn start(db: &TestSchema, topic: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let committed = Arc::new(AtomicU64::new(0));
        let (pool, table, topic) = (db.pool.clone(), db.qualify("outbox_messages"), topic.to_owned());
        let (stop_flag, counter) = (Arc::clone(&stop), Arc::clone(&committed));
        let task = tokio::spawn(async move {
            let mut next = 0u64;
            while !stop_flag.load(Ordering::Relaxed) {
                let mut tx = pool.begin().await.unwrap();
                for i in next..next + 10 {
                    let key = format!("key-{}", i % KEYS);
                    sqlx::query(AssertSqlSafe(format!(
                        "INSERT INTO {table} (topic, key, payload) VALUES ($1, convert_to($2, 'UTF8'), convert_to($3, 'UTF8'))"
                    )))
                    .bind(&topic)
                    .bind(&key)
                    .bind(format!("{key}:{}", i / KEYS))
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                }
                tx.commit().await.unwrap();
                next += 10;
                counter.store(next, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        Self {
            stop,
            committed,
            task,
        }
    }

    async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
        self.committed.load(Ordering::Relaxed)
    }
}

/// Live lease holders: owner → buckets held.
async fn owners(db: &TestSchema) -> BTreeMap<String, i64> {
    let rows: Vec<(String, i64)> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT owner, count(*) FROM {} WHERE owner IS NOT NULL AND lease_until > now() GROUP BY owner",
        db.qualify("outbox_messages_relay_leases")
    )))
    .fetch_all(&db.pool)
    .await
    .unwrap();
    rows.into_iter().collect()
}

/// Starts a relay node; its database sessions carry the node id as `application_name`, so the
/// write audit (see [`audit_writes`]) knows which node made each write.
async fn node(db: &TestSchema, mode: &str, node: &str) -> Daemon {
    let url = txoutbox_testing::postgres::url();
    let separator = if url.contains('?') { '&' } else { '?' };
    let url = format!("{url}{separator}application_name={node}");
    let table = format!("{}.outbox_messages", db.schema);
    let args = [
        "--coordination",
        mode,
        "--node-id",
        node,
        "--lease",
        "3s",
        "--heartbeat",
        "500ms",
        "--poll-interval",
        "200ms",
    ];
    Daemon::start_on(&url, &table, &args).await
}

/// Installs a trigger that records every relay write about a pending row (mark published, retry,
/// dead-letter): the node that wrote it and the node that held the row's bucket lease at that
/// moment. A fenced relay's write never lands, so the two must always be the same.
async fn audit_writes(db: &TestSchema) {
    let (table, leases) = (
        db.qualify("outbox_messages"),
        db.qualify("outbox_messages_relay_leases"),
    );
    let (audit, function) = (db.qualify("write_audit"), db.qualify("audit_write"));
    let statements = [
        format!("CREATE TABLE {audit} (id BIGINT NOT NULL, writer TEXT NOT NULL, holder TEXT)"),
        format!(
            "CREATE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
               INSERT INTO {audit} VALUES (OLD.id, current_setting('application_name'), \
                 (SELECT l.owner FROM {leases} AS l WHERE l.bucket IN (-1, \
                   (hashtextextended(encode(coalesce(OLD.key, '\\x'::bytea), 'hex'), 0) & 63)::integer) \
                    AND l.owner IS NOT NULL AND l.lease_until > now() LIMIT 1)); \
               RETURN NULL; END $$"
        ),
        format!(
            "CREATE TRIGGER audit_write AFTER UPDATE OR DELETE ON {table} FOR EACH ROW \
             WHEN (OLD.status = 'pending') EXECUTE FUNCTION {function}()"
        ),
    ];
    for sql in statements {
        sqlx::raw_sql(AssertSqlSafe(sql)).execute(&db.pool).await.unwrap();
    }
}

/// Checks the write audit: writes were made, and each by the node that held the row's lease.
/// Returns the writes per node.
async fn writes_by_lease_holders(db: &TestSchema, what: &str) -> BTreeMap<String, i64> {
    let rows: Vec<(String, Option<String>, i64)> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT writer, holder, count(*) FROM {} GROUP BY writer, holder ORDER BY writer, holder",
        db.qualify("write_audit")
    )))
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let outside: Vec<_> = rows
        .iter()
        .filter(|(writer, holder, _)| holder.as_deref() != Some(writer.as_str()))
        .collect();
    assert!(
        outside.is_empty(),
        "{what}: writes by a node that did not hold the row's lease (writer, holder, rows): {outside:?}"
    );
    let per_node: BTreeMap<String, i64> = rows.into_iter().map(|(writer, _, n)| (writer, n)).collect();
    assert!(!per_node.is_empty(), "{what}: the audit saw no write");
    eprintln!("{what}: rows written per node, each under its own lease: {per_node:?}");
    per_node
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

/// Waits for the backlog to drain, then checks what the consumer read.
async fn verify(db: &TestSchema, topic: &str, committed: u64, what: &str) -> usize {
    let drained = eventually(Duration::from_secs(90), || async { pending(db).await == 0 }).await;
    assert!(drained, "{what}: {} rows still pending", pending(db).await);
    let records = read_all(&[topic.to_owned()]).await;
    let v = verdict(&records, |r| {
        let (key, seq) = r.payload_str().split_once(':').unwrap();
        (key.to_owned(), seq.parse().unwrap())
    });
    eprintln!(
        "{what}: committed {committed}, read {}, distinct {}, duplicates {}, order violations {}",
        v.records, v.distinct, v.duplicates, v.order_violations
    );
    assert_eq!(v.distinct as u64, committed, "{what}: lost messages");
    assert_eq!(
        v.order_violations, 0,
        "{what}: keys out of order: {:?}",
        v.violating_keys
    );
    v.duplicates
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_balance_moves_buckets_on_kill_and_join_without_loss_or_reordering() {
    let db = TestSchema::new().await;
    let topic = new_topic("balance", 6).await;
    ok(&txoutbox(&db, &["migrate"]));
    audit_writes(&db).await;
    let writer = Writer::start(&db, &topic);
    let n1 = node(&db, "work-balance", "n1").await;
    let n2 = node(&db, "work-balance", "n2").await;
    let n3 = node(&db, "work-balance", "n3").await;

    let shared = eventually(Duration::from_secs(30), || async {
        let o = owners(&db).await;
        o.len() == 3 && o.values().sum::<i64>() == 64 && o.values().all(|&n| (21..=22).contains(&n))
    })
    .await;
    assert!(
        shared,
        "three nodes never shared the 64 buckets evenly: {:?}",
        owners(&db).await
    );
    let flowing = eventually(Duration::from_secs(30), || async {
        count(std::slice::from_ref(&topic)).await >= 1_000
    })
    .await;
    assert!(flowing, "messages are not flowing: {}", n1.logs());

    let killed = Instant::now();
    n2.kill9();
    let moved = eventually(Duration::from_secs(30), || async {
        let o = owners(&db).await;
        !o.contains_key("n2") && o.values().sum::<i64>() == 64 && o.len() == 2
    })
    .await;
    let takeover = killed.elapsed();
    assert!(moved, "n2's buckets did not move: {:?}", owners(&db).await);
    assert!(
        takeover < TAKEOVER_BOUND,
        "n2's buckets moved {takeover:?} after the kill (lease 3 s + heartbeat 0.5 s)"
    );
    eprintln!(
        "work balance: n2's buckets taken over {takeover:?} after kill -9 (lease 3 s, heartbeat 500 ms)"
    );

    let n4 = node(&db, "work-balance", "n4").await;
    let rebalanced = eventually(Duration::from_secs(30), || async {
        let o = owners(&db).await;
        o.len() == 3 && o.values().sum::<i64>() == 64 && o.get("n4").is_some_and(|&n| n >= 21)
    })
    .await;
    assert!(rebalanced, "n4 never got its share: {:?}", owners(&db).await);

    let committed = writer.stop().await;
    let duplicates = verify(
        &db,
        &topic,
        committed,
        "work balance (kill -9 of one of three, then a join)",
    )
    .await;
    eprintln!("work balance: {duplicates} duplicates");
    writes_by_lease_holders(&db, "work balance").await;
    for daemon in [n1, n3, n4] {
        daemon.stop();
    }
    assert!(owners(&db).await.is_empty(), "a clean stop releases the leases");
    db.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_frozen_past_its_lease_is_fenced_and_gives_up_its_buckets() {
    let db = TestSchema::new().await;
    let topic = new_topic("frozen", 4).await;
    ok(&txoutbox(&db, &["migrate"]));
    audit_writes(&db).await;
    let writer = Writer::start(&db, &topic);
    let n1 = node(&db, "work-balance", "n1").await;
    let n2 = node(&db, "work-balance", "n2").await;
    let shared = eventually(Duration::from_secs(30), || async { owners(&db).await.len() == 2 }).await;
    assert!(
        shared,
        "two nodes never shared the buckets: {:?}",
        owners(&db).await
    );
    let flowing = eventually(Duration::from_secs(30), || async {
        count(std::slice::from_ref(&topic)).await >= 500
    })
    .await;
    assert!(flowing);
    let epoch_before = n1.status().await["coordination"]["epoch"].as_i64().unwrap();

    n1.signal("STOP");
    let frozen = Instant::now();
    let taken = eventually(Duration::from_secs(30), || async {
        let o = owners(&db).await;
        o.len() == 1 && o.get("n2") == Some(&64)
    })
    .await;
    assert!(
        taken,
        "n2 never took the frozen node's buckets: {:?}",
        owners(&db).await
    );
    let moved = frozen.elapsed();
    eprintln!("frozen node: its buckets moved {moved:?} after SIGSTOP");
    assert!(
        moved < TAKEOVER_BOUND,
        "the frozen node's buckets moved {moved:?} after SIGSTOP (lease 3 s + heartbeat 0.5 s)"
    );
    // Let the stream go on without it for a while, then wake it up.
    tokio::time::sleep(Duration::from_secs(1)).await;
    n1.signal("CONT");

    let rejoined = eventually(Duration::from_secs(30), || async {
        let status = n1.status().await;
        status["coordination"]["epoch"]
            .as_i64()
            .is_some_and(|e| e > epoch_before)
            && owners(&db).await.len() == 2
    })
    .await;
    assert!(
        rejoined,
        "the frozen node did not rejoin with a new epoch: {}",
        n1.logs()
    );
    let fenced = n1.status().await["coordination"]["rows_fenced"]
        .as_u64()
        .unwrap_or(0);
    let logs = n1.logs();
    assert!(logs.contains("lost its leases"), "{logs}");
    eprintln!("frozen node: {fenced} rows of its old session fenced off after it woke up");

    let committed = writer.stop().await;
    let duplicates = verify(
        &db,
        &topic,
        committed,
        "frozen node (SIGSTOP past the lease, then SIGCONT)",
    )
    .await;
    eprintln!("frozen node: {duplicates} duplicates");
    let per_node = writes_by_lease_holders(&db, "frozen node").await;
    assert!(
        per_node.contains_key("n1"),
        "n1 made no write before it was frozen: {per_node:?}"
    );
    n1.stop();
    n2.stop();
    db.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_mode_relays_from_one_node_at_a_time_and_fails_over() {
    let db = TestSchema::new().await;
    let topic = new_topic("exclusive", 3).await;
    ok(&txoutbox(&db, &["migrate"]));
    audit_writes(&db).await;
    let writer = Writer::start(&db, &topic);
    let mut nodes = BTreeMap::new();
    for name in ["e1", "e2", "e3"] {
        nodes.insert(name, node(&db, "exclusive", name).await);
    }
    let led = eventually(Duration::from_secs(30), || async { owners(&db).await.len() == 1 }).await;
    assert!(led, "nobody took the lease");
    let flowing = eventually(Duration::from_secs(30), || async {
        count(std::slice::from_ref(&topic)).await >= 500
    })
    .await;
    assert!(flowing);
    let leader = owners(&db).await.into_keys().next().unwrap();
    // Exactly one relays: the others hold nothing and published nothing.
    for (name, daemon) in &nodes {
        let status = daemon.status().await;
        let published = status["published_total"].as_u64().unwrap();
        if *name == leader {
            assert_eq!(status["coordination"]["scope"], "all");
            assert!(published > 0);
        } else {
            assert_eq!(status["coordination"]["scope"], "nothing", "{name}: {status}");
            assert_eq!(published, 0, "{name} relayed while {leader} held the lease");
        }
    }

    let killed = Instant::now();
    nodes.remove(leader.as_str()).unwrap().kill9();
    let failed_over = eventually(Duration::from_secs(30), || async {
        owners(&db)
            .await
            .keys()
            .next()
            .is_some_and(|owner| *owner != leader)
    })
    .await;
    assert!(failed_over, "no standby took over");
    assert!(
        killed.elapsed() < TAKEOVER_BOUND,
        "a standby took over {:?} after the kill (lease 3 s + heartbeat 0.5 s)",
        killed.elapsed()
    );
    eprintln!(
        "exclusive: a standby took over {:?} after kill -9 of the leader",
        killed.elapsed()
    );
    let new_leader = owners(&db).await.into_keys().next().unwrap();
    let moving = eventually(Duration::from_secs(30), || async {
        nodes[new_leader.as_str()].status().await["published_total"].as_u64() > Some(0)
    })
    .await;
    assert!(moving, "the new leader does not relay");

    let committed = writer.stop().await;
    let duplicates = verify(&db, &topic, committed, "exclusive (leader killed)").await;
    eprintln!("exclusive: {duplicates} duplicates");
    writes_by_lease_holders(&db, "exclusive").await;
    for (_, daemon) in nodes {
        daemon.stop();
    }
    db.drop_schema().await;
}
