//! The outbox table's schema version, as every store checks it.

use crate::error::{Error, Result};
use crate::identifier::TableName;

/// What to do about a missing or older table.
const RUN_MIGRATIONS: &str = "run the migrations first (`migrate()` or `txoutbox migrate`)";

/// Compares the version recorded for `table` (`None`: no table) with the one the store expects,
/// and says what to do when they differ.
pub fn check_schema_version(table: &TableName, found: Option<i32>, expected: i32) -> Result<()> {
    let reason = match found {
        Some(v) if v == expected => return Ok(()),
        None => format!("it does not exist; {RUN_MIGRATIONS}"),
        Some(v) if v < expected => {
            format!("it is at schema version {v}, this txoutbox expects {expected}; {RUN_MIGRATIONS}")
        }
        Some(v) => {
            format!("it is at schema version {v}, newer than this txoutbox ({expected}); upgrade txoutbox")
        }
    };
    Err(Error::SchemaNotReady {
        table: table.to_string(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn says_what_to_do() {
        let t = TableName::default();
        check_schema_version(&t, Some(2), 2).unwrap();
        assert!(
            check_schema_version(&t, None, 2)
                .unwrap_err()
                .to_string()
                .contains("run the migrations")
        );
        assert!(
            check_schema_version(&t, Some(1), 2)
                .unwrap_err()
                .to_string()
                .contains("run the migrations")
        );
        assert!(
            check_schema_version(&t, Some(3), 2)
                .unwrap_err()
                .to_string()
                .contains("upgrade txoutbox")
        );
    }
}
