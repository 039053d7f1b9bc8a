//! What is up, as `export TXOUTBOX_...=...` lines (for `eval "$(scripts/services.sh env)"` and the
//! env file), and which services the environment names instead of ours.

use anyhow::Result;

use crate::files::write;
use crate::{Settings, kafka_service, mariadb, nats, postgres, rabbitmq, redis};

/// A value the environment gives for a service, unless it is our own local address (a shell that
/// did `eval "$(scripts/services.sh env)"` can still run `up`/`down`).
pub fn external(value: Option<&str>, ours: &str) -> Option<String> {
    value.filter(|v| !v.is_empty() && *v != ours).map(str::to_owned)
}

/// The broker the environment names (`TXOUTBOX_KAFKA_BOOTSTRAP`, `KAFKA_BOOTSTRAP`).
pub fn external_kafka(settings: &Settings) -> Option<String> {
    external(
        settings.env_kafka.as_deref(),
        &format!("127.0.0.1:{}", settings.kafka_port),
    )
}

/// The PostgreSQL the environment names (`TXOUTBOX_POSTGRES_URL`, a `postgres://` `DATABASE_URL`).
pub fn external_postgres(settings: &Settings) -> Option<String> {
    external(
        settings.env_postgres.as_deref(),
        &postgres::url(settings.postgres_port),
    )
}

/// The MySQL or MariaDB the environment names (`TXOUTBOX_MYSQL_URL`).
pub fn external_mysql(settings: &Settings) -> Option<String> {
    external(
        settings.env_mysql.as_deref(),
        &mariadb::url(settings.mariadb_port),
    )
}

/// The NATS server the environment names (`TXOUTBOX_NATS_URL`).
pub fn external_nats(settings: &Settings) -> Option<String> {
    external(settings.env_nats.as_deref(), &nats::url(settings.nats_port))
}

/// The RabbitMQ broker the environment names (`TXOUTBOX_RABBITMQ_URL`).
pub fn external_rabbitmq(settings: &Settings) -> Option<String> {
    external(
        settings.env_rabbitmq.as_deref(),
        &rabbitmq::url(settings.rabbitmq_port),
    )
}

/// The Redis server the environment names (`TXOUTBOX_REDIS_URL`).
pub fn external_redis(settings: &Settings) -> Option<String> {
    external(settings.env_redis.as_deref(), &redis::url(settings.redis_port))
}

/// The variables for what is up: external services as given, ours while they run.
pub fn variables(settings: &Settings) -> Vec<(&'static str, String)> {
    let mut vars = Vec::new();
    if let Some(v) = external_kafka(settings).or_else(|| kafka_service::local_bootstrap(settings)) {
        vars.push(("TXOUTBOX_KAFKA_BOOTSTRAP", v));
    }
    if let Some(v) = kafka_service::cluster_bootstrap(settings) {
        vars.push(("TXOUTBOX_KAFKA_CLUSTER_BOOTSTRAP", v));
    }
    if let Some(v) = external_postgres(settings).or_else(|| postgres::local_url(settings)) {
        vars.push(("TXOUTBOX_POSTGRES_URL", v));
    }
    if let Some(v) = external_mysql(settings).or_else(|| mariadb::local_url(settings)) {
        vars.push(("TXOUTBOX_MYSQL_URL", v));
    }
    if let Some(v) = external_nats(settings).or_else(|| nats::local_url(settings)) {
        vars.push(("TXOUTBOX_NATS_URL", v));
    }
    if let Some(v) = external_rabbitmq(settings).or_else(|| rabbitmq::local_url(settings)) {
        vars.push(("TXOUTBOX_RABBITMQ_URL", v));
    }
    if let Some(v) = external_redis(settings).or_else(|| redis::local_url(settings)) {
        vars.push(("TXOUTBOX_REDIS_URL", v));
    }
    vars
}

/// `export NAME=value` lines, values quoted for the shell when they need it.
pub fn render(vars: &[(&str, String)]) -> String {
    vars.iter()
        .map(|(name, value)| format!("export {name}={}\n", shell_quote(value)))
        .collect()
}

/// A word the shell reads back as `value`: as is when it holds only safe characters, else in
/// single quotes.
pub fn shell_quote(value: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "_-.,:/@%+=".contains(c);
    if !value.is_empty() && value.chars().all(safe) {
        value.to_owned()
    } else {
        format!("'{}'", value.replace('\'', r"'\''"))
    }
}

/// Rewrites the env file (atomically) with what is up now.
pub fn write_env_file(settings: &Settings) -> Result<()> {
    crate::files::mkdir(&settings.services_dir)?;
    let file = settings.env_file();
    let tmp = file.with_extension("tmp");
    write(&tmp, render(&variables(settings)))?;
    std::fs::rename(&tmp, &file)
        .map_err(|e| anyhow::anyhow!("move {} to {}: {e}", tmp.display(), file.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ours_is_not_external() {
        assert_eq!(external(Some("127.0.0.1:19092"), "127.0.0.1:19092"), None);
        assert_eq!(external(Some(""), "x"), None);
        assert_eq!(external(None, "x"), None);
        assert_eq!(
            external(Some("kafka:9092"), "127.0.0.1:19092").as_deref(),
            Some("kafka:9092")
        );
    }

    #[test]
    fn renders_quoted_exports() {
        let text = render(&[
            ("TXOUTBOX_KAFKA_BOOTSTRAP", "127.0.0.1:19092".to_owned()),
            (
                "TXOUTBOX_POSTGRES_URL",
                "postgres://u:p@h:1/d?sslmode=require&x='y'".to_owned(),
            ),
        ]);
        assert_eq!(
            text,
            "export TXOUTBOX_KAFKA_BOOTSTRAP=127.0.0.1:19092\n\
             export TXOUTBOX_POSTGRES_URL='postgres://u:p@h:1/d?sslmode=require&x='\\''y'\\'''\n"
        );
        assert_eq!(shell_quote(""), "''");
    }
}
