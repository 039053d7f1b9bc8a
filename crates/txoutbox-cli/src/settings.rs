//! The effective settings: flags over environment over the config file over the defaults.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use txoutbox_core::coordination::{Coordination, LeaseSettings};
use txoutbox_core::{
    Completion, DeadLetterTopic, HealthThresholds, OnDeadLetter, RelayConfig, RetryPolicy, TableName,
};
use txoutbox_kafka::{ExactlyOnceSettings, KafkaConfig};

use crate::cli::{CompletionArg, CoordinationArg, DeliveryArg, GlobalArgs, OnDeadLetterArg, RelayArgs};
use crate::error::CliError;

/// The default HTTP address of the daemon.
pub const DEFAULT_HTTP_LISTEN: &str = "127.0.0.1:9464";

/// The config file. Unknown keys are errors, so a typo never silently falls back to a default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    database_url: Option<String>,
    table: Option<String>,
    #[serde(default)]
    kafka: BTreeMap<String, toml::Value>,
    #[serde(default)]
    relay: FileRelay,
    #[serde(default)]
    retry: FileRetry,
    #[serde(default)]
    retention: FileRetention,
    #[serde(default)]
    http: FileHttp,
    #[serde(default)]
    health: FileHealth,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRelay {
    batch_size: Option<usize>,
    max_in_flight: Option<usize>,
    #[serde(default, with = "humantime_serde_opt")]
    poll_interval: Option<Duration>,
    completion: Option<CompletionArg>,
    #[serde(default, with = "humantime_serde_opt")]
    shutdown_timeout: Option<Duration>,
    coordination: Option<CoordinationArg>,
    delivery: Option<DeliveryArg>,
    on_dead_letter: Option<OnDeadLetterArg>,
    dead_letter_topic: Option<String>,
    transactional_id: Option<String>,
    progress_topic: Option<String>,
    #[serde(default, with = "humantime_serde_opt")]
    lease: Option<Duration>,
    #[serde(default, with = "humantime_serde_opt")]
    heartbeat: Option<Duration>,
    node_id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRetry {
    max_attempts: Option<u32>,
    #[serde(default, with = "humantime_serde_opt")]
    initial_backoff: Option<Duration>,
    #[serde(default, with = "humantime_serde_opt")]
    max_backoff: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRetention {
    #[serde(default, with = "humantime_serde_opt")]
    keep_published_for: Option<Duration>,
    #[serde(default, with = "humantime_serde_opt")]
    interval: Option<Duration>,
    batch: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileHttp {
    listen: Option<String>,
    ui: Option<bool>,
    ui_show_payloads: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileHealth {
    max_pending: Option<u64>,
    #[serde(default, with = "humantime_serde_opt")]
    max_oldest_pending_age: Option<Duration>,
    #[serde(default, with = "humantime_serde_opt")]
    interval: Option<Duration>,
}

/// Durations in the file are strings such as "500ms" or "7d".
mod humantime_serde_opt {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text = Option::<String>::deserialize(d)?;
        text.map(|t| crate::cli::parse_duration(&t).map_err(serde::de::Error::custom))
            .transpose()
    }
}

impl FileConfig {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<Self, CliError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| CliError::usage(format!("cannot read the config file {}: {e}", path.display())))?;
        toml::from_str(&text).map_err(|e| {
            CliError::usage(
                format!("the config file {} is not valid: {}", path.display(), e.message())
                    + &e.span()
                        .map(|s| format!(" (at byte {})", s.start))
                        .unwrap_or_default(),
            )
        })
    }
}

/// Where the outbox lives.
#[derive(Debug, Clone)]
pub struct Target {
    /// The database URL (holds a password maybe: never logged as is).
    pub database_url: String,
    /// The outbox table.
    pub table: TableName,
}

/// Everything `txoutbox relay` needs.
#[derive(Debug)]
pub struct RelaySettings {
    /// Migrate before relaying.
    pub migrate: bool,
    /// The relay engine's settings.
    pub relay: RelayConfig,
    /// How relays on the table cooperate.
    pub coordination: Coordination,
    /// Exactly-once settings, when chosen.
    pub exactly_once: Option<ExactlyOnceSettings>,
    /// The Kafka producer's settings.
    pub kafka: KafkaConfig,
    /// Keep published rows this long (with `Completion::MarkPublished`).
    pub retention: Option<Retention>,
    /// The HTTP address, `None` when disabled.
    pub http_listen: Option<String>,
    /// The web console at `/ui`, when enabled.
    pub console: Option<crate::ui::ConsoleSettings>,
    /// `/health` thresholds.
    pub health: HealthThresholds,
    /// How often `/health` measures the backlog.
    pub health_interval: Duration,
}

/// Scheduled purging of published rows.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Keep published rows this long.
    pub keep_for: Duration,
    /// How often to purge.
    pub interval: Duration,
    /// Rows per DELETE.
    pub batch: usize,
}

/// Reads the config file named by the flags, or an empty one.
pub fn file_config(global: &GlobalArgs) -> Result<FileConfig, CliError> {
    match &global.config {
        Some(path) => FileConfig::load(path),
        None => Ok(FileConfig::default()),
    }
}

/// The outbox's location.
pub fn target(global: &GlobalArgs, file: &FileConfig) -> Result<Target, CliError> {
    let database_url = global
        .database_url
        .clone()
        .or_else(|| file.database_url.clone())
        .ok_or_else(|| {
            CliError::usage(
                "no database given: pass --database-url (or set TXOUTBOX_DATABASE_URL, or `database_url` in the \
                 config file), e.g. postgres://app@localhost/shop or sqlite:///var/lib/shop.db",
            )
        })?;
    let table = match global.table.as_deref().or(file.table.as_deref()) {
        None => TableName::new(txoutbox_core::DEFAULT_TABLE),
        Some(name) => match name.split_once('.') {
            Some((schema, table)) => TableName::with_schema(schema, table),
            None => TableName::new(name),
        },
    }
    .map_err(|e| CliError::usage(format!("bad --table: {e}")))?;
    Ok(Target { database_url, table })
}

/// The relay's settings.
pub fn relay(args: &RelayArgs, file: &FileConfig, table: &TableName) -> Result<RelaySettings, CliError> {
    let defaults = RelayConfig::default();
    let completion = match args.completion.or(file.relay.completion) {
        Some(CompletionArg::MarkPublished) => Completion::MarkPublished,
        Some(CompletionArg::Delete) | None => Completion::Delete,
    };
    let mut retry = RetryPolicy::default();
    if let Some(max) = args.max_attempts.or(file.retry.max_attempts) {
        retry = retry.with_max_attempts(max);
    }
    let (initial, max) = (
        file.retry.initial_backoff.unwrap_or(retry.initial_backoff),
        file.retry.max_backoff.unwrap_or(retry.max_backoff),
    );
    retry = retry.with_backoff(initial, max);
    let on_dead_letter = match args.on_dead_letter.or(file.relay.on_dead_letter) {
        Some(OnDeadLetterArg::ParkKey) => OnDeadLetter::ParkKey,
        Some(OnDeadLetterArg::ReleaseKey) | None => OnDeadLetter::ReleaseKey,
    };
    let dead_letter_topic = args
        .dead_letter_topic
        .clone()
        .or_else(|| file.relay.dead_letter_topic.clone())
        .map(DeadLetterTopic::new)
        .transpose()
        .map_err(|e| CliError::usage(format!("bad --dead-letter-topic: {e}")))?;
    if dead_letter_topic.is_some() && args.delivery.or(file.relay.delivery) == Some(DeliveryArg::ExactlyOnce)
    {
        return Err(CliError::usage(
            "--dead-letter-topic works with at-least-once delivery only (a transaction's records \
             all count as delivered rows); with exactly-once, dead rows stay listed in the table",
        ));
    }
    let mut relay = RelayConfig::default()
        .with_batch_size(
            args.batch_size
                .or(file.relay.batch_size)
                .unwrap_or(defaults.batch_size),
        )
        .with_max_in_flight(
            args.max_in_flight
                .or(file.relay.max_in_flight)
                .unwrap_or(defaults.max_in_flight),
        )
        .with_poll_interval(
            args.poll_interval
                .or(file.relay.poll_interval)
                .unwrap_or(defaults.poll_interval),
        )
        .with_completion(completion)
        .with_retry(retry)
        .with_shutdown_timeout(file.relay.shutdown_timeout.unwrap_or(defaults.shutdown_timeout))
        .with_on_dead_letter(on_dead_letter);
    if let Some(topic) = dead_letter_topic {
        relay = relay.with_dead_letter_topic(topic);
    }
    relay.validate().map_err(|e| CliError::usage(e.to_string()))?;

    let mut kafka = KafkaConfig::default();
    for (key, value) in &file.kafka {
        let value = match value {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(_) | toml::Value::Float(_) | toml::Value::Boolean(_) => value.to_string(),
            _ => {
                return Err(CliError::usage(format!(
                    "the [kafka] property `{key}` must be a string, number or boolean"
                )));
            }
        };
        kafka = kafka.set(key.clone(), value);
    }
    if let Some(bootstrap) = &args.kafka_bootstrap {
        kafka = kafka.set("bootstrap.servers", bootstrap.clone());
    }
    kafka = kafka.set_all(args.kafka_properties.iter().cloned());
    kafka.validate().map_err(|e| {
        CliError::usage(format!(
            "{e} (use --kafka-bootstrap, TXOUTBOX_KAFKA_BOOTSTRAP or [kafka] in the config file)"
        ))
    })?;

    let keep_for = args.keep_published_for.or(file.retention.keep_published_for);
    let retention = match keep_for {
        None => None,
        Some(_) if completion == Completion::Delete => {
            return Err(CliError::usage(
                "a retention period needs --completion mark-published: with `delete` no published row is kept",
            ));
        }
        Some(keep_for) => Some(Retention {
            keep_for,
            interval: file.retention.interval.unwrap_or(Duration::from_secs(60)),
            batch: file.retention.batch.unwrap_or(1_000).max(1),
        }),
    };

    let http_listen = args
        .http_listen
        .clone()
        .or_else(|| file.http.listen.clone())
        .unwrap_or_else(|| DEFAULT_HTTP_LISTEN.to_owned());
    let http_listen = (http_listen != "off" && !http_listen.is_empty()).then_some(http_listen);

    let console = match (args.ui || file.http.ui.unwrap_or(false), &args.ui_token) {
        (false, _) => None,
        (true, Some(token)) if token.trim().chars().count() < crate::ui::MIN_TOKEN_LEN => {
            return Err(CliError::usage(format!(
                "the console token (--ui-token, TXOUTBOX_UI_TOKEN) must have at least {} characters, e.g. \
                 the output of `openssl rand -hex 24`",
                crate::ui::MIN_TOKEN_LEN
            )));
        }
        (true, token) => Some(crate::ui::ConsoleSettings {
            token: token.as_ref().map(|t| t.trim().to_owned()),
            show_payloads: args.ui_show_payloads || file.http.ui_show_payloads.unwrap_or(false),
            database: None,
        }),
    };
    if console.is_some() && http_listen.is_none() {
        return Err(CliError::usage(
            "the console (--ui) is served on the HTTP port: give it an address with --http-listen, not `off`",
        ));
    }

    let mut health = HealthThresholds::none();
    if let Some(max) = args.health_max_pending.or(file.health.max_pending) {
        health = health.max_pending(max);
    }
    if let Some(max) = args.health_max_age.or(file.health.max_oldest_pending_age) {
        health = health.max_oldest_pending_age(max);
    }
    let health_interval = args
        .health_interval
        .or(file.health.interval)
        .unwrap_or(Duration::from_secs(5));

    let mut lease = LeaseSettings::default();
    let (length, heartbeat) = (
        args.lease.or(file.relay.lease).unwrap_or(lease.lease),
        args.heartbeat.or(file.relay.heartbeat).unwrap_or(lease.heartbeat),
    );
    lease = lease.with_timing(length, heartbeat);
    if let Some(node) = args.node_id.clone().or_else(|| file.relay.node_id.clone()) {
        lease = lease.with_node_id(node);
    }
    let coordination = match args.coordination.or(file.relay.coordination) {
        None | Some(CoordinationArg::Single) => Coordination::Single,
        Some(CoordinationArg::Exclusive) => Coordination::Exclusive(lease),
        Some(CoordinationArg::WorkBalance) => Coordination::WorkBalance(lease),
    };
    coordination
        .validate()
        .map_err(|e| CliError::usage(format!("{e} (--lease, --heartbeat)")))?;

    let exactly_once = match args.delivery.or(file.relay.delivery) {
        None | Some(DeliveryArg::AtLeastOnce) => None,
        Some(DeliveryArg::ExactlyOnce) => {
            if matches!(coordination, Coordination::WorkBalance(_)) {
                return Err(CliError::usage(
                    "exactly-once delivery runs with --coordination single or exclusive (one transactional \
                     producer per table); work-balance is not supported with it yet",
                ));
            }
            let mut settings = ExactlyOnceSettings::for_table(&table.to_string());
            if let Some(id) = args
                .transactional_id
                .clone()
                .or_else(|| file.relay.transactional_id.clone())
            {
                settings = settings.with_transactional_id(id);
            }
            if let Some(topic) = args
                .progress_topic
                .clone()
                .or_else(|| file.relay.progress_topic.clone())
            {
                settings = settings.with_progress_topic(topic);
            }
            Some(settings)
        }
    };

    Ok(RelaySettings {
        migrate: args.migrate,
        relay,
        coordination,
        exactly_once,
        kafka,
        retention,
        http_listen,
        console,
        health,
        health_interval,
    })
}

/// The configured HTTP address (for `status` to find a running relay).
pub fn http_listen(file: &FileConfig) -> String {
    std::env::var("TXOUTBOX_HTTP_LISTEN")
        .ok()
        .or_else(|| file.http.listen.clone())
        .unwrap_or_else(|| DEFAULT_HTTP_LISTEN.to_owned())
}

/// The configured retention period (for `cleanup`).
pub fn keep_published_for(file: &FileConfig) -> Option<Duration> {
    std::env::var("TXOUTBOX_KEEP_PUBLISHED_FOR")
        .ok()
        .and_then(|t| crate::cli::parse_duration(&t).ok())
        .or(file.retention.keep_published_for)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_named() {
        let err = toml::from_str::<FileConfig>("[relay]\nbatch_sise = 10\n").unwrap_err();
        assert!(err.to_string().contains("batch_sise"), "{err}");
    }

    #[test]
    fn flags_win_over_the_file() {
        let file: FileConfig = toml::from_str(
            "[kafka]\n\"bootstrap.servers\" = \"file:9092\"\n\"linger.ms\" = 20\n[relay]\nbatch_size = 10\npoll_interval = \"2s\"\n",
        )
        .unwrap();
        let args = RelayArgs {
            batch_size: Some(50),
            kafka_bootstrap: Some("flag:9092".into()),
            ..RelayArgs::default()
        };
        let settings = relay(&args, &file, &TableName::new("t").unwrap()).unwrap();
        assert_eq!(settings.relay.batch_size, 50);
        assert_eq!(settings.relay.poll_interval, Duration::from_secs(2));
        assert_eq!(settings.kafka.get("bootstrap.servers"), Some("flag:9092"));
        assert_eq!(settings.kafka.get("linger.ms"), Some("20"));
    }

    #[test]
    fn retention_needs_kept_rows() {
        let args = RelayArgs {
            kafka_bootstrap: Some("b:1".into()),
            keep_published_for: Some(Duration::from_secs(60)),
            ..RelayArgs::default()
        };
        let err = relay(&args, &FileConfig::default(), &TableName::new("t").unwrap()).unwrap_err();
        assert!(err.to_string().contains("mark-published"), "{err}");
    }

    #[test]
    fn dead_letter_settings_come_from_the_file_and_are_checked() {
        let file: FileConfig = toml::from_str(
            "[kafka]\n\"bootstrap.servers\" = \"b:1\"\n[relay]\non_dead_letter = \"park-key\"\n\
             dead_letter_topic = \"{topic}.dead\"\n",
        )
        .unwrap();
        let table = TableName::new("t").unwrap();
        let settings = relay(&RelayArgs::default(), &file, &table).unwrap();
        assert_eq!(settings.relay.on_dead_letter, OnDeadLetter::ParkKey);
        assert_eq!(
            settings.relay.dead_letter_topic.map(|t| t.for_topic("orders")),
            Some("orders.dead".to_owned())
        );

        let args = RelayArgs {
            delivery: Some(DeliveryArg::ExactlyOnce),
            ..RelayArgs::default()
        };
        let err = relay(&args, &file, &table).unwrap_err();
        assert!(err.to_string().contains("at-least-once"), "{err}");
        let args = RelayArgs {
            dead_letter_topic: Some("bad topic!".into()),
            ..RelayArgs::default()
        };
        let err = relay(&args, &file, &table).unwrap_err();
        assert!(err.to_string().contains("--dead-letter-topic"), "{err}");
    }
}
