//! sqlx errors classified by SQLite result code at the boundary.

use txoutbox_core::Error;

/// Wraps a sqlx error into txoutbox's, deciding whether it is transient.
pub(crate) fn db_error(error: sqlx::Error) -> Error {
    let retryable = match &error {
        // SQLITE_BUSY (5) and SQLITE_LOCKED (6), with their extended codes: another connection
        // holds the lock longer than the busy timeout.
        sqlx::Error::Database(db) => db
            .code()
            .and_then(|code| code.parse::<i32>().ok())
            .is_some_and(|code| matches!(code & 0xff, 5 | 6)),
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::WorkerCrashed => true,
        _ => false,
    };
    Error::database(error, retryable)
}
