//! A relay as its own process, for the chaos tests that kill it or take its services away. Runs
//! until killed (or SIGTERM: graceful).
//!
//! Environment:
//! - `TXOUTBOX_KAFKA_BOOTSTRAP`: the broker.
//! - `TXOUTBOX_CHAOS_STORE`: `postgres` (default) or `sqlite`.
//! - PostgreSQL: the outbox table `outbox_messages` in the schema `TXOUTBOX_CHAOS_SCHEMA`, at
//!   `TXOUTBOX_POSTGRES_URL`.
//! - SQLite: the outbox table `outbox_messages` in the database file `TXOUTBOX_CHAOS_SQLITE`.
//! - `TXOUTBOX_CHAOS_COMPLETION`: `delete` (default) or `mark` (keep rows, marked published).
//! - `TXOUTBOX_CHAOS_KAFKA`: extra librdkafka properties, `name=value` pairs separated by commas
//!   (e.g. `message.timeout.ms=10000`).
//! - `TXOUTBOX_CHAOS_POLL_MS`: the poll interval (default 200 ms). A long one makes the relay rely
//!   on its wake-ups (PostgreSQL: LISTEN/NOTIFY).
//! - `TXOUTBOX_CHAOS_HEALTH_FILE`: when set, every change of the relay's view of Kafka and of its
//!   database (`RelayMonitor::sink()`, `store()`) is appended to this file as
//!   `<epoch ms> <sink> <store>`, each `unknown`, `ok` or `failing`, read by the tests that check
//!   the relay's health during an outage.

use std::time::Duration;

use txoutbox_core::{Completion, Relay, RelayConfig, Sink, Store, TableName};
use txoutbox_kafka::{KafkaConfig, KafkaSink};
use txoutbox_postgres::PgOutbox;
use txoutbox_sqlite::SqliteOutbox;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    txoutbox_testing::init_tracing();
    let mut kafka = KafkaConfig::new(txoutbox_testing::kafka::bootstrap());
    for pair in std::env::var("TXOUTBOX_CHAOS_KAFKA")
        .unwrap_or_default()
        .split(',')
    {
        if let Some((name, value)) = pair.split_once('=') {
            kafka = kafka.set(name.trim(), value.trim());
        }
    }
    let sink = KafkaSink::new(&kafka)?;
    let mut config = RelayConfig::default()
        .with_batch_size(500)
        .with_poll_interval(Duration::from_millis(
            std::env::var("TXOUTBOX_CHAOS_POLL_MS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(200),
        ));
    if let Some(ms) = std::env::var("TXOUTBOX_CHAOS_STORE_TIMEOUT_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        config = config.with_store_timeout(Duration::from_millis(ms));
    }
    if std::env::var("TXOUTBOX_CHAOS_COMPLETION").as_deref() == Ok("mark") {
        config = config.with_completion(Completion::MarkPublished);
    }
    match std::env::var("TXOUTBOX_CHAOS_STORE").as_deref() {
        Ok("sqlite") => {
            let path = txoutbox_testing::required_env("TXOUTBOX_CHAOS_SQLITE");
            let pool = txoutbox_testing::sqlite::TestDb::connect(path.as_ref(), 4).await;
            let outbox = SqliteOutbox::new(txoutbox_core::Topics::new());
            run(outbox.store(pool), sink, config).await
        }
        Ok("postgres") | Err(_) => {
            let schema = txoutbox_testing::required_env("TXOUTBOX_CHAOS_SCHEMA");
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(4)
                .connect(&txoutbox_testing::postgres::url())
                .await?;
            let outbox = PgOutbox::with_table(
                txoutbox_core::Topics::new(),
                TableName::with_schema(schema, "outbox_messages")?,
            );
            run(outbox.store(pool), sink, config).await
        }
        Ok(other) => anyhow::bail!("TXOUTBOX_CHAOS_STORE={other}: expected postgres or sqlite"),
    }
}

async fn run(store: impl Store, sink: impl Sink, config: RelayConfig) -> anyhow::Result<()> {
    let relay = Relay::new(store, sink, config)?;
    if let Ok(path) = std::env::var("TXOUTBOX_CHAOS_HEALTH_FILE") {
        tokio::spawn(record_sink_health(relay.monitor(), path));
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    relay
        .run_until(async move {
            term.recv().await;
        })
        .await?;
    Ok(())
}

/// Appends each change of the sink's or the store's condition to `path` (checked every 50 ms).
async fn record_sink_health(monitor: txoutbox_core::RelayMonitor, path: String) {
    use std::io::Write;
    fn name(c: txoutbox_core::Condition) -> &'static str {
        match c {
            txoutbox_core::Condition::Ok => "ok",
            c if c.is_failing() => "failing",
            _ => "unknown",
        }
    }
    let mut last = String::new();
    loop {
        let state = format!("{} {}", name(monitor.sink()), name(monitor.store()));
        if state != last {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis();
            if let Ok(mut file) = std::fs::OpenOptions::new().create(true).append(true).open(&path) {
                let _ = writeln!(file, "{now} {state}");
            }
            last = state;
        }
        tokio::time::sleep(Duration::from_millis(50)).await; // sampling period of the health record
    }
}
