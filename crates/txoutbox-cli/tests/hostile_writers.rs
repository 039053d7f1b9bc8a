//! Foreign writers that commit every kind of row the table contract's column types allow — and
//! WAL-mode writers that emit every kind of envelope — interleaved with good rows, against the
//! real daemon, which is killed with SIGKILL once on the way. Read back by an independent
//! consumer: every good message arrived in key order, every hostile one is dead with a reason
//! that names what is wrong, and the daemon never exited but for the kill.
//!
//! The sequence is drawn from a seed (`TXOUTBOX_HOSTILE_SEED`, printed), so a failure replays.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sqlx::AssertSqlSafe;
use support::{Daemon, env_or};
use txoutbox_core::NewMessage;
use txoutbox_postgres_wal::encode_envelope;
use txoutbox_testing::eventually;
use txoutbox_testing::kafka::{create_topics, create_topics_if_missing, new_topic, read_all, verdict};
use txoutbox_testing::postgres::TestSchema;
use uuid::Uuid;

/// Rows per run and the share of hostile ones.
const ROWS: usize = 400;
const HOSTILE_SHARE: f64 = 0.2;
const KEYS: usize = 12;

/// One row of the plan: a good message (key, sequence number of its key) or a hostile kind.
#[derive(Debug, Clone)]
enum Item {
    Good { key: String, seq: u64 },
    Hostile(&'static Hostile),
}

/// A kind of hostile row, and what its dead letter's reason must say.
#[derive(Debug)]
struct Hostile {
    name: &'static str,
    reason: &'static str,
}

const fn hostile(name: &'static str, reason: &'static str) -> Hostile {
    Hostile { name, reason }
}

/// The kinds every table store can be given.
const COMMON: &[Hostile] = &[
    hostile("topic with spaces", "topic"),
    hostile("topic of 255 characters", "topic"),
    hostile("headers array", "headers"),
    hostile("headers number", "headers"),
    hostile("headers string", "headers"),
    hostile("payload of 2 MB", "too large"),
    hostile("created_at a day ahead", "created_at"),
    hostile("next_attempt_at in ten years", "next_attempt_at"),
    hostile("topic that does not exist", "UnknownTopic"),
];

const POSTGRES: &[Hostile] = &[
    hostile("created_at infinity", "created_at"),
    hostile("created_at -infinity", "created_at"),
    hostile("created_at in 294276", "created_at"),
    hostile("next_attempt_at infinity", "next_attempt_at"),
    hostile("key of 2 MB", "too large"),
    hostile("topic of 600 characters", "topic"),
    // The table has no CHECK on the topic since schema version 5 (it cost every INSERT).
    hostile("empty topic", "topic"),
];

const SQLITE: &[Hostile] = &[
    hostile("created_at past the calendar", "created_at"),
    hostile("attempts past an i32", "attempts"),
    hostile("topic not UTF-8", "topic"),
];

const MARIADB: &[Hostile] = &[hostile("created_at zero date", "created_at")];

const WAL: &[Hostile] = &[
    hostile("truncated envelope", "unreadable WAL envelope"),
    hostile("envelope version 2", "unreadable WAL envelope"),
    hostile("empty topic", "unreadable WAL envelope"),
    hostile("bytes after the last field", "unreadable WAL envelope"),
    hostile("headers array", "unreadable WAL envelope"),
    hostile("topic with spaces", "topic"),
    hostile("topic with a NUL", "unreadable WAL envelope"),
    hostile("topic of 600 characters", "topic"),
    hostile("payload of 2 MB", "too large"),
    hostile("topic that does not exist", "UnknownTopic"),
];

/// The plan: good rows of `KEYS` keys in sequence, hostile ones of `kinds` among them.
fn plan(seed: u64, kinds: &'static [&'static [Hostile]]) -> Vec<Item> {
    let mut rng = StdRng::seed_from_u64(seed);
    let all: Vec<&'static Hostile> = kinds.iter().flat_map(|k| k.iter()).collect();
    let mut seqs = [0u64; KEYS];
    let mut items: Vec<Item> = all.iter().map(|h| Item::Hostile(h)).collect();
    while items.len() < ROWS {
        if rng.random_bool(HOSTILE_SHARE) {
            items.push(Item::Hostile(all[rng.random_range(0..all.len())]));
        } else {
            let k = rng.random_range(0..KEYS);
            seqs[k] += 1;
            items.push(Item::Good {
                key: format!("k{k}"),
                seq: seqs[k],
            });
        }
    }
    // Every kind at least once, at random places; the good rows keep their order per key.
    let (mut hostile, good): (Vec<Item>, Vec<Item>) =
        items.into_iter().partition(|i| matches!(i, Item::Hostile(_)));
    let mut out = good;
    while let Some(h) = hostile.pop() {
        let at = rng.random_range(0..=out.len());
        out.insert(at, h);
    }
    out
}

fn seed() -> u64 {
    let seed = env_or("TXOUTBOX_HOSTILE_SEED", rand::rng().random::<u64>());
    eprintln!("TXOUTBOX_HOSTILE_SEED={seed}");
    seed
}

/// The topics of a run: the good one, its dead-letter topic and the unreadable rows' one.
struct Topics {
    good: String,
    missing: String,
}

async fn topics() -> Topics {
    let good = new_topic("hostile", 3).await;
    create_topics(&[&format!("{good}.dead")], 1).await;
    // Shared by every test: it may exist already.
    create_topics_if_missing(&["txoutbox-unreadable.dead"], 1).await;
    Topics {
        missing: txoutbox_testing::unique("hostile-missing").replace('_', "-"),
        good,
    }
}

/// The daemon's flags of every run.
fn relay_flags() -> Vec<&'static str> {
    vec![
        "--dead-letter-topic",
        "{topic}.dead",
        "--max-attempts",
        "2",
        "--poll-interval",
        "100ms",
    ]
}

/// Writes the plan in transactions of a few rows with `write`, kills the daemon once halfway and
/// starts it again; returns the running daemon and what became of each row (`None`: good).
async fn drive<W, F>(
    plan: &[Item],
    start: impl Fn() -> F,
    mut write: W,
) -> (Daemon, Vec<(i64, &'static Hostile)>)
where
    F: std::future::Future<Output = Daemon>,
    W: AsyncWrite,
{
    let mut daemon = start().await;
    let mut dead = Vec::new();
    for (n, chunk) in plan.chunks(7).enumerate() {
        for item in chunk {
            if let Some((id, h)) = write.write(item).await {
                dead.push((id, h));
            }
        }
        if n == plan.len() / 7 / 2 {
            // SIGKILL mid-stream, then a new daemon on the same outbox.
            let logs = daemon.kill9();
            assert!(!logs.contains("panicked"), "{logs}");
            daemon = start().await;
        }
    }
    (daemon, dead)
}

/// Writes one plan item; returns the row id of a hostile one.
trait AsyncWrite {
    fn write(&mut self, item: &Item) -> impl std::future::Future<Output = Option<(i64, &'static Hostile)>>;
}

/// Checks the good topic and the dead rows, then stops the daemon (which must exit cleanly).
async fn verify(
    plan: &[Item],
    topics: &Topics,
    daemon: Daemon,
    dead_rows: impl std::future::Future<Output = BTreeMap<i64, (String, String)>>,
    dead: &[(i64, &'static Hostile)],
) {
    let goods = plan.iter().filter(|i| matches!(i, Item::Good { .. })).count();
    let records = read_all(std::slice::from_ref(&topics.good)).await;
    let verdict = verdict(&records, |r| {
        let (key, seq) = r.payload_str().split_once(':').unwrap_or(("?", "0"));
        (key.to_owned(), seq.parse().unwrap_or(0))
    });
    assert_eq!(
        verdict.distinct,
        goods,
        "every good message: {verdict:?}\n{}",
        daemon.logs()
    );
    assert_eq!(verdict.order_violations, 0, "{verdict:?}");
    let rows = dead_rows.await;
    for (id, hostile) in dead {
        let (status, error) = rows
            .get(id)
            .unwrap_or_else(|| panic!("row {id} ({}) is gone", hostile.name));
        assert_eq!(status, "dead", "{} (row {id}): {error}", hostile.name);
        assert!(
            error.contains(hostile.reason),
            "the reason of `{}` (row {id}) names `{}`: {error}",
            hostile.name,
            hostile.reason
        );
    }
    let logs = daemon.stop();
    assert!(!logs.contains("panicked"), "{logs}");
}

/// Waits until nothing is pending (`pending` counts the rows still to settle).
async fn settled<F, Fut>(daemon: &Daemon, pending: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = i64>,
{
    let done = eventually(Duration::from_secs(180), || async { pending().await == 0 }).await;
    assert!(done, "settled: {} pending\n{}", pending().await, daemon.logs());
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

struct PgWriter<'a> {
    db: &'a TestSchema,
    topics: &'a Topics,
}

impl AsyncWrite for PgWriter<'_> {
    async fn write(&mut self, item: &Item) -> Option<(i64, &'static Hostile)> {
        let table = self.db.qualify("outbox_messages");
        let good = &self.topics.good;
        let (topic, key, payload, headers, created, next): (
            String,
            Vec<u8>,
            Vec<u8>,
            Option<&str>,
            &str,
            &str,
        ) = match item {
            Item::Good { key, seq } => (
                good.clone(),
                key.clone().into_bytes(),
                format!("{key}:{seq}").into_bytes(),
                Some(r#"{"source": "hostile-test", "n": 1, "nested": {"a": [1, 2.5]}}"#),
                "DEFAULT",
                "NULL",
            ),
            Item::Hostile(h) => {
                let mut row = (
                    good.clone(),
                    b"bad".to_vec(),
                    b"x".to_vec(),
                    None,
                    "DEFAULT",
                    "NULL",
                );
                match h.name {
                    "topic with spaces" => row.0 = "no spaces allowed".into(),
                    "topic of 255 characters" => row.0 = "t".repeat(255),
                    "topic of 600 characters" => row.0 = "t".repeat(600),
                    "empty topic" => row.0 = String::new(),
                    "headers array" => row.3 = Some("[1, 2]"),
                    "headers number" => row.3 = Some("5"),
                    "headers string" => row.3 = Some(r#""a=b""#),
                    "payload of 2 MB" => row.2 = vec![b'x'; 2_000_000],
                    "key of 2 MB" => row.1 = vec![b'k'; 2_000_000],
                    "created_at a day ahead" => row.4 = "now() + interval '1 day'",
                    "created_at infinity" => row.4 = "'infinity'",
                    "created_at -infinity" => row.4 = "'-infinity'",
                    "created_at in 294276" => row.4 = "'294276-01-01 00:00:00+00'",
                    "next_attempt_at infinity" => row.5 = "'infinity'",
                    "next_attempt_at in ten years" => row.5 = "now() + interval '10 years'",
                    "topic that does not exist" => row.0 = self.topics.missing.clone(),
                    other => panic!("no PostgreSQL row for {other}"),
                }
                row
            }
        };
        let id: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
            "INSERT INTO {table} (topic, key, payload, headers, created_at, next_attempt_at) \
             VALUES ($1, $2, $3, $4::json, {created}, {next}) RETURNING id"
        )))
        .bind(&topic)
        .bind(&key)
        .bind(&payload)
        .bind(headers)
        .fetch_one(&self.db.pool)
        .await
        .expect("PostgreSQL takes the row");
        match item {
            Item::Hostile(h) => Some((id, *h)),
            Item::Good { .. } => None,
        }
    }
}

async fn pg_rows(db: &TestSchema) -> BTreeMap<i64, (String, String)> {
    let rows: Vec<(i64, String, Option<String>)> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT id, status, last_error FROM {}",
        db.qualify("outbox_messages")
    )))
    .fetch_all(&db.pool)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(id, status, error)| (id, (status, error.unwrap_or_default())))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_postgresql_rows_are_dead_lettered_and_the_rest_arrive_in_order() {
    let plan = plan(seed(), &[COMMON, POSTGRES]);
    let topics = topics().await;
    let db = TestSchema::new().await;
    support::ok(&support::txoutbox(&db, &["migrate"]));
    let flags = relay_flags();
    let (daemon, dead) = drive(
        &plan,
        || Daemon::start(&db, &flags),
        PgWriter {
            db: &db,
            topics: &topics,
        },
    )
    .await;
    let pending = || async {
        sqlx::query_scalar::<_, i64>(AssertSqlSafe(format!(
            "SELECT count(*) FROM {} WHERE status = 'pending'",
            db.qualify("outbox_messages")
        )))
        .fetch_one(&db.pool)
        .await
        .unwrap()
    };
    settled(&daemon, pending).await;
    verify(&plan, &topics, daemon, pg_rows(&db), &dead).await;
    db.drop_schema().await;
}

// ---------------------------------------------------------------------------------------------
// SQLite

/// A SQLite row's values: the topic's SQL, topic, key, payload, headers, created_at,
/// next_attempt_at and attempts.
type LiteValues = (
    &'static str,
    Vec<u8>,
    Vec<u8>,
    Vec<u8>,
    Option<&'static str>,
    Option<i64>,
    Option<i64>,
    i64,
);

struct SqliteWriter<'a> {
    pool: &'a sqlx::SqlitePool,
    topics: &'a Topics,
}

impl AsyncWrite for SqliteWriter<'_> {
    async fn write(&mut self, item: &Item) -> Option<(i64, &'static Hostile)> {
        let good = &self.topics.good;
        let now_ms = chrono::Utc::now().timestamp_millis();
        let (topic_sql, topic, key, payload, headers, created, next, attempts): LiteValues = match item {
            Item::Good { key, seq } => (
                "CAST(?1 AS TEXT)",
                good.clone().into_bytes(),
                key.clone().into_bytes(),
                format!("{key}:{seq}").into_bytes(),
                Some(r#"{"source": "hostile-test", "n": 1}"#),
                None,
                None,
                0,
            ),
            Item::Hostile(h) => {
                let mut row = (
                    "CAST(?1 AS TEXT)",
                    good.clone().into_bytes(),
                    b"bad".to_vec(),
                    b"x".to_vec(),
                    None,
                    None,
                    None,
                    0,
                );
                match h.name {
                    "topic with spaces" => row.1 = b"no spaces allowed".to_vec(),
                    "topic of 255 characters" => row.1 = vec![b't'; 255],
                    "topic not UTF-8" => row.1 = vec![0xff, 0xfe, 0x41],
                    "headers array" => row.4 = Some("[1, 2]"),
                    "headers number" => row.4 = Some("5"),
                    "headers string" => row.4 = Some(r#""a=b""#),
                    "payload of 2 MB" => row.3 = vec![b'x'; 2_000_000],
                    "created_at a day ahead" => row.5 = Some(now_ms + 86_400_000),
                    "created_at past the calendar" => row.5 = Some(i64::MAX),
                    "next_attempt_at in ten years" => row.6 = Some(now_ms + 10 * 365 * 86_400_000),
                    "attempts past an i32" => row.7 = 9_999_999_999,
                    "topic that does not exist" => row.1 = self.topics.missing.clone().into_bytes(),
                    other => panic!("no SQLite row for {other}"),
                }
                row
            }
        };
        let created_sql = if created.is_some() {
            "?5"
        } else {
            "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)"
        };
        let id: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
            "INSERT INTO outbox_messages (topic, key, payload, headers, created_at, next_attempt_at, attempts) \
             VALUES ({topic_sql}, ?2, ?3, ?4, {created_sql}, ?6, ?7) RETURNING id"
        )))
        .bind(topic)
        .bind(key)
        .bind(payload)
        .bind(headers)
        .bind(created)
        .bind(next)
        .bind(attempts)
        .fetch_one(self.pool)
        .await
        .expect("SQLite takes the row");
        match item {
            Item::Hostile(h) => Some((id, *h)),
            Item::Good { .. } => None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_sqlite_rows_are_dead_lettered_and_the_rest_arrive_in_order() {
    let plan = plan(seed(), &[COMMON, SQLITE]);
    let topics = topics().await;
    let path = std::env::temp_dir().join(format!("{}.db", txoutbox_testing::unique("hostile")));
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let migrate = std::process::Command::new(support::binary())
        .arg("migrate")
        .env("TXOUTBOX_DATABASE_URL", &url)
        .env("TXOUTBOX_TABLE", "outbox_messages")
        .env_remove("TXOUTBOX_CONFIG")
        .output()
        .unwrap();
    support::ok(&migrate);
    let flags = relay_flags();
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let (daemon, dead) = drive(
        &plan,
        || async { Daemon::start_on(&url, "outbox_messages", &flags).await },
        SqliteWriter {
            pool: &pool,
            topics: &topics,
        },
    )
    .await;
    let pending = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM outbox_messages WHERE status = 'pending'")
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    settled(&daemon, pending).await;
    let rows = async {
        let rows: Vec<(i64, String, Option<String>)> =
            sqlx::query_as("SELECT id, status, last_error FROM outbox_messages")
                .fetch_all(&pool)
                .await
                .unwrap();
        rows.into_iter()
            .map(|(id, status, error)| (id, (status, error.unwrap_or_default())))
            .collect()
    };
    verify(&plan, &topics, daemon, rows, &dead).await;
    pool.close().await;
    let _ = std::fs::remove_file(&path);
}

// ---------------------------------------------------------------------------------------------
// MariaDB

struct MariaWriter<'a> {
    db: &'a txoutbox_testing::mysql::TestDatabase,
    topics: &'a Topics,
}

impl AsyncWrite for MariaWriter<'_> {
    async fn write(&mut self, item: &Item) -> Option<(i64, &'static Hostile)> {
        let good = &self.topics.good;
        let (topic, key, payload, headers, created, next): (
            String,
            Vec<u8>,
            Vec<u8>,
            Option<&str>,
            &str,
            &str,
        ) = match item {
            Item::Good { key, seq } => (
                good.clone(),
                key.clone().into_bytes(),
                format!("{key}:{seq}").into_bytes(),
                Some(r#"{"source": "hostile-test", "n": 1}"#),
                "CURRENT_TIMESTAMP(6)",
                "NULL",
            ),
            Item::Hostile(h) => {
                let mut row = (
                    good.clone(),
                    b"bad".to_vec(),
                    b"x".to_vec(),
                    None,
                    "CURRENT_TIMESTAMP(6)",
                    "NULL",
                );
                match h.name {
                    "topic with spaces" => row.0 = "no spaces allowed".into(),
                    "topic of 255 characters" => row.0 = "t".repeat(255),
                    "headers array" => row.3 = Some("[1, 2]"),
                    "headers number" => row.3 = Some("5"),
                    "headers string" => row.3 = Some(r#""a=b""#),
                    "payload of 2 MB" => row.2 = vec![b'x'; 2_000_000],
                    "created_at a day ahead" => row.4 = "CURRENT_TIMESTAMP(6) + INTERVAL 1 DAY",
                    "created_at zero date" => row.4 = "'0000-00-00 00:00:00'",
                    "next_attempt_at in ten years" => row.5 = "CURRENT_TIMESTAMP(6) + INTERVAL 10 YEAR",
                    "topic that does not exist" => row.0 = self.topics.missing.clone(),
                    other => panic!("no MariaDB row for {other}"),
                }
                row
            }
        };
        let mut connection = self.db.pool.acquire().await.unwrap();
        // MariaDB's default sql_mode has no NO_ZERO_DATE; say so, whatever the server's is.
        sqlx::query("SET SESSION sql_mode = 'STRICT_TRANS_TABLES'")
            .execute(&mut *connection)
            .await
            .unwrap();
        let done = sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {} (topic, `key`, payload, headers, created_at, next_attempt_at) \
             VALUES (?, ?, ?, ?, {created}, {next})",
            self.db.qualify("outbox_messages")
        )))
        .bind(&topic)
        .bind(&key)
        .bind(&payload)
        .bind(headers)
        .execute(&mut *connection)
        .await
        .expect("MariaDB takes the row");
        let id = i64::try_from(done.last_insert_id()).unwrap();
        match item {
            Item::Hostile(h) => Some((id, *h)),
            Item::Good { .. } => None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_mariadb_rows_are_dead_lettered_and_the_rest_arrive_in_order() {
    let plan = plan(seed(), &[COMMON, MARIADB]);
    let topics = topics().await;
    let db = txoutbox_testing::mysql::TestDatabase::new().await;
    let url = txoutbox_testing::mysql::url();
    let table = format!("{}.outbox_messages", db.database);
    let mut flags = relay_flags();
    flags.push("--migrate");
    let (daemon, dead) = drive(
        &plan,
        || Daemon::start_on(&url, &table, &flags),
        MariaWriter {
            db: &db,
            topics: &topics,
        },
    )
    .await;
    let pending = || async {
        sqlx::query_scalar::<_, i64>(AssertSqlSafe(format!(
            "SELECT count(*) FROM {} WHERE status = 'pending'",
            db.qualify("outbox_messages")
        )))
        .fetch_one(&db.pool)
        .await
        .unwrap()
    };
    settled(&daemon, pending).await;
    let rows = async {
        let rows: Vec<(i64, String, Option<String>)> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT id, status, last_error FROM {}",
            db.qualify("outbox_messages")
        )))
        .fetch_all(&db.pool)
        .await
        .unwrap();
        rows.into_iter()
            .map(|(id, status, error)| (id, (status, error.unwrap_or_default())))
            .collect()
    };
    verify(&plan, &topics, daemon, rows, &dead).await;
    db.drop_database().await;
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL WAL mode

struct WalWriter<'a> {
    db: &'a TestSchema,
    prefix: &'a str,
    topics: &'a Topics,
    /// The hostile envelopes emitted, in order (WAL dead letters have no ids of ours).
    emitted: Vec<&'static Hostile>,
}

fn envelope(topic: &str, key: &str, payload: Vec<u8>) -> Vec<u8> {
    encode_envelope(&NewMessage {
        message_id: Uuid::now_v7(),
        topic: topic.to_owned(),
        key: Some(key.as_bytes().to_vec()),
        payload: Some(payload),
        headers: vec![("source".into(), "hostile-test".into())],
        strategy: Default::default(),
    })
}

impl AsyncWrite for WalWriter<'_> {
    async fn write(&mut self, item: &Item) -> Option<(i64, &'static Hostile)> {
        let good = &self.topics.good;
        let bytes = match item {
            Item::Good { key, seq } => envelope(good, key, format!("{key}:{seq}").into_bytes()),
            Item::Hostile(h) => {
                self.emitted.push(h);
                let fine = envelope(good, "bad", b"x".to_vec());
                match h.name {
                    "truncated envelope" => fine[..fine.len() / 2].to_vec(),
                    "envelope version 2" => {
                        let mut v = fine;
                        v[0] = 2;
                        v
                    }
                    "empty topic" => envelope("", "bad", b"x".to_vec()),
                    "bytes after the last field" => {
                        let mut v = fine;
                        v.push(0);
                        v
                    }
                    "headers array" => {
                        // The headers field is last: replace it with `[1]`.
                        let mut v = fine;
                        let headers = br#"{"source":"hostile-test"}"#;
                        v.truncate(v.len() - headers.len() - 4);
                        v.extend_from_slice(&3i32.to_be_bytes());
                        v.extend_from_slice(b"[1]");
                        v
                    }
                    "topic with spaces" => envelope("no spaces allowed", "bad", b"x".to_vec()),
                    "topic with a NUL" => envelope("a\0b", "bad", b"x".to_vec()),
                    "topic of 600 characters" => envelope(&"t".repeat(600), "bad", b"x".to_vec()),
                    "payload of 2 MB" => envelope(good, "bad", vec![b'x'; 2_000_000]),
                    "topic that does not exist" => envelope(&self.topics.missing, "bad", b"x".to_vec()),
                    other => panic!("no envelope for {other}"),
                }
            }
        };
        sqlx::query("SELECT pg_logical_emit_message(true, $1, $2)")
            .bind(self.prefix)
            .bind(bytes)
            .execute(&self.db.pool)
            .await
            .expect("emit");
        None
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_wal_envelopes_are_dead_lettered_and_the_rest_arrive_in_order() {
    let plan = plan(seed(), &[WAL]);
    let topics = topics().await;
    let db = TestSchema::new().await;
    let slot = txoutbox_testing::unique("hostile_wal");
    let prefix = txoutbox_testing::unique("txoutbox");
    let table = format!("{}.outbox_messages", db.schema);
    let url = txoutbox_testing::postgres::url();
    let mut flags = relay_flags();
    flags.extend_from_slice(&["--source", "wal", "--wal-slot", &slot, "--wal-prefix", &prefix]);
    let migrate = std::process::Command::new(support::binary())
        .arg("migrate")
        .args(["--source", "wal", "--wal-slot", &slot, "--wal-prefix", &prefix])
        .env("TXOUTBOX_DATABASE_URL", &url)
        .env("TXOUTBOX_TABLE", &table)
        .env_remove("TXOUTBOX_CONFIG")
        .output()
        .unwrap();
    support::ok(&migrate);
    let mut writer = WalWriter {
        db: &db,
        prefix: &prefix,
        topics: &topics,
        emitted: Vec::new(),
    };
    let (daemon, _) = drive(&plan, || Daemon::start_on(&url, &table, &flags), &mut writer).await;
    let goods = plan.iter().filter(|i| matches!(i, Item::Good { .. })).count() as i64;
    // A kill may dead-letter a hostile envelope twice (replayed before its slot position was
    // confirmed), so the dead rows are matched by kind and reason, not counted.
    let reasons = || async {
        sqlx::query_scalar::<_, String>(AssertSqlSafe(format!(
            "SELECT coalesce(last_error, '') FROM {} WHERE status = 'dead'",
            db.qualify("outbox_messages")
        )))
        .fetch_all(&db.pool)
        .await
        .unwrap()
    };
    // Each emitted kind of hostile envelope with how many dead rows name its reason.
    let found = |reasons: &[String]| -> Vec<(&'static Hostile, usize)> {
        WAL.iter()
            .filter(|h| writer.emitted.iter().any(|e| e.name == h.name))
            .map(|h| (h, reasons.iter().filter(|r| r.contains(h.reason)).count()))
            .collect()
    };
    let done = eventually(Duration::from_secs(180), || async {
        found(&reasons().await).iter().all(|(_, n)| *n > 0)
            && txoutbox_testing::kafka::count(std::slice::from_ref(&topics.good)).await >= goods
    })
    .await;
    let reasons = reasons().await;
    for (h, n) in found(&reasons) {
        assert!(
            n > 0,
            "`{}`: no dead row names `{}`; dead: {reasons:?}\n{}",
            h.name,
            h.reason,
            daemon.logs()
        );
    }
    assert!(done, "the good messages did not all arrive\n{}", daemon.logs());
    verify(&plan, &topics, daemon, async { BTreeMap::new() }, &[]).await;
    let _ = sqlx::query("SELECT pg_drop_replication_slot($1)")
        .bind(&slot)
        .execute(&db.pool)
        .await;
    db.drop_schema().await;
}

impl AsyncWrite for &mut WalWriter<'_> {
    async fn write(&mut self, item: &Item) -> Option<(i64, &'static Hostile)> {
        (**self).write(item).await
    }
}
