//! sqlx errors classified by MySQL / MariaDB error number at the boundary.

use txoutbox_core::Error;

/// Server error numbers after which the same statement may succeed later.
fn is_retryable_number(number: u16) -> bool {
    matches!(
        number,
        1040 // ER_CON_COUNT_ERROR: too many connections
            | 1053 // ER_SERVER_SHUTDOWN: shutdown in progress
            | 1158
            ..=1161 // ER_NET_READ_ERROR .. ER_NET_WRITE_INTERRUPTED: connection trouble
            | 1205 // ER_LOCK_WAIT_TIMEOUT
            | 1213 // ER_LOCK_DEADLOCK
            | 1927 // ER_CONNECTION_KILLED (MariaDB)
            | 2006 // CR_SERVER_GONE_ERROR
            | 2013 // CR_SERVER_LOST
            | 4031 // ER_CLIENT_INTERACTION_TIMEOUT (MySQL): disconnected for inactivity
    )
}

/// The server's error number, when `error` is one the server sent.
pub(crate) fn error_number(error: &sqlx::Error) -> Option<u16> {
    match error {
        sqlx::Error::Database(db) => db
            .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
            .map(|e| e.number()),
        _ => None,
    }
}

/// Wraps a sqlx error into txoutbox's, deciding whether it is transient.
pub(crate) fn db_error(error: sqlx::Error) -> Error {
    let retryable = match &error {
        sqlx::Error::Database(_) => error_number(&error).is_some_and(is_retryable_number),
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::WorkerCrashed | sqlx::Error::Tls(_) => {
            true
        }
        _ => false,
    };
    Error::database(error, retryable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlocks_lock_waits_and_connection_loss_are_retryable() {
        for number in [1213, 1205, 1040, 1053, 1158, 1161, 1927, 2006, 2013, 4031] {
            assert!(is_retryable_number(number), "{number}");
        }
        // duplicate key, no such table, syntax, check constraint (MariaDB, MySQL), data too long
        for number in [1062, 1146, 1064, 4025, 3819, 1406] {
            assert!(!is_retryable_number(number), "{number}");
        }
        assert!(db_error(sqlx::Error::PoolTimedOut).is_retryable());
        assert!(db_error(sqlx::Error::Io(std::io::ErrorKind::ConnectionReset.into())).is_retryable());
        assert!(!db_error(sqlx::Error::RowNotFound).is_retryable());
    }
}
