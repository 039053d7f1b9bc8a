//! A service in the middle of a chain, effectively once without Kafka transactions: it consumes
//! `OrderPlaced` events, records a payment, and publishes `PaymentRequested` — the three in one
//! PostgreSQL transaction. The inbox skips an order event it has seen (a relay's resend, a
//! re-delivery after a crash or a rebalance); the relay in the same process sends the follow-ups.
//! One signal (SIGTERM or Ctrl-C) stops the consumer, then the relay.
//!
//! ```sh
//! TXOUTBOX_POSTGRES_URL=postgres://app@localhost/payments TXOUTBOX_KAFKA_BOOTSTRAP=localhost:9092 \
//!     cargo run -p txoutbox --features postgres,kafka,inbox --example inbox_service
//! ```

use serde::{Deserialize, Serialize};
use sqlx::{PgPool, Postgres, Transaction};
use txoutbox::inbox::{
    ConsumerConfig, Handler, HandlerError, InboxConfig, InboxConsumer, InboxMessage, PgInbox,
};
use txoutbox::kafka::{KafkaConfig, KafkaSink};
use txoutbox::postgres::PgOutbox;
use txoutbox::{Relay, RelayConfig, Topic, Topics};

/// What the service consumes.
#[derive(Debug, Deserialize)]
struct OrderPlaced {
    order_id: i64,
    total_cents: i64,
}

/// What it publishes for each order.
#[derive(Debug, Serialize)]
struct PaymentRequested {
    order_id: i64,
    amount_cents: i64,
}

/// Records the payment and publishes its request, in the inbox's transaction.
struct Payments {
    outbox: PgOutbox,
}

impl Handler<Transaction<'static, Postgres>> for Payments {
    async fn handle(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        message: &InboxMessage,
    ) -> Result<(), HandlerError> {
        // A payload that does not parse will not parse on a retry either: parked at once.
        let order: OrderPlaced = message.json().map_err(HandlerError::permanent)?;
        sqlx::query("INSERT INTO payments (order_id, amount_cents) VALUES ($1, $2)")
            .bind(order.order_id)
            .bind(order.total_cents)
            .execute(&mut **tx)
            .await?;
        let request = PaymentRequested {
            order_id: order.order_id,
            amount_cents: order.total_cents,
        };
        self.outbox.publish(&mut **tx, &request).await?;
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().with_env_filter("info").init();
    let database_url = std::env::var("TXOUTBOX_POSTGRES_URL")?;
    let bootstrap = std::env::var("TXOUTBOX_KAFKA_BOOTSTRAP")?;
    let pool = PgPool::connect(&database_url).await?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS payments (order_id BIGINT NOT NULL, amount_cents BIGINT NOT NULL)",
    )
    .execute(&pool)
    .await?;

    let topics = Topics::new()
        .with(Topic::<PaymentRequested>::json("payment-requests")?.key(|p| p.order_id.to_string()))?;
    let outbox = PgOutbox::new(topics);
    outbox.migrate(&pool).await?;
    let inbox = PgInbox::new(pool.clone());
    inbox.migrate().await?;

    let sink = KafkaSink::new(&KafkaConfig::new(&bootstrap))?;
    let relay = Relay::new(outbox.store(pool.clone()), sink, RelayConfig::default())?.start();
    let kafka = ConsumerConfig::new(&bootstrap, "payments", ["orders"]);
    let consumer = InboxConsumer::new(kafka, inbox, Payments { outbox }, InboxConfig::default()).start()?;

    shutdown_signal().await;
    consumer.shutdown().await?;
    relay.shutdown().await?;
    Ok(())
}

/// SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(_) => return ctrl_c.await.unwrap_or(()),
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    ctrl_c.await.unwrap_or(());
}
