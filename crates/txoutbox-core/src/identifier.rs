//! Validated SQL identifiers for the outbox table, so no name can carry SQL into a statement.

use crate::error::{Error, Result};

/// The default name of the outbox table.
pub const DEFAULT_TABLE: &str = "outbox_messages";

/// The outbox table's name, optionally qualified by a schema, validated as plain identifiers.
///
/// Each part must match `[A-Za-z_][A-Za-z0-9_]*` and be at most 63 bytes long (PostgreSQL's
/// limit, the smallest of the supported databases). Stores quote the parts as well, so the
/// validation is a second line of defence and a clear early error, not the only one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TableName {
    schema: Option<String>,
    table: String,
}

impl TableName {
    /// A table in the connection's default schema (`search_path` on PostgreSQL, `main` on SQLite).
    pub fn new(table: impl Into<String>) -> Result<Self> {
        let table = table.into();
        validate_identifier("table", &table)?;
        Ok(Self { schema: None, table })
    }

    /// A table in the given schema.
    pub fn with_schema(schema: impl Into<String>, table: impl Into<String>) -> Result<Self> {
        let schema = schema.into();
        validate_identifier("schema", &schema)?;
        let mut name = Self::new(table)?;
        name.schema = Some(schema);
        Ok(name)
    }

    /// The schema, if one was given.
    pub fn schema(&self) -> Option<&str> {
        self.schema.as_deref()
    }

    /// The bare table name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The quoted, qualified name for SQL: `"schema"."table"` or `"table"`.
    pub fn quoted(&self) -> String {
        self.quoted_with_suffix("")
    }

    /// The quoted, qualified name of a companion object: `"schema"."table_suffix"`.
    pub fn quoted_with_suffix(&self, suffix: &str) -> String {
        match &self.schema {
            Some(schema) => format!("\"{schema}\".\"{}{suffix}\"", self.table),
            None => format!("\"{}{suffix}\"", self.table),
        }
    }
}

impl Default for TableName {
    fn default() -> Self {
        Self {
            schema: None,
            table: DEFAULT_TABLE.to_owned(),
        }
    }
}

impl std::fmt::Display for TableName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.schema {
            Some(schema) => write!(f, "{schema}.{}", self.table),
            None => f.write_str(&self.table),
        }
    }
}

fn validate_identifier(what: &'static str, value: &str) -> Result<()> {
    let invalid = |reason| {
        Err(Error::InvalidIdentifier {
            what,
            value: value.to_owned(),
            reason,
        })
    };
    let mut chars = value.chars();
    match chars.next() {
        None => return invalid("it is empty"),
        Some(c) if !(c.is_ascii_alphabetic() || c == '_') => {
            return invalid("it must start with an ASCII letter or `_`");
        }
        Some(_) => {}
    }
    if !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return invalid("only ASCII letters, digits and `_` are allowed");
    }
    // The suffixes stores append (e.g. `_migrations`) must fit too.
    if value.len() > 48 {
        return invalid("it is longer than 48 bytes");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_identifiers() {
        let name = TableName::with_schema("app_1", "outbox_messages").unwrap();
        assert_eq!(name.quoted(), "\"app_1\".\"outbox_messages\"");
        assert_eq!(name.to_string(), "app_1.outbox_messages");
        assert_eq!(TableName::default().quoted(), "\"outbox_messages\"");
    }

    #[test]
    fn rejects_injection_and_odd_names() {
        for bad in [
            "",
            "1abc",
            "a b",
            "x\"; drop table y; --",
            "a.b",
            "é",
            &"a".repeat(49),
        ] {
            let err = TableName::new(bad).unwrap_err();
            assert!(
                matches!(err, Error::InvalidIdentifier { what: "table", .. }),
                "{bad:?}: {err}"
            );
        }
        let err = TableName::with_schema("bad-schema", "t").unwrap_err();
        assert!(err.to_string().contains("invalid schema name"), "{err}");
    }
}
