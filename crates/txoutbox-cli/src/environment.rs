//! Settings the way platforms pass them: any librdkafka property from an environment variable,
//! and any secret from a mounted file (`…_FILE`), as container platforms and Kubernetes Secrets
//! provide them. Values are never logged.
//!
//! - `TXOUTBOX_KAFKA_PROPERTY_<NAME>` sets the librdkafka property `<name>`: the name in lower
//!   case, `_` for `.`, and `__` for a `_` of the property itself
//!   (`TXOUTBOX_KAFKA_PROPERTY_SASL_PASSWORD` sets `sasl.password`).
//! - Any of these, and `TXOUTBOX_DATABASE_URL` and `TXOUTBOX_UI_TOKEN`, may instead end in `_FILE`
//!   and name a file whose contents (without a trailing newline) are the value.

use std::path::Path;

use crate::error::CliError;

/// The prefix of the variables that set librdkafka properties.
pub(crate) const KAFKA_PROPERTY_PREFIX: &str = "TXOUTBOX_KAFKA_PROPERTY_";

/// The suffix of a variable that names a file holding the value.
const FILE_SUFFIX: &str = "_FILE";

/// The librdkafka property a variable's name (after the prefix) stands for: lower case, `_` for
/// `.`, `__` for `_`. `None` for an empty name.
pub(crate) fn property_name(suffix: &str) -> Option<String> {
    if suffix.is_empty() {
        return None;
    }
    Some(
        suffix
            .to_ascii_lowercase()
            .split("__")
            .map(|part| part.replace('_', "."))
            .collect::<Vec<_>>()
            .join("_"),
    )
}

/// The librdkafka properties set in `vars` (the process environment), in name order. A variable
/// ending in `_FILE` reads its value from the file it names.
pub(crate) fn kafka_properties(
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<(String, String)>, CliError> {
    let mut properties = Vec::new();
    for (name, value) in vars {
        let Some(suffix) = name.strip_prefix(KAFKA_PROPERTY_PREFIX) else {
            continue;
        };
        let (suffix, value) = match suffix.strip_suffix(FILE_SUFFIX) {
            Some(base) => (base, read_secret(&name, &value)?),
            None => (suffix, value),
        };
        let Some(property) = property_name(suffix) else {
            return Err(CliError::usage(format!(
                "{name} names no Kafka property: write {KAFKA_PROPERTY_PREFIX}SASL_PASSWORD for sasl.password"
            )));
        };
        properties.push((property, value));
    }
    properties.sort();
    Ok(properties)
}

/// The value of `var`, or of `var_FILE` read from the file it names; `None` when neither is set.
pub(crate) fn value_or_file(var: &str) -> Result<Option<String>, CliError> {
    if let Ok(value) = std::env::var(var) {
        return Ok(Some(value));
    }
    let file_var = format!("{var}{FILE_SUFFIX}");
    match std::env::var(&file_var) {
        Ok(path) => read_secret(&file_var, &path).map(Some),
        Err(_) => Ok(None),
    }
}

/// The contents of the file `path` that variable `var` names, without a trailing newline; the
/// error names the variable and the file, never the contents.
fn read_secret(var: &str, path: &str) -> Result<String, CliError> {
    let contents = std::fs::read_to_string(Path::new(path))
        .map_err(|e| CliError::usage(format!("cannot read {path}, which {var} names: {e}")))?;
    Ok(contents.trim_end_matches(['\n', '\r']).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn names_map_to_properties() {
        assert_eq!(property_name("SASL_PASSWORD").as_deref(), Some("sasl.password"));
        assert_eq!(
            property_name("SSL_KEY_PASSWORD").as_deref(),
            Some("ssl.key.password")
        );
        assert_eq!(
            property_name("BOOTSTRAP_SERVERS").as_deref(),
            Some("bootstrap.servers")
        );
        assert_eq!(property_name("FOO__BAR_BAZ").as_deref(), Some("foo_bar.baz"));
        assert_eq!(property_name(""), None);
    }

    #[test]
    fn properties_come_from_variables_and_files() {
        let dir = std::env::temp_dir().join(format!("txoutbox-env-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let secret = dir.join("password");
        std::fs::write(&secret, "s3cret\n").unwrap();
        let found = kafka_properties(vars(&[
            ("TXOUTBOX_KAFKA_PROPERTY_SASL_USERNAME", "relay"),
            (
                "TXOUTBOX_KAFKA_PROPERTY_SASL_PASSWORD_FILE",
                secret.to_str().unwrap(),
            ),
            ("TXOUTBOX_KAFKA_BOOTSTRAP", "not a property"),
            ("PATH", "/bin"),
        ]))
        .unwrap();
        assert_eq!(
            found,
            vars(&[("sasl.password", "s3cret"), ("sasl.username", "relay")])
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_unreadable_file_is_named_without_a_value() {
        let error = kafka_properties(vars(&[(
            "TXOUTBOX_KAFKA_PROPERTY_SASL_PASSWORD_FILE",
            "/nonexistent/secret",
        )]))
        .unwrap_err()
        .to_string();
        assert!(error.contains("/nonexistent/secret"), "{error}");
        assert!(
            error.contains("TXOUTBOX_KAFKA_PROPERTY_SASL_PASSWORD_FILE"),
            "{error}"
        );
        let error = kafka_properties(vars(&[("TXOUTBOX_KAFKA_PROPERTY_", "x")]))
            .unwrap_err()
            .to_string();
        assert!(error.contains("names no Kafka property"), "{error}");
    }
}
