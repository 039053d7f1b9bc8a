//! Scenario `inbox`: the inbox consumer against a bare Kafka consumer that does the same database
//! write without de-duplication, round by round, on PostgreSQL, SQLite and MySQL / MariaDB
//! (issue 29; target: the inbox ≥ 0.8× the bare consumer).
//!
//! Each round fills a fresh topic (8 partitions by default) with N records, each with its own
//! `txoutbox-message-id` header, keyed over `--keys` keys, with a small JSON payload. Then, for
//! each store, two consumers of new groups read that topic to its end, each into a fresh schema
//! (database, file), in an order that alternates from round to round:
//!
//! - **bare**: an rdkafka consumer on a thread of its own hands each record to one of 8 lanes —
//!   the inbox's lane of the record, same hash, same queue length — and each lane runs the business
//!   write in a transaction of its own (`BEGIN; INSERT INTO effects …; COMMIT`; `BEGIN IMMEDIATE`
//!   on SQLite, as the inbox begins) — or, with `--inbox-records-per-transaction K`, up to K
//!   records already queued in one transaction, as the inbox's lanes take them; finished offsets are committed every second below the first
//!   unfinished one, as the inbox commits them (auto commit off, offsets committed only after the
//!   database commit);
//! - **inbox**: [`InboxConsumer`] with its default settings (8 lanes, 1 s commit interval; K
//!   records per transaction) and a handler doing the same `INSERT` in the inbox's transaction,
//!   after its claim of the message id (of the batch's ids, in one statement).
//!
//! Both use a pool of the same size (lanes + 1). A run is timed from the first record's write to
//! the moment `SELECT count(*) FROM effects` shows all N rows; joining the group before that
//! first record is reported apart (`start_seconds`). After each run the harness checks that the
//! effects table holds exactly N rows (and the inbox table N ids).

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde::Serialize;
use sqlx::{AssertSqlSafe, MySqlPool, PgPool, SqlitePool};
use tokio::sync::mpsc;
use txoutbox::TableName;
use txoutbox::inbox::{
    ConsumerConfig, Handler, HandlerError, InboxConfig, InboxConsumer, InboxMessage, MySqlInbox, PgInbox,
    RunningInbox, SqliteInbox,
};
use txoutbox_testing::mysql::TestDatabase;
use txoutbox_testing::postgres::TestSchema;
use txoutbox_testing::sqlite::TestDb;

use crate::common::{BenchMsg, bootstrap, wait_quiet};
use crate::store_kind::Db;
use crate::throughput::raw_producer;

/// Longest a run may take before the harness gives up on it.
const RUN_TIMEOUT: Duration = Duration::from_secs(900);
/// Records a lane's queue holds (the inbox's `LANE_QUEUE`).
const LANE_QUEUE: usize = 1024;
/// How often the bare consumer commits finished offsets (the inbox's default `commit_interval`).
const COMMIT_INTERVAL: Duration = Duration::from_secs(1);

/// The sizes of a run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shape {
    pub records: usize,
    pub keys: usize,
    pub partitions: i32,
    pub rounds: usize,
    /// Records per transaction, of both consumers: the inbox's `records_per_transaction`, and
    /// the bare consumer's lanes take as many queued records in one transaction alike.
    pub records_per_transaction: usize,
}

/// One store's rounds.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct StoreInbox {
    pub store: String,
    /// The bare consumer's records per second, each round.
    pub bare_records_per_sec: Vec<f64>,
    /// The inbox's records per second, each round.
    pub inbox_records_per_sec: Vec<f64>,
    /// Inbox rate / bare rate of the same round.
    pub ratio: Vec<f64>,
    pub ratio_median: f64,
    pub ratio_min: f64,
    pub ratio_max: f64,
    /// Consumer start to its first record's write (joining the group, first fetch), not timed.
    pub bare_start_seconds: Vec<f64>,
    pub inbox_start_seconds: Vec<f64>,
    /// The machine's busy share (other work) before each timed run, bare and inbox in turn.
    pub cpu_busy_before: Vec<f64>,
}

/// Every store's rounds.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct InboxResult {
    pub records: usize,
    pub keys: usize,
    pub partitions: i32,
    /// The inbox's lanes, and the bare consumer's.
    pub lanes: usize,
    /// Records per transaction (both consumers).
    pub records_per_transaction: usize,
    /// Connections of each consumer's pool.
    pub pool_size: u32,
    pub rounds: usize,
    /// How fast each round's topic was filled (records per second).
    pub fill_records_per_sec: Vec<f64>,
    pub stores: Vec<StoreInbox>,
}

/// Runs `shape.rounds` rounds on PostgreSQL, SQLite and MySQL / MariaDB, each unless skipped.
pub(crate) async fn run(shape: Shape, postgres_too: bool, sqlite: bool, mysql: bool) -> InboxResult {
    let lanes = InboxConfig::default().concurrency;
    let pool_size = lanes as u32 + 1;
    let stores = Db::selected(postgres_too, sqlite, mysql);
    let records = records(shape.records, shape.keys);
    let mut per_store: Vec<Rounds> = vec![Rounds::default(); stores.len()];
    let mut fill = Vec::new();
    for round in 0..shape.rounds {
        let topic = txoutbox_testing::kafka::new_topic("bench-inbox", shape.partitions).await;
        let filled = {
            let (topic, records) = (topic.clone(), records.clone());
            tokio::task::spawn_blocking(move || raw_producer(&topic, &records))
                .await
                .expect("producer thread")
        };
        assert_eq!(filled.errors, 0, "the topic was not filled");
        eprintln!(
            "[inbox] round {}: topic filled with {} records at {:.0}/s",
            round + 1,
            shape.records,
            filled.msgs_per_sec
        );
        fill.push(filled.msgs_per_sec);
        // Alternate which consumer goes first, so that drift (checkpoints, the broker's page
        // cache, autovacuum) hits both alike.
        let order = if round % 2 == 0 {
            [Variant::Bare, Variant::Inbox]
        } else {
            [Variant::Inbox, Variant::Bare]
        };
        for (db, rounds) in stores.iter().zip(&mut per_store) {
            for variant in order {
                let busy = wait_quiet("inbox", Duration::from_secs(30)).await;
                let fixture = Fixture::new(*db, pool_size).await;
                let timed = consume(
                    &fixture,
                    variant,
                    &topic,
                    shape.records,
                    lanes,
                    shape.records_per_transaction,
                )
                .await;
                fixture.drop_db().await;
                eprintln!(
                    "[inbox] round {}: {} {:?} {:.0} records/s (start {:.2} s)",
                    round + 1,
                    db.name(),
                    variant,
                    timed.rate,
                    timed.start_seconds
                );
                rounds.busy.push(busy);
                match variant {
                    Variant::Bare => rounds.bare.push(timed),
                    Variant::Inbox => rounds.inbox.push(timed),
                }
            }
            if let (Some(bare), Some(inbox)) = (rounds.bare.last(), rounds.inbox.last()) {
                eprintln!(
                    "[inbox] round {}: {} inbox/bare {:.2}x",
                    round + 1,
                    db.name(),
                    inbox.rate / bare.rate
                );
            }
        }
    }
    InboxResult {
        records: shape.records,
        keys: shape.keys,
        partitions: shape.partitions,
        lanes,
        records_per_transaction: shape.records_per_transaction,
        pool_size,
        rounds: shape.rounds,
        fill_records_per_sec: fill,
        stores: stores
            .into_iter()
            .zip(per_store)
            .map(|(db, rounds)| rounds.summary(db))
            .collect(),
    }
}

/// `n` records cycling over `keys` keys, each with a small JSON payload.
fn records(n: usize, keys: usize) -> Vec<BenchMsg> {
    (0..n)
        .map(|i| BenchMsg {
            key: format!("key-{:04}", i % keys.max(1)),
            payload: format!(
                r#"{{"seq":{i},"amount_cents":{},"note":"order-{i:012}"}}"#,
                (i * 37) % 100_000
            )
            .into_bytes(),
        })
        .collect()
}

/// The consumer a run times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    /// A bare rdkafka consumer: the business write, no de-duplication.
    Bare,
    /// `InboxConsumer`: the claim of the message id, then the same business write.
    Inbox,
}

/// One timed run.
#[derive(Debug, Clone, Copy)]
struct Timed {
    rate: f64,
    start_seconds: f64,
}

/// One store's runs so far.
#[derive(Debug, Clone, Default)]
struct Rounds {
    bare: Vec<Timed>,
    inbox: Vec<Timed>,
    busy: Vec<f64>,
}

impl Rounds {
    /// Ratios of the same rounds, their median and spread.
    fn summary(self, db: Db) -> StoreInbox {
        let ratio: Vec<f64> = self
            .bare
            .iter()
            .zip(&self.inbox)
            .map(|(b, i)| i.rate / b.rate)
            .collect();
        let mut sorted = ratio.clone();
        sorted.sort_by(f64::total_cmp);
        StoreInbox {
            store: db.name().into(),
            bare_records_per_sec: self.bare.iter().map(|t| t.rate).collect(),
            inbox_records_per_sec: self.inbox.iter().map(|t| t.rate).collect(),
            ratio_median: sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN),
            ratio_min: sorted.first().copied().unwrap_or(f64::NAN),
            ratio_max: sorted.last().copied().unwrap_or(f64::NAN),
            ratio,
            bare_start_seconds: self.bare.iter().map(|t| t.start_seconds).collect(),
            inbox_start_seconds: self.inbox.iter().map(|t| t.start_seconds).collect(),
            cpu_busy_before: self.busy,
        }
    }
}

/// A pool of one of the three databases.
#[derive(Debug, Clone)]
enum Pool {
    Postgres(PgPool),
    Sqlite(SqlitePool),
    MySql(MySqlPool),
}

/// Records' business writes in one transaction: `$begin`, an `INSERT` per record, commit.
macro_rules! write_in_transaction {
    ($begin:expr, $insert:expr, $records:expr, $progress:expr) => {{
        let mut tx = $begin.await.expect("begin");
        $progress.first_write();
        for (key, payload) in $records {
            sqlx::query(AssertSqlSafe($insert))
                .bind(*key)
                .bind(*payload)
                .execute(&mut *tx)
                .await
                .expect("insert an effect");
        }
        tx.commit().await.expect("commit");
    }};
}

impl Pool {
    /// The bare consumer's work for a lane's batch (one record unless `records_per_transaction`
    /// says more): the business writes in one transaction, begun as the inbox begins its own
    /// (`BEGIN IMMEDIATE` on SQLite).
    async fn write(&self, insert: &str, records: &[(&str, &str)], progress: &Progress) {
        match self {
            Self::Postgres(pool) => write_in_transaction!(pool.begin(), insert, records, progress),
            Self::Sqlite(pool) => {
                write_in_transaction!(pool.begin_with("BEGIN IMMEDIATE"), insert, records, progress)
            }
            Self::MySql(pool) => write_in_transaction!(pool.begin(), insert, records, progress),
        }
        progress.written.fetch_add(records.len(), Ordering::Release);
    }

    /// The single number `sql` returns.
    async fn count(&self, sql: &str) -> i64 {
        let count = match self {
            Self::Postgres(pool) => sqlx::query_scalar(AssertSqlSafe(sql)).fetch_one(pool).await,
            Self::Sqlite(pool) => sqlx::query_scalar(AssertSqlSafe(sql)).fetch_one(pool).await,
            Self::MySql(pool) => sqlx::query_scalar(AssertSqlSafe(sql)).fetch_one(pool).await,
        };
        count.expect("count rows")
    }
}

/// What keeps a run's schema (database, file) alive, and drops it.
enum Owner {
    Schema(TestSchema),
    File(TestDb),
    Database(TestDatabase),
}

/// A fresh schema (database, file) with an empty `effects` table, and the statements on it.
struct Fixture {
    pool: Pool,
    /// `INSERT INTO effects (msg_key, payload) VALUES (…)`: the business write.
    insert: Arc<str>,
    count_effects: String,
    inbox_table: TableName,
    count_inbox: String,
    owner: Owner,
}

impl Fixture {
    /// A fresh schema (database, file) on `db` with a pool of `pool_size`, its effects table (an
    /// identity key, the record's key and payload) and its inbox table.
    async fn new(db: Db, pool_size: u32) -> Self {
        let (fixture, ddl) = match db {
            Db::Postgres => {
                let schema = TestSchema::with_pool_size(pool_size).await;
                let effects = schema.qualify("effects");
                let inbox_table =
                    TableName::with_schema(&schema.schema, "inbox_messages").expect("valid table name");
                let ddl = format!(
                    "CREATE TABLE {effects} (id BIGSERIAL PRIMARY KEY, msg_key TEXT NOT NULL, payload TEXT NOT NULL)"
                );
                let fixture = Self {
                    pool: Pool::Postgres(schema.pool.clone()),
                    insert: format!("INSERT INTO {effects} (msg_key, payload) VALUES ($1, $2)").into(),
                    count_effects: format!("SELECT count(*) FROM {effects}"),
                    count_inbox: format!("SELECT count(*) FROM {}", inbox_table.quoted()),
                    inbox_table,
                    owner: Owner::Schema(schema),
                };
                (fixture, ddl)
            }
            Db::Sqlite => {
                let db = TestDb::new().await;
                db.pool.close().await;
                let pool = TestDb::connect(&db.path, pool_size).await;
                let ddl = "CREATE TABLE effects (id INTEGER PRIMARY KEY, msg_key TEXT NOT NULL, payload TEXT NOT NULL)";
                let fixture = Self {
                    pool: Pool::Sqlite(pool),
                    insert: "INSERT INTO effects (msg_key, payload) VALUES (?1, ?2)".into(),
                    count_effects: "SELECT count(*) FROM effects".into(),
                    inbox_table: TableName::new("inbox_messages").expect("valid table name"),
                    count_inbox: "SELECT count(*) FROM inbox_messages".into(),
                    owner: Owner::File(db),
                };
                (fixture, ddl.to_owned())
            }
            Db::MySql => {
                let database = TestDatabase::with_pool_size(pool_size).await;
                let effects = database.qualify("effects");
                let ddl = format!(
                    "CREATE TABLE {effects} (id BIGINT AUTO_INCREMENT PRIMARY KEY, msg_key VARCHAR(64) NOT NULL, \
                     payload TEXT NOT NULL) ENGINE = InnoDB"
                );
                let fixture = Self {
                    pool: Pool::MySql(database.pool.clone()),
                    insert: format!("INSERT INTO {effects} (msg_key, payload) VALUES (?, ?)").into(),
                    count_effects: format!("SELECT count(*) FROM {effects}"),
                    inbox_table: TableName::with_schema(&database.database, "inbox_messages")
                        .expect("valid table name"),
                    count_inbox: format!("SELECT count(*) FROM {}", database.qualify("inbox_messages")),
                    owner: Owner::Database(database),
                };
                (fixture, ddl)
            }
        };
        fixture.create_tables(&ddl).await;
        fixture
    }

    /// Creates the effects table with `ddl`, and the inbox table.
    async fn create_tables(&self, ddl: &str) {
        let migrated = match &self.pool {
            Pool::Postgres(pool) => {
                sqlx::raw_sql(AssertSqlSafe(ddl))
                    .execute(pool)
                    .await
                    .expect("create effects");
                PgInbox::with_table(pool.clone(), self.inbox_table.clone())
                    .migrate()
                    .await
            }
            Pool::Sqlite(pool) => {
                sqlx::raw_sql(AssertSqlSafe(ddl))
                    .execute(pool)
                    .await
                    .expect("create effects");
                SqliteInbox::with_table(pool.clone(), self.inbox_table.clone())
                    .migrate()
                    .await
            }
            Pool::MySql(pool) => {
                sqlx::raw_sql(AssertSqlSafe(ddl))
                    .execute(pool)
                    .await
                    .expect("create effects");
                MySqlInbox::with_table(pool.clone(), self.inbox_table.clone())
                    .migrate()
                    .await
            }
        };
        migrated.expect("migrate the inbox");
    }

    /// Drops the schema (database; closes the pool and removes the file).
    async fn drop_db(self) {
        match self.owner {
            Owner::Schema(schema) => schema.drop_schema().await,
            Owner::Database(database) => database.drop_database().await,
            Owner::File(db) => {
                if let Pool::Sqlite(pool) = &self.pool {
                    pool.close().await;
                }
                drop(db);
            }
        }
    }
}

/// How far a run is: when the first record was written, how many were.
#[derive(Debug, Default)]
struct Progress {
    first: OnceLock<Instant>,
    written: AtomicUsize,
}

impl Progress {
    /// Marks the start of the timed run (the first call only).
    fn first_write(&self) {
        self.first.get_or_init(Instant::now);
    }
}

/// Reads `topic` to its end with `variant` into `fixture`'s effects table; the rate from the
/// first record's write to all `n` effects visible.
async fn consume(
    fixture: &Fixture,
    variant: Variant,
    topic: &str,
    n: usize,
    lanes: usize,
    records_per_transaction: usize,
) -> Timed {
    let progress = Arc::new(Progress::default());
    let group = txoutbox_testing::unique("bench-inbox");
    let started = Instant::now();
    let running = match variant {
        Variant::Bare => Running::Bare(Bare::start(
            topic,
            &group,
            fixture.pool.clone(),
            Arc::clone(&fixture.insert),
            (lanes, records_per_transaction),
            Arc::clone(&progress),
        )),
        Variant::Inbox => Running::Inbox(start_inbox(
            fixture,
            topic,
            &group,
            Arc::clone(&progress),
            records_per_transaction,
        )),
    };
    let deadline = started + RUN_TIMEOUT;
    // The writes counted first (no load on the database), then the count that proves them.
    while progress.written.load(Ordering::Acquire) < n {
        assert!(
            Instant::now() < deadline,
            "{variant:?} wrote {} of {n} records in {RUN_TIMEOUT:?}",
            progress.written.load(Ordering::Acquire)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let end = loop {
        if fixture.pool.count(&fixture.count_effects).await >= n as i64 {
            break Instant::now();
        }
        assert!(Instant::now() < deadline, "{variant:?}: effects not visible");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let first = progress.first.get().copied().unwrap_or(started);
    match running {
        Running::Bare(bare) => bare.shutdown().await,
        Running::Inbox(inbox) => inbox.shutdown().await.expect("inbox shutdown"),
    }
    assert_eq!(
        fixture.pool.count(&fixture.count_effects).await,
        n as i64,
        "{variant:?}: every record's effect exactly once"
    );
    if variant == Variant::Inbox {
        assert_eq!(
            fixture.pool.count(&fixture.count_inbox).await,
            n as i64,
            "an inbox id per record"
        );
    }
    Timed {
        rate: n as f64 / (end - first).as_secs_f64(),
        start_seconds: (first - started).as_secs_f64(),
    }
}

/// A started consumer of either kind.
enum Running {
    Bare(Bare),
    Inbox(RunningInbox),
}

/// The inbox's handler: the business write, in the inbox's transaction.
struct Effects {
    insert: Arc<str>,
    progress: Arc<Progress>,
}

/// [`Effects`] as the handler of one database's transactions.
macro_rules! effects_handler {
    ($db:ty) => {
        impl Handler<sqlx::Transaction<'static, $db>> for Effects {
            async fn handle(
                &self,
                tx: &mut sqlx::Transaction<'static, $db>,
                message: &InboxMessage,
            ) -> Result<(), HandlerError> {
                self.progress.first_write();
                let payload = std::str::from_utf8(message.payload().unwrap_or_default())
                    .map_err(HandlerError::permanent)?;
                sqlx::query(AssertSqlSafe(&*self.insert))
                    .bind(message.key_str().unwrap_or_default())
                    .bind(payload)
                    .execute(&mut **tx)
                    .await?;
                // Counted before the inbox commits: the run ends on the count of the table.
                self.progress.written.fetch_add(1, Ordering::Release);
                Ok(())
            }
        }
    };
}
effects_handler!(sqlx::Postgres);
effects_handler!(sqlx::Sqlite);
effects_handler!(sqlx::MySql);

/// `InboxConsumer` with its default settings and the [`Effects`] handler.
fn start_inbox(
    fixture: &Fixture,
    topic: &str,
    group: &str,
    progress: Arc<Progress>,
    records_per_transaction: usize,
) -> RunningInbox {
    let kafka = ConsumerConfig::new(bootstrap(), group, [topic]);
    let handler = Effects {
        insert: Arc::clone(&fixture.insert),
        progress,
    };
    let config = InboxConfig::default().with_records_per_transaction(records_per_transaction);
    let table = fixture.inbox_table.clone();
    let started = match &fixture.pool {
        Pool::Postgres(pool) => {
            InboxConsumer::new(kafka, PgInbox::with_table(pool.clone(), table), handler, config).start()
        }
        Pool::Sqlite(pool) => InboxConsumer::new(
            kafka,
            SqliteInbox::with_table(pool.clone(), table),
            handler,
            config,
        )
        .start(),
        Pool::MySql(pool) => InboxConsumer::new(
            kafka,
            MySqlInbox::with_table(pool.clone(), table),
            handler,
            config,
        )
        .start(),
    };
    started.expect("start the inbox")
}

/// A record handed to a bare lane.
struct Record {
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
}

/// The lane of a record, exactly as the inbox chooses it (`txoutbox-inbox`'s `lane_of`: the same
/// hasher over the same values), so that both consumers spread the same records alike.
fn lane_of(topic: &str, partition: i32, key: Option<&[u8]>, lanes: usize) -> usize {
    let mut hasher = DefaultHasher::new();
    topic.hash(&mut hasher);
    partition.hash(&mut hasher);
    key.hash(&mut hasher);
    (hasher.finish() % lanes.max(1) as u64) as usize
}

/// Offsets handed to lanes and not finished, per partition: what the bare consumer may commit.
#[derive(Debug, Default)]
struct Offsets(Mutex<HashMap<i32, PartitionOffsets>>);

/// One partition's offsets in flight, as the inbox's `Progress` keeps them.
#[derive(Debug, Default)]
struct PartitionOffsets {
    in_flight: BTreeSet<i64>,
    /// One past the highest offset read.
    next: Option<i64>,
    committed: Option<i64>,
}

impl Offsets {
    /// A record of `partition` at `offset` was handed to a lane.
    fn start(&self, partition: i32, offset: i64) {
        let mut all = self.0.lock().unwrap();
        let p = all.entry(partition).or_default();
        p.in_flight.insert(offset);
        p.next = Some(p.next.map_or(offset + 1, |n| n.max(offset + 1)));
    }

    /// The record's write is committed.
    fn finish(&self, partition: i32, offset: i64) {
        if let Some(p) = self.0.lock().unwrap().get_mut(&partition) {
            p.in_flight.remove(&offset);
        }
    }

    /// Positions that moved since the last commit: the first unfinished offset, or one past the
    /// last read.
    fn take(&self) -> Vec<(i32, i64)> {
        let mut all = self.0.lock().unwrap();
        let mut out = Vec::new();
        for (partition, p) in all.iter_mut() {
            if let Some(position) = p.in_flight.first().copied().or(p.next)
                && p.committed != Some(position)
            {
                p.committed = Some(position);
                out.push((*partition, position));
            }
        }
        out
    }
}

/// The bare consumer: a poll thread and its lanes.
struct Bare {
    stop: Arc<AtomicBool>,
    poll_thread: std::thread::JoinHandle<()>,
    lanes: Vec<tokio::task::JoinHandle<()>>,
}

impl Bare {
    /// Subscribes a new consumer of `group` to `topic` and starts its poll thread and `lanes`
    /// lanes, each writing up to `records_per_transaction` queued records per transaction
    /// through `pool`.
    fn start(
        topic: &str,
        group: &str,
        pool: Pool,
        insert: Arc<str>,
        (lanes, records_per_transaction): (usize, usize),
        progress: Arc<Progress>,
    ) -> Self {
        // The inbox's group settings: offsets stored and committed by the consumer only.
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap())
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .create()
            .expect("bare consumer");
        consumer.subscribe(&[topic]).expect("subscribe");
        let offsets = Arc::new(Offsets::default());
        let mut senders = Vec::with_capacity(lanes);
        let mut tasks = Vec::with_capacity(lanes);
        for _ in 0..lanes {
            let (sender, mut receiver) = mpsc::channel::<Record>(LANE_QUEUE);
            senders.push(sender);
            let (pool, insert, offsets, progress) = (
                pool.clone(),
                Arc::clone(&insert),
                Arc::clone(&offsets),
                Arc::clone(&progress),
            );
            tasks.push(tokio::spawn(async move {
                while let Some(first) = receiver.recv().await {
                    // With it, the records already queued, as the inbox's lanes take them.
                    let mut batch = vec![first];
                    while batch.len() < records_per_transaction {
                        match receiver.try_recv() {
                            Ok(record) => batch.push(record),
                            Err(_) => break,
                        }
                    }
                    let writes: Vec<(&str, &str)> = batch
                        .iter()
                        .map(|record| {
                            (
                                std::str::from_utf8(record.key.as_deref().unwrap_or_default())
                                    .expect("UTF-8 key"),
                                std::str::from_utf8(record.payload.as_deref().unwrap_or_default())
                                    .expect("UTF-8 payload"),
                            )
                        })
                        .collect();
                    pool.write(&insert, &writes, &progress).await;
                    for record in &batch {
                        offsets.finish(record.partition, record.offset);
                    }
                }
            }));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let poll_thread = {
            let (stop, topic) = (Arc::clone(&stop), topic.to_owned());
            std::thread::spawn(move || poll(&consumer, &topic, &senders, &offsets, &stop))
        };
        Self {
            stop,
            poll_thread,
            lanes: tasks,
        }
    }

    /// Stops polling (committing what is finished), then lets the lanes end.
    async fn shutdown(self) {
        self.stop.store(true, Ordering::Release);
        let thread = self.poll_thread;
        tokio::task::spawn_blocking(move || thread.join())
            .await
            .expect("join")
            .expect("the poll thread panicked");
        for lane in self.lanes {
            lane.await.expect("lane");
        }
    }
}

/// The bare consumer's poll loop: hands records to lanes, commits finished offsets every
/// [`COMMIT_INTERVAL`]; at `stop`, commits once more and drops the lanes' queues.
fn poll(
    consumer: &BaseConsumer,
    topic: &str,
    lanes: &[mpsc::Sender<Record>],
    offsets: &Offsets,
    stop: &AtomicBool,
) {
    let mut last_commit = Instant::now();
    while !stop.load(Ordering::Acquire) {
        if last_commit.elapsed() >= COMMIT_INTERVAL {
            commit(consumer, topic, offsets, CommitMode::Async);
            last_commit = Instant::now();
        }
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Err(e)) => eprintln!("[inbox] bare consumer error: {e}"),
            Some(Ok(message)) => {
                let record = Record {
                    partition: message.partition(),
                    offset: message.offset(),
                    key: message.key().map(<[u8]>::to_vec),
                    payload: message.payload().map(<[u8]>::to_vec),
                };
                let lane = lane_of(message.topic(), record.partition, message.key(), lanes.len());
                drop(message);
                offsets.start(record.partition, record.offset);
                if lanes[lane].blocking_send(record).is_err() {
                    break;
                }
            }
        }
    }
    commit(consumer, topic, offsets, CommitMode::Sync);
}

/// Commits the positions that moved (`topic` is the one topic the bare consumer reads).
fn commit(consumer: &BaseConsumer, topic: &str, offsets: &Offsets, mode: CommitMode) {
    let positions = offsets.take();
    if positions.is_empty() {
        return;
    }
    let mut list = TopicPartitionList::with_capacity(positions.len());
    for (partition, position) in positions {
        list.add_partition_offset(topic, partition, Offset::Offset(position))
            .expect("offset list");
    }
    if let Err(e) = consumer.commit(&list, mode) {
        eprintln!("[inbox] bare consumer: offset commit failed: {e}");
    }
}
