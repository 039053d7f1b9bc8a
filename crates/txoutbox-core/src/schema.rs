//! The outbox table's schema version and the migrations that lead to it, as every store keeps
//! them: a store supplies its SQL templates and runs them; which ones to run, and what to say when
//! a table is missing, older or newer, is decided here once.

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

/// One step of a store's schema: the version it leads to, a name for logs and the migrations
/// table, and the SQL template a store renders (see [`Migration::render`]) and runs.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// The schema version after this step (1, 2, ...).
    pub version: i32,
    /// A short name, recorded beside the version.
    pub name: &'static str,
    /// SQL with `{{placeholders}}` the store fills in.
    pub template: &'static str,
}

impl Migration {
    /// The template with each `{{name}}` of `values` replaced by its value.
    pub fn render(&self, values: &[(&str, &str)]) -> String {
        values
            .iter()
            .fold(self.template.to_owned(), |sql, (name, value)| {
                sql.replace(&format!("{{{{{name}}}}}"), value)
            })
    }
}

/// A store's migrations, oldest first, with consecutive versions from 1.
#[derive(Debug, Clone, Copy)]
pub struct Migrations(&'static [Migration]);

impl Migrations {
    /// The list, oldest first.
    pub const fn new(steps: &'static [Migration]) -> Self {
        Self(steps)
    }

    /// The newest schema version the list leads to (0 for none).
    pub const fn latest(&self) -> i32 {
        match self.0.last() {
            Some(last) => last.version,
            None => 0,
        }
    }

    /// The steps to run on `table`, which is at version `applied` (0: new): those after it, or
    /// the error that says to upgrade txoutbox when the table is newer than this list.
    pub fn pending(
        &self,
        table: &TableName,
        applied: i32,
    ) -> Result<impl Iterator<Item = &'static Migration>> {
        if applied > self.latest() {
            check_schema_version(table, Some(applied), self.latest())?;
        }
        Ok(self.0.iter().filter(move |step| step.version > applied))
    }

    /// Checks the version recorded for `table` (`None`: no table) against [`Migrations::latest`].
    pub fn check(&self, table: &TableName, found: Option<i32>) -> Result<()> {
        check_schema_version(table, found, self.latest())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STEPS: Migrations = Migrations::new(&[
        Migration {
            version: 1,
            name: "one",
            template: "CREATE TABLE {{table}} ({{table}}_id INT) -- {{name}}",
        },
        Migration {
            version: 2,
            name: "two",
            template: "ALTER TABLE {{table}}",
        },
    ]);

    #[test]
    fn renders_every_placeholder() {
        let step = STEPS.0[0];
        assert_eq!(
            step.render(&[("table", "t"), ("name", "n")]),
            "CREATE TABLE t (t_id INT) -- n"
        );
    }

    #[test]
    fn runs_what_is_newer_and_refuses_a_newer_table() {
        let t = TableName::default();
        assert_eq!(STEPS.latest(), 2);
        let versions = |applied| {
            STEPS
                .pending(&t, applied)
                .map(|p| p.map(|s| s.version).collect::<Vec<_>>())
        };
        assert_eq!(versions(0).unwrap(), [1, 2]);
        assert_eq!(versions(1).unwrap(), [2]);
        assert!(versions(2).unwrap().is_empty());
        assert!(versions(3).unwrap_err().to_string().contains("upgrade txoutbox"));
        STEPS.check(&t, Some(2)).unwrap();
        assert!(STEPS.check(&t, Some(1)).is_err());
    }

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
