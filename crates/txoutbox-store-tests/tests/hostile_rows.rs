//! Rows a foreign writer can commit, generated instead of listed: every value the outbox table's
//! column types hold (PostgreSQL, SQLite, MySQL/MariaDB) goes in with plain SQL, and the relay's
//! read of it must not panic nor fail. Each row comes back either as the message it holds, field
//! for field, or marked unsendable with a reason that names the column (or says it is too large);
//! a hostile row never changes how the rows around it read. proptest shrinks a failure to the
//! smallest row that shows it.
//!
//! `TXOUTBOX_HOSTILE_CASES` sets the number of cases per store (default 96).

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::Value;
use sqlx::AssertSqlSafe;
use txoutbox_core::{OutboxMessage, ReadLimit, Store, Topics};
use txoutbox_store_tests::Harness;
use txoutbox_store_tests::mysql::MySqlHarness;
use txoutbox_store_tests::postgres::PgHarness;
use txoutbox_store_tests::sqlite::SqliteHarness;

/// The largest message the reads take: larger rows must come back "too large".
const MESSAGE_BYTES: usize = 64 * 1024;

fn cases() -> u32 {
    std::env::var("TXOUTBOX_HOSTILE_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(96)
}

/// Bytes of any length class: none, empty, short, binary, large, over the message limit.
fn bytes() -> impl Strategy<Value = Option<Vec<u8>>> {
    prop_oneof![
        3 => proptest::collection::vec(any::<u8>(), 0..40).prop_map(Some),
        1 => Just(None),
        1 => Just(Some(Vec::new())),
        1 => (1usize..3).prop_map(|k| Some(vec![0xff; k * MESSAGE_BYTES])),
    ]
}

/// A JSON value of any shape (headers should be an object of strings; writers send anything).
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 12, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            proptest::collection::vec(("[a-z-]{1,8}", inner), 0..4).prop_map(|pairs| {
                // Distinct names: a JSON object with a name twice is ambiguous anyway.
                let mut seen = BTreeSet::new();
                Value::Object(
                    pairs
                        .into_iter()
                        .filter(|(k, _)| seen.insert(k.clone()))
                        .collect(),
                )
            }),
        ]
    })
}

/// Headers as a writer stores them: usually an object of strings, else any JSON, or none.
fn headers() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        3 => proptest::collection::vec(("[a-z-]{1,10}", "\\PC{0,16}"), 0..4).prop_map(|pairs| {
            let mut seen = BTreeSet::new();
            Some(Value::Object(
                pairs
                    .into_iter()
                    .filter(|(k, _)| seen.insert(k.clone()))
                    .map(|(k, v)| (k, Value::String(v)))
                    .collect(),
            ))
        }),
        2 => json().prop_map(Some),
        1 => Just(None),
    ]
}

/// The headers the relay must send for `headers`, or `None` when they cannot be sent.
fn expected_headers(headers: &Option<Value>) -> Option<Vec<(String, String)>> {
    match headers {
        None | Some(Value::Null) => Some(Vec::new()),
        Some(Value::Object(map)) => Some(
            map.iter()
                .map(|(k, v)| match v {
                    Value::String(s) => (k.clone(), s.clone()),
                    other => (k.clone(), other.to_string()),
                })
                .collect(),
        ),
        Some(_) => None,
    }
}

/// Topics as writers spell them: valid names, and text Kafka would never take.
fn topic() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-zA-Z0-9._-]{1,30}",
        1 => "\\PC{1,30}".prop_filter("not empty", |t| !t.trim().is_empty()),
        1 => (250usize..700).prop_map(|n| "t".repeat(n)),
    ]
}

/// What a fetched row must be, given what was written.
struct Expected {
    topic: String,
    key: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
    headers: Option<Vec<(String, String)>>,
    created_at: Option<DateTime<Utc>>,
    /// The columns known to be unfit: the reason must name one of them.
    unfit: Vec<&'static str>,
    /// Columns whose value the driver may coerce (SQLite reads a REAL as an integer, an integer
    /// as bytes): the row may be unfit naming one of them, or read with values not compared.
    either: Vec<&'static str>,
}

impl Expected {
    fn size(&self, headers_text: usize) -> usize {
        self.topic.len()
            + self.key.as_ref().map_or(0, Vec::len)
            + self.payload.as_ref().map_or(0, Vec::len)
            + headers_text
    }
}

/// Checks one fetched message against what was written.
fn check(message: &OutboxMessage, expected: &Expected, headers_text: usize) -> Result<(), TestCaseError> {
    if expected.size(headers_text) > MESSAGE_BYTES {
        let reason = message.malformed.as_deref().unwrap_or_default();
        prop_assert!(reason.contains("too large"), "a row over the limit: {reason:?}");
        prop_assert!(message.payload.is_none(), "read without its payload");
        return Ok(());
    }
    let mut unfit: Vec<&str> = expected.unfit.clone();
    if expected.headers.is_none() {
        unfit.push("headers");
    }
    // A coercible column is unfit only if the driver refuses it (handled below).
    unfit.retain(|column| !expected.either.contains(column));
    let named =
        |reason: &str, columns: &[&str]| columns.iter().any(|c| reason.contains(&format!("column `{c}`")));
    // A column the driver may refuse instead of coercing: the reason may name it.
    if let Some(reason) = &message.malformed
        && named(reason, &expected.either)
    {
        return Ok(());
    }
    match (unfit.is_empty(), &message.malformed) {
        (false, Some(reason)) => {
            prop_assert!(
                named(reason, &unfit),
                "the reason names one of {unfit:?}: {reason}"
            );
        }
        (false, None) => prop_assert!(false, "{unfit:?} unfit, yet the row reads as {message:?}"),
        (true, Some(reason)) => prop_assert!(false, "a fit row marked unsendable: {reason}"),
        (true, None) => {
            let coerced = |column| expected.either.contains(&column);
            if !coerced("topic") {
                prop_assert_eq!(&*message.topic, expected.topic.as_str());
            }
            if !coerced("key") {
                prop_assert_eq!(message.key.as_deref(), expected.key.as_deref());
            }
            if !coerced("payload") {
                prop_assert_eq!(message.payload.as_deref(), expected.payload.as_deref());
            }
            let headers = expected.headers.clone().unwrap_or_default();
            prop_assert_eq!(&*message.headers, headers.as_slice());
            if let Some(at) = expected.created_at.filter(|_| !coerced("created_at")) {
                prop_assert_eq!(message.created_at, at);
            }
        }
    }
    Ok(())
}

/// Runs `property` over generated batches of rows against a fresh harness of `H`.
fn run<H, G, F>(rows: G, write: F)
where
    H: Harness,
    G: Strategy,
    G::Value: std::fmt::Debug,
    F: for<'a> Fn(
        &'a H,
        G::Value,
    )
        -> std::pin::Pin<Box<dyn std::future::Future<Output = Vec<(i64, Expected, usize)>> + 'a>>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let harness = runtime.block_on(async {
        let harness = H::setup(Topics::new()).await;
        harness.migrate().await.unwrap();
        harness
    });
    let store = harness.store();
    let limit = ReadLimit::rows(1_000)
        .with_bytes(16 << 20)
        .with_message_bytes(MESSAGE_BYTES);
    let mut runner = TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    });
    let outcome = runner.run(&rows, |batch| {
        runtime.block_on(async {
            let written = write(&harness, batch).await;
            let read = store.fetch_pending(limit).await;
            prop_assert!(read.is_ok(), "the read failed: {:?}", read.err());
            let read = read.unwrap_or_default();
            for (id, expected, headers_text) in &written {
                let found: Vec<&OutboxMessage> = read.iter().filter(|m| m.id == *id).collect();
                prop_assert_eq!(found.len(), 1, "row {} read once", id);
                check(found[0], expected, *headers_text)?;
            }
            // Out of the way of the next case (dead rows are not read).
            let failures: Vec<txoutbox_core::Failure> = read
                .iter()
                .map(|m| txoutbox_core::Failure {
                    id: m.id,
                    attempts: 1,
                    error: "checked".into(),
                    next_attempt_at: None,
                })
                .collect();
            store
                .record_failures(&failures)
                .await
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            Ok(())
        })
    });
    runtime.block_on(harness.teardown());
    outcome.unwrap();
}

/// A PostgreSQL time: microseconds from 2000-01-01 anywhere in PostgreSQL's range (4714 BC to
/// 294276 AD, beyond chrono's 262142), or `±infinity`.
#[derive(Debug, Clone)]
enum PgTime {
    Micros(i64),
    Infinity,
    MinusInfinity,
}

fn pg_time() -> impl Strategy<Value = PgTime> {
    prop_oneof![
        4 => (-100_000_000_000_000i64..100_000_000_000_000).prop_map(PgTime::Micros),
        1 => (-211_813_488_000_000_000i64..9_214_646_400_000_000_000).prop_map(PgTime::Micros),
        1 => (8_000_000_000_000_000_000i64..9_214_646_400_000_000_000).prop_map(PgTime::Micros),
        1 => Just(PgTime::Infinity),
        1 => Just(PgTime::MinusInfinity),
    ]
}

impl PgTime {
    fn sql(&self) -> String {
        match self {
            // Whole days and the microseconds apart: PostgreSQL multiplies an interval as a
            // float, exact only below 2^53.
            Self::Micros(us) => format!(
                "'2000-01-01 00:00:00+00'::timestamptz + {} * interval '1 day' + {} * interval '1 microsecond'",
                us.div_euclid(86_400_000_000),
                us.rem_euclid(86_400_000_000)
            ),
            Self::Infinity => "'infinity'::timestamptz".into(),
            Self::MinusInfinity => "'-infinity'::timestamptz".into(),
        }
    }

    fn chrono(&self) -> Option<DateTime<Utc>> {
        match self {
            Self::Micros(us) => us
                .checked_add(946_684_800_000_000)
                .and_then(DateTime::from_timestamp_micros),
            _ => None,
        }
    }
}

type PgRow = (
    String,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Option<Value>,
    PgTime,
    Option<PgTime>,
    i32,
);

fn pg_row() -> impl Strategy<Value = PgRow> {
    (
        topic(),
        bytes(),
        bytes(),
        headers(),
        pg_time(),
        proptest::option::of(pg_time()),
        any::<i32>(),
    )
}

#[test]
fn every_row_postgresql_accepts_reads_as_its_message_or_an_unfit_column() {
    run::<PgHarness, _, _>(proptest::collection::vec(pg_row(), 1..4), |h, rows| {
        Box::pin(async move {
            let mut written = Vec::new();
            for (topic, key, payload, headers, created_at, next, attempts) in rows {
                let headers_text = headers.as_ref().map(Value::to_string);
                let id: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
                    "INSERT INTO {} (topic, key, payload, headers, created_at, next_attempt_at, attempts) \
                     VALUES ($1, $2, $3, $4::json, {}, {}, $5) RETURNING id",
                    h.table().quoted(),
                    created_at.sql(),
                    next.as_ref().map_or("NULL".into(), PgTime::sql),
                )))
                .bind(&topic)
                .bind(&key)
                .bind(&payload)
                .bind(&headers_text)
                .bind(attempts)
                .fetch_one(h.pool())
                .await
                .expect("PostgreSQL takes the row");
                let mut unfit = Vec::new();
                if created_at.chrono().is_none() {
                    unfit.push("created_at");
                }
                if next.as_ref().is_some_and(|n| n.chrono().is_none()) {
                    unfit.push("next_attempt_at");
                }
                let text_len = headers_text.as_ref().map_or(0, String::len);
                written.push((
                    id,
                    Expected {
                        topic,
                        key,
                        payload,
                        headers: expected_headers(&headers),
                        created_at: created_at.chrono(),
                        unfit,
                        either: Vec::new(),
                    },
                    text_len,
                ));
            }
            written
        })
    });
}

/// A value in SQLite's dynamic typing: any storage class in any column.
#[derive(Debug, Clone)]
enum Lite {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    /// Text that is not UTF-8 (SQLite stores what it is given).
    BadText(Vec<u8>),
    Blob(Vec<u8>),
}

impl Lite {
    /// The SQL that stores the bound value with its storage class (`BadText` is a blob cast to
    /// text, which SQLite does without checking the encoding).
    fn sql(&self, n: usize) -> String {
        match self {
            Self::BadText(_) => format!("CAST(?{n} AS TEXT)"),
            _ => format!("?{n}"),
        }
    }
}

fn lite_bytes() -> impl Strategy<Value = Lite> {
    prop_oneof![
        4 => bytes().prop_map(|b| b.map_or(Lite::Null, Lite::Blob)),
        1 => "\\PC{0,20}".prop_map(Lite::Text),
        1 => any::<i64>().prop_map(Lite::Int),
        1 => any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Lite::Real),
    ]
}

fn lite_topic() -> impl Strategy<Value = Lite> {
    prop_oneof![
        6 => topic().prop_map(Lite::Text),
        1 => proptest::collection::vec(0x80u8..=0xff, 1..8)
            .prop_filter("not UTF-8", |b| std::str::from_utf8(b).is_err())
            .prop_map(Lite::BadText),
        1 => proptest::collection::vec(any::<u8>(), 1..8).prop_map(Lite::Blob),
        1 => any::<i64>().prop_map(Lite::Int),
    ]
}

fn lite_time() -> impl Strategy<Value = Lite> {
    prop_oneof![
        4 => (-1_000_000_000_000_000i64..1_000_000_000_000_000).prop_map(Lite::Int),
        1 => any::<i64>().prop_map(Lite::Int),
        1 => Just(Lite::Text("2026-01-01T00:00:00Z".into())),
        1 => any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Lite::Real),
    ]
}

type LiteRow = (Lite, Lite, Lite, Option<Value>, Lite, Lite);

fn lite_row() -> impl Strategy<Value = LiteRow> {
    let attempts = prop_oneof![
        4 => any::<i32>().prop_map(|n| Lite::Int(n.into())),
        1 => any::<i64>().prop_map(Lite::Int),
        1 => Just(Lite::Text("three".into())),
    ];
    (
        lite_topic(),
        lite_bytes(),
        lite_bytes(),
        headers(),
        lite_time(),
        attempts,
    )
}

#[test]
fn every_row_sqlite_accepts_reads_as_its_message_or_an_unfit_column() {
    run::<SqliteHarness, _, _>(proptest::collection::vec(lite_row(), 1..4), |h, rows| {
        Box::pin(async move {
            let mut written = Vec::new();
            for (topic, key, payload, headers, created_at, attempts) in rows {
                let headers_text = headers.as_ref().map(Value::to_string);
                let sql = format!(
                    "INSERT INTO {} (topic, key, payload, headers, created_at, attempts) \
                     VALUES ({}, {}, {}, ?4, {}, {}) RETURNING id",
                    h.table().quoted(),
                    topic.sql(1),
                    key.sql(2),
                    payload.sql(3),
                    created_at.sql(5),
                    attempts.sql(6),
                );
                let query = sqlx::query_scalar::<_, i64>(AssertSqlSafe(sql));
                let query = bind_lite(query, &[&topic, &key, &payload]);
                let query = query.bind(&headers_text);
                let query = bind_lite(query, &[&created_at, &attempts]);
                let Ok(id) = query.fetch_one(h.pool()).await else {
                    // A CHECK refused it (an empty topic): nothing to read.
                    continue;
                };
                let as_bytes = |v: &Lite| match v {
                    Lite::Null => Ok(None),
                    Lite::Blob(b) | Lite::BadText(b) => Ok(Some(b.clone())),
                    Lite::Text(s) => Ok(Some(s.as_bytes().to_vec())),
                    Lite::Int(_) | Lite::Real(_) => Err(()),
                };
                let created = match &created_at {
                    Lite::Int(ms) => DateTime::from_timestamp_millis(*ms),
                    _ => None,
                };
                // The topic as the relay reads it: text, an integer's digits, a BLOB's UTF-8.
                let topic_text = match &topic {
                    Lite::Text(s) => Some(s.clone()),
                    Lite::Int(n) => Some(n.to_string()),
                    Lite::Blob(b) => String::from_utf8(b.clone()).ok(),
                    _ => None,
                };
                let mut unfit = Vec::new();
                if topic_text.is_none() && !matches!(topic, Lite::Blob(_)) {
                    unfit.push("topic");
                }
                if as_bytes(&key).is_err() {
                    unfit.push("key");
                }
                if as_bytes(&payload).is_err() {
                    unfit.push("payload");
                }
                if created.is_none() {
                    unfit.push("created_at");
                }
                if match &attempts {
                    Lite::Int(n) => i32::try_from(*n).is_err(),
                    _ => true,
                } {
                    unfit.push("attempts");
                }
                let mut either = Vec::new();
                for (column, value) in [
                    ("topic", &topic),
                    ("key", &key),
                    ("payload", &payload),
                    ("created_at", &created_at),
                    ("attempts", &attempts),
                ] {
                    let coercible = matches!(
                        (column, value),
                        ("topic", Lite::Blob(_))
                            | ("key" | "payload", Lite::Int(_) | Lite::Real(_))
                            | ("created_at" | "attempts", Lite::Real(_) | Lite::Text(_))
                    );
                    if coercible {
                        either.push(column);
                    }
                }
                written.push((
                    id,
                    Expected {
                        topic: topic_text.unwrap_or_default(),
                        key: as_bytes(&key).ok().flatten(),
                        payload: as_bytes(&payload).ok().flatten(),
                        headers: expected_headers(&headers),
                        created_at: created,
                        unfit,
                        either,
                    },
                    headers_text.as_ref().map_or(0, String::len) + lite_len(&topic),
                ));
            }
            written
        })
    });
}

/// The bytes SQLite counts for a topic beyond what [`Expected::size`] sees (one it reads as no
/// text).
fn lite_len(value: &Lite) -> usize {
    match value {
        Lite::BadText(b) => b.len(),
        Lite::Blob(b) if std::str::from_utf8(b).is_err() => b.len(),
        _ => 0,
    }
}

fn bind_lite<'q>(
    mut query: sqlx::query::QueryScalar<'q, sqlx::Sqlite, i64, sqlx::sqlite::SqliteArguments>,
    values: &[&Lite],
) -> sqlx::query::QueryScalar<'q, sqlx::Sqlite, i64, sqlx::sqlite::SqliteArguments> {
    for value in values {
        query = match (*value).clone() {
            Lite::Null => query.bind(None::<i64>),
            Lite::Int(n) => query.bind(n),
            Lite::Real(f) => query.bind(f),
            Lite::Text(s) => query.bind(s),
            Lite::BadText(b) | Lite::Blob(b) => query.bind(b),
        };
    }
    query
}

/// A MySQL `TIMESTAMP(6)`: any second of its range (1970 to 2038), or the zero date a server
/// without `NO_ZERO_DATE` stores.
fn my_time() -> impl Strategy<Value = Option<DateTime<Utc>>> {
    prop_oneof![
        5 => (1i64..2_147_483_647, 0u32..1_000_000).prop_map(|(s, us)| DateTime::from_timestamp(s, us * 1_000)),
        1 => Just(None),
    ]
}

type MyRow = (
    String,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Option<Value>,
    Option<DateTime<Utc>>,
    i32,
);

fn my_row() -> impl Strategy<Value = MyRow> {
    let topic = prop_oneof![
        3 => "[a-zA-Z0-9._-]{1,30}",
        1 => "\\PC{1,30}".prop_filter("not empty", |t| !t.trim().is_empty()),
        1 => Just("t".repeat(255)),
    ];
    let key = prop_oneof![
        4 => bytes().prop_filter("fits a BLOB", |b| b.as_ref().is_none_or(|b| b.len() <= 65_535)),
    ];
    (topic, key, bytes(), headers(), my_time(), any::<i32>())
}

/// `` `database`.`table` ``.
fn backquoted(table: &txoutbox_core::TableName) -> String {
    match table.schema() {
        Some(schema) => format!("`{schema}`.`{}`", table.table()),
        None => format!("`{}`", table.table()),
    }
}

#[test]
fn every_row_mysql_accepts_reads_as_its_message_or_an_unfit_column() {
    run::<MySqlHarness, _, _>(proptest::collection::vec(my_row(), 1..4), |h, rows| {
        Box::pin(async move {
            let mut written = Vec::new();
            let mut connection = h.pool().acquire().await.unwrap();
            // The zero date needs a session without NO_ZERO_DATE (MariaDB's default has none).
            sqlx::query("SET SESSION sql_mode = 'STRICT_TRANS_TABLES', time_zone = '+00:00'")
                .execute(&mut *connection)
                .await
                .unwrap();
            for (topic, key, payload, headers, created_at, attempts) in rows {
                let headers_text = headers.as_ref().map(Value::to_string);
                let created = match created_at {
                    Some(at) => format!("'{}'", at.format("%Y-%m-%d %H:%M:%S%.6f")),
                    None => "'0000-00-00 00:00:00'".into(),
                };
                let done = sqlx::query(AssertSqlSafe(format!(
                    "INSERT INTO {} (topic, `key`, payload, headers, created_at, attempts) VALUES (?, ?, ?, ?, {created}, ?)",
                    backquoted(h.table()),
                )))
                .bind(&topic)
                .bind(&key)
                .bind(&payload)
                .bind(&headers_text)
                .bind(attempts)
                .execute(&mut *connection)
                .await;
                let Ok(done) = done else {
                    continue;
                };
                let id = i64::try_from(done.last_insert_id()).unwrap();
                written.push((
                    id,
                    Expected {
                        topic,
                        key,
                        payload,
                        headers: expected_headers(&headers),
                        created_at,
                        unfit: created_at.map_or(vec!["created_at"], |_| Vec::new()),
                        either: Vec::new(),
                    },
                    headers_text.as_ref().map_or(0, String::len),
                ));
            }
            written
        })
    });
}
