//! The cases can fail: each one runs against the SQLite harness with one injected defect (a
//! store or harness that misbehaves in one way) and must fail. A case that passed against its
//! defect would be asserting too little.

use chrono::{DateTime, Utc};
use txoutbox_core::{
    Backlog, Completion, DEFAULT_TABLE, Error, Failure, NewMessage, OutboxMessage, Result, Store, TableName,
    Topics,
};
use txoutbox_sqlite::SqliteStore;
use txoutbox_store_tests::sqlite::SqliteHarness;
use txoutbox_store_tests::{Harness, HeldTransaction, RowState, StoreHarness, TxEnd, cases};
use uuid::Uuid;

// The defects, one per mutant.
const CHECK_ALWAYS_OK: u8 = 1;
const FETCH_IGNORES_LIMIT: u8 = 2;
const FETCH_REVERSED: u8 = 3;
const FETCH_DROPS_HEADERS: u8 = 4;
const EMPTY_PAYLOAD_AS_TOMBSTONE: u8 = 5;
const BUCKET_FROM_ID: u8 = 6;
const MALFORMED_IGNORED: u8 = 7;
const CREATED_AT_EPOCH: u8 = 8;
const IDS_ARE_POSITIONS: u8 = 9;
const DELETE_IS_NOOP: u8 = 10;
const MARK_PUBLISHED_DELETES: u8 = 11;
const EMPTY_BATCH_FAILS: u8 = 12;
const NEVER_DEAD: u8 = 13;
const RETRY_TIME_IN_SECONDS: u8 = 14;
const OLDEST_IS_NEWEST: u8 = 15;
const DEAD_NOT_COUNTED: u8 = 16;
const ROLLBACK_COMMITS: u8 = 17;
const PUBLISH_ERRORS_SWALLOWED: u8 = 18;
const TABLE_NAME_NOT_VALIDATED: u8 = 19;
const FETCH_FAILS_ON_MALFORMED: u8 = 20;
const HEADERS_SORTED: u8 = 21;
const DEAD_KEYS_REPEATED: u8 = 22;
const DEAD_KEYS_OF_EVERY_ROW: u8 = 23;
const FETCH_IGNORES_BYTES: u8 = 24;
const LARGE_ROWS_READ_WHOLE: u8 = 25;
const FETCH_AFTER_SKIPS_THE_NEXT_ID: u8 = 26;
const PROGRESS_KEY_FOLDED: u8 = 27;
const PROGRESS_NOT_KEPT: u8 = 28;
const COMPLETION_WIDENED: u8 = 29;

/// The SQLite store with defect `D`.
struct MutantStore<const D: u8>(SqliteStore);

impl<const D: u8> Store for MutantStore<D> {
    async fn check(&self) -> Result<()> {
        match D {
            CHECK_ALWAYS_OK => Ok(()),
            _ => self.0.check().await,
        }
    }

    async fn fetch_pending(&self, limit: txoutbox_core::ReadLimit) -> Result<Vec<OutboxMessage>> {
        let limit = match D {
            FETCH_IGNORES_LIMIT => txoutbox_core::ReadLimit::rows(usize::MAX),
            FETCH_IGNORES_BYTES => txoutbox_core::ReadLimit {
                bytes: usize::MAX,
                ..limit
            },
            LARGE_ROWS_READ_WHOLE => txoutbox_core::ReadLimit {
                message_bytes: usize::MAX,
                ..limit
            },
            _ => limit,
        };
        let mut rows = self.0.fetch_pending(limit).await?;
        if D == FETCH_REVERSED {
            rows.reverse();
        }
        if D == FETCH_FAILS_ON_MALFORMED && rows.iter().any(|m| m.malformed.is_some()) {
            return Err(Error::Config("a row cannot be decoded".into()));
        }
        for (i, row) in rows.iter_mut().enumerate() {
            match D {
                FETCH_DROPS_HEADERS => row.headers = Default::default(),
                HEADERS_SORTED => {
                    let mut sorted = row.headers.to_vec();
                    sorted.sort();
                    row.headers = sorted.into();
                }
                EMPTY_PAYLOAD_AS_TOMBSTONE if row.payload.as_deref() == Some(&[]) => row.payload = None,
                BUCKET_FROM_ID => row.bucket = (row.id % 64) as i32,
                MALFORMED_IGNORED => row.malformed = None,
                CREATED_AT_EPOCH => row.created_at = DateTime::UNIX_EPOCH,
                IDS_ARE_POSITIONS => row.id = i as i64 + 1,
                _ => {}
            }
        }
        Ok(rows)
    }

    async fn fetch_after(&self, after: i64, limit: txoutbox_core::ReadLimit) -> Result<Vec<OutboxMessage>> {
        match D {
            FETCH_AFTER_SKIPS_THE_NEXT_ID => self.0.fetch_after(after.saturating_add(1), limit).await,
            FETCH_IGNORES_BYTES => {
                let limit = txoutbox_core::ReadLimit {
                    bytes: usize::MAX,
                    ..limit
                };
                self.0.fetch_after(after, limit).await
            }
            _ => self.0.fetch_after(after, limit).await,
        }
    }

    async fn complete(&self, ids: &[i64], completion: Completion) -> Result<()> {
        match (D, completion) {
            (DELETE_IS_NOOP, Completion::Delete) => Ok(()),
            (MARK_PUBLISHED_DELETES, _) => self.0.complete(ids, Completion::Delete).await,
            (EMPTY_BATCH_FAILS, _) if ids.is_empty() => Err(Error::Config("no ids".into())),
            // A range one id too wide at each end.
            (COMPLETION_WIDENED, _) => {
                let (low, high) = (ids.iter().min().copied(), ids.iter().max().copied());
                let wide: Vec<i64> = ids
                    .iter()
                    .copied()
                    .chain(low.map(|id| id - 1))
                    .chain(high.map(|id| id + 1))
                    .collect();
                self.0.complete(&wide, completion).await
            }
            _ => self.0.complete(ids, completion).await,
        }
    }

    async fn record_failures(&self, failures: &[Failure]) -> Result<()> {
        let mut failures = failures.to_vec();
        for f in &mut failures {
            match D {
                NEVER_DEAD => f.next_attempt_at = f.next_attempt_at.or(Some(Utc::now())),
                RETRY_TIME_IN_SECONDS => {
                    f.next_attempt_at = f
                        .next_attempt_at
                        .and_then(|at| DateTime::from_timestamp(at.timestamp(), 0));
                }
                _ => {}
            }
        }
        if D == EMPTY_BATCH_FAILS && failures.is_empty() {
            return Err(Error::Config("no failures".into()));
        }
        self.0.record_failures(&failures).await
    }

    async fn backlog(&self) -> Result<Backlog> {
        let mut backlog = self.0.backlog().await?;
        match D {
            OLDEST_IS_NEWEST => {
                backlog.oldest_pending = self
                    .0
                    .fetch_pending(txoutbox_core::ReadLimit::rows(usize::MAX))
                    .await?
                    .last()
                    .map(|m| m.created_at);
            }
            DEAD_NOT_COUNTED => backlog.dead = 0,
            _ => {}
        }
        Ok(backlog)
    }

    async fn dead_keys(&self) -> Result<Vec<(String, Vec<u8>)>> {
        match D {
            DEAD_KEYS_REPEATED => {
                let keys = self.0.dead_keys().await?;
                Ok(keys.iter().chain(&keys).cloned().collect())
            }
            DEAD_KEYS_OF_EVERY_ROW => {
                let mut keys = self.0.dead_keys().await?;
                for row in self
                    .0
                    .fetch_pending(txoutbox_core::ReadLimit::rows(usize::MAX))
                    .await?
                {
                    if let Some(key) = row.key {
                        keys.push((row.topic.to_string(), key.to_vec()));
                    }
                }
                Ok(keys)
            }
            _ => self.0.dead_keys().await,
        }
    }

    async fn progress_kept(&self, key: &str) -> Result<Option<bool>> {
        match D {
            PROGRESS_KEY_FOLDED => self.0.progress_kept(key.trim().to_lowercase().as_str()).await,
            _ => self.0.progress_kept(key).await,
        }
    }

    async fn keep_progress(&self, key: &str) -> Result<()> {
        match D {
            PROGRESS_KEY_FOLDED => self.0.keep_progress(key.trim().to_lowercase().as_str()).await,
            PROGRESS_NOT_KEPT => Ok(()),
            _ => self.0.keep_progress(key).await,
        }
    }
}

/// The SQLite harness with defect `D`.
struct Mutant<const D: u8>(SqliteHarness);

impl<const D: u8> Mutant<D> {
    fn end(end: TxEnd) -> TxEnd {
        if D == ROLLBACK_COMMITS { TxEnd::Commit } else { end }
    }

    fn swallow<T>(result: Result<T>, placeholder: T) -> Result<T> {
        match result {
            Err(_) if D == PUBLISH_ERRORS_SWALLOWED => Ok(placeholder),
            other => other,
        }
    }
}

impl<const D: u8> StoreHarness for Mutant<D> {
    type Store = MutantStore<D>;

    async fn ready(topics: Topics) -> Self {
        txoutbox_store_tests::migrated_database(topics).await
    }

    fn store(&self) -> MutantStore<D> {
        MutantStore(self.0.store())
    }

    async fn publish<T: Sync + 'static>(&self, message: &T, end: TxEnd) -> Result<Uuid> {
        Self::swallow(self.0.publish(message, Self::end(end)).await, Uuid::nil())
    }

    async fn publish_all<T: Sync + 'static>(&self, messages: &[T], end: TxEnd) -> Result<Vec<Uuid>> {
        Self::swallow(self.0.publish_all(messages, Self::end(end)).await, Vec::new())
    }

    async fn publish_message(&self, message: NewMessage, end: TxEnd) -> Result<Uuid> {
        Self::swallow(self.0.publish_message(message, Self::end(end)).await, Uuid::nil())
    }

    async fn publish_messages(&self, messages: Vec<NewMessage>, end: TxEnd) -> Result<Vec<Uuid>> {
        Self::swallow(
            self.0.publish_messages(messages, Self::end(end)).await,
            Vec::new(),
        )
    }

    async fn publish_held(&self, messages: Vec<NewMessage>) -> Option<HeldTransaction> {
        self.0.publish_held(messages).await
    }

    async fn row(&self, id: i64) -> Option<RowState> {
        self.0.row(id).await
    }

    async fn row_count(&self) -> i64 {
        self.0.row_count().await
    }

    async fn backdate(&self, id: i64, created_at: DateTime<Utc>) {
        self.0.backdate(id, created_at).await
    }

    async fn teardown(self) {
        self.0.teardown().await
    }
}

impl<const D: u8> Harness for Mutant<D> {
    const BUCKETS: i32 = SqliteHarness::BUCKETS;

    async fn setup_with_table(topics: Topics, table: &str) -> Result<Self> {
        let table = match TableName::new(table) {
            Err(_) if D == TABLE_NAME_NOT_VALIDATED => DEFAULT_TABLE,
            _ => table,
        };
        SqliteHarness::setup_with_table(topics, table).await.map(Self)
    }

    fn table(&self) -> &TableName {
        self.0.table()
    }

    async fn migrate(&self) -> Result<()> {
        self.0.migrate().await
    }

    async fn insert_minimal(&self, topic: &str, payload: &[u8]) -> i64 {
        self.0.insert_minimal(topic, payload).await
    }

    async fn insert_foreign(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        headers_json: Option<&str>,
    ) -> i64 {
        self.0.insert_foreign(topic, key, payload, headers_json).await
    }

    async fn try_insert_literals(
        &self,
        topic: &str,
        key_sql: &'static str,
        payload_sql: &'static str,
    ) -> Option<i64> {
        self.0.try_insert_literals(topic, key_sql, payload_sql).await
    }

    async fn schema_versions(&self) -> Vec<i32> {
        self.0.schema_versions().await
    }

    async fn record_schema_version(&self, version: i32) {
        self.0.record_schema_version(version).await
    }
}

/// One test per (case, defect): the case must fail (panic) against the mutant.
macro_rules! must_catch {
    ($($case:ident: $($defect:ident),+;)+) => {
        $(
            #[tokio::test]
            async fn $case() {
                txoutbox_testing::init_tracing();
                $(
                    let outcome = tokio::spawn(cases::$case::<Mutant<$defect>>()).await;
                    assert!(
                        outcome.is_err_and(|e| e.is_panic()),
                        "`{}` passes against a store with the defect {}",
                        stringify!($case),
                        stringify!($defect)
                    );
                )+
            }
        )+
    };
}

must_catch! {
    migrate_is_idempotent_and_check_says_to_run_it: CHECK_ALWAYS_OK;
    newer_schema_version_is_refused: CHECK_ALWAYS_OK;
    published_message_is_fetched_with_every_field: FETCH_DROPS_HEADERS, CREATED_AT_EPOCH, HEADERS_SORTED;
    rolled_back_publish_leaves_nothing: ROLLBACK_COMMITS;
    publish_all_of_a_thousand_keeps_the_given_order: FETCH_REVERSED;
    encoded_messages_round_trip_bytes_and_tombstones: EMPTY_PAYLOAD_AS_TOMBSTONE, FETCH_DROPS_HEADERS, HEADERS_SORTED;
    fetch_pending_respects_the_limit_in_id_order: FETCH_IGNORES_LIMIT, FETCH_REVERSED;
    complete_delete_removes_rows_and_is_idempotent: DELETE_IS_NOOP;
    complete_mark_published_keeps_rows_out_of_the_backlog: MARK_PUBLISHED_DELETES;
    completing_a_run_of_ids_leaves_the_rows_around_it: COMPLETION_WIDENED, MARK_PUBLISHED_DELETES;
    failure_with_retry_time_keeps_the_row_pending: RETRY_TIME_IN_SECONDS;
    failure_without_retry_time_dead_letters_the_row: NEVER_DEAD, DEAD_NOT_COUNTED;
    dead_keys_lists_each_dead_key_once: DEAD_KEYS_REPEATED, DEAD_KEYS_OF_EVERY_ROW;
    backlog_counts_pending_and_dead_and_finds_the_oldest: OLDEST_IS_NEWEST, DEAD_NOT_COUNTED;
    foreign_row_with_topic_and_payload_gets_defaults: CREATED_AT_EPOCH;
    foreign_row_with_key_and_headers_is_read_as_given: FETCH_DROPS_HEADERS, HEADERS_SORTED;
    malformed_foreign_headers_flag_the_row_only: MALFORMED_IGNORED, FETCH_FAILS_ON_MALFORMED;
    unknown_message_type_is_a_typed_error_and_writes_nothing: PUBLISH_ERRORS_SWALLOWED;
    invalid_names_are_typed_errors: TABLE_NAME_NOT_VALIDATED, PUBLISH_ERRORS_SWALLOWED;
    custom_table_name_is_used_by_every_statement: CHECK_ALWAYS_OK, DEAD_NOT_COUNTED;
    equal_keys_share_a_bucket_within_range: BUCKET_FROM_ID;
    ids_are_never_reused_after_deletes: IDS_ARE_POSITIONS;
    empty_batches_are_no_ops: EMPTY_BATCH_FAILS;
    header_value_with_a_nul_character_round_trips: FETCH_DROPS_HEADERS;
    foreign_row_of_another_type_never_blocks_fetching: FETCH_FAILS_ON_MALFORMED, MALFORMED_IGNORED;
    reads_keep_to_their_byte_budget_and_larger_rows_come_back_empty: FETCH_IGNORES_BYTES, LARGE_ROWS_READ_WHOLE, MALFORMED_IGNORED;
    late_commits_below_the_cursor_are_read_after_it: FETCH_AFTER_SKIPS_THE_NEXT_ID;
    a_read_cut_above_the_cursor_returns_its_late_rows_once: FETCH_AFTER_SKIPS_THE_NEXT_ID, FETCH_IGNORES_BYTES;
    progress_keys_are_remembered_exactly: PROGRESS_KEY_FOLDED, PROGRESS_NOT_KEPT;
}
/// Every case is checked against a defect above, but for known failures of the SQLite store.
#[test]
fn every_case_has_a_mutant() {
    let source = include_str!("mutants.rs");
    for &case in &txoutbox_store_tests::CASES.concat() {
        let mutated = source.contains(&format!("    {case}: "));
        let known = SqliteHarness::KNOWN_FAILURES
            .iter()
            .any(|(known, _)| *known == case);
        assert!(mutated || known, "no mutant shows that `{case}` can fail");
    }
}
