//! Several `txoutbox relay` processes on one table, on PostgreSQL and on MariaDB: work balance
//! over buckets with kills, joins and a frozen node; exclusive mode with a leader killed.
//! Verified by a Kafka consumer: nothing lost, no key out of order; duplicates and take-over
//! times are reported. A trigger audits every write about a message: each was made by the node
//! holding its lease.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sqlx::{AssertSqlSafe, MySqlPool, PgPool};
use support::{Daemon, ok, txoutbox};
use txoutbox_testing::eventually;
use txoutbox_testing::kafka::{count, new_topic, read_all, read_committed, verdict};
use txoutbox_testing::mysql::TestDatabase;
use txoutbox_testing::postgres::TestSchema;

const KEYS: u64 = 200;

/// How soon after a node dies (or freezes) its buckets must have a new owner: the lease (3 s)
/// runs out, the next heartbeat (every 0.5 s) of a live node takes them; 1.5 s of slack for a busy
/// machine and the test's own polling.
const TAKEOVER_BOUND: Duration = Duration::from_secs(5);

/// An exactly-once work-balanced node holds a lost session's buckets only once it has fenced that
/// session's two transactional ids and read its progress: about a second more on this machine.
const EXACTLY_ONCE_TAKEOVER_BOUND: Duration = Duration::from_secs(8);

/// The database the nodes share: a PostgreSQL schema, or a MariaDB database whose nodes each
/// connect as a user of their own (so that the write audit knows which node wrote).
enum Bed {
    Postgres(TestSchema),
    MariaDb {
        db: TestDatabase,
        /// Node `n` connects as user `<users><n>`.
        users: String,
    },
}

/// Where the writer commits rows.
#[derive(Clone)]
enum Rows {
    Postgres(PgPool, String),
    MariaDb(MySqlPool, String),
}

impl Rows {
    /// Commits one transaction of `(key, payload)` rows.
    async fn commit(&self, topic: &str, rows: &[(String, String)]) {
        match self {
            Rows::Postgres(pool, table) => {
                let mut tx = pool.begin().await.unwrap();
                for (key, payload) in rows {
                    sqlx::query(AssertSqlSafe(format!(
                        "INSERT INTO {table} (topic, key, payload) VALUES ($1, convert_to($2, 'UTF8'), convert_to($3, 'UTF8'))"
                    )))
                    .bind(topic)
                    .bind(key)
                    .bind(payload)
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                }
                tx.commit().await.unwrap();
            }
            Rows::MariaDb(pool, table) => {
                let mut tx = pool.begin().await.unwrap();
                for (key, payload) in rows {
                    sqlx::query(AssertSqlSafe(format!(
                        "INSERT INTO {table} (topic, `key`, payload) VALUES (?, ?, ?)"
                    )))
                    .bind(topic)
                    .bind(key.as_bytes())
                    .bind(payload.as_bytes())
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                }
                tx.commit().await.unwrap();
            }
        }
    }
}

impl Bed {
    async fn postgres() -> Self {
        Bed::Postgres(TestSchema::new().await)
    }

    async fn mariadb() -> Self {
        let db = TestDatabase::new().await;
        let users = format!("{}_", txoutbox_testing::unique("n").replace('-', "_"));
        Bed::MariaDb { db, users }
    }

    /// The database's name, for topics and messages.
    fn name(&self) -> &'static str {
        match self {
            Bed::Postgres(_) => "postgres",
            Bed::MariaDb { .. } => "mariadb",
        }
    }

    /// The type a 64-bit integer is cast to (`CAST(… AS <type>)`).
    fn integer(&self) -> &'static str {
        match self {
            Bed::Postgres(_) => "BIGINT",
            Bed::MariaDb { .. } => "SIGNED",
        }
    }

    /// `name` qualified with the test's schema or database.
    fn qualify(&self, name: &str) -> String {
        match self {
            Bed::Postgres(db) => db.qualify(name),
            Bed::MariaDb { db, .. } => db.qualify(name),
        }
    }

    fn rows(&self) -> Rows {
        let table = self.qualify("outbox_messages");
        match self {
            Bed::Postgres(db) => Rows::Postgres(db.pool.clone(), table),
            Bed::MariaDb { db, .. } => Rows::MariaDb(db.pool.clone(), table),
        }
    }

    /// `txoutbox migrate`, then the write audit (see [`Bed::audit_writes`]).
    async fn prepare(&self) {
        match self {
            Bed::Postgres(db) => {
                ok(&txoutbox(db, &["migrate"]));
            }
            Bed::MariaDb { db, .. } => {
                let migrated = std::process::Command::new(support::binary())
                    .arg("migrate")
                    .env("TXOUTBOX_DATABASE_URL", txoutbox_testing::mysql::url())
                    .env("TXOUTBOX_TABLE", format!("{}.outbox_messages", db.database))
                    .env_remove("TXOUTBOX_CONFIG")
                    .output()
                    .expect("run txoutbox");
                ok(&migrated);
            }
        }
        self.audit_writes().await;
    }

    /// Live lease holders: owner → buckets held.
    async fn owners(&self) -> BTreeMap<String, i64> {
        let leases = self.qualify("outbox_messages_relay_leases");
        let rows: Vec<(String, i64)> = match self {
            Bed::Postgres(db) => sqlx::query_as(AssertSqlSafe(format!(
                "SELECT owner, count(*) FROM {leases} WHERE owner IS NOT NULL AND lease_until > now() GROUP BY owner"
            )))
            .fetch_all(&db.pool)
            .await
            .unwrap(),
            Bed::MariaDb { db, .. } => sqlx::query_as(AssertSqlSafe(format!(
                "SELECT CAST(owner AS CHAR), CAST(count(*) AS SIGNED) FROM {leases} \
                 WHERE owner IS NOT NULL AND lease_until > UTC_TIMESTAMP(6) GROUP BY owner"
            )))
            .fetch_all(&db.pool)
            .await
            .unwrap(),
        };
        rows.into_iter().collect()
    }

    async fn pending(&self) -> i64 {
        let sql = format!(
            "SELECT CAST(count(*) AS {}) FROM {} WHERE status = 'pending'",
            self.integer(),
            self.qualify("outbox_messages")
        );
        match self {
            Bed::Postgres(db) => sqlx::query_scalar(AssertSqlSafe(sql)).fetch_one(&db.pool).await,
            Bed::MariaDb { db, .. } => sqlx::query_scalar(AssertSqlSafe(sql)).fetch_one(&db.pool).await,
        }
        .unwrap()
    }

    /// Starts a relay node whose database sessions say which node they are: PostgreSQL's
    /// `application_name`, or on MariaDB a user of the node's own.
    /// `extra`: more arguments (e.g. the delivery).
    async fn node_with(&self, mode: &str, node: &str, extra: &[String]) -> Daemon {
        let mut args: Vec<&str> = vec![
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
        args.extend(extra.iter().map(String::as_str));
        match self {
            Bed::Postgres(db) => {
                let url = txoutbox_testing::postgres::url();
                let separator = if url.contains('?') { '&' } else { '?' };
                let url = format!("{url}{separator}application_name={node}");
                Daemon::start_on(&url, &format!("{}.outbox_messages", db.schema), &args).await
            }
            Bed::MariaDb { db, users } => {
                let user = format!("{users}{node}");
                let mut grants = String::new();
                for host in ["127.0.0.1", "localhost", "%"] {
                    grants.push_str(&format!(
                        "CREATE USER IF NOT EXISTS '{user}'@'{host}' IDENTIFIED BY 'node'; \
                         GRANT ALL PRIVILEGES ON `{}`.* TO '{user}'@'{host}';",
                        db.database
                    ));
                }
                sqlx::raw_sql(AssertSqlSafe(grants))
                    .execute(&db.pool)
                    .await
                    .unwrap();
                let url = txoutbox_testing::mysql::url();
                let (scheme, rest) = url.split_once("://").unwrap();
                let (_, address) = rest.rsplit_once('@').unwrap();
                let host = address.split(['/', '?']).next().unwrap();
                let url = format!("{scheme}://{user}:node@{host}/{}", db.database);
                Daemon::start_on(&url, &format!("{}.outbox_messages", db.database), &args).await
            }
        }
    }

    /// Installs triggers that record every relay write about a pending row (mark published,
    /// retry, dead-letter, delete): the node that wrote it and the node that held the row's
    /// bucket lease at that moment. A fenced relay's write never lands, so the two must always be
    /// the same.
    async fn audit_writes(&self) {
        let (table, leases, audit) = (
            self.qualify("outbox_messages"),
            self.qualify("outbox_messages_relay_leases"),
            self.qualify("write_audit"),
        );
        match self {
            Bed::Postgres(db) => {
                let function = db.qualify("audit_write");
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
            Bed::MariaDb { db, users } => {
                // The writer: the connection's user without the test's prefix.
                let record = format!(
                    "INSERT INTO {audit} SELECT OLD.id, SUBSTRING(SUBSTRING_INDEX(USER(), '@', 1), {}), \
                       (SELECT CAST(l.owner AS CHAR) FROM {leases} AS l WHERE l.bucket IN (-1, OLD.bucket) \
                          AND l.owner IS NOT NULL AND l.lease_until > UTC_TIMESTAMP(6) LIMIT 1) \
                     FROM DUAL WHERE OLD.status = 'pending'",
                    users.len() + 1
                );
                let statements = [
                    format!(
                        "CREATE TABLE {audit} (id BIGINT NOT NULL, writer VARCHAR(255) NOT NULL, holder VARCHAR(255))"
                    ),
                    format!(
                        "CREATE TRIGGER {} AFTER UPDATE ON {table} FOR EACH ROW {record}",
                        db.qualify("audit_update")
                    ),
                    format!(
                        "CREATE TRIGGER {} AFTER DELETE ON {table} FOR EACH ROW {record}",
                        db.qualify("audit_delete")
                    ),
                ];
                for sql in statements {
                    sqlx::raw_sql(AssertSqlSafe(sql)).execute(&db.pool).await.unwrap();
                }
            }
        }
    }

    /// Checks the write audit: writes were made, and each by the node that held the row's lease.
    /// Returns the writes per node.
    async fn writes_by_lease_holders(&self, what: &str) -> BTreeMap<String, i64> {
        let sql = format!(
            "SELECT writer, holder, CAST(count(*) AS {}) FROM {} GROUP BY writer, holder ORDER BY writer, holder",
            self.integer(),
            self.qualify("write_audit")
        );
        let rows: Vec<(String, Option<String>, i64)> = match self {
            Bed::Postgres(db) => sqlx::query_as(AssertSqlSafe(sql)).fetch_all(&db.pool).await,
            Bed::MariaDb { db, .. } => sqlx::query_as(AssertSqlSafe(sql)).fetch_all(&db.pool).await,
        }
        .unwrap();
        let outside: Vec<_> = rows
            .iter()
            .filter(|(writer, holder, _)| holder.as_deref() != Some(writer.as_str()))
            .collect();
        assert!(
            outside.is_empty(),
            "{what}: writes by a node that did not hold the row's lease (writer, holder, rows): {outside:?}"
        );
        let mut per_node = BTreeMap::new();
        for (writer, _, n) in rows {
            *per_node.entry(writer).or_insert(0) += n;
        }
        assert!(!per_node.is_empty(), "{what}: the audit saw no write");
        eprintln!("{what}: rows written per node, each under its own lease: {per_node:?}");
        per_node
    }

    /// Waits for the backlog to drain, then checks what the consumer read.
    async fn verify(&self, topic: &str, committed: u64, what: &str) -> usize {
        self.verify_as(Delivery::AtLeastOnce, topic, committed, what)
            .await
    }

    /// [`verify`](Self::verify) with a consumer for `delivery`: `read_committed` for
    /// exactly-once.
    async fn verify_as(&self, delivery: Delivery, topic: &str, committed: u64, what: &str) -> usize {
        let drained = eventually(Duration::from_secs(90), || async { self.pending().await == 0 }).await;
        assert!(drained, "{what}: {} rows still pending", self.pending().await);
        let records = match delivery {
            Delivery::AtLeastOnce => read_all(&[topic.to_owned()]).await,
            Delivery::ExactlyOnce => read_committed(topic).await,
        };
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

    async fn drop(self) {
        match self {
            Bed::Postgres(db) => db.drop_schema().await,
            Bed::MariaDb { db, users } => {
                let accounts: Vec<(String, String)> =
                    sqlx::query_as("SELECT User, Host FROM mysql.user WHERE User LIKE CONCAT(?, '%')")
                        .bind(&users)
                        .fetch_all(&db.pool)
                        .await
                        .unwrap_or_default();
                for (user, host) in accounts {
                    let _ = sqlx::raw_sql(AssertSqlSafe(format!("DROP USER IF EXISTS '{user}'@'{host}'")))
                        .execute(&db.pool)
                        .await;
                }
                db.drop_database().await;
            }
        }
    }
}

/// The delivery the nodes of a test run with.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Delivery {
    AtLeastOnce,
    ExactlyOnce,
}

impl Delivery {
    /// How soon after a node dies (or freezes) its buckets must have a new owner.
    fn takeover_bound(self) -> Duration {
        match self {
            Delivery::AtLeastOnce => TAKEOVER_BOUND,
            Delivery::ExactlyOnce => EXACTLY_ONCE_TAKEOVER_BOUND,
        }
    }

    /// The daemon's arguments for it; `tag` names the progress topic.
    fn args(self, tag: &str) -> Vec<String> {
        match self {
            Delivery::AtLeastOnce => Vec::new(),
            Delivery::ExactlyOnce => [
                "--delivery",
                "exactly-once",
                "--progress-topic",
                &txoutbox_testing::unique(&format!("progress-{tag}")),
                "--create-progress-topic",
            ]
            .map(String::from)
            .to_vec(),
        }
    }
}

/// Commits rows continuously (10 per transaction, keys in rotation, payload `key:seq`) until
/// stopped; counts what committed.
struct Writer {
    stop: Arc<AtomicBool>,
    committed: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    fn start(bed: &Bed, topic: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let committed = Arc::new(AtomicU64::new(0));
        let (rows, topic) = (bed.rows(), topic.to_owned());
        let (stop_flag, counter) = (Arc::clone(&stop), Arc::clone(&committed));
        let task = tokio::spawn(async move {
            let mut next = 0u64;
            while !stop_flag.load(Ordering::Relaxed) {
                let batch: Vec<(String, String)> = (next..next + 10)
                    .map(|i| {
                        let key = format!("key-{}", i % KEYS);
                        let payload = format!("{key}:{}", i / KEYS);
                        (key, payload)
                    })
                    .collect();
                rows.commit(&topic, &batch).await;
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

/// Runs `case` on a fresh bed, then drops it.
macro_rules! on_both {
    ($($case:ident => $pg:ident, $maria:ident;)+) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $pg() {
                let bed = Bed::postgres().await;
                $case(&bed).await;
                bed.drop().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $maria() {
                let bed = Bed::mariadb().await;
                $case(&bed).await;
                bed.drop().await;
            }
        )+
    };
}

on_both! {
    work_balance_moves_buckets_on_kill_and_join_without_loss_or_reordering =>
        postgres_work_balance_moves_buckets_on_kill_and_join, mariadb_work_balance_moves_buckets_on_kill_and_join;
    a_node_frozen_past_its_lease_is_fenced_and_gives_up_its_buckets =>
        postgres_a_frozen_node_is_fenced_and_gives_up_its_buckets, mariadb_a_frozen_node_is_fenced_and_gives_up_its_buckets;
    exclusive_mode_relays_from_one_node_at_a_time_and_fails_over =>
        postgres_exclusive_mode_fails_over, mariadb_exclusive_mode_fails_over;
    work_balance_exactly_once_moves_buckets_without_a_duplicate =>
        postgres_work_balance_exactly_once_moves_buckets, mariadb_work_balance_exactly_once_moves_buckets;
    a_frozen_exactly_once_node_is_fenced_and_stops =>
        postgres_a_frozen_exactly_once_node_is_fenced_and_stops, mariadb_a_frozen_exactly_once_node_is_fenced_and_stops;
    exclusive_exactly_once_standbys_leave_the_leader_alone_and_take_over =>
        postgres_exclusive_exactly_once_fails_over, mariadb_exclusive_exactly_once_fails_over;
}

async fn work_balance_moves_buckets_on_kill_and_join_without_loss_or_reordering(bed: &Bed) {
    work_balance_kill_and_join(bed, Delivery::AtLeastOnce).await;
}

/// Exactly-once in work balance: each session sends under a transactional id of its own; the
/// nodes that take the killed node's buckets fence that id and complete what its progress names
/// before they read them, and a joining node gets buckets drained by their owners: a
/// read_committed consumer sees every message once.
async fn work_balance_exactly_once_moves_buckets_without_a_duplicate(bed: &Bed) {
    work_balance_kill_and_join(bed, Delivery::ExactlyOnce).await;
}

async fn work_balance_kill_and_join(bed: &Bed, delivery: Delivery) {
    let topic = new_topic(&format!("balance-{}", bed.name()), 6).await;
    bed.prepare().await;
    let writer = Writer::start(bed, &topic);
    let extra = delivery.args(&format!("balance-{}", bed.name()));
    let n1 = bed.node_with("work-balance", "n1", &extra).await;
    let n2 = bed.node_with("work-balance", "n2", &extra).await;
    let n3 = bed.node_with("work-balance", "n3", &extra).await;

    let shared = eventually(Duration::from_secs(30), || async {
        let o = bed.owners().await;
        o.len() == 3 && o.values().sum::<i64>() == 64 && o.values().all(|&n| (21..=22).contains(&n))
    })
    .await;
    assert!(
        shared,
        "three nodes never shared the 64 buckets evenly: {:?}",
        bed.owners().await
    );
    let flowing = eventually(Duration::from_secs(30), || async {
        count(std::slice::from_ref(&topic)).await >= 1_000
    })
    .await;
    assert!(flowing, "messages are not flowing: {}", n1.logs());

    let killed = Instant::now();
    n2.kill9();
    let moved = eventually(Duration::from_secs(30), || async {
        let o = bed.owners().await;
        !o.contains_key("n2") && o.values().sum::<i64>() == 64 && o.len() == 2
    })
    .await;
    let takeover = killed.elapsed();
    assert!(moved, "n2's buckets did not move: {:?}", bed.owners().await);
    assert!(
        takeover < delivery.takeover_bound(),
        "n2's buckets moved {takeover:?} after the kill (lease 3 s + heartbeat 0.5 s)"
    );
    eprintln!(
        "work balance: n2's buckets taken over {takeover:?} after kill -9 (lease 3 s, heartbeat 500 ms)"
    );

    let n4 = bed.node_with("work-balance", "n4", &extra).await;
    let rebalanced = eventually(Duration::from_secs(30), || async {
        let o = bed.owners().await;
        o.len() == 3 && o.values().sum::<i64>() == 64 && o.get("n4").is_some_and(|&n| n >= 21)
    })
    .await;
    assert!(rebalanced, "n4 never got its share: {:?}", bed.owners().await);

    let committed = writer.stop().await;
    let what = format!("work balance, {delivery:?} (kill -9 of one of three, then a join)");
    let duplicates = bed.verify_as(delivery, &topic, committed, &what).await;
    eprintln!("{what}: {duplicates} duplicates");
    bed.writes_by_lease_holders("work balance").await;
    let mut logs = String::new();
    for daemon in [n1, n3, n4] {
        logs.push_str(&daemon.stop());
    }
    if delivery == Delivery::ExactlyOnce {
        assert_eq!(duplicates, 0, "{what}: a read_committed consumer saw duplicates");
        assert!(
            logs.contains("took over a lost session's transactional id"),
            "no node fenced the killed node's session: {logs}"
        );
        // A stopped exactly-once node leaves its leases to expire (taken over, not released).
        assert!(
            !bed.owners().await.is_empty(),
            "exactly-once nodes released their leases"
        );
        assert!(logs.contains("its leases expire and are taken over"), "{logs}");
    } else {
        assert!(bed.owners().await.is_empty(), "a clean stop releases the leases");
    }
}

async fn a_node_frozen_past_its_lease_is_fenced_and_gives_up_its_buckets(bed: &Bed) {
    frozen_node(bed, Delivery::AtLeastOnce).await;
}

/// Exactly-once in work balance: the node that takes a frozen node's buckets fences its
/// session's transactional id (aborting its open transaction); woken up, the frozen node stops
/// (its session is gone) and nothing it held reaches a read_committed consumer twice.
async fn a_frozen_exactly_once_node_is_fenced_and_stops(bed: &Bed) {
    frozen_node(bed, Delivery::ExactlyOnce).await;
}

async fn frozen_node(bed: &Bed, delivery: Delivery) {
    let topic = new_topic(&format!("frozen-{}", bed.name()), 4).await;
    bed.prepare().await;
    let writer = Writer::start(bed, &topic);
    let extra = delivery.args(&format!("frozen-{}", bed.name()));
    let mut n1 = bed.node_with("work-balance", "n1", &extra).await;
    let n2 = bed.node_with("work-balance", "n2", &extra).await;
    let shared = eventually(Duration::from_secs(30), || async {
        bed.owners().await.len() == 2
    })
    .await;
    assert!(
        shared,
        "two nodes never shared the buckets: {:?}",
        bed.owners().await
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
        let o = bed.owners().await;
        o.len() == 1 && o.get("n2") == Some(&64)
    })
    .await;
    assert!(
        taken,
        "n2 never took the frozen node's buckets: {:?}",
        bed.owners().await
    );
    let moved = frozen.elapsed();
    eprintln!("frozen node: its buckets moved {moved:?} after SIGSTOP");
    assert!(
        moved < delivery.takeover_bound(),
        "the frozen node's buckets moved {moved:?} after SIGSTOP (lease 3 s + heartbeat 0.5 s)"
    );
    // Let the stream go on without it for a while, then wake it up.
    tokio::time::sleep(Duration::from_secs(1)).await;
    n1.signal("CONT");

    if delivery == Delivery::ExactlyOnce {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !n1.has_exited() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let logs = n1.logs();
        assert!(n1.has_exited(), "the woken exactly-once node still runs: {logs}");
        assert!(
            logs.contains("lost its leases") || logs.contains("this relay is fenced"),
            "{logs}"
        );
        let committed = writer.stop().await;
        let what = "frozen exactly-once node (SIGSTOP past the lease, then SIGCONT)";
        let duplicates = bed.verify_as(delivery, &topic, committed, what).await;
        eprintln!("{what}: {duplicates} duplicates");
        assert_eq!(duplicates, 0, "{what}: a read_committed consumer saw duplicates");
        bed.writes_by_lease_holders("frozen exactly-once node").await;
        let logs = n2.stop();
        assert!(
            logs.contains("took over a lost session's transactional id"),
            "n2 did not fence the frozen node's session: {logs}"
        );
        return;
    }
    let rejoined = eventually(Duration::from_secs(30), || async {
        let status = n1.status().await;
        status["coordination"]["epoch"]
            .as_i64()
            .is_some_and(|e| e > epoch_before)
            && bed.owners().await.len() == 2
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
    let duplicates = bed
        .verify(
            &topic,
            committed,
            "frozen node (SIGSTOP past the lease, then SIGCONT)",
        )
        .await;
    eprintln!("frozen node: {duplicates} duplicates");
    let per_node = bed.writes_by_lease_holders("frozen node").await;
    assert!(
        per_node.contains_key("n1"),
        "n1 made no write before it was frozen: {per_node:?}"
    );
    n1.stop();
    n2.stop();
}

async fn exclusive_mode_relays_from_one_node_at_a_time_and_fails_over(bed: &Bed) {
    exclusive_fails_over(bed, Delivery::AtLeastOnce).await;
}

/// Exactly-once standbys start no transactional producer (which would fence the leader's) until
/// they hold the lease; the one that takes over fences the killed leader and completes what its
/// progress names: a read_committed consumer sees every message once.
async fn exclusive_exactly_once_standbys_leave_the_leader_alone_and_take_over(bed: &Bed) {
    exclusive_fails_over(bed, Delivery::ExactlyOnce).await;
}

async fn exclusive_fails_over(bed: &Bed, delivery: Delivery) {
    let topic = new_topic(&format!("exclusive-{}", bed.name()), 3).await;
    bed.prepare().await;
    let writer = Writer::start(bed, &topic);
    let extra = delivery.args(&format!("exclusive-{}", bed.name()));
    let mut nodes = BTreeMap::new();
    for name in ["e1", "e2", "e3"] {
        nodes.insert(name, bed.node_with("exclusive", name, &extra).await);
    }
    let led = eventually(Duration::from_secs(30), || async {
        bed.owners().await.len() == 1
    })
    .await;
    assert!(led, "nobody took the lease");
    let flowing = eventually(Duration::from_secs(30), || async {
        count(std::slice::from_ref(&topic)).await >= 500
    })
    .await;
    assert!(flowing);
    let leader = bed.owners().await.into_keys().next().unwrap();
    // The leader counts what Kafka acknowledged (exactly-once: what it committed, which the
    // records counted above may still wait for).
    let publishing = eventually(Duration::from_secs(30), || async {
        nodes[leader.as_str()].status().await["published_total"].as_u64() > Some(0)
    })
    .await;
    assert!(publishing, "{}", nodes[leader.as_str()].logs());
    // Exactly one relays: the others hold nothing and published nothing, and every node still
    // runs (an exactly-once standby that fenced the leader's producers would have stopped it).
    for (name, daemon) in &mut nodes {
        assert!(!daemon.has_exited(), "{name} stopped: {}", daemon.logs());
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
        bed.owners()
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
    let new_leader = bed.owners().await.into_keys().next().unwrap();
    let moving = eventually(Duration::from_secs(30), || async {
        nodes[new_leader.as_str()].status().await["published_total"].as_u64() > Some(0)
    })
    .await;
    assert!(moving, "the new leader does not relay");

    let committed = writer.stop().await;
    let what = format!("exclusive, {delivery:?} (leader killed)");
    let duplicates = bed.verify_as(delivery, &topic, committed, &what).await;
    eprintln!("{what}: {duplicates} duplicates");
    if delivery == Delivery::ExactlyOnce {
        assert_eq!(duplicates, 0, "{what}: a read_committed consumer saw duplicates");
    }
    for (name, daemon) in &mut nodes {
        assert!(!daemon.has_exited(), "{name} stopped: {}", daemon.logs());
    }
    bed.writes_by_lease_holders("exclusive").await;
    for (_, daemon) in nodes {
        daemon.stop();
    }
}
