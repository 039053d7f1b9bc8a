//! The store conformance suite: one set of cases that every txoutbox store runs.
//!
//! A store crate's behaviour is pinned down by the [`Store`] trait (the relay's side) and by the
//! outbox type's `publish` methods (the application's side). This crate writes the expectations
//! down once, as generic cases over a [`StoreHarness`] (what differs per store through txoutbox's
//! API: how to get an isolated outbox, how to publish in a transaction that commits, rolls back
//! or stays open, how to read a row back) or a [`Harness`] (a database's too: migrations, table
//! names, how a foreign application writes a row with plain SQL), and the [`store_conformance!`]
//! macro expands them into one `#[tokio::test]` per case for a given harness:
//!
//! ```ignore
//! // crates/txoutbox-store-tests/tests/postgres.rs
//! txoutbox_store_tests::store_conformance!(txoutbox_store_tests::postgres::PgHarness);
//! // crates/txoutbox-store-tests/tests/sim.rs: the simulated store of txoutbox-sim
//! txoutbox_store_tests::store_conformance!(api txoutbox_store_tests::sim::SimHarness);
//! ```
//!
//! Every case sets up its own database (a fresh PostgreSQL schema or MariaDB database, a fresh
//! SQLite file, a fresh simulated world), so the cases run in parallel. A new store implements
//! [`StoreHarness`] and [`Harness`] and instantiates the macro; it then has to pass every case. A
//! case it fails because of a store bug not fixed yet goes into
//! [`StoreHarness::KNOWN_FAILURES`] with the reason: it then runs as an expected failure (see
//! [`run_case`]) until the fix makes it pass.
//!
//! `tests/mutants.rs` shows that every case can fail: each one runs against the SQLite harness
//! with an injected defect (a store that ignores the limit, loses header order, never
//! dead-letters, ...) and must fail.

pub mod cases;
pub mod leases;
pub mod mysql;
pub mod postgres;
pub mod sim;
pub mod sqlite;

use std::future::Future;

use chrono::{DateTime, Utc};
use serde::Serialize;
use txoutbox_core::{DEFAULT_TABLE, NewMessage, Result, Store, TableName, Topic, Topics};
use uuid::Uuid;

/// How the transaction a message is published in ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxEnd {
    /// The transaction commits.
    Commit,
    /// The transaction rolls back.
    Rollback,
}

/// The relay-managed columns of one row, read with plain SQL for assertions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowState {
    /// `pending`, `published` or `dead`.
    pub status: String,
    /// Failed attempts recorded so far.
    pub attempts: i32,
    /// The last recorded error.
    pub last_error: Option<String>,
    /// Not to be sent before this time.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// When the row was marked published.
    pub published_at: Option<DateTime<Utc>>,
}

/// A transaction [`StoreHarness::publish_held`] left open: awaiting it commits the transaction.
pub type HeldTransaction = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// What differs between stores in what the relay and the application see through txoutbox's
/// API, for the generic [`cases`]: publishing in a transaction, and the relay's [`Store`].
///
/// A harness value is one isolated outbox (its own schema, file or memory) whose table is ready
/// for use. Infrastructure failures (cannot connect, plain SQL fails) panic; the methods that go
/// through the store's API return its [`Result`] so cases can assert on its errors. The
/// simulated store of `txoutbox-sim` implements only this trait and runs the cases that need
/// nothing more ([`store_conformance!`]`(api SimHarness)`); a database store implements
/// [`Harness`] too and runs them all.
pub trait StoreHarness: Sized + Send + Sync + 'static {
    /// The relay's store type.
    type Store: Store;

    /// Cases this store is known to fail, with the reason (a store bug to fix): `(case, reason)`.
    /// Such a case must still fail, or its test fails too, saying to remove the entry; set
    /// `TXOUTBOX_STORE_TESTS_STRICT=1` to run them as ordinary tests. See [`run_case`].
    const KNOWN_FAILURES: &'static [(&'static str, &'static str)] = &[];

    /// An isolated outbox over `topics` with its table ready (migrated) and empty.
    fn ready(topics: Topics) -> impl Future<Output = Self> + Send;

    /// The relay's store over this outbox.
    fn store(&self) -> Self::Store;

    /// Publishes one typed message with `publish` in a transaction that then ends as `end`
    /// (also when `publish` failed: a committed transaction shows that nothing was written).
    fn publish<T: Sync + 'static>(
        &self,
        message: &T,
        end: TxEnd,
    ) -> impl Future<Output = Result<Uuid>> + Send;

    /// Publishes typed messages with `publish_all` in a transaction that then ends as `end`.
    fn publish_all<T: Sync + 'static>(
        &self,
        messages: &[T],
        end: TxEnd,
    ) -> impl Future<Output = Result<Vec<Uuid>>> + Send;

    /// Publishes an encoded message with `publish_message` in a transaction that then ends as
    /// `end`.
    fn publish_message(&self, message: NewMessage, end: TxEnd) -> impl Future<Output = Result<Uuid>> + Send;

    /// Publishes encoded messages with `publish_messages` in a transaction that then ends as
    /// `end`.
    fn publish_messages(
        &self,
        messages: Vec<NewMessage>,
        end: TxEnd,
    ) -> impl Future<Output = Result<Vec<Uuid>>> + Send;

    /// Publishes encoded messages with `publish_messages` in a transaction left open, so that
    /// transactions begun after it can commit first; awaiting the returned [`HeldTransaction`]
    /// commits it. `None` when the database gives ids to one writing transaction at a time
    /// (SQLite), so that rows always commit in id order and no late commit can happen.
    fn publish_held(&self, messages: Vec<NewMessage>)
    -> impl Future<Output = Option<HeldTransaction>> + Send;

    /// The relay-managed columns of row `id`, `None` when there is no such row.
    fn row(&self, id: i64) -> impl Future<Output = Option<RowState>> + Send;

    /// How many rows the outbox table holds, whatever their status.
    fn row_count(&self) -> impl Future<Output = i64> + Send;

    /// Sets the `created_at` of row `id` (to give rows distinct, known creation times).
    fn backdate(&self, id: i64, created_at: DateTime<Utc>) -> impl Future<Output = ()> + Send;

    /// Drops the schema, removes the file or forgets the memory.
    fn teardown(self) -> impl Future<Output = ()> + Send;
}

/// What differs between database stores beyond the API, for the generic [`cases`]: how to get
/// an isolated database, how to migrate it, and how a foreign application writes a row with
/// plain SQL.
pub trait Harness: StoreHarness {
    /// The number of buckets the store spreads keys over: rows get a bucket in `0..BUCKETS`.
    const BUCKETS: i32;

    /// Creates an isolated database and an outbox over `topics` writing to the table named
    /// `table` (in the harness's schema, if the database has schemas). The table is not created:
    /// call [`Harness::migrate`]. An invalid table name is the store API's error, returned before
    /// anything is created.
    fn setup_with_table(topics: Topics, table: &str) -> impl Future<Output = Result<Self>> + Send;

    /// [`Harness::setup_with_table`] with the default table name.
    fn setup(topics: Topics) -> impl Future<Output = Self> + Send {
        async move {
            match Self::setup_with_table(topics, DEFAULT_TABLE).await {
                Ok(harness) => harness,
                Err(e) => panic!("cannot set up the harness: {e}"),
            }
        }
    }

    /// The outbox table, as the outbox and its store see it.
    fn table(&self) -> &TableName;

    /// Runs the store's migrations.
    fn migrate(&self) -> impl Future<Output = Result<()>> + Send;

    /// Inserts a row with plain SQL as a foreign application would, naming only the `topic` and
    /// `payload` columns (every other column takes its default). Returns the row id.
    fn insert_minimal(&self, topic: &str, payload: &[u8]) -> impl Future<Output = i64> + Send;

    /// Inserts a row with plain SQL as a foreign application would, with a key and the
    /// `headers` column given as JSON text (the table contract: a JSON object of strings, which
    /// a foreign writer may get wrong). Returns the row id.
    fn insert_foreign(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        headers_json: Option<&str>,
    ) -> impl Future<Output = i64> + Send;

    /// Tries to insert a row with plain SQL whose `key` and `payload` are the given SQL literals
    /// (`42`, `1.5`, `'text'`), as a careless foreign application might. Returns the row id, or
    /// `None` when the database refuses the row.
    fn try_insert_literals(
        &self,
        topic: &str,
        key_sql: &'static str,
        payload_sql: &'static str,
    ) -> impl Future<Output = Option<i64>> + Send;

    /// The schema versions recorded by the migrations, in ascending order.
    fn schema_versions(&self) -> impl Future<Output = Vec<i32>> + Send;

    /// Records a schema version as applied, as a newer txoutbox would have.
    fn record_schema_version(&self, version: i32) -> impl Future<Output = ()> + Send;
}

/// [`StoreHarness::ready`] for a database harness: a fresh database with the default table,
/// migrated.
pub async fn migrated_database<H: Harness>(topics: Topics) -> H {
    let h = H::setup(topics).await;
    if let Err(e) = h.migrate().await {
        panic!("cannot migrate the harness's database: {e}");
    }
    h
}

/// The typed message of the cases.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OrderCreated {
    /// The order id, also the Kafka key.
    pub id: u64,
    /// The customer, also sent as the `customer` header.
    pub customer: String,
}

impl OrderCreated {
    /// An order with a customer name derived from the id.
    pub fn new(id: u64) -> Self {
        Self {
            id,
            customer: format!("customer {id}"),
        }
    }

    /// The JSON payload `publish` must store for this order, byte for byte.
    pub fn expected_payload(&self) -> Vec<u8> {
        // serde_json escapes `"` and `\` (and control characters, which the cases do not use);
        // it writes other characters as they are.
        let customer = self.customer.replace('\\', "\\\\").replace('"', "\\\"");
        format!(r#"{{"id":{},"customer":"{customer}"}}"#, self.id).into_bytes()
    }

    /// The headers `publish` must store for this order, in order: the static one, then the
    /// dynamic one.
    pub fn expected_headers(&self) -> Vec<(String, String)> {
        vec![
            (STATIC_HEADER.0.to_owned(), STATIC_HEADER.1.to_owned()),
            ("customer".to_owned(), self.customer.clone()),
        ]
    }
}

/// A message type for which no topic is defined.
#[derive(Debug, Clone, Serialize)]
pub struct NotRegistered {
    /// Anything.
    pub id: u64,
}

/// The topic [`OrderCreated`] is published to.
pub const ORDERS_TOPIC: &str = "store-tests.orders.created";

/// The static header of [`ORDERS_TOPIC`].
pub const STATIC_HEADER: (&str, &str) = ("source", "txoutbox-store-tests");

/// The topics of the cases: [`OrderCreated`] as JSON, keyed by order id, with a static and a
/// dynamic header.
pub fn topics() -> Topics {
    let orders = Topic::<OrderCreated>::json(ORDERS_TOPIC)
        .expect("valid topic name")
        .key(|order| order.id.to_string())
        .header(STATIC_HEADER.0, STATIC_HEADER.1)
        .headers_with(|order| vec![("customer".to_owned(), order.customer.clone())]);
    Topics::new().with(orders).expect("one topic per type")
}

/// Expands the conformance [`cases`] into one `#[tokio::test]` per case for a harness type.
///
/// ```ignore
/// // Every case, for a database store (a `Harness`):
/// txoutbox_store_tests::store_conformance!(txoutbox_store_tests::sqlite::SqliteHarness);
/// // The cases that need only txoutbox's API, for a store without SQL (a `StoreHarness`):
/// txoutbox_store_tests::store_conformance!(api txoutbox_store_tests::sim::SimHarness);
/// ```
///
/// The invoking crate needs `tokio` (with `macros` and `rt`) among its dependencies.
#[macro_export]
macro_rules! store_conformance {
    (api $harness:ty) => {
        $crate::store_conformance!(@api tests [$harness]);
    };
    ($harness:ty) => {
        $crate::store_conformance!(@api tests [$harness]);
        $crate::store_conformance!(@database tests [$harness]);
    };
    // The cases over a `StoreHarness`: what the store does through txoutbox's API.
    (@api $mode:ident [$($harness:ty)?]) => {
        $crate::store_conformance! {@$mode [$($harness)?]
            published_message_is_fetched_with_every_field,
            rolled_back_publish_leaves_nothing,
            publish_all_of_a_thousand_keeps_the_given_order,
            encoded_messages_round_trip_bytes_and_tombstones,
            fetch_pending_respects_the_limit_in_id_order,
            complete_delete_removes_rows_and_is_idempotent,
            complete_mark_published_keeps_rows_out_of_the_backlog,
            completing_a_run_of_ids_leaves_the_rows_around_it,
            failure_with_retry_time_keeps_the_row_pending,
            failure_without_retry_time_dead_letters_the_row,
            dead_keys_lists_each_dead_key_once,
            backlog_counts_pending_and_dead_and_finds_the_oldest,
            unknown_message_type_is_a_typed_error_and_writes_nothing,
            empty_batches_are_no_ops,
            header_value_with_a_nul_character_round_trips,
            reads_keep_to_their_byte_budget_and_larger_rows_come_back_empty,
            late_commits_below_the_cursor_are_read_after_it,
            a_read_cut_above_the_cursor_returns_its_late_rows_once,
        }
    };
    // The cases over a `Harness`: migrations, table names, buckets and foreign SQL writers.
    (@database $mode:ident [$($harness:ty)?]) => {
        $crate::store_conformance! {@$mode [$($harness)?]
            migrate_is_idempotent_and_check_says_to_run_it,
            newer_schema_version_is_refused,
            foreign_row_with_topic_and_payload_gets_defaults,
            foreign_row_with_key_and_headers_is_read_as_given,
            malformed_foreign_headers_flag_the_row_only,
            invalid_names_are_typed_errors,
            custom_table_name_is_used_by_every_statement,
            equal_keys_share_a_bucket_within_range,
            ids_are_never_reused_after_deletes,
            foreign_row_of_another_type_never_blocks_fetching,
            progress_keys_are_remembered_exactly,
        }
    };
    (@tests [$harness:ty] $($case:ident),+ $(,)?) => {
        $(
            #[::tokio::test]
            async fn $case() {
                $crate::run_case(
                    stringify!($case),
                    <$harness as $crate::StoreHarness>::KNOWN_FAILURES,
                    $crate::cases::$case::<$harness>(),
                )
                .await;
            }
        )+
    };
    (@names [] $($case:ident),+ $(,)?) => {
        &[$(stringify!($case)),+]
    };
}

/// The names of the cases that need only a [`StoreHarness`], in the order the macro expands
/// them.
pub const API_CASES: &[&str] = store_conformance!(@api names []);

/// The names of the cases that need a [`Harness`], in the order the macro expands them.
pub const DATABASE_CASES: &[&str] = store_conformance!(@database names []);

/// The names of every conformance case.
pub const CASES: &[&[&str]] = &[API_CASES, DATABASE_CASES];

/// The environment variable that runs known failures as ordinary tests (`1`).
pub const STRICT_ENV: &str = "TXOUTBOX_STORE_TESTS_STRICT";

/// Runs the case `name`. When it is listed in `known_failures` (and [`STRICT_ENV`] is not `1`),
/// it is run as an expected failure instead: see [`expect_failure`].
pub async fn run_case<F>(name: &str, known_failures: &[(&str, &str)], case: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    txoutbox_testing::init_tracing();
    match known_failures.iter().find(|(known, _)| *known == name) {
        Some((_, reason)) => expect_failure(name, reason, case).await,
        None => case.await,
    }
}

/// Runs a test that a known store bug makes fail: it passes while `test` panics (printing the
/// panic), and fails once `test` passes, so that the bug's entry is removed with its fix. With
/// [`STRICT_ENV`] set to `1` it runs `test` as an ordinary test, to see the failure.
pub async fn expect_failure<F>(name: &str, reason: &str, test: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    txoutbox_testing::init_tracing();
    if std::env::var(STRICT_ENV).is_ok_and(|v| v == "1") {
        return test.await;
    }
    match tokio::spawn(test).await {
        Ok(()) => {
            panic!("`{name}` is listed as a known failure ({reason}) but passes: remove it from the list")
        }
        Err(e) if e.is_panic() => {
            let panic = e.into_panic();
            let message = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)");
            eprintln!("known failure of `{name}` ({reason}): {message}");
        }
        Err(e) => panic!("`{name}` did not finish: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A case written in `cases.rs` but missing from the macro would silently never run.
    #[test]
    fn the_macro_runs_every_case() {
        let mut written: Vec<&str> = include_str!("cases.rs")
            .lines()
            .filter_map(|line| line.strip_prefix("pub async fn "))
            .map(|rest| rest.split(['<', '(']).next().unwrap_or_default())
            .collect();
        let mut listed = CASES.concat();
        written.sort_unstable();
        listed.sort_unstable();
        assert_eq!(written, listed);
    }

    #[test]
    fn expected_payload_is_what_serde_writes() {
        let order = OrderCreated {
            id: 7,
            customer: r#"Ada "Countess" \ żółw"#.to_owned(),
        };
        let encoded = topics().encode(&order).unwrap();
        assert_eq!(encoded.payload, Some(order.expected_payload()));
        assert_eq!(encoded.headers, order.expected_headers());
    }
}
