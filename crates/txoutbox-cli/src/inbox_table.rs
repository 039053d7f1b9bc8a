//! A consumer's inbox table (txoutbox-inbox's table contract, docs/inbox.md) in plain SQL: its
//! parked records listed, marked for replay and purged, on PostgreSQL, SQLite and MySQL/MariaDB.
//!
//! Every value is a bound parameter; the table's name is a validated [`TableName`], quoted.

use chrono::{DateTime, NaiveDateTime, Utc};
use sqlx::{AssertSqlSafe, Row};
use txoutbox_axum::{BoxFuture, InboxConsoleStore};
use txoutbox_core::TableName;

use crate::database::Database;
use crate::error::CliError;

/// Parked records: dead (the handler kept failing) or marked for replay by an operator.
const PARKED: &str = "status IN ('dead', 'replay')";

/// Message ids per statement: far below every database's limit of bound parameters.
const IDS_PER_STATEMENT: usize = 500;

/// One parked record, without its key, payload or header values (the console's type).
pub(crate) use txoutbox_axum::ParkedInboxRecord as ParkedRecord;

/// Which parked records of a consumer an action applies to.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Selection<'a> {
    /// Every one.
    All,
    /// These message ids.
    Ids(&'a [String]),
    /// Those parked before this time.
    ParkedBefore(DateTime<Utc>),
}

/// An inbox table that exists, in a connected database.
#[derive(Debug)]
pub(crate) struct InboxTable {
    database: Database,
}

/// A statement's bound value.
#[derive(Debug, Clone, Copy)]
enum Arg<'a> {
    /// A text value.
    Text(&'a str),
    /// A list of message ids: one array on PostgreSQL, one parameter each elsewhere.
    TextList(&'a [String]),
    /// A time: a timestamp, on SQLite the text the inbox writes.
    Time(DateTime<Utc>),
    /// A row count.
    Count(i64),
}

/// SQL text with its bound values, placeholders in the database's style.
#[derive(Debug)]
struct Statement<'a> {
    /// `$1` placeholders and arrays (PostgreSQL), or `?` ones (SQLite, MySQL).
    postgres: bool,
    sql: String,
    args: Vec<Arg<'a>>,
}

impl<'a> Statement<'a> {
    fn new(database: &Database, sql: String) -> Self {
        Self {
            postgres: matches!(database, Database::Postgres(..)),
            sql,
            args: Vec::new(),
        }
    }

    /// Appends `before`, then `arg`'s placeholder(s).
    fn push(&mut self, before: &str, arg: Arg<'a>) -> &mut Self {
        self.sql.push_str(before);
        self.args.push(arg);
        let placeholder = match (self.postgres, arg) {
            (true, Arg::TextList(_)) => format!("= ANY(${})", self.args.len()),
            (true, _) => format!("${}", self.args.len()),
            (false, Arg::TextList(ids)) => format!("IN ({})", vec!["?"; ids.len()].join(", ")),
            (false, _) => "?".to_owned(),
        };
        self.sql.push_str(&placeholder);
        self
    }

    /// Appends text without a value.
    fn text(&mut self, text: &str) -> &mut Self {
        self.sql.push_str(text);
        self
    }
}

/// A [`ParkedRecord`] from a row of the parked query: `$int` is how the database returns its
/// INTEGER columns, `$received_at` the parking time.
macro_rules! parked_record {
    ($row:expr, $int:ty, $received_at:expr) => {{
        let row = $row;
        let headers: Option<String> = row.try_get("headers")?;
        ParkedRecord {
            consumer: row.try_get("consumer")?,
            message_id: row.try_get("message_id")?,
            status: row.try_get("status")?,
            topic: row.try_get("topic")?,
            partition: i64::from(row.try_get::<$int, _>("kafka_partition")?),
            offset: row.try_get("kafka_offset")?,
            attempts: i64::from(row.try_get::<$int, _>("attempts")?),
            received_at: $received_at,
            last_error: row.try_get("last_error")?,
            key_bytes: row.try_get("key_bytes")?,
            payload_bytes: row.try_get("payload_bytes")?,
            header_names: headers.as_deref().map(header_names).unwrap_or_default(),
        }
    }};
}

/// `sqlx::query` of a [`Statement`] with its values bound: `|q, ids| …` binds a list of ids to
/// `q`, `|at| …` is the value bound for a time.
macro_rules! bound {
    ($statement:expr, |$q:ident, $ids:ident| $list:expr, |$at:ident| $time:expr) => {{
        let statement = $statement;
        let mut $q = sqlx::query(AssertSqlSafe(statement.sql));
        for arg in statement.args {
            $q = match arg {
                Arg::Text(text) => $q.bind(text),
                Arg::TextList($ids) => $list,
                Arg::Time($at) => $q.bind($time),
                Arg::Count(n) => $q.bind(n),
            };
        }
        $q
    }};
}

impl InboxTable {
    /// The inbox table `database` names, or an error saying how to create it when it is missing.
    pub(crate) async fn open(database: Database) -> Result<Self, CliError> {
        let inbox = Self { database };
        if !inbox.exists().await? {
            return Err(CliError::runtime(format!(
                "no inbox table {}: run the consumer's migrate() first (PgInbox, SqliteInbox or \
                 MySqlInbox), or name its table with --inbox-table",
                inbox.table()
            )));
        }
        Ok(inbox)
    }

    /// The inbox table `database` names, not looked for: the console's view, which may start
    /// before the consumer created its table (each request then says it is missing).
    pub(crate) fn unchecked(database: Database) -> Self {
        Self { database }
    }

    fn table(&self) -> &TableName {
        self.database.table()
    }

    /// The table, quoted for its database.
    fn quoted(&self) -> String {
        let table = self.table();
        match &self.database {
            Database::Postgres(..) | Database::Sqlite(..) => table.quoted(),
            // Backticks: MySQL reads `"` as a string quote unless ANSI_QUOTES is on. The parts
            // are validated identifiers (letters, digits, `_`).
            Database::MySql(..) => match table.schema() {
                Some(schema) => format!("`{schema}`.`{}`", table.table()),
                None => format!("`{}`", table.table()),
            },
        }
    }

    fn failed(&self, e: sqlx::Error) -> CliError {
        CliError::runtime(format!("on the inbox table {}: {e}", self.table()))
    }

    async fn exists(&self) -> Result<bool, CliError> {
        let table = self.table();
        let found: i64 = match &self.database {
            Database::Postgres(pool, _) => {
                sqlx::query_scalar(
                    "SELECT CAST(CASE WHEN to_regclass($1) IS NULL THEN 0 ELSE 1 END AS BIGINT)",
                )
                .bind(table.quoted())
                .fetch_one(pool)
                .await
            }
            Database::Sqlite(pool, _) => {
                let master = match table.schema() {
                    Some(schema) => format!("\"{schema}\".sqlite_master"),
                    None => "sqlite_master".to_owned(),
                };
                sqlx::query_scalar(AssertSqlSafe(format!(
                    "SELECT count(*) FROM {master} WHERE type = 'table' AND name = ?"
                )))
                .bind(table.table())
                .fetch_one(pool)
                .await
            }
            Database::MySql(pool, _) => {
                sqlx::query_scalar(
                    "SELECT CAST(count(*) AS SIGNED) FROM information_schema.tables \
                     WHERE table_schema = coalesce(?, DATABASE()) AND table_name = ?",
                )
                .bind(table.schema())
                .bind(table.table())
                .fetch_one(pool)
                .await
            }
        }
        .map_err(|e| self.failed(e))?;
        Ok(found > 0)
    }

    /// Parked records, of `consumer` or of every consumer, oldest first per consumer, at most
    /// `limit`.
    pub(crate) async fn parked(
        &self,
        consumer: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ParkedRecord>, CliError> {
        let (key_bytes, payload_bytes) = match &self.database {
            Database::Postgres(..) => (
                "CAST(octet_length(record_key) AS BIGINT)",
                "CAST(octet_length(payload) AS BIGINT)",
            ),
            Database::Sqlite(..) => ("length(record_key)", "length(payload)"),
            Database::MySql(..) => (
                "CAST(length(record_key) AS SIGNED)",
                "CAST(length(payload) AS SIGNED)",
            ),
        };
        let mut statement = Statement::new(
            &self.database,
            format!(
                "SELECT consumer, message_id, status, topic, kafka_partition, kafka_offset, attempts, \
                 received_at, last_error, {key_bytes} AS key_bytes, {payload_bytes} AS payload_bytes, \
                 headers FROM {} WHERE {PARKED}",
                self.quoted()
            ),
        );
        if let Some(consumer) = consumer {
            statement.push(" AND consumer = ", Arg::Text(consumer));
        }
        statement
            .text(" ORDER BY consumer, received_at, message_id")
            .push(" LIMIT ", Arg::Count(i64::try_from(limit).unwrap_or(i64::MAX)));
        let records = match &self.database {
            Database::Postgres(pool, _) => {
                let query = bound!(statement, |q, ids| q.bind(ids), |at| at);
                let rows = query.fetch_all(pool).await.map_err(|e| self.failed(e))?;
                rows.iter()
                    .map(|row| -> Result<ParkedRecord, sqlx::Error> {
                        Ok(parked_record!(row, i32, Some(row.try_get("received_at")?)))
                    })
                    .collect::<Result<Vec<_>, sqlx::Error>>()
            }
            Database::Sqlite(pool, _) => {
                let query = bound!(
                    statement,
                    |q, ids| ids.iter().fold(q, |q, id| q.bind(id.as_str())),
                    |at| sqlite_time(at)
                );
                let rows = query.fetch_all(pool).await.map_err(|e| self.failed(e))?;
                rows.iter()
                    .map(|row| -> Result<ParkedRecord, sqlx::Error> {
                        let received_at: Option<String> = row.try_get("received_at")?;
                        Ok(parked_record!(
                            row,
                            i64,
                            received_at.as_deref().and_then(read_sqlite_time)
                        ))
                    })
                    .collect::<Result<Vec<_>, sqlx::Error>>()
            }
            Database::MySql(pool, _) => {
                let query = bound!(
                    statement,
                    |q, ids| ids.iter().fold(q, |q, id| q.bind(id.as_str())),
                    |at| at
                );
                let rows = query.fetch_all(pool).await.map_err(|e| self.failed(e))?;
                rows.iter()
                    .map(|row| -> Result<ParkedRecord, sqlx::Error> {
                        Ok(parked_record!(row, i32, Some(row.try_get("received_at")?)))
                    })
                    .collect::<Result<Vec<_>, sqlx::Error>>()
            }
        };
        records.map_err(|e| self.failed(e))
    }

    /// Marks `consumer`'s dead records (all, or those of `ids`) for replay; returns how many.
    pub(crate) async fn replay(&self, consumer: &str, ids: Option<&[String]>) -> Result<u64, CliError> {
        let base = format!(
            "UPDATE {} SET status = 'replay' WHERE status = 'dead'",
            self.quoted()
        );
        match ids {
            None => self.run_with(&base, consumer, None).await,
            Some(ids) => self.run_for_ids(&base, consumer, ids).await,
        }
    }

    /// Deletes `consumer`'s parked records (dead or marked for replay) that `which` selects;
    /// returns how many.
    pub(crate) async fn purge(&self, consumer: &str, which: Selection<'_>) -> Result<u64, CliError> {
        let base = format!("DELETE FROM {} WHERE {PARKED}", self.quoted());
        match which {
            Selection::All => self.run_with(&base, consumer, None).await,
            Selection::ParkedBefore(at) => {
                // No row is older than 1970 (the inbox was written long after): `--older-than 1000y`
                // matches nothing instead of failing.
                let at = at.max(DateTime::UNIX_EPOCH);
                self.run_with(&base, consumer, Some(Selection::ParkedBefore(at)))
                    .await
            }
            Selection::Ids(ids) => self.run_for_ids(&base, consumer, ids).await,
        }
    }

    /// Runs `base` for `ids`, at most [`IDS_PER_STATEMENT`] per statement; returns the rows changed.
    async fn run_for_ids(&self, base: &str, consumer: &str, ids: &[String]) -> Result<u64, CliError> {
        let mut total = 0;
        for chunk in ids.chunks(IDS_PER_STATEMENT) {
            total += self.run_with(base, consumer, Some(Selection::Ids(chunk))).await?;
        }
        Ok(total)
    }

    /// Runs `base` (an UPDATE or DELETE ending in a WHERE clause) narrowed to `consumer` and
    /// `which`; returns the rows it changed.
    async fn run_with(
        &self,
        base: &str,
        consumer: &str,
        which: Option<Selection<'_>>,
    ) -> Result<u64, CliError> {
        let mut statement = Statement::new(&self.database, base.to_owned());
        statement.push(" AND consumer = ", Arg::Text(consumer));
        match which {
            None | Some(Selection::All) => {}
            Some(Selection::Ids(ids)) => {
                statement.push(" AND message_id ", Arg::TextList(ids));
            }
            Some(Selection::ParkedBefore(at)) => {
                statement.push(" AND received_at < ", Arg::Time(at));
            }
        }
        let done = match &self.database {
            Database::Postgres(pool, _) => {
                let query = bound!(statement, |q, ids| q.bind(ids), |at| at);
                query.execute(pool).await.map(|done| done.rows_affected())
            }
            Database::Sqlite(pool, _) => {
                let query = bound!(
                    statement,
                    |q, ids| ids.iter().fold(q, |q, id| q.bind(id.as_str())),
                    |at| sqlite_time(at)
                );
                query.execute(pool).await.map(|done| done.rows_affected())
            }
            Database::MySql(pool, _) => {
                let query = bound!(
                    statement,
                    |q, ids| ids.iter().fold(q, |q, id| q.bind(id.as_str())),
                    |at| at
                );
                query.execute(pool).await.map(|done| done.rows_affected())
            }
        };
        done.map_err(|e| self.failed(e))
    }
}

impl InboxTable {
    /// A result for the console: an error as a database error, saying so when the table is
    /// missing (the consumer has not started yet, or the console names another table).
    async fn for_console<T>(&self, result: Result<T, CliError>) -> txoutbox_core::Result<T> {
        let error = match result {
            Ok(value) => return Ok(value),
            Err(_) if matches!(self.exists().await, Ok(false)) => CliError::runtime(format!(
                "no inbox table {}: the consumer creates it when it starts (its inbox's migrate()); \
                 check --ui-inbox-table",
                self.table()
            )),
            Err(e) => e,
        };
        Err(txoutbox_core::Error::Database {
            source: Box::new(error),
            retryable: false,
        })
    }
}

impl InboxConsoleStore for InboxTable {
    fn table(&self) -> String {
        InboxTable::table(self).to_string()
    }

    fn parked<'a>(
        &'a self,
        consumer: Option<&'a str>,
        limit: usize,
    ) -> BoxFuture<'a, txoutbox_core::Result<Vec<ParkedRecord>>> {
        Box::pin(async move { self.for_console(self.parked(consumer, limit).await).await })
    }

    fn replay<'a>(
        &'a self,
        consumer: &'a str,
        ids: Option<&'a [String]>,
    ) -> BoxFuture<'a, txoutbox_core::Result<u64>> {
        Box::pin(async move { self.for_console(self.replay(consumer, ids).await).await })
    }

    fn purge<'a>(
        &'a self,
        consumer: &'a str,
        ids: Option<&'a [String]>,
    ) -> BoxFuture<'a, txoutbox_core::Result<u64>> {
        let which = ids.map_or(Selection::All, Selection::Ids);
        Box::pin(async move { self.for_console(self.purge(consumer, which).await).await })
    }
}

/// The names of the `headers` column's `[name, value]` pairs (none when it is not that JSON).
fn header_names(json: &str) -> Vec<String> {
    let Ok(serde_json::Value::Array(pairs)) = serde_json::from_str::<serde_json::Value>(json) else {
        return Vec::new();
    };
    pairs
        .iter()
        .filter_map(|pair| pair.get(0)?.as_str().map(str::to_owned))
        .collect()
}

/// A time as the SQLite inbox writes it: `strftime('%Y-%m-%dT%H:%M:%fZ')`, which sorts as text.
fn sqlite_time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// A SQLite time back: RFC 3339, or `YYYY-MM-DD HH:MM:SS[.fff]` in UTC.
fn read_sqlite_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .map(|at| at.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
                .ok()
                .map(|at| at.and_utc())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_times_round_trip_and_sort_as_text() {
        let at = read_sqlite_time("2026-12-06T22:56:17.123Z").unwrap();
        assert_eq!(sqlite_time(at), "2026-12-06T22:56:17.123Z");
        assert_eq!(
            read_sqlite_time("2026-12-06 22:56:17")
                .map(sqlite_time)
                .as_deref(),
            Some("2026-12-06T22:56:17.000Z")
        );
        assert!(read_sqlite_time("yesterday").is_none());
        assert!(sqlite_time(DateTime::UNIX_EPOCH).as_str() < "2026-01-01T00:00:00.000Z");
    }

    #[test]
    fn header_names_come_from_the_pairs() {
        assert_eq!(header_names(r#"[["a","1"],["b",null]]"#), ["a", "b"]);
        assert!(header_names("{").is_empty());
        assert!(header_names(r#"{"a":"1"}"#).is_empty());
    }
}
