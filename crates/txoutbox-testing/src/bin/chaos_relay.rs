//! A relay as its own process, for the chaos tests that `kill -9` it: PostgreSQL outbox table in
//! the schema `TXOUTBOX_CHAOS_SCHEMA`, Kafka at `TXOUTBOX_KAFKA_BOOTSTRAP`. Runs until killed (or
//! SIGTERM: graceful).

use std::time::Duration;

use txoutbox_core::{Relay, RelayConfig, TableName};
use txoutbox_kafka::{KafkaConfig, KafkaSink};
use txoutbox_postgres::PgOutbox;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    txoutbox_testing::init_tracing();
    let schema = txoutbox_testing::required_env("TXOUTBOX_CHAOS_SCHEMA");
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect(&txoutbox_testing::postgres::url())
        .await?;
    let outbox = PgOutbox::with_table(
        txoutbox_core::Topics::new(),
        TableName::with_schema(schema, "outbox_messages")?,
    );
    let sink = KafkaSink::new(&KafkaConfig::new(txoutbox_testing::kafka::bootstrap()))?;
    let config = RelayConfig::default()
        .with_batch_size(500)
        .with_poll_interval(Duration::from_millis(200));
    let relay = Relay::new(outbox.store(pool), sink, config)?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    relay
        .run_until(async move {
            term.recv().await;
        })
        .await?;
    Ok(())
}
