//! The effective settings: flags over environment over the config file over the defaults.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use txoutbox_core::coordination::{Coordination, LeaseSettings};
use txoutbox_core::relay::AllowedTopics;
use txoutbox_core::{
    Completion, DeadLetterTopic, HealthThresholds, OnDeadLetter, RelayConfig, RetryPolicy, TableName,
};
use txoutbox_kafka::{ExactlyOnceSettings, KafkaConfig};
use txoutbox_postgres_wal::WalConfig;

use crate::cli::{
    CompletionArg, CoordinationArg, DeliveryArg, GlobalArgs, OnDeadLetterArg, RelayArgs, SinkArg, SourceArg,
};
use crate::error::CliError;
use crate::sink_settings::{SinkSettings, nats_config, rabbitmq_config, redis_config};
use crate::target::{Source, Target};

/// How long the relay waits at start for the Kafka brokers by default.
pub(crate) const DEFAULT_BROKER_WAIT: Duration = Duration::from_secs(30);

/// The default HTTP address of the daemon.
pub(crate) const DEFAULT_HTTP_LISTEN: &str = "127.0.0.1:9464";

/// The config file. Unknown keys are errors, so a typo never silently falls back to a default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileConfig {
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
    #[serde(default)]
    wal: FileWal,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileWal {
    slot: Option<String>,
    prefix: Option<String>,
    #[serde(default, with = "bytes_opt")]
    max_buffered_bytes: Option<u64>,
    #[serde(default, with = "humantime_serde_opt")]
    takeover_timeout: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRelay {
    source: Option<SourceArg>,
    batch_size: Option<usize>,
    max_in_flight: Option<usize>,
    #[serde(default, with = "bytes_opt")]
    max_batch_bytes: Option<u64>,
    #[serde(default, with = "bytes_opt")]
    max_in_flight_bytes: Option<u64>,
    #[serde(default, with = "humantime_serde_opt")]
    poll_interval: Option<Duration>,
    completion: Option<CompletionArg>,
    #[serde(default, with = "humantime_serde_opt")]
    shutdown_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde_opt")]
    store_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde_opt")]
    broker_wait: Option<Duration>,
    coordination: Option<CoordinationArg>,
    delivery: Option<DeliveryArg>,
    on_dead_letter: Option<OnDeadLetterArg>,
    dead_letter_topic: Option<String>,
    allowed_topics: Option<Vec<String>>,
    transactional_id: Option<String>,
    progress_topic: Option<String>,
    create_progress_topic: Option<bool>,
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
    allowed_hosts: Option<Vec<String>>,
    ui: Option<bool>,
    ui_show_payloads: Option<bool>,
    ui_inbox_table: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileHealth {
    max_pending: Option<u64>,
    #[serde(default, with = "humantime_serde_opt")]
    max_oldest_pending_age: Option<Duration>,
    #[serde(default, with = "humantime_serde_opt")]
    interval: Option<Duration>,
    #[serde(default, with = "bytes_opt")]
    min_safe_wal_size: Option<u64>,
}

/// Byte sizes in the file are integers (bytes) or strings such as "512MB".
mod bytes_opt {
    use serde::{Deserialize, Deserializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Bytes(u64),
        Text(String),
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        match Option::<Size>::deserialize(d)? {
            None => Ok(None),
            Some(Size::Bytes(n)) => Ok(Some(n)),
            Some(Size::Text(t)) => crate::cli::parse_bytes(&t)
                .map(Some)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// Durations in the file are strings such as "500ms" or "7d".
mod humantime_serde_opt {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text = Option::<String>::deserialize(d)?;
        text.map(|t| crate::cli::parse_duration(&t).map_err(serde::de::Error::custom))
            .transpose()
    }
}

impl FileConfig {
    /// Reads and checks a config file.
    pub(crate) fn load(path: &Path) -> Result<Self, CliError> {
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

/// Everything `txoutbox relay` needs.
#[derive(Debug)]
pub(crate) struct RelaySettings {
    /// Migrate before relaying.
    pub migrate: bool,
    /// The relay engine's settings.
    pub relay: RelayConfig,
    /// How relays on the table cooperate.
    pub coordination: Coordination,
    /// Exactly-once settings, when chosen.
    pub exactly_once: Option<ExactlyOnceSettings>,
    /// Where the relay publishes.
    pub sink: SinkSettings,
    /// The Kafka producer's settings.
    pub kafka: KafkaConfig,
    /// How long to wait at start for the brokers to answer (zero: do not wait).
    pub broker_wait: Duration,
    /// Keep published rows this long (with `Completion::MarkPublished`).
    pub retention: Option<Retention>,
    /// The HTTP address, `None` when disabled.
    pub http_listen: Option<String>,
    /// Host names besides IP addresses, `localhost` and the listen address's that HTTP requests
    /// may name (`--http-allowed-hosts`).
    pub http_allowed_hosts: Vec<String>,
    /// The web console at `/ui`, when enabled.
    pub console: Option<crate::console_settings::ConsoleSettings>,
    /// `/health` thresholds.
    pub health: HealthThresholds,
    /// How often `/health` measures the backlog.
    pub health_interval: Duration,
    /// WAL mode: `/health` fails when less WAL than this may still be written before the slot
    /// is invalidated (`None`: a share of `max_slot_wal_keep_size`).
    pub min_safe_wal_size: Option<u64>,
}

/// Scheduled purging of published rows.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Retention {
    /// Keep published rows this long.
    pub keep_for: Duration,
    /// How often to purge.
    pub interval: Duration,
    /// Rows per DELETE.
    pub batch: usize,
}

/// Reads the config file named by the flags, or an empty one.
pub(crate) fn file_config(global: &GlobalArgs) -> Result<FileConfig, CliError> {
    match &global.config {
        Some(path) => FileConfig::load(path),
        None => Ok(FileConfig::default()),
    }
}

/// The outbox's location.
pub(crate) fn target(global: &GlobalArgs, file: &FileConfig) -> Result<Target, CliError> {
    // The flag or TXOUTBOX_DATABASE_URL (clap), then TXOUTBOX_DATABASE_URL_FILE, then the file.
    let from_file_var = match &global.database_url {
        Some(_) => None,
        None => crate::environment::value_or_file("TXOUTBOX_DATABASE_URL")?,
    };
    let database_url = global
        .database_url
        .clone()
        .or(from_file_var)
        .or_else(|| file.database_url.clone())
        .ok_or_else(|| {
            CliError::usage(
                "no database given: pass --database-url (or set TXOUTBOX_DATABASE_URL or \
                 TXOUTBOX_DATABASE_URL_FILE, or `database_url` in the config file), e.g. postgres://app@localhost/shop or sqlite:///var/lib/shop.db",
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
    let source = source(global, file, &table, &database_url)?;
    Ok(Target {
        database_url,
        table,
        source,
    })
}

/// The relay source and, in WAL mode, the slot's settings (checked).
fn source(global: &GlobalArgs, file: &FileConfig, table: &TableName, url: &str) -> Result<Source, CliError> {
    let wal_options = global.wal_slot.is_some()
        || global.wal_prefix.is_some()
        || file.wal.slot.is_some()
        || file.wal.prefix.is_some()
        || global.wal_max_buffered_bytes.is_some()
        || file.wal.max_buffered_bytes.is_some()
        || file.wal.takeover_timeout.is_some();
    match global.source.or(file.relay.source).unwrap_or(SourceArg::Table) {
        SourceArg::Table if wal_options => Err(CliError::usage(
            "WAL options (--wal-slot, --wal-prefix, [wal] in the config file) apply to --source wal only: \
             add --source wal (or TXOUTBOX_SOURCE=wal, or `source = \"wal\"` under [relay]), or remove them",
        )),
        SourceArg::Table => Ok(Source::Table),
        SourceArg::Wal => {
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                return Err(CliError::usage(format!(
                    "--source wal needs a PostgreSQL database (postgres://...), not {}: SQLite and \
                     MySQL/MariaDB relay from the outbox table only (--source table, the default)",
                    crate::database::redact(url)
                )));
            }
            let mut config = WalConfig::default().with_dead_letter_table(table.clone());
            if let Some(slot) = global.wal_slot.clone().or_else(|| file.wal.slot.clone()) {
                config = config.with_slot(slot);
            }
            if let Some(prefix) = global.wal_prefix.clone().or_else(|| file.wal.prefix.clone()) {
                config = config.with_prefix(prefix);
            }
            if let Some(timeout) = file.wal.takeover_timeout {
                config = config.with_takeover_timeout(timeout);
            }
            if let Some(bytes) = global.wal_max_buffered_bytes.or(file.wal.max_buffered_bytes) {
                config = config.with_max_buffered_bytes(usize::try_from(bytes).unwrap_or(usize::MAX));
            }
            config
                .validate()
                .map_err(|e| CliError::usage(format!("{e} (--wal-slot, --wal-prefix, [wal])")))?;
            Ok(Source::Wal(config))
        }
    }
}

/// The relay's settings.
pub(crate) fn relay(args: &RelayArgs, file: &FileConfig, target: &Target) -> Result<RelaySettings, CliError> {
    let table = &target.table;
    if matches!(target.source, Source::Wal(_)) {
        wal_restrictions(args, file)?;
    }
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
        .with_max_batch_bytes(
            args.max_batch_bytes
                .or(file.relay.max_batch_bytes)
                .map_or(defaults.max_batch_bytes, |b| {
                    usize::try_from(b).unwrap_or(usize::MAX)
                }),
        )
        .with_max_in_flight_bytes(
            args.max_in_flight_bytes
                .or(file.relay.max_in_flight_bytes)
                .map_or(defaults.max_in_flight_bytes, |b| {
                    usize::try_from(b).unwrap_or(usize::MAX)
                }),
        )
        .with_poll_interval(
            args.poll_interval
                .or(file.relay.poll_interval)
                .unwrap_or(defaults.poll_interval),
        )
        .with_completion(completion)
        .with_retry(retry)
        .with_shutdown_timeout(file.relay.shutdown_timeout.unwrap_or(defaults.shutdown_timeout))
        .with_store_timeout(file.relay.store_timeout.unwrap_or(defaults.store_timeout))
        .with_on_dead_letter(on_dead_letter);
    if let Some(topic) = dead_letter_topic {
        relay = relay.with_dead_letter_topic(topic);
    }
    if let Some(patterns) = args
        .allowed_topics
        .clone()
        .or_else(|| file.relay.allowed_topics.clone())
    {
        let allowed = AllowedTopics::new(patterns)
            .map_err(|e| CliError::usage(format!("bad --allowed-topics: {e}")))?;
        relay = relay.with_allowed_topics(allowed);
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
    // TXOUTBOX_KAFKA_PROPERTY_* (and their _FILE forms) win over the file, flags over them; read
    // only for the Kafka sink (an unreadable secret file must not stop a relay that never uses it).
    if matches!(args.sink, None | Some(SinkArg::Kafka)) {
        kafka = kafka.set_all(crate::environment::kafka_properties(std::env::vars())?);
    }
    if let Some(bootstrap) = &args.kafka_bootstrap {
        kafka = kafka.set("bootstrap.servers", bootstrap.clone());
    }
    kafka = kafka.set_all(args.kafka_properties.iter().cloned());
    let sink_arg = args.sink.unwrap_or(SinkArg::Kafka);
    if sink_arg != SinkArg::Kafka && args.delivery.or(file.relay.delivery) == Some(DeliveryArg::ExactlyOnce) {
        return Err(CliError::usage(
            "exactly-once delivery needs Kafka transactions: with --sink nats, rabbitmq or redis, \
             delivery is at-least-once (on NATS the stream's duplicate window drops resends within it)",
        ));
    }
    let sink = match sink_arg {
        SinkArg::Kafka => {
            kafka.validate().map_err(|e| {
                CliError::usage(format!(
                    "{e} (use --kafka-bootstrap, TXOUTBOX_KAFKA_BOOTSTRAP or [kafka] in the config file)"
                ))
            })?;
            SinkSettings::Kafka
        }
        SinkArg::Nats => SinkSettings::Nats(Box::new(nats_config(args)?)),
        SinkArg::Rabbitmq => SinkSettings::Rabbitmq(Box::new(rabbitmq_config(args)?)),
        SinkArg::Redis => SinkSettings::Redis(Box::new(redis_config(args)?)),
    };

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

    let ui_token = match &args.ui_token {
        Some(token) => Some(token.clone()),
        None => crate::environment::value_or_file("TXOUTBOX_UI_TOKEN")?,
    };
    let console = match (args.ui || file.http.ui.unwrap_or(false), &ui_token) {
        (false, _) => None,
        (true, Some(token)) if token.trim().chars().count() < crate::console_settings::MIN_TOKEN_LEN => {
            return Err(CliError::usage(format!(
                "the console token (--ui-token, TXOUTBOX_UI_TOKEN) must have at least {} characters, e.g. \
                 the output of `openssl rand -hex 24`",
                crate::console_settings::MIN_TOKEN_LEN
            )));
        }
        (true, token) => Some(crate::console_settings::ConsoleSettings {
            token: token.as_ref().map(|t| t.trim().to_owned()),
            show_payloads: args.ui_show_payloads || file.http.ui_show_payloads.unwrap_or(false),
            inbox_table: match (&args.ui_inbox_table, &file.http.ui_inbox_table) {
                (Some(table), _) => Some(table.clone()),
                (None, Some(table)) => Some(crate::cli::parse_table(table).map_err(|e| {
                    CliError::usage(format!("http.ui_inbox_table in the configuration file: {e}"))
                })?),
                (None, None) => None,
            },
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
            let mut settings = match &target.source {
                Source::Table => ExactlyOnceSettings::for_table(&table.to_string()),
                Source::Wal(config) => ExactlyOnceSettings::for_wal_slot(&config.slot),
            };
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
            let create = args.create_progress_topic
                || args.migrate
                || file.relay.create_progress_topic.unwrap_or(false);
            settings = settings.with_create_progress_topic(create);
            // A transaction's rows stay in flight until it commits: without room for several,
            // the relay would stop reading at every commit.
            if args.max_in_flight.or(file.relay.max_in_flight).is_none() {
                relay = relay.with_max_in_flight(settings.recommended_max_in_flight());
            }
            Some(settings)
        }
    };

    Ok(RelaySettings {
        migrate: args.migrate,
        relay,
        coordination,
        exactly_once,
        sink,
        kafka,
        broker_wait: args
            .broker_wait
            .or(file.relay.broker_wait)
            .unwrap_or(DEFAULT_BROKER_WAIT),
        retention,
        http_listen,
        http_allowed_hosts: args
            .http_allowed_hosts
            .clone()
            .or_else(|| file.http.allowed_hosts.clone())
            .unwrap_or_default(),
        console,
        health,
        health_interval,
        min_safe_wal_size: args.health_min_safe_wal_size.or(file.health.min_safe_wal_size),
    })
}

/// Refuses what WAL mode does not support, saying what to use instead.
fn wal_restrictions(args: &RelayArgs, file: &FileConfig) -> Result<(), CliError> {
    if let Some(CoordinationArg::WorkBalance | CoordinationArg::Exclusive) =
        args.coordination.or(file.relay.coordination)
    {
        return Err(CliError::usage(
            "--source wal runs with --coordination single: PostgreSQL lets one session stream a \
             replication slot, so a second relay on the same slot already stands by and takes over \
             when the first one's session ends; buckets of keys cannot be shared over one slot",
        ));
    }
    if args.on_dead_letter.or(file.relay.on_dead_letter) == Some(OnDeadLetterArg::ParkKey) {
        return Err(CliError::usage(
            "--on-dead-letter park-key is not supported with --source wal (the relay does not read the \
             dead-letter table back to hold keys): use release-key, the default",
        ));
    }
    if args.completion.or(file.relay.completion) == Some(CompletionArg::MarkPublished)
        || args
            .keep_published_for
            .or(file.retention.keep_published_for)
            .is_some()
    {
        return Err(CliError::usage(
            "--source wal keeps no published messages (they were never rows): remove --completion \
             mark-published and the retention period",
        ));
    }
    Ok(())
}

/// The configured HTTP address (for `status` to find a running relay).
pub(crate) fn http_listen(file: &FileConfig) -> String {
    std::env::var("TXOUTBOX_HTTP_LISTEN")
        .ok()
        .or_else(|| file.http.listen.clone())
        .unwrap_or_else(|| DEFAULT_HTTP_LISTEN.to_owned())
}

/// The configured retention period (for `cleanup`).
pub(crate) fn keep_published_for(file: &FileConfig) -> Option<Duration> {
    std::env::var("TXOUTBOX_KEEP_PUBLISHED_FOR")
        .ok()
        .and_then(|t| crate::cli::parse_duration(&t).ok())
        .or(file.retention.keep_published_for)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table_target() -> Target {
        Target {
            database_url: "postgres://h/d".into(),
            table: TableName::new("t").unwrap(),
            source: Source::Table,
        }
    }

    fn global(url: &str, source: Option<SourceArg>) -> GlobalArgs {
        GlobalArgs {
            config: None,
            database_url: Some(url.into()),
            table: None,
            source,
            wal_slot: None,
            wal_prefix: None,
            wal_max_buffered_bytes: None,
            log_format: crate::cli::LogFormat::Text,
        }
    }

    #[test]
    fn wal_source_comes_from_flags_or_file_and_refuses_what_it_cannot_do() {
        let file: FileConfig = toml::from_str(
            "[relay]\nsource = \"wal\"\n[wal]\nslot = \"orders_relay\"\nprefix = \"orders\"\n\
             [health]\nmin_safe_wal_size = \"64MB\"\n[kafka]\n\"bootstrap.servers\" = \"b:1\"\n",
        )
        .unwrap();
        let target = target(&global("postgres://h/d", None), &file).unwrap();
        let Source::Wal(config) = &target.source else {
            panic!("not WAL: {:?}", target.source)
        };
        assert_eq!(
            (config.slot.as_str(), config.prefix.as_str()),
            ("orders_relay", "orders")
        );
        let mut flags = global("postgres://h/d", None);
        flags.wal_slot = Some("flag_slot".into());
        let Source::Wal(config) = target_source(&flags, &file) else {
            panic!("not WAL")
        };
        assert_eq!(config.slot, "flag_slot");
        let settings = relay(&RelayArgs::default(), &file, &target).unwrap();
        assert_eq!(settings.min_safe_wal_size, Some(64 << 20));

        for url in ["sqlite:///tmp/x.db", "mysql://h/d"] {
            let err = super::target(&global(url, Some(SourceArg::Wal)), &FileConfig::default()).unwrap_err();
            assert!(
                err.to_string().contains("--source wal needs a PostgreSQL"),
                "{err}"
            );
        }
        let mut bad = global("postgres://h/d", Some(SourceArg::Wal));
        bad.wal_slot = Some("Bad-Slot".into());
        assert!(super::target(&bad, &FileConfig::default()).is_err());
        let mut stray = global("postgres://h/d", Some(SourceArg::Table));
        stray.wal_slot = Some("s".into());
        let err = super::target(&stray, &FileConfig::default()).unwrap_err();
        assert!(err.to_string().contains("apply to --source wal only"), "{err}");

        let refused = [
            (
                RelayArgs {
                    coordination: Some(CoordinationArg::WorkBalance),
                    ..RelayArgs::default()
                },
                "--coordination single",
            ),
            (
                RelayArgs {
                    on_dead_letter: Some(OnDeadLetterArg::ParkKey),
                    ..RelayArgs::default()
                },
                "park-key",
            ),
            (
                RelayArgs {
                    keep_published_for: Some(Duration::from_secs(60)),
                    ..RelayArgs::default()
                },
                "keeps no published",
            ),
        ];
        for (args, why) in refused {
            let err = relay(&args, &file, &target).unwrap_err();
            assert!(err.to_string().contains(why), "{err}");
            assert_eq!(err.exit_code, 2);
        }
        // Exactly-once runs in WAL mode, with a transactional id named after the slot.
        let eos = RelayArgs {
            delivery: Some(DeliveryArg::ExactlyOnce),
            ..RelayArgs::default()
        };
        let settings = relay(&eos, &file, &target).unwrap();
        let Source::Wal(wal) = &target.source else {
            panic!("a WAL target")
        };
        assert_eq!(
            settings.exactly_once.unwrap().transactional_id,
            format!("txoutbox-wal-{}", wal.slot)
        );
    }

    fn target_source(global: &GlobalArgs, file: &FileConfig) -> Source {
        super::target(global, file).unwrap().source
    }

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
        let settings = relay(&args, &file, &table_target()).unwrap();
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
        let err = relay(&args, &FileConfig::default(), &table_target()).unwrap_err();
        assert!(err.to_string().contains("mark-published"), "{err}");
    }

    #[test]
    fn dead_letter_settings_come_from_the_file_and_are_checked() {
        let file: FileConfig = toml::from_str(
            "[kafka]\n\"bootstrap.servers\" = \"b:1\"\n[relay]\non_dead_letter = \"park-key\"\n\
             dead_letter_topic = \"{topic}.dead\"\n",
        )
        .unwrap();
        let table = table_target();
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
