//! sqlx errors of any of the three databases, classified: may the same call succeed later?

use txoutbox_core::Error;

/// Wraps a sqlx error into txoutbox's, deciding whether it is transient.
#[cfg_attr(
    not(any(feature = "postgres", feature = "sqlite", feature = "mysql")),
    allow(dead_code, reason = "used by the stores, which are behind features")
)]
pub(crate) fn db_error(error: sqlx::Error) -> Error {
    let retryable = is_transient(&error);
    Error::database(error, retryable)
}

/// A lost or refused connection, a deadlock, a serialization failure, a lock wait that timed
/// out, a busy SQLite file: the database's passing state, not the statement's fault.
pub(crate) fn is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => {
            if is_sqlite(&**db) {
                return db
                    .code()
                    .and_then(|code| code.parse::<i64>().ok())
                    .is_some_and(is_transient_sqlite_code);
            }
            db.code().is_some_and(|code| is_transient_sqlstate(&code)) || is_mysql_lock_wait(&**db)
        }
        _ => false,
    }
}

/// SQLite's SQLITE_BUSY (5), SQLITE_LOCKED (6), SQLITE_IOERR (10) and SQLITE_FULL (13), with their
/// extended codes.
fn is_transient_sqlite_code(code: i64) -> bool {
    // And SQLITE_IOERR (10), SQLITE_FULL (13): the disk's passing state.
    matches!(code & 0xff, 5 | 6 | 10 | 13)
}

/// PostgreSQL's and MySQL's SQLSTATEs that are transient.
fn is_transient_sqlstate(code: &str) -> bool {
    code.starts_with("08") // connection exception
        || matches!(
            code,
            "40001" // serialization failure; MySQL's deadlock
                | "40P01" // deadlock detected
                | "55P03" // lock not available
                | "53300" // too many connections
                | "57P01" // admin shutdown
                | "57P02" // crash shutdown
                | "57P03" // cannot connect now
                | "57014" // query canceled (statement_timeout)
                | "25006" // read-only transaction (a primary that just failed over)
                | "53100" // disk full
                | "53200" // out of memory
        )
}

#[cfg(feature = "sqlite")]
fn is_sqlite(db: &dyn sqlx::error::DatabaseError) -> bool {
    db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some()
}

#[cfg(not(feature = "sqlite"))]
fn is_sqlite(_db: &dyn sqlx::error::DatabaseError) -> bool {
    false
}

#[cfg(feature = "mysql")]
fn is_mysql_lock_wait(db: &dyn sqlx::error::DatabaseError) -> bool {
    // ER_LOCK_WAIT_TIMEOUT, ER_OPTION_PREVENTS_STATEMENT (--read-only), ER_READ_ONLY_MODE,
    // ER_QUERY_TIMEOUT (their SQLSTATE is the generic HY000).
    db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
        .is_some_and(|e| matches!(e.number(), 1205 | 1290 | 1836 | 3024))
}

#[cfg(not(feature = "mysql"))]
fn is_mysql_lock_wait(_db: &dyn sqlx::error::DatabaseError) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_codes() {
        for code in ["08006", "40001", "40P01", "57P01", "57014", "25006"] {
            assert!(is_transient_sqlstate(code), "{code}");
        }
        for code in ["23505", "42P01", "HY000"] {
            assert!(!is_transient_sqlstate(code), "{code}");
        }
        for code in [5, 517, 6, 262, 10, 13] {
            assert!(is_transient_sqlite_code(code), "{code}");
        }
        for code in [19, 2067, 1] {
            assert!(!is_transient_sqlite_code(code), "{code}");
        }
        assert!(db_error(sqlx::Error::PoolTimedOut).is_retryable());
        assert!(!db_error(sqlx::Error::RowNotFound).is_retryable());
    }
}
