//! The command line: subcommands and flags. Every setting may also come from the environment
//! (`TXOUTBOX_*`, shown in `--help`) or from the config file; flags win over the environment,
//! which wins over the file, which wins over the defaults.

use std::path::PathBuf;
use std::time::Duration;

use clap::builder::NonEmptyStringValueParser;
use clap::{Args, Parser, Subcommand, ValueEnum};
use txoutbox_core::TableName;

/// The txoutbox daemon and operator tool: relays committed outbox rows to Kafka.
#[derive(Debug, Parser)]
#[command(name = "txoutbox", version, about, long_about = None)]
pub(crate) struct Cli {
    /// Settings shared by every command.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Where the outbox is and how to log.
#[derive(Debug, Args)]
pub(crate) struct GlobalArgs {
    /// A TOML config file (see docs/operations.md). Its keys are checked: a typo is an error.
    #[arg(long, short = 'c', env = "TXOUTBOX_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// The outbox database: postgres://user@host/db, mysql://user@host/db or
    /// sqlite:///path/to/file.db.
    #[arg(long, env = "TXOUTBOX_DATABASE_URL", hide_env_values = true, global = true)]
    pub database_url: Option<String>,
    /// The outbox table, `table` or `schema.table`. Default: outbox_messages.
    #[arg(long, env = "TXOUTBOX_TABLE", global = true)]
    pub table: Option<String>,
    /// Where the relay reads messages: the outbox table (default), or, on PostgreSQL, the
    /// write-ahead log through a logical replication slot (see docs/wal-mode.md).
    #[arg(long, env = "TXOUTBOX_SOURCE", value_enum, global = true)]
    pub source: Option<SourceArg>,
    /// WAL mode: the logical replication slot, one per relay group. Default: txoutbox.
    #[arg(long, env = "TXOUTBOX_WAL_SLOT", global = true)]
    pub wal_slot: Option<String>,
    /// WAL mode: the logical-message prefix writers use. Default: txoutbox.
    #[arg(long, env = "TXOUTBOX_WAL_PREFIX", global = true)]
    pub wal_prefix: Option<String>,
    /// WAL mode: bytes of decoded messages the relay holds before it pauses the stream, e.g.
    /// 256MB (the default); a larger transaction streams through it.
    #[arg(long, env = "TXOUTBOX_WAL_MAX_BUFFERED_BYTES", value_parser = parse_bytes, global = true)]
    pub wal_max_buffered_bytes: Option<u64>,
    /// Log format on stderr. Levels come from RUST_LOG (default: info).
    #[arg(long, env = "TXOUTBOX_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per event, for log collectors.
    Json,
}

/// Where the relay reads messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum SourceArg {
    /// The outbox table (every database).
    Table,
    /// PostgreSQL's write-ahead log, through a logical replication slot.
    Wal,
}

/// `txoutbox migrate`'s options.
#[derive(Debug, Args)]
pub(crate) struct MigrateArgs {
    /// PostgreSQL table mode: turn push wake-ups on or off. On, every INSERT into the table wakes
    /// a sleeping relay at once (LISTEN/NOTIFY), at a cost to every insert statement; off (the
    /// default since schema version 7), rows other processes commit while the relay sleeps wait
    /// at most its poll interval. Kept by the table until changed.
    #[arg(long, value_name = "on|off", value_enum)]
    pub(crate) push_wakeups: Option<Switch>,
}

/// On or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Switch {
    /// Turned on.
    On,
    /// Turned off.
    Off,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Creates or upgrades the outbox table (idempotent; safe from several replicas at once);
    /// with --source wal, the replication slot, its publication and the dead-letter table.
    Migrate(MigrateArgs),
    /// Runs the relay until SIGTERM or SIGINT, with /metrics, /health, /live, /status (and /ui
    /// with --ui) on the HTTP port.
    Relay(Box<RelayArgs>),
    /// Shows the backlog: pending messages per topic, the oldest one's age, dead letters, rate.
    Status(StatusArgs),
    /// Lists, replays or purges dead-lettered messages.
    #[command(subcommand)]
    DeadLetters(DeadLettersCommand),
    /// Deletes published rows older than the retention period, in small batches, once.
    Cleanup(CleanupArgs),
    /// Lists, replays or purges the records a Kafka consumer's inbox table (txoutbox-inbox)
    /// parked after its handler kept failing.
    #[command(subcommand)]
    Inbox(InboxCommand),
    /// WAL mode's replication slot.
    #[command(subcommand)]
    Wal(WalCommand),
    /// Asks the running relay's HTTP port for /live (or another path); exits 0 on `200`, 1
    /// otherwise: the container image's health check.
    Probe(crate::commands::probe::ProbeArgs),
}

/// `txoutbox wal ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum WalCommand {
    /// Drops the replication slot and its publication, so PostgreSQL stops keeping WAL for it.
    /// Messages committed since the relay's last confirmed position are lost with it.
    DropSlot {
        /// Required: confirms that unrelayed messages in the slot may be lost.
        #[arg(long)]
        confirm: bool,
    },
}

/// Flags of `txoutbox relay`.
#[derive(Debug, Args, Default)]
pub(crate) struct RelayArgs {
    /// Create or upgrade the outbox table first (as `txoutbox migrate` does).
    #[arg(long, env = "TXOUTBOX_MIGRATE")]
    pub migrate: bool,
    /// Where the relay publishes: Kafka (the default), NATS JetStream, RabbitMQ or Redis Streams.
    #[arg(long, env = "TXOUTBOX_SINK", value_enum)]
    pub sink: Option<SinkArg>,
    /// Kafka bootstrap servers, host:port[,host:port].
    #[arg(long, env = "TXOUTBOX_KAFKA_BOOTSTRAP")]
    pub kafka_bootstrap: Option<String>,
    /// A librdkafka producer property, key=value (repeatable), e.g. -X compression.type=lz4.
    #[arg(long = "kafka-property", short = 'X', value_name = "KEY=VALUE", value_parser = parse_property)]
    pub kafka_properties: Vec<(String, String)>,
    /// NATS: the servers, nats://host:port[,nats://host:port] (`tls://` for TLS).
    #[arg(long, env = "TXOUTBOX_NATS_URL", hide_env_values = true)]
    pub nats_url: Option<String>,
    /// NATS: each message's subject; `{topic}` and `{key}` are replaced (default `{topic}`), e.g.
    /// `outbox.{topic}`. A JetStream stream must take the subjects.
    #[arg(long, env = "TXOUTBOX_NATS_SUBJECT")]
    pub nats_subject: Option<String>,
    /// NATS: a credentials file (user JWT and NKey seed, as `nsc` writes it).
    #[arg(long, env = "TXOUTBOX_NATS_CREDS_FILE")]
    pub nats_creds_file: Option<std::path::PathBuf>,
    /// NATS: the user; its password from TXOUTBOX_NATS_PASSWORD or TXOUTBOX_NATS_PASSWORD_FILE.
    /// (A token: TXOUTBOX_NATS_TOKEN or TXOUTBOX_NATS_TOKEN_FILE; an NKey seed: TXOUTBOX_NATS_NKEY
    /// or TXOUTBOX_NATS_NKEY_FILE.)
    #[arg(long, env = "TXOUTBOX_NATS_USER")]
    pub nats_user: Option<String>,
    /// NATS: the certificate authorities (PEM) that sign the server's certificate.
    #[arg(long, env = "TXOUTBOX_NATS_TLS_CA_FILE")]
    pub nats_tls_ca_file: Option<std::path::PathBuf>,
    /// NATS: a client certificate (PEM), with --nats-tls-key-file.
    #[arg(long, env = "TXOUTBOX_NATS_TLS_CERT_FILE", requires = "nats_tls_key_file")]
    pub nats_tls_cert_file: Option<std::path::PathBuf>,
    /// NATS: the client certificate's key (PEM).
    #[arg(long, env = "TXOUTBOX_NATS_TLS_KEY_FILE", requires = "nats_tls_cert_file")]
    pub nats_tls_key_file: Option<std::path::PathBuf>,
    /// NATS: refuse a server without TLS.
    #[arg(long, env = "TXOUTBOX_NATS_REQUIRE_TLS")]
    pub nats_require_tls: bool,
    /// NATS: how long a publish waits for its acknowledgement (default 10s).
    #[arg(long, env = "TXOUTBOX_NATS_ACK_TIMEOUT", value_parser = parse_duration)]
    pub nats_ack_timeout: Option<Duration>,
    /// RabbitMQ: the broker, amqp://user:password@host:5672/vhost (`amqps://` for TLS). Also
    /// from TXOUTBOX_RABBITMQ_URL_FILE.
    #[arg(long, env = "TXOUTBOX_RABBITMQ_URL", hide_env_values = true)]
    pub rabbitmq_url: Option<String>,
    /// RabbitMQ: the exchange messages are published to (default: the default exchange, which
    /// routes to the queue the routing key names).
    #[arg(long, env = "TXOUTBOX_RABBITMQ_EXCHANGE")]
    pub rabbitmq_exchange: Option<String>,
    /// RabbitMQ: each message's routing key; `{topic}` and `{key}` are replaced (default `{topic}`).
    #[arg(long, env = "TXOUTBOX_RABBITMQ_ROUTING_KEY")]
    pub rabbitmq_routing_key: Option<String>,
    /// RabbitMQ: how long a publish waits for the broker's confirm (default 30s).
    #[arg(long, env = "TXOUTBOX_RABBITMQ_CONFIRM_TIMEOUT", value_parser = parse_duration)]
    pub rabbitmq_confirm_timeout: Option<Duration>,
    /// RabbitMQ: the largest message sent, e.g. 16MB (the default; the broker's max_message_size).
    #[arg(long, env = "TXOUTBOX_RABBITMQ_MAX_MESSAGE_BYTES", value_parser = parse_bytes)]
    pub rabbitmq_max_message_bytes: Option<u64>,
    /// Redis: the server, redis://[user][:password]@host:6379/db (`rediss://` for TLS). Also
    /// from TXOUTBOX_REDIS_URL_FILE.
    #[arg(long, env = "TXOUTBOX_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// Redis: the stream each message is added to; `{topic}` and `{key}` are replaced (default
    /// `{topic}`).
    #[arg(long, env = "TXOUTBOX_REDIS_STREAM_KEY")]
    pub redis_stream_key: Option<String>,
    /// Redis: trim each stream to about this many entries (`XADD … MAXLEN ~ n`; default: no trimming).
    #[arg(long, env = "TXOUTBOX_REDIS_MAX_LEN")]
    pub redis_max_len: Option<usize>,
    /// Redis: how long a batch waits for the server's replies (default 10s).
    #[arg(long, env = "TXOUTBOX_REDIS_RESPONSE_TIMEOUT", value_parser = parse_duration)]
    pub redis_response_timeout: Option<Duration>,
    /// Rows read and sent per batch.
    #[arg(long, env = "TXOUTBOX_BATCH_SIZE")]
    pub batch_size: Option<usize>,
    /// Messages sent but not yet completed, at most (default 10,000; with exactly-once, four
    /// transactions' worth: 40,000).
    #[arg(long, env = "TXOUTBOX_MAX_IN_FLIGHT")]
    pub max_in_flight: Option<usize>,
    /// Bytes (topics, keys, payloads, headers) one read of pending rows brings at most, e.g.
    /// 16MB (the default); a larger row is read alone.
    #[arg(long, env = "TXOUTBOX_MAX_BATCH_BYTES", value_parser = parse_bytes)]
    pub max_batch_bytes: Option<u64>,
    /// Bytes of messages sent but not yet completed, at most, e.g. 64MB (the default).
    #[arg(long, env = "TXOUTBOX_MAX_IN_FLIGHT_BYTES", value_parser = parse_bytes)]
    pub max_in_flight_bytes: Option<u64>,
    /// How long an idle relay waits before looking again, e.g. 500ms or 2s.
    #[arg(long, env = "TXOUTBOX_POLL_INTERVAL", value_parser = parse_duration)]
    pub poll_interval: Option<Duration>,
    /// How long the relay waits at start for the Kafka brokers to answer before it exits with
    /// status 1 (default 30s). `0s` starts without waiting: the relay keeps trying and /health
    /// reports the brokers until they answer.
    #[arg(long, env = "TXOUTBOX_BROKER_WAIT", value_parser = parse_duration)]
    pub broker_wait: Option<Duration>,
    /// How relays on one table cooperate (PostgreSQL, MySQL/MariaDB): one relay, one leader at a
    /// time, or buckets of keys shared among all.
    #[arg(long, env = "TXOUTBOX_COORDINATION", value_enum)]
    pub coordination: Option<CoordinationArg>,
    /// How long a relay node's leases outlive its last renewal (exclusive, work-balance).
    #[arg(long, env = "TXOUTBOX_LEASE", value_parser = parse_duration)]
    pub lease: Option<Duration>,
    /// How often a relay node renews its leases; at most a third of --lease.
    #[arg(long, env = "TXOUTBOX_HEARTBEAT", value_parser = parse_duration)]
    pub heartbeat: Option<Duration>,
    /// This relay node's unique name (default: host-pid-random).
    #[arg(long, env = "TXOUTBOX_NODE_ID")]
    pub node_id: Option<String>,
    /// Delivery guarantee: at-least-once (default), or exactly-once for read_committed
    /// consumers (Kafka transactions with progress records; any coordination).
    #[arg(long, env = "TXOUTBOX_DELIVERY", value_enum)]
    pub delivery: Option<DeliveryArg>,
    /// Exactly-once: the Kafka transactional id (default: txoutbox-<table>, in WAL mode
    /// txoutbox-wal-<slot>); the relay also uses `<id>.1` for its second producer. In
    /// work-balance mode each node session uses `<id>-e<epoch>` and `<id>-e<epoch>.1`.
    #[arg(long, env = "TXOUTBOX_TRANSACTIONAL_ID")]
    pub transactional_id: Option<String>,
    /// Exactly-once: the compacted progress topic (default: txoutbox-progress).
    #[arg(long, env = "TXOUTBOX_PROGRESS_TOPIC")]
    pub progress_topic: Option<String>,
    /// Exactly-once: create the progress topic when it is missing (first run; `--migrate` does
    /// too). Without it a missing topic stops the relay: it may have been deleted.
    #[arg(long, env = "TXOUTBOX_CREATE_PROGRESS_TOPIC")]
    pub create_progress_topic: bool,
    /// What happens to delivered rows.
    #[arg(long, env = "TXOUTBOX_COMPLETION", value_enum)]
    pub completion: Option<CompletionArg>,
    /// Attempts before a failing message is dead-lettered.
    #[arg(long, env = "TXOUTBOX_MAX_ATTEMPTS")]
    pub max_attempts: Option<u32>,
    /// What a dead-lettered message does to the later messages of its key: release it (they
    /// flow on) or park it (they wait until the dead one is replayed or purged).
    #[arg(long, env = "TXOUTBOX_ON_DEAD_LETTER", value_enum)]
    pub on_dead_letter: Option<OnDeadLetterArg>,
    /// Also send a copy of each dead-lettered message to this topic; `{topic}` stands for the
    /// message's own topic, e.g. `{topic}.dead`, and for `txoutbox-unreadable` when the row could not be
    /// read (at-least-once delivery only).
    #[arg(long, env = "TXOUTBOX_DEAD_LETTER_TOPIC")]
    pub dead_letter_topic: Option<String>,
    /// Publish only to these topics, comma-separated; `*` and `?` are wildcards, e.g.
    /// `orders.*,billing`. Rows naming another topic are dead-lettered at once with the reason.
    /// Default: every topic a row names (WAL mode warns at start: any role that may connect can
    /// emit messages).
    #[arg(long, env = "TXOUTBOX_ALLOWED_TOPICS", value_delimiter = ',')]
    pub allowed_topics: Option<Vec<String>>,
    /// Keep published rows this long, then purge them (needs --completion mark-published).
    #[arg(long, env = "TXOUTBOX_KEEP_PUBLISHED_FOR", value_parser = parse_duration)]
    pub keep_published_for: Option<Duration>,
    /// The HTTP address for /metrics, /health, /live, /status and /ui; `off` disables it.
    #[arg(long, env = "TXOUTBOX_HTTP_LISTEN")]
    pub http_listen: Option<String>,
    /// Host names (besides IP addresses, `localhost` and the --http-listen host) that HTTP
    /// requests may be addressed to, comma-separated, e.g. the service name a Prometheus scrapes
    /// (`txoutbox:9464`). Requests to other names are refused (DNS rebinding).
    #[arg(long, env = "TXOUTBOX_HTTP_ALLOWED_HOSTS", value_delimiter = ',')]
    pub http_allowed_hosts: Option<Vec<String>>,
    /// Serve the web console at /ui on the HTTP port (see docs/operations.md, "Web console").
    #[arg(long, env = "TXOUTBOX_UI")]
    pub ui: bool,
    /// The bearer token the console's actions (replay, purge) need, at least 16 characters;
    /// without one the console is read-only. Prefer the environment variable to the flag.
    #[arg(long, env = "TXOUTBOX_UI_TOKEN", hide_env_values = true)]
    pub ui_token: Option<String>,
    /// Let the console show dead letters' payloads (hidden by default).
    #[arg(long, env = "TXOUTBOX_UI_SHOW_PAYLOADS")]
    pub ui_show_payloads: bool,
    /// Also show a consumer inbox's parked records in the console (`/ui/inbox`, with replay and
    /// purge): the inbox table's name (optionally `schema.table`) in the relay's database, e.g.
    /// `inbox_messages`.
    #[arg(long, env = "TXOUTBOX_UI_INBOX_TABLE", value_parser = parse_table)]
    pub ui_inbox_table: Option<TableName>,
    /// /health reports 503 above this many pending messages.
    #[arg(long, env = "TXOUTBOX_HEALTH_MAX_PENDING")]
    pub health_max_pending: Option<u64>,
    /// /health reports 503 when the oldest pending message is older than this, e.g. 5m.
    #[arg(long, env = "TXOUTBOX_HEALTH_MAX_AGE", value_parser = parse_duration)]
    pub health_max_age: Option<Duration>,
    /// WAL mode: /health reports 503 when less WAL than this may still be written before
    /// max_slot_wal_keep_size invalidates the slot, e.g. 512MB. Default: 20 % of
    /// max_slot_wal_keep_size.
    #[arg(long, env = "TXOUTBOX_HEALTH_MIN_SAFE_WAL_SIZE", value_parser = parse_bytes)]
    pub health_min_safe_wal_size: Option<u64>,
    /// How often the backlog is measured for /health and the gauges.
    #[arg(long, env = "TXOUTBOX_HEALTH_INTERVAL", value_parser = parse_duration)]
    pub health_interval: Option<Duration>,
}

/// What the relay does with delivered rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum CompletionArg {
    /// Delete them at once (fastest).
    Delete,
    /// Keep them, marked published, until retention purges them.
    MarkPublished,
}

/// What a dead-lettered message does to its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum OnDeadLetterArg {
    /// Later messages of the key flow on (the default).
    ReleaseKey,
    /// Later messages of the key wait until the dead one is replayed or purged.
    ParkKey,
}

/// Where the relay publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum SinkArg {
    /// Apache Kafka (the default).
    Kafka,
    /// NATS JetStream.
    Nats,
    /// RabbitMQ.
    Rabbitmq,
    /// Redis Streams.
    Redis,
}

/// The delivery guarantee.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum DeliveryArg {
    /// Every message at least once; a crash may resend a few (the default).
    AtLeastOnce,
    /// Every message exactly once for read_committed consumers.
    ExactlyOnce,
}

/// How relays on one table cooperate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum CoordinationArg {
    /// One relay per table (nothing coordinated).
    Single,
    /// Every replica runs a relay; the lease holder relays, the others stand by.
    Exclusive,
    /// Buckets of keys shared evenly among the live relays.
    WorkBalance,
}

/// Flags of `txoutbox status`.
#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// Print JSON for scripts instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Redraw every interval until interrupted, e.g. --watch 2s.
    #[arg(long, value_name = "INTERVAL", num_args = 0..=1, default_missing_value = "2s", value_parser = parse_duration)]
    pub watch: Option<Duration>,
    /// A running relay's HTTP address, to show its publish rate. Default: the configured one.
    #[arg(long, env = "TXOUTBOX_RELAY_URL")]
    pub relay_url: Option<String>,
}

/// `txoutbox dead-letters ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum DeadLettersCommand {
    /// Lists dead letters (never their payloads).
    List {
        /// Which ones.
        #[command(flatten)]
        filter: FilterArgs,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Moves dead letters back to pending with their attempts reset; the relay sends them again.
    Replay {
        /// Which ones.
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// Deletes dead letters for good.
    Purge {
        /// Which ones.
        #[command(flatten)]
        filter: FilterArgs,
        /// Required when no filter narrows the selection: purge every dead letter.
        #[arg(long)]
        all: bool,
    },
}

/// Narrows a dead-letter action.
#[derive(Debug, Args, Default)]
pub(crate) struct FilterArgs {
    /// Only this topic.
    #[arg(long)]
    pub topic: Option<String>,
    /// Only this row id.
    #[arg(long, conflicts_with_all = ["from_id", "to_id"])]
    pub id: Option<i64>,
    /// Only row ids from this one on.
    #[arg(long)]
    pub from_id: Option<i64>,
    /// Only row ids up to this one.
    #[arg(long)]
    pub to_id: Option<i64>,
    /// Only rows older than this, e.g. 1h or 7d.
    #[arg(long, value_parser = parse_duration)]
    pub older_than: Option<Duration>,
}

/// `txoutbox inbox ...`: the parked records of an inbox table (txoutbox-inbox), in the database
/// `--database-url` names.
#[derive(Debug, Subcommand)]
pub(crate) enum InboxCommand {
    /// Lists parked records, dead or marked for replay (never their keys, payloads or header
    /// values).
    Parked {
        /// Only this consumer's (its Kafka group id). Default: every consumer's.
        #[arg(long, value_parser = NonEmptyStringValueParser::new())]
        consumer: Option<String>,
        /// The inbox table.
        #[command(flatten)]
        table: InboxTableArgs,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Marks dead records for replay: the running consumer handles each once more (it looks every
    /// 5 s by default) and records it handled, or parks it again with the new error.
    Replay {
        /// The consumer (its Kafka group id).
        #[arg(long, value_parser = NonEmptyStringValueParser::new())]
        consumer: String,
        /// Which ones.
        #[command(flatten)]
        which: InboxReplaySelection,
        /// The inbox table.
        #[command(flatten)]
        table: InboxTableArgs,
    },
    /// Deletes parked records for good, dead or marked for replay.
    Purge {
        /// The consumer (its Kafka group id).
        #[arg(long, value_parser = NonEmptyStringValueParser::new())]
        consumer: String,
        /// Which ones.
        #[command(flatten)]
        which: InboxPurgeSelection,
        /// The inbox table.
        #[command(flatten)]
        table: InboxTableArgs,
    },
}

/// The inbox table of an `inbox` command.
#[derive(Debug, Args)]
pub(crate) struct InboxTableArgs {
    /// The inbox table, `table` or `schema.table` (--table names the outbox's). Default:
    /// inbox_messages.
    #[arg(long = "inbox-table", env = "TXOUTBOX_INBOX_TABLE", value_parser = parse_table, default_value = DEFAULT_INBOX_TABLE)]
    pub name: TableName,
}

/// The inbox table's default name (txoutbox-inbox's `DEFAULT_INBOX_TABLE`).
pub(crate) const DEFAULT_INBOX_TABLE: &str = "inbox_messages";

/// Which records `txoutbox inbox replay` marks: one of the flags is required.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub(crate) struct InboxReplaySelection {
    /// These message ids (repeatable, or several after one --id).
    #[arg(long = "id", value_name = "ID", num_args = 1..)]
    pub ids: Vec<String>,
    /// Every dead record of the consumer.
    #[arg(long)]
    pub all: bool,
}

/// Which records `txoutbox inbox purge` deletes: one of the flags is required.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub(crate) struct InboxPurgeSelection {
    /// These message ids (repeatable, or several after one --id).
    #[arg(long = "id", value_name = "ID", num_args = 1..)]
    pub ids: Vec<String>,
    /// Every parked record of the consumer.
    #[arg(long)]
    pub all: bool,
    /// Records parked longer ago than this, e.g. 7d.
    #[arg(long, value_parser = parse_duration)]
    pub older_than: Option<Duration>,
}

/// Flags of `txoutbox cleanup`.
#[derive(Debug, Args)]
pub(crate) struct CleanupArgs {
    /// Delete published rows older than this. Default: the configured retention.
    #[arg(long, value_parser = parse_duration)]
    pub older_than: Option<Duration>,
    /// Rows per DELETE statement.
    #[arg(long, default_value_t = 1_000)]
    pub batch: usize,
}

/// Parses a table name, `table` or `schema.table`, each part a plain identifier.
pub(crate) fn parse_table(text: &str) -> Result<TableName, String> {
    match text.split_once('.') {
        Some((schema, table)) => TableName::with_schema(schema, table),
        None => TableName::new(text),
    }
    .map_err(|e| e.to_string())
}

/// Parses `5s`, `250ms`, `7d`, ...
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|e| format!("`{text}` is not a duration ({e}); write e.g. 500ms, 30s, 5m, 7d"))
}

/// Parses a byte size: `1048576`, `512kB`, `64MB`, `2GB`, `1TB` (units of 1024, as PostgreSQL's).
pub(crate) fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "kb" => 10,
        "mb" => 20,
        "gb" => 30,
        "tb" => 40,
        _ => u32::MAX,
    };
    number
        .parse::<u64>()
        .ok()
        .filter(|_| shift != u32::MAX)
        .and_then(|n| n.checked_mul(1u64 << shift))
        .ok_or_else(|| format!("`{text}` is not a byte size; write e.g. 1048576, 512kB, 64MB or 2GB"))
}

fn parse_property(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => Ok((key.trim().to_owned(), value.to_owned())),
        // The text may hold a secret: not echoed.
        _ => Err("expected KEY=VALUE, e.g. compression.type=lz4".to_owned()),
    }
}
