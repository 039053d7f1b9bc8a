//! An axum service with the relay in-process: PostgreSQL (sqlx) and Kafka.
//!
//! `POST /orders` inserts an order and publishes its `OrderPlaced` event in one transaction; the
//! relay, running in the same process, sends the event to Kafka. The relay's routes are mounted
//! next to it: `/live`, `/health`, `/status`, `/metrics` and the read-only console at `/ui`.
//! One signal (SIGTERM or Ctrl-C) stops the server, then the relay, which finishes what it has
//! in flight.
//!
//! ```sh
//! TXOUTBOX_POSTGRES_URL=postgres://app@localhost/shop TXOUTBOX_KAFKA_BOOTSTRAP=localhost:9092 \
//!     cargo run -p txoutbox --features postgres,axum --example axum_service
//! curl -X POST localhost:3000/orders -H 'content-type: application/json' \
//!     -d '{"customer": "alice", "total_cents": 2500}'
//! curl localhost:3000/health; curl localhost:3000/metrics
//! ```
//!
//! The test suite runs [`serve`] (`tests/axum_service.rs`).

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Row};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use txoutbox::axum::{Console, PrometheusHandle, RelayRoutes, install_prometheus};
use txoutbox::kafka::{KafkaConfig, KafkaSink};
use txoutbox::postgres::PgOutbox;
use txoutbox::{HealthCheck, HealthThresholds, Relay, RelayConfig, TableName, Topic, Topics, Wakeup};

/// The event each order publishes.
#[derive(Debug, Serialize)]
pub(crate) struct OrderPlaced {
    pub(crate) order_id: i64,
    pub(crate) customer: String,
    pub(crate) total_cents: i64,
}

/// The body of `POST /orders`.
#[derive(Debug, Deserialize)]
pub(crate) struct NewOrder {
    pub(crate) customer: String,
    pub(crate) total_cents: i64,
}

/// Where the service keeps its data and sends its events.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) database_url: String,
    pub(crate) kafka_bootstrap: String,
    /// The schema of the `orders` and outbox tables (`None`: the search path's).
    pub(crate) schema: Option<String>,
    /// The Kafka topic of `OrderPlaced`.
    pub(crate) topic: String,
}

/// What the request handlers share.
#[derive(Clone)]
struct Shop {
    pool: PgPool,
    outbox: PgOutbox,
    orders: String,
    wakeup: Wakeup,
}

/// Runs the service on `listener` until `shutdown` is cancelled: the HTTP server stops first
/// (finishing its requests), then the relay (finishing what it has in flight).
pub(crate) async fn serve(
    settings: Settings,
    listener: TcpListener,
    prometheus: PrometheusHandle,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let table = |name: &str| match &settings.schema {
        Some(schema) => TableName::with_schema(schema, name),
        None => TableName::new(name),
    };
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .connect(&settings.database_url)
        .await?;
    let orders = table("orders")?.quoted();
    sqlx::raw_sql(AssertSqlSafe(format!(
        "CREATE TABLE IF NOT EXISTS {orders} \
         (id BIGSERIAL PRIMARY KEY, customer TEXT NOT NULL, total_cents BIGINT NOT NULL)"
    )))
    .execute(&pool)
    .await?;

    // The outbox: its topics, its table, and the relay over it.
    let topics =
        Topics::new().with(Topic::<OrderPlaced>::json(&settings.topic)?.key(|o| o.customer.clone()))?;
    let outbox = PgOutbox::with_table(topics, table("outbox_messages")?);
    outbox.migrate(&pool).await?;
    let store = outbox.store(pool.clone());
    let sink = KafkaSink::new(&KafkaConfig::new(&settings.kafka_bootstrap))?;
    let relay = Relay::new(store.clone(), sink, RelayConfig::default())?.start();

    // The relay's routes, next to the service's own.
    let health = HealthCheck::new(store.clone(), HealthThresholds::none()).with_relay(relay.monitor());
    let relay_routes = RelayRoutes::new(relay.monitor())
        .health_check(health, Duration::from_secs(1))
        .prometheus(prometheus)
        .console(Console::new(store))
        .into_router()?;
    let shop = Shop {
        pool,
        outbox,
        orders,
        wakeup: relay.wakeup(),
    };
    let app = Router::new()
        .route("/orders", post(place_order))
        .with_state(shop)
        .merge(relay_routes);

    let served = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await;
    // The server has stopped: no request publishes any more. Then the relay.
    let relayed = relay.shutdown().await;
    served?;
    relayed?;
    Ok(())
}

/// `POST /orders`: the order and its event, in one transaction.
async fn place_order(
    State(shop): State<Shop>,
    Json(order): Json<NewOrder>,
) -> Result<(StatusCode, Json<serde_json::Value>), (StatusCode, String)> {
    let failed = |e: &dyn std::fmt::Display| (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n"));
    let mut tx = shop.pool.begin().await.map_err(|e| failed(&e))?;
    let order_id: i64 = sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {} (customer, total_cents) VALUES ($1, $2) RETURNING id",
        shop.orders
    )))
    .bind(&order.customer)
    .bind(order.total_cents)
    .fetch_one(&mut *tx)
    .await
    .and_then(|row| row.try_get("id"))
    .map_err(|e| failed(&e))?;
    let event = OrderPlaced {
        order_id,
        customer: order.customer,
        total_cents: order.total_cents,
    };
    shop.outbox
        .publish(&mut *tx, &event)
        .await
        .map_err(|e| failed(&e))?;
    tx.commit().await.map_err(|e| failed(&e))?;
    shop.wakeup.notify(); // send now rather than at the next LISTEN/NOTIFY or poll
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({ "order_id": order_id })),
    ))
}

/// Stops the service on SIGTERM or Ctrl-C.
async fn signalled(shutdown: CancellationToken) {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
    shutdown.cancel();
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let env = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_owned());
    let settings = Settings {
        database_url: env("TXOUTBOX_POSTGRES_URL", "postgres://localhost/shop"),
        kafka_bootstrap: env("TXOUTBOX_KAFKA_BOOTSTRAP", "127.0.0.1:9092"),
        schema: None,
        topic: env("SHOP_TOPIC", "shop.orders"),
    };
    let listener = TcpListener::bind(env("SHOP_LISTEN", "127.0.0.1:3000")).await?;
    tracing::info!(address = %listener.local_addr()?, "serving /orders and the relay's routes");
    let shutdown = CancellationToken::new();
    tokio::spawn(signalled(shutdown.clone()));
    serve(settings, listener, install_prometheus()?, shutdown).await
}
