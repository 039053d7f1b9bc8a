//! # txoutbox
//!
//! A transactional outbox for Rust: write your business rows and the messages they cause in **one
//! database transaction**, and let a relay publish every committed message to **Kafka** — never
//! losing one, never sending one from a rolled-back transaction, keeping per-key order.
//!
//! ```no_run
//! use serde::Serialize;
//! use txoutbox::{Relay, RelayConfig, Topic, Topics};
//! use txoutbox::kafka::{KafkaConfig, KafkaSink};
//! use txoutbox::sqlite::SqliteOutbox;
//!
//! #[derive(Serialize)]
//! struct OrderCreated { order_id: i64, total_cents: i64 }
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let pool = sqlx::SqlitePool::connect("sqlite://shop.db?mode=rwc").await?;
//! let topics = Topics::new()
//!     .with(Topic::<OrderCreated>::json("orders")?.key(|o| o.order_id.to_string()))?;
//! let outbox = SqliteOutbox::new(topics);
//! outbox.migrate(&pool).await?;
//!
//! // The relay, in the same process: reads committed rows, sends them, completes them.
//! let sink = KafkaSink::new(&KafkaConfig::new("127.0.0.1:9092"))?;
//! let relay = Relay::new(outbox.store(pool.clone()), sink, RelayConfig::default())?.start();
//! let wakeup = relay.wakeup();
//!
//! // The business transaction: the order and its event commit together, or not at all.
//! let mut tx = pool.begin().await?;
//! sqlx::query("INSERT INTO orders (id, total_cents) VALUES (?, ?)")
//!     .bind(1_i64).bind(2_500_i64).execute(&mut *tx).await?;
//! outbox.publish(&mut *tx, &OrderCreated { order_id: 1, total_cents: 2_500 }).await?;
//! tx.commit().await?;
//! wakeup.notify(); // optional: send now instead of at the next poll
//!
//! relay.shutdown().await?; // graceful: finishes what is in flight
//! # Ok(()) }
//! ```
//!
//! Features: `sqlite` and `kafka` (default), `postgres`, `postgres-wal` (PostgreSQL WAL mode: relay
//! from a logical replication slot), `mysql` (MySQL 8.0.16+ / MariaDB 10.6+), `axum` (the relay's
//! `/metrics`, `/health`, `/live`, `/status` and web console as a router to mount in an axum
//! application: `axum::RelayRoutes`).
//! See `docs/guarantees.md`, `docs/state-machine.md` and `docs/table-contract.md` in the
//! repository for the semantics.

// No panic on data (why these lints are here and not in Cargo.toml: clippy.toml).
#![warn(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

pub use txoutbox_core::*;

/// The PostgreSQL store.
#[cfg(feature = "postgres")]
pub mod postgres {
    pub use txoutbox_postgres::*;
}

/// PostgreSQL WAL mode: publish as transactional logical messages, relay from a replication slot
/// (`docs/wal-mode.md`).
#[cfg(feature = "postgres-wal")]
pub mod postgres_wal {
    pub use txoutbox_postgres_wal::*;
}

/// The SQLite store (the embedded default).
#[cfg(feature = "sqlite")]
pub mod sqlite {
    pub use txoutbox_sqlite::*;
}

/// The MySQL / MariaDB store.
#[cfg(feature = "mysql")]
pub mod mysql {
    pub use txoutbox_mysql::*;
}

/// The Kafka sink.
#[cfg(feature = "kafka")]
pub mod kafka {
    pub use txoutbox_kafka::*;
}

/// The relay's HTTP endpoints as an axum router to mount: `/metrics`, `/health`, `/live`,
/// `/status` and the web console.
#[cfg(feature = "axum")]
pub mod axum {
    pub use txoutbox_axum::*;
}
