//! sqlx errors classified by SQLSTATE at the boundary.

use txoutbox_core::Error;

/// SQLSTATEs (or classes) after which the same statement may succeed later.
fn is_retryable_sqlstate(code: &str) -> bool {
    code.starts_with("08") // connection exception
        || matches!(
            code,
            "40001" // serialization_failure
                | "40P01" // deadlock_detected
                | "55P03" // lock_not_available
                | "53300" // too_many_connections
                | "57P01" // admin_shutdown
                | "57P02" // crash_shutdown
                | "57P03" // cannot_connect_now
        )
}

/// Wraps a sqlx error into txoutbox's, deciding whether it is transient.
pub(crate) fn db_error(error: sqlx::Error) -> Error {
    let retryable = match &error {
        sqlx::Error::Database(db) => db.code().is_some_and(|code| is_retryable_sqlstate(&code)),
        // `Protocol`: bytes that are not PostgreSQL's protocol, e.g. from a broken connection or
        // a proxy in between (seen through a fault-injecting proxy as the answer to the TLS
        // request): a new connection may well succeed.
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_) => true,
        _ => false,
    };
    Error::database(error, retryable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_loss_and_deadlocks_are_retryable() {
        for code in ["08006", "08001", "40P01", "40001", "57P01"] {
            assert!(is_retryable_sqlstate(code), "{code}");
        }
        for code in ["23505", "42P01", "22P02"] {
            assert!(!is_retryable_sqlstate(code), "{code}");
        }
        assert!(db_error(sqlx::Error::PoolTimedOut).is_retryable());
        assert!(
            db_error(sqlx::Error::Protocol(
                "unexpected response from SSLRequest".into()
            ))
            .is_retryable()
        );
        assert!(!db_error(sqlx::Error::RowNotFound).is_retryable());
    }
}
