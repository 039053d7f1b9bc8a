//! sqlx errors classified by SQLSTATE at the boundary (as in `txoutbox-postgres`).

use txoutbox_core::Error;

/// SQLSTATEs (or classes) after which the same statement may succeed later.
fn is_retryable_sqlstate(code: &str) -> bool {
    code.starts_with("08")
        || matches!(
            code,
            "40001" | "40P01" | "55P03" | "53300" | "57P01" | "57P02" | "57P03" | "55006"
        )
}

/// Wraps a sqlx error into txoutbox's, deciding whether it is transient.
pub(crate) fn db_error(error: sqlx::Error) -> Error {
    let retryable = match &error {
        sqlx::Error::Database(db) => db.code().is_some_and(|code| is_retryable_sqlstate(&code)),
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::WorkerCrashed | sqlx::Error::Tls(_) => {
            true
        }
        _ => false,
    };
    Error::database(error, retryable)
}
