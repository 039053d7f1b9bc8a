//! The inbox end to end, on each database with a real broker: records produced with injected
//! duplicates are handled once each, in key order; follow-up messages published by the handler
//! through the outbox reach Kafka once per input; failing handlers are retried, then parked;
//! two consumers rebalance without a repeated effect; a consumer killed with `kill -9` at random
//! moments and restarted leaves each effect exactly once.
//!
//! Needs TXOUTBOX_KAFKA_BOOTSTRAP, TXOUTBOX_POSTGRES_URL and TXOUTBOX_MYSQL_URL (`scripts/test.sh`
//! starts them).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::{Deserialize, Serialize};
use sqlx::AssertSqlSafe;
use txoutbox_core::{Relay, RelayConfig, RetryPolicy, TableName, Topic, Topics};
use txoutbox_inbox::{
    ConsumerConfig, Handler, HandlerError, InboxConfig, InboxConsumer, InboxMessage, InboxStore,
    MESSAGE_ID_HEADER, MySqlInbox, PgInbox, RunningInbox, SqliteInbox,
};
use txoutbox_kafka::{KafkaConfig, KafkaSink};
use txoutbox_testing::{eventually, kafka, unique};

/// A record the test produces.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Input {
    key: String,
    seq: i64,
    /// `none`, `twice` (fails two attempts, then works), `thrice` (fails until replayed: parked
    /// after its attempts, then works) or `panic` (panics until replayed: parked at once).
    fail: String,
}

/// What the handler publishes for each input, through the outbox.
#[derive(Debug, Serialize)]
struct FollowUp {
    source: String,
    key: String,
}

/// The handler: fails as the input asks, writes an effect row, publishes a follow-up.
struct Probe<O> {
    outbox: O,
    insert: String,
    delay: Duration,
    attempts: Mutex<HashMap<String, u32>>,
}

impl<O> Probe<O> {
    fn new(outbox: O, insert: String, delay: Duration) -> Self {
        Self {
            outbox,
            insert,
            delay,
            attempts: Mutex::new(HashMap::new()),
        }
    }

    fn inject(&self, message: &InboxMessage, input: &Input) -> Result<(), HandlerError> {
        let n = {
            let mut attempts = self.attempts.lock().unwrap();
            let n = attempts.entry(message.id().to_owned()).or_default();
            *n += 1;
            *n
        };
        match input.fail.as_str() {
            "thrice" if !message.is_replay() => {
                Err(HandlerError::transient(format!("poisoned input {}", input.seq)))
            }
            "panic" if !message.is_replay() => panic!("input {} makes the handler panic", input.seq),
            "twice" if n <= 2 => Err(HandlerError::transient("not yet")),
            _ => Ok(()),
        }
    }
}

macro_rules! probe_handler {
    ($db:ty, $outbox:ty) => {
        impl Handler<sqlx::Transaction<'static, $db>> for Probe<$outbox> {
            async fn handle(
                &self,
                tx: &mut sqlx::Transaction<'static, $db>,
                message: &InboxMessage,
            ) -> Result<(), HandlerError> {
                let input: Input = message.json().map_err(HandlerError::permanent)?;
                self.inject(message, &input)?;
                sqlx::query(AssertSqlSafe(self.insert.clone()))
                    .bind(message.id())
                    .bind(&input.key)
                    .bind(input.seq)
                    .execute(&mut **tx)
                    .await?;
                let follow_up = FollowUp {
                    source: message.id().to_owned(),
                    key: input.key.clone(),
                };
                self.outbox.publish(&mut **tx, &follow_up).await?;
                if !self.delay.is_zero() {
                    tokio::time::sleep(self.delay).await;
                }
                Ok(())
            }
        }
    };
}
probe_handler!(sqlx::Postgres, txoutbox_postgres::PgOutbox);
probe_handler!(sqlx::Sqlite, txoutbox_sqlite::SqliteOutbox);
probe_handler!(sqlx::MySql, txoutbox_mysql::MySqlOutbox);

fn follow_up_topics(topic: &str) -> Topics {
    Topics::new()
        .with(Topic::<FollowUp>::json(topic).unwrap().key(|f| f.key.clone()))
        .unwrap()
}

/// Quick retries and replays; batches of four, so that a failing record rolls back the records
/// batched with it, which are then handled one by one.
fn fast_retries() -> InboxConfig {
    let mut config = InboxConfig::default().with_records_per_transaction(4).with_retry(
        RetryPolicy::default()
            .with_max_attempts(3)
            .with_backoff(Duration::from_millis(20), Duration::from_millis(50)),
    );
    config.replay_interval = Duration::from_millis(200);
    config
}

/// One database under test: its inbox, its handler, the effects and parked rows it holds.
trait TestDb: Sized {
    type Store: InboxStore + Clone;
    type Probe: Handler<<Self::Store as InboxStore>::Tx>;

    async fn new(follow_ups: &str) -> Self;
    /// What another process needs to open this database (the kill test's child).
    fn locator(&self) -> String;
    /// This database, opened from its locator in another process.
    async fn attach(locator: &str, follow_ups: &str) -> Self;
    fn inbox(&self) -> Self::Store;
    fn probe(&self, delay: Duration) -> Self::Probe;
    /// A relay of the follow-up messages to Kafka.
    fn relay(&self) -> txoutbox_core::RelayHandle;
    /// (message id, key, seq) of every effect, in commit order.
    async fn effects(&self) -> Vec<(String, String, i64)>;
    /// (message id, attempts, payload) of every parked record.
    async fn parked(&self) -> Vec<(String, i32, Vec<u8>)>;
    /// Marks a parked record for replay, as an operator does.
    async fn mark_replay(&self, id: &str);
    async fn drop_db(self);
}

/// The part of a [`TestDb`] that is the same on every database but for its pool, how it names
/// a table and how a statement names its parameter: the follow-ups' relay, and the reads and the
/// replay mark on the effects and inbox tables.
macro_rules! test_db_queries {
    (pool = |$db:ident| $pool:expr, qualify = |$name:ident| $qualify:expr, id_param = $param:literal) => {
        fn relay(&self) -> txoutbox_core::RelayHandle {
            let $db = self;
            let sink = KafkaSink::new(&KafkaConfig::new(kafka::bootstrap())).unwrap();
            Relay::new(
                self.outbox.store($pool.clone()),
                sink,
                RelayConfig::default(),
            )
            .unwrap()
            .start()
        }

        async fn effects(&self) -> Vec<(String, String, i64)> {
            let $db = self;
            let $name = "effects";
            sqlx::query_as(AssertSqlSafe(format!(
                "SELECT message_id, msg_key, seq FROM {} ORDER BY n",
                $qualify
            )))
            .fetch_all(&$pool)
            .await
            .unwrap()
        }

        async fn parked(&self) -> Vec<(String, i32, Vec<u8>)> {
            let $db = self;
            let $name = "inbox_messages";
            sqlx::query_as(AssertSqlSafe(format!(
                "SELECT message_id, attempts, payload FROM {} WHERE status = 'dead' ORDER BY message_id",
                $qualify
            )))
            .fetch_all(&$pool)
            .await
            .unwrap()
        }

        async fn mark_replay(&self, id: &str) {
            let $db = self;
            let $name = "inbox_messages";
            sqlx::query(AssertSqlSafe(format!(
                "UPDATE {} SET status = 'replay' WHERE message_id = {}",
                $qualify, $param
            )))
            .bind(id)
            .execute(&$pool)
            .await
            .unwrap();
        }
    };
}

struct Pg {
    schema: txoutbox_testing::postgres::TestSchema,
    outbox: txoutbox_postgres::PgOutbox,
}

impl TestDb for Pg {
    type Store = PgInbox;
    type Probe = Probe<txoutbox_postgres::PgOutbox>;

    async fn new(follow_ups: &str) -> Self {
        let schema = txoutbox_testing::postgres::TestSchema::new().await;
        let outbox = txoutbox_postgres::PgOutbox::with_table(follow_up_topics(follow_ups), schema.table());
        outbox.migrate(&schema.pool).await.unwrap();
        sqlx::raw_sql(AssertSqlSafe(format!(
            "CREATE TABLE {} (n BIGSERIAL PRIMARY KEY, message_id TEXT NOT NULL, msg_key TEXT NOT NULL, seq BIGINT NOT NULL)",
            schema.qualify("effects")
        )))
        .execute(&schema.pool)
        .await
        .unwrap();
        let pg = Self { schema, outbox };
        pg.inbox().migrate().await.unwrap();
        pg
    }

    fn locator(&self) -> String {
        self.schema.schema.clone()
    }

    async fn attach(locator: &str, follow_ups: &str) -> Self {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(8)
            .connect(&txoutbox_testing::postgres::url())
            .await
            .unwrap();
        let schema = txoutbox_testing::postgres::TestSchema {
            pool,
            schema: locator.to_owned(),
        };
        let outbox = txoutbox_postgres::PgOutbox::with_table(follow_up_topics(follow_ups), schema.table());
        Self { schema, outbox }
    }

    fn inbox(&self) -> PgInbox {
        let table = TableName::with_schema(&self.schema.schema, "inbox_messages").unwrap();
        PgInbox::with_table(self.schema.pool.clone(), table)
    }

    fn probe(&self, delay: Duration) -> Self::Probe {
        let insert = format!(
            "INSERT INTO {} (message_id, msg_key, seq) VALUES ($1, $2, $3)",
            self.schema.qualify("effects")
        );
        Probe::new(self.outbox.clone(), insert, delay)
    }

    test_db_queries!(
        pool = |db| db.schema.pool,
        qualify = |name| db.schema.qualify(name),
        id_param = "$1"
    );

    async fn drop_db(self) {
        self.schema.drop_schema().await;
    }
}

struct Lite {
    db: txoutbox_testing::sqlite::TestDb,
    outbox: txoutbox_sqlite::SqliteOutbox,
}

impl TestDb for Lite {
    type Store = SqliteInbox;
    type Probe = Probe<txoutbox_sqlite::SqliteOutbox>;

    async fn new(follow_ups: &str) -> Self {
        let db = txoutbox_testing::sqlite::TestDb::new().await;
        let outbox = txoutbox_sqlite::SqliteOutbox::new(follow_up_topics(follow_ups));
        outbox.migrate(&db.pool).await.unwrap();
        sqlx::raw_sql(
            "CREATE TABLE effects (n INTEGER PRIMARY KEY AUTOINCREMENT, message_id TEXT NOT NULL, msg_key TEXT NOT NULL, seq INTEGER NOT NULL)",
        )
        .execute(&db.pool)
        .await
        .unwrap();
        let lite = Self { db, outbox };
        lite.inbox().migrate().await.unwrap();
        lite
    }

    fn locator(&self) -> String {
        self.db.path.display().to_string()
    }

    async fn attach(locator: &str, follow_ups: &str) -> Self {
        let path = std::path::PathBuf::from(locator);
        let pool = txoutbox_testing::sqlite::TestDb::connect(&path, 4).await;
        let db = txoutbox_testing::sqlite::TestDb { pool, path };
        let outbox = txoutbox_sqlite::SqliteOutbox::new(follow_up_topics(follow_ups));
        Self { db, outbox }
    }

    fn inbox(&self) -> SqliteInbox {
        SqliteInbox::new(self.db.pool.clone())
    }

    fn probe(&self, delay: Duration) -> Self::Probe {
        let insert = "INSERT INTO effects (message_id, msg_key, seq) VALUES (?1, ?2, ?3)".to_owned();
        Probe::new(self.outbox.clone(), insert, delay)
    }

    test_db_queries!(
        pool = |db| db.db.pool,
        qualify = |name| format!("\"{name}\""),
        id_param = "?1"
    );

    async fn drop_db(self) {
        self.db.pool.close().await;
    }
}

struct Maria {
    db: txoutbox_testing::mysql::TestDatabase,
    outbox: txoutbox_mysql::MySqlOutbox,
}

impl TestDb for Maria {
    type Store = MySqlInbox;
    type Probe = Probe<txoutbox_mysql::MySqlOutbox>;

    async fn new(follow_ups: &str) -> Self {
        let db = txoutbox_testing::mysql::TestDatabase::new().await;
        let outbox = txoutbox_mysql::MySqlOutbox::with_table(follow_up_topics(follow_ups), db.table());
        outbox.migrate(&db.pool).await.unwrap();
        sqlx::raw_sql(AssertSqlSafe(format!(
            "CREATE TABLE {} (n BIGINT AUTO_INCREMENT PRIMARY KEY, message_id VARCHAR(512) NOT NULL, msg_key VARCHAR(255) NOT NULL, seq BIGINT NOT NULL)",
            db.qualify("effects")
        )))
        .execute(&db.pool)
        .await
        .unwrap();
        let maria = Self { db, outbox };
        maria.inbox().migrate().await.unwrap();
        maria
    }

    fn locator(&self) -> String {
        self.db.database.clone()
    }

    async fn attach(locator: &str, follow_ups: &str) -> Self {
        let pool = txoutbox_testing::mysql::TestDatabase::connect(locator, 8).await;
        let db = txoutbox_testing::mysql::TestDatabase {
            pool,
            database: locator.to_owned(),
        };
        let outbox = txoutbox_mysql::MySqlOutbox::with_table(follow_up_topics(follow_ups), db.table());
        Self { db, outbox }
    }

    fn inbox(&self) -> MySqlInbox {
        let table = TableName::with_schema(&self.db.database, "inbox_messages").unwrap();
        MySqlInbox::with_table(self.db.pool.clone(), table)
    }

    fn probe(&self, delay: Duration) -> Self::Probe {
        let insert = format!(
            "INSERT INTO {} (message_id, msg_key, seq) VALUES (?, ?, ?)",
            self.db.qualify("effects")
        );
        Probe::new(self.outbox.clone(), insert, delay)
    }

    test_db_queries!(
        pool = |db| db.db.pool,
        qualify = |name| db.db.qualify(name),
        id_param = "?"
    );

    async fn drop_db(self) {
        self.db.drop_database().await;
    }
}

/// Produces records with the txoutbox message id header; returns them as sent (copies too).
async fn produce(topic: &str, records: &[(String, Input)]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka::bootstrap())
        .set("enable.idempotence", "true")
        .create()
        .unwrap();
    for (id, input) in records {
        let payload = serde_json::to_vec(input).unwrap();
        let headers = OwnedHeaders::new().insert(Header {
            key: MESSAGE_ID_HEADER,
            value: Some(id.as_bytes()),
        });
        producer
            .send(
                FutureRecord::to(topic)
                    .key(&input.key)
                    .payload(&payload)
                    .headers(headers),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
}

/// `count` inputs over `keys` keys in key order, then copies of every seventh one (same id,
/// same key: a later offset of the same partition), sent after other keys' records.
fn inputs_with_duplicates(count: i64, keys: i64) -> (Vec<(String, Input)>, usize) {
    let originals: Vec<(String, Input)> = (0..count)
        .map(|seq| {
            let input = Input {
                key: format!("k{}", seq % keys),
                seq,
                fail: "none".into(),
            };
            (uuid::Uuid::new_v4().to_string(), input)
        })
        .collect();
    let mut all = Vec::new();
    for (i, record) in originals.iter().enumerate() {
        all.push(record.clone());
        if i % 7 == 3 && i >= 20 {
            // A copy of a record sent twenty records earlier.
            all.push(originals[i - 20].clone());
        }
    }
    (all, originals.len())
}

/// Every id once, each key's seqs ascending.
fn assert_once_in_order(effects: &[(String, String, i64)], expected: usize) {
    let ids: HashSet<&str> = effects.iter().map(|(id, _, _)| id.as_str()).collect();
    assert_eq!(ids.len(), expected, "distinct ids handled");
    assert_eq!(effects.len(), expected, "effects: every id exactly once");
    let mut last: HashMap<&str, i64> = HashMap::new();
    for (_, key, seq) in effects {
        if let Some(previous) = last.insert(key, *seq) {
            assert!(previous < *seq, "key {key}: seq {seq} after {previous}");
        }
    }
}

fn start<D: TestDb>(db: &D, topic: &str, group: &str, delay: Duration, config: InboxConfig) -> RunningInbox {
    let kafka = ConsumerConfig::new(kafka::bootstrap(), group, [topic]);
    InboxConsumer::new(kafka, db.inbox(), db.probe(delay), config)
        .start()
        .unwrap()
}

/// Injected duplicates are skipped, each key's records run in order, and every follow-up reaches
/// Kafka once per input.
async fn duplicates_are_handled_once_in_key_order<D: TestDb>() {
    txoutbox_testing::init_tracing();
    let input = kafka::new_topic("inbox-in", 4).await;
    let follow_ups = kafka::new_topic("inbox-out", 4).await;
    let db = D::new(&follow_ups).await;
    let relay = db.relay();
    let (records, expected) = inputs_with_duplicates(600, 24);
    assert!(records.len() > expected + 80, "the copies are there");
    produce(&input, &records).await;

    // Several records per transaction: copies can fall into the batch of their original.
    let config = InboxConfig::default().with_records_per_transaction(16);
    let consumer = start(&db, &input, &unique("g"), Duration::ZERO, config);
    assert!(
        eventually(Duration::from_secs(60), || async {
            db.effects().await.len() >= expected
        })
        .await,
        "every input handled"
    );
    assert!(consumer.is_running());
    // Let any duplicate that would slip through arrive.
    tokio::time::sleep(Duration::from_secs(1)).await;
    consumer.shutdown().await.unwrap();
    assert_once_in_order(&db.effects().await, expected);

    let read = kafka::read_all(std::slice::from_ref(&follow_ups)).await;
    let mut per_source: HashMap<String, usize> = HashMap::new();
    for record in &read {
        let v: serde_json::Value = serde_json::from_slice(record.payload.as_deref().unwrap()).unwrap();
        *per_source
            .entry(v["source"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert_eq!(per_source.len(), expected, "a follow-up for every input");
    assert!(per_source.values().all(|n| *n == 1), "each follow-up once");
    relay.shutdown().await.unwrap();
    db.drop_db().await;
}

/// A handler that fails twice then works handles its record once; one that keeps failing is
/// parked after its attempts with its payload while the records after it go on; marked for
/// replay, it runs again and is handled once.
async fn failing_handlers_are_retried_parked_and_replayed<D: TestDb>() {
    txoutbox_testing::init_tracing();
    let input = kafka::new_topic("inbox-fail", 1).await;
    let follow_ups = kafka::new_topic("inbox-fail-out", 1).await;
    let db = D::new(&follow_ups).await;
    let fail = |seq: i64| match seq {
        3 => "twice",
        5 => "thrice",
        7 => "panic",
        _ => "none",
    };
    let records: Vec<(String, Input)> = (0..10)
        .map(|seq| {
            let input = Input {
                key: "k".into(),
                seq,
                fail: fail(seq).into(),
            };
            (format!("id-{seq}"), input)
        })
        .collect();
    produce(&input, &records).await;
    let group = unique("g");
    let consumer = start(&db, &input, &group, Duration::ZERO, fast_retries());
    assert!(
        eventually(Duration::from_secs(60), || async {
            db.effects().await.len() >= 8
        })
        .await,
        "every healthy input handled"
    );
    let effects = db.effects().await;
    assert_once_in_order(&effects, 8);
    assert!(effects.iter().all(|(id, _, _)| id != "id-5" && id != "id-7"));
    assert!(
        eventually(Duration::from_secs(10), || async { db.parked().await.len() >= 2 }).await,
        "both poisoned inputs parked"
    );
    let parked = db.parked().await;
    assert_eq!(parked.len(), 2, "{parked:?}");
    assert_eq!(
        (parked[0].0.as_str(), parked[0].1),
        ("id-5", 3),
        "attempts, then parked"
    );
    assert_eq!(
        (parked[1].0.as_str(), parked[1].1),
        ("id-7", 1),
        "a panic parks at once"
    );
    let payload: Input = serde_json::from_slice(&parked[0].2).unwrap();
    assert_eq!(payload.seq, 5);

    db.mark_replay("id-5").await;
    db.mark_replay("id-7").await;
    assert!(
        eventually(Duration::from_secs(30), || async {
            db.effects().await.len() >= 10
        })
        .await,
        "the replayed records handled"
    );
    consumer.shutdown().await.unwrap();
    let effects = db.effects().await;
    assert_eq!(effects.len(), 10);
    let replayed: HashSet<&str> = effects[8..].iter().map(|(id, _, _)| id.as_str()).collect();
    assert_eq!(
        replayed,
        HashSet::from(["id-5", "id-7"]),
        "replays run after the records that went on"
    );
    assert!(db.parked().await.is_empty());

    // The same group again: its offsets were committed after the database commits, so nothing
    // comes again.
    let again = start(&db, &input, &group, Duration::ZERO, fast_retries());
    tokio::time::sleep(Duration::from_secs(3)).await;
    again.shutdown().await.unwrap();
    assert_eq!(db.effects().await.len(), 10, "the same group read nothing again");
    db.drop_db().await;
}

/// Ids are compared exactly: case and trailing spaces make other ids (MySQL's PAD SPACE
/// collations would take `"abc "` for `"abc"`); a batch's claim tells each record apart.
async fn ids_are_compared_exactly<D: TestDb>() {
    let db = D::new("unused-follow-ups").await;
    let inbox = db.inbox();
    for (n, id) in ["abc", "abc ", "ABC", "abc  ", " abc"].into_iter().enumerate() {
        let message = InboxMessage::new("t", 0, n as i64).with_id(id);
        let mut tx = inbox.begin().await.unwrap();
        assert!(
            inbox.claim(&mut tx, "c", &message).await.unwrap(),
            "{id:?} is a new id"
        );
        inbox.commit(tx).await.unwrap();
    }
    // A batch's claim, in one statement (two on MySQL when an id is there): new ids, ids there
    // already, copies within the batch (the first claims), across more than one statement's
    // worth of records.
    let batch: Vec<InboxMessage> = (0..230)
        .map(|n| {
            let id = match n {
                0 => "abc".to_owned(),
                n if n % 7 == 0 => format!("batch-{}", n - 1),
                n => format!("batch-{n}"),
            };
            InboxMessage::new("t", 1, n).with_id(id)
        })
        .collect();
    let refs: Vec<&InboxMessage> = batch.iter().collect();
    let mut tx = inbox.begin().await.unwrap();
    let claimed = match inbox.claim_all(&mut tx, "c", &refs).await {
        Ok(claimed) => claimed,
        // PostgreSQL claims without the duplicate check until it meets one: that batch fails
        // (its transaction with it) and the next ones check.
        Err(_) => {
            inbox.rollback(tx).await.unwrap();
            tx = inbox.begin().await.unwrap();
            inbox.claim_all(&mut tx, "c", &refs).await.unwrap()
        }
    };
    inbox.commit(tx).await.unwrap();
    let expected: Vec<bool> = (0..230).map(|n| n != 0 && n % 7 != 0).collect();
    assert_eq!(claimed, expected);
    let mut tx = inbox.begin().await.unwrap();
    let again = inbox.claim_all(&mut tx, "c", &refs[1..3]).await.unwrap();
    inbox.rollback(tx).await.unwrap();
    assert_eq!(again, [false, false], "a second batch finds them");
    db.drop_db().await;
}

/// Retention removes handled ids older than its age in batches of the size given, and leaves
/// parked records alone.
async fn old_ids_are_removed_in_batches_and_parked_ones_stay<D: TestDb>() {
    let db = D::new("unused-follow-ups").await;
    let inbox = db.inbox();
    for n in 0..5 {
        let message = InboxMessage::new("t", 0, n).with_id(format!("id-{n}"));
        let mut tx = inbox.begin().await.unwrap();
        assert!(inbox.claim(&mut tx, "c", &message).await.unwrap());
        inbox.commit(tx).await.unwrap();
        let mut tx = inbox.begin().await.unwrap();
        assert!(
            !inbox.claim(&mut tx, "c", &message).await.unwrap(),
            "a second claim finds the id"
        );
        inbox.rollback(tx).await.unwrap();
    }
    let poisoned = InboxMessage::new("t", 0, 9).with_id("id-9").with_payload("p");
    inbox.park("c", &poisoned, 4, "broken").await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        inbox
            .remove_handled("c", Duration::from_secs(3600), 2)
            .await
            .unwrap(),
        0,
        "younger than the age"
    );
    let mut batches = Vec::new();
    loop {
        let removed = inbox.remove_handled("c", Duration::ZERO, 2).await.unwrap();
        batches.push(removed);
        if removed == 0 {
            break;
        }
    }
    assert_eq!(batches, [2, 2, 1, 0]);
    let parked = db.parked().await;
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].1, 4);
    db.drop_db().await;
}

/// Two consumers of one group: the second joins mid-stream, then the first leaves; each
/// rebalance drains the revoked partitions' records, and no effect repeats or overtakes.
async fn a_rebalance_between_two_consumers_repeats_nothing<D: TestDb>() {
    txoutbox_testing::init_tracing();
    let input = kafka::new_topic("inbox-rebalance", 6).await;
    let follow_ups = kafka::new_topic("inbox-rebalance-out", 1).await;
    let db = D::new(&follow_ups).await;
    let (records, expected) = inputs_with_duplicates(900, 30);
    produce(&input, &records).await;
    let group = unique("g");
    let delay = Duration::from_millis(3);
    let first = start(
        &db,
        &input,
        &group,
        delay,
        InboxConfig::default().with_concurrency(4),
    );
    assert!(
        eventually(Duration::from_secs(60), || async {
            db.effects().await.len() >= expected / 4
        })
        .await
    );
    let second = start(
        &db,
        &input,
        &group,
        delay,
        InboxConfig::default().with_concurrency(4),
    );
    assert!(
        eventually(Duration::from_secs(60), || async {
            db.effects().await.len() >= expected / 2
        })
        .await
    );
    first.shutdown().await.unwrap();
    assert!(
        eventually(Duration::from_secs(90), || async {
            db.effects().await.len() >= expected
        })
        .await,
        "every input handled after the first consumer left"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    second.shutdown().await.unwrap();
    assert_once_in_order(&db.effects().await, expected);
    db.drop_db().await;
}

/// Records of an exactly-once producer: committed transactions are handled, aborted ones never
/// (librdkafka's default `isolation.level=read_committed`).
async fn aborted_transactions_are_never_handled() {
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
    txoutbox_testing::init_tracing();
    let input = kafka::new_topic("inbox-eos", 2).await;
    let follow_ups = kafka::new_topic("inbox-eos-out", 1).await;
    let db = Pg::new(&follow_ups).await;
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", kafka::bootstrap())
        .set("transactional.id", unique("inbox-eos"))
        .create()
        .unwrap();
    producer.init_transactions(Duration::from_secs(30)).unwrap();
    let mut seq = 0;
    for commit in [true, false, true] {
        producer.begin_transaction().unwrap();
        for _ in 0..5 {
            let record = Input {
                key: format!("k{}", seq % 3),
                seq,
                fail: "none".into(),
            };
            let payload = serde_json::to_vec(&record).unwrap();
            let id = format!("{}-{seq}", if commit { "kept" } else { "aborted" });
            let headers = OwnedHeaders::new().insert(Header {
                key: MESSAGE_ID_HEADER,
                value: Some(id.as_bytes()),
            });
            producer
                .send(
                    BaseRecord::to(&input)
                        .key(&record.key)
                        .payload(&payload)
                        .headers(headers),
                )
                .map_err(|(e, _)| e)
                .unwrap();
            seq += 1;
        }
        if commit {
            producer.commit_transaction(Duration::from_secs(30)).unwrap();
        } else {
            producer.abort_transaction(Duration::from_secs(30)).unwrap();
        }
    }
    let consumer = start(&db, &input, &unique("g"), Duration::ZERO, InboxConfig::default());
    assert!(
        eventually(Duration::from_secs(60), || async {
            db.effects().await.len() >= 10
        })
        .await
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    consumer.shutdown().await.unwrap();
    let effects = db.effects().await;
    assert_once_in_order(&effects, 10);
    assert!(
        effects.iter().all(|(id, _, _)| id.starts_with("kept-")),
        "{effects:?}"
    );
    db.drop_db().await;
}

/// Where the killed consumer's process finds its test (set by the parent).
const CHILD_ENV: &str = "TXOUTBOX_INBOX_CHILD";

/// A consumer killed with `kill -9` at random moments, six times, and restarted: every input's
/// effect and follow-up exactly once, in key order.
async fn kill_9_at_random_moments_repeats_nothing<D: TestDb>(kind: &str) {
    use rand::Rng;
    txoutbox_testing::init_tracing();
    let input = kafka::new_topic("inbox-kill", 4).await;
    let follow_ups = kafka::new_topic("inbox-kill-out", 4).await;
    let db = D::new(&follow_ups).await;
    let relay = db.relay();
    let (records, expected) = inputs_with_duplicates(4000, 30);
    produce(&input, &records).await;
    let group = unique("g");
    let spawn = || {
        std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "inbox_child_process",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(
                CHILD_ENV,
                format!("{kind}|{}|{input}|{group}|{follow_ups}", db.locator()),
            )
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    // Each kill lands while the child handles records: it waits for the child's first effects,
    // then a random moment.
    let mut kills = 0;
    let mut handled = 0;
    while kills < 6 && handled < expected {
        let mut child = spawn();
        let before = handled;
        assert!(
            eventually(Duration::from_secs(60), || async {
                db.effects().await.len() > before
            })
            .await,
            "the restarted consumer handles records"
        );
        let wait = rand::rng().random_range(0..400);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills += 1;
        handled = db.effects().await.len();
        tracing::info!(kills, handled, "consumer killed");
    }
    assert!(kills >= 3, "only {kills} kills landed before the end");
    let mut child = spawn();
    let done = eventually(Duration::from_secs(120), || async {
        db.effects().await.len() >= expected
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(done, "every input handled after {kills} kills");
    assert_once_in_order(&db.effects().await, expected);
    assert!(
        eventually(Duration::from_secs(60), || async {
            kafka::count(std::slice::from_ref(&follow_ups)).await >= expected as i64
        })
        .await
    );
    let read = kafka::read_all(std::slice::from_ref(&follow_ups)).await;
    let sources: HashSet<String> = read
        .iter()
        .map(|r| {
            let v: serde_json::Value = serde_json::from_slice(r.payload.as_deref().unwrap()).unwrap();
            v["source"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(sources.len(), expected, "a follow-up for every input");
    assert_eq!(read.len(), expected, "each follow-up once");
    relay.shutdown().await.unwrap();
    db.drop_db().await;
}

/// The consumer process the kill test starts and kills (does nothing in a normal run).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn inbox_child_process() {
    let Ok(setting) = std::env::var(CHILD_ENV) else {
        return;
    };
    let parts: Vec<&str> = setting.split('|').collect();
    let [kind, locator, input, group, follow_ups] = parts[..] else {
        panic!("bad {CHILD_ENV}: {setting}");
    };
    match kind {
        "postgres" => run_child(Pg::attach(locator, follow_ups).await, input, group).await,
        "sqlite" => run_child(Lite::attach(locator, follow_ups).await, input, group).await,
        "mariadb" => run_child(Maria::attach(locator, follow_ups).await, input, group).await,
        other => panic!("unknown database {other}"),
    }
}

async fn run_child<D: TestDb>(db: D, input: &str, group: &str) {
    // Static membership: a restarted process takes the killed one's partitions at once, without
    // waiting for its session to time out.
    let kafka = ConsumerConfig::new(kafka::bootstrap(), group, [input])
        .set("group.instance.id", "the-child")
        .set("session.timeout.ms", "6000");
    let _running = InboxConsumer::new(
        kafka,
        db.inbox(),
        db.probe(Duration::from_millis(2)),
        InboxConfig::default().with_records_per_transaction(8),
    )
    .start()
    .unwrap();
    std::future::pending::<()>().await;
}

/// The cases every database runs, as a module of tests; `$extra` adds a database's own.
macro_rules! inbox_cases {
    ($module:ident, $db:ty, $kind:literal $(, $extra:item)*) => {
        mod $module {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn duplicates_are_handled_once_in_key_order() {
                super::duplicates_are_handled_once_in_key_order::<$db>().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn failing_handlers_are_retried_parked_and_replayed() {
                super::failing_handlers_are_retried_parked_and_replayed::<$db>().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn a_rebalance_between_two_consumers_repeats_nothing() {
                super::a_rebalance_between_two_consumers_repeats_nothing::<$db>().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn ids_are_compared_exactly() {
                super::ids_are_compared_exactly::<$db>().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn kill_9_at_random_moments_repeats_nothing() {
                super::kill_9_at_random_moments_repeats_nothing::<$db>($kind).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn old_ids_are_removed_in_batches_and_parked_ones_stay() {
                super::old_ids_are_removed_in_batches_and_parked_ones_stay::<$db>().await;
            }

            $($extra)*
        }
    };
}

inbox_cases!(
    postgres,
    Pg,
    "postgres",
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn aborted_transactions_are_never_handled() {
        super::aborted_transactions_are_never_handled().await;
    }
);
inbox_cases!(sqlite, Lite, "sqlite");
inbox_cases!(mariadb, Maria, "mariadb");
