//! The server version check: which MySQL and MariaDB releases the store runs on.

use sqlx::MySqlConnection;
use txoutbox_core::{Error, Result};

use crate::error::db_error;

/// The oldest MySQL this store supports: expression defaults (8.0.13) and enforced `CHECK`
/// constraints (8.0.16).
const MYSQL_MIN: (u32, u32, u32) = (8, 0, 16);

/// The oldest MariaDB this store supports (10.6, the oldest long-term release still maintained).
const MARIADB_MIN: (u32, u32, u32) = (10, 6, 0);

/// Refuses a server older than the store needs, saying which version it found and which it needs.
pub(crate) fn require_supported(version: &str) -> Result<()> {
    // A MariaDB behind some proxies reports "5.5.5-10.6.12-MariaDB".
    let trimmed = version.strip_prefix("5.5.5-").unwrap_or(version);
    let mariadb = trimmed.to_ascii_lowercase().contains("mariadb");
    let (product, min) = if mariadb {
        ("MariaDB", MARIADB_MIN)
    } else {
        ("MySQL", MYSQL_MIN)
    };
    let mut parts = trimmed
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().ok());
    let found = match (parts.next(), parts.next(), parts.next()) {
        (Some(Some(a)), Some(Some(b)), Some(Some(c))) => (a, b, c),
        _ => {
            return Err(Error::Config(format!(
                "cannot read the server version {version:?}: txoutbox needs MySQL 8.0.16+ or MariaDB 10.6+"
            )));
        }
    };
    if found >= min {
        return Ok(());
    }
    Err(Error::Config(format!(
        "{product} {version} is too old for the txoutbox MySQL store: it needs MySQL {}.{}.{}+ or \
         MariaDB {}.{}+ (expression defaults, enforced CHECK constraints); upgrade the server",
        MYSQL_MIN.0, MYSQL_MIN.1, MYSQL_MIN.2, MARIADB_MIN.0, MARIADB_MIN.1
    )))
}

/// Reads `SELECT VERSION()` and refuses servers that are too old.
pub(crate) async fn check(conn: &mut MySqlConnection) -> Result<()> {
    let version: String = sqlx::query_scalar("SELECT VERSION()")
        .fetch_one(conn)
        .await
        .map_err(db_error)?;
    require_supported(&version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_enough_servers_pass_and_old_ones_are_named() {
        for ok in [
            "8.0.16",
            "8.0.36-0ubuntu0.22.04.1",
            "8.4.3",
            "9.1.0",
            "10.6.0-MariaDB",
            "10.11.19-MariaDB-0+deb12u1",
            "5.5.5-10.6.12-MariaDB-log",
            "11.4.2-MariaDB",
        ] {
            require_supported(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for old in ["5.7.44", "8.0.15", "10.5.27-MariaDB", "5.5.5-10.3.39-MariaDB"] {
            let err = require_supported(old).unwrap_err().to_string();
            assert!(err.contains("too old") && err.contains(old), "{err}");
            assert!(err.contains("MariaDB 10.6+"), "{err}");
        }
        assert!(require_supported("banana").is_err());
    }
}
