//! # txoutbox
//!
//! A transactional outbox for Rust. Your service writes its business rows and the messages they
//! cause in **one [sqlx] database transaction**, on PostgreSQL, SQLite or MySQL/MariaDB. A relay
//! then publishes every committed message to **Apache Kafka** — never one from a rolled-back
//! transaction, never losing one, keeping the order of messages with the same key.
//!
//! ## Feature flags
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `sqlite` | yes | [`sqlite`]: the SQLite store, one relay per database file |
//! | `kafka` | yes | [`kafka`]: the Kafka sink, over rdkafka with its bundled librdkafka |
//! | `postgres` | | [`postgres`]: the PostgreSQL store, woken by LISTEN/NOTIFY |
//! | `postgres-wal` | | [`postgres_wal`]: PostgreSQL WAL mode, messages relayed from a logical replication slot (turns on `postgres`) |
//! | `mysql` | | [`mysql`]: the MySQL 8.0.16+ / MariaDB 10.6+ store |
//! | `opentelemetry` | | the publishing span's W3C `traceparent` (and `tracestate`) in message headers |
//! | `axum` | | [`axum`]: the relay's endpoints and web console as an axum router to mount |
//! | `inbox` | | [`inbox`]: consume Kafka records effectively once, each in a transaction that records its id (with the stores of the database features that are on) |
//! | `tls-rustls`, `tls-native-tls` | | sqlx's TLS backend for the database connections, if your own sqlx dependency does not choose one |
//!
//! **TLS**: txoutbox turns on no TLS backend of sqlx by default. The application chooses one for
//! its own sqlx dependency (`tls-rustls` or `tls-native-tls`) — or through this crate's features of
//! the same names — and the connections it hands to txoutbox use it. Kafka's TLS and SASL are
//! librdkafka properties, set through [`KafkaConfig::set`](kafka::KafkaConfig::set) (the `kafka`
//! feature links OpenSSL for them, whatever the database uses). WAL mode's replication connection
//! uses rustls.
//!
//! ## PostgreSQL
//!
//! ```toml
//! [dependencies]
//! txoutbox = { version = "0.1", features = ["postgres"] }
//! sqlx = { version = "0.9", features = ["runtime-tokio", "postgres"] }
//! serde = { version = "1", features = ["derive"] }
//! ```
//!
//! ```no_run
//! # #[cfg(all(feature = "postgres", feature = "kafka"))]
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use serde::Serialize;
//! use txoutbox::kafka::{KafkaConfig, KafkaSink};
//! use txoutbox::postgres::PgOutbox;
//! use txoutbox::{Relay, RelayConfig, Topic, Topics};
//!
//! #[derive(Serialize)]
//! struct OrderCreated {
//!     order_id: i64,
//!     customer: String,
//! }
//!
//! // At start-up: the topics, the table, the relay.
//! let pool = sqlx::PgPool::connect("postgres://app@localhost/shop").await?;
//! let topics = Topics::new().with(
//!     Topic::<OrderCreated>::json("orders")? // name checked against Kafka's rules
//!         .key(|o| o.order_id.to_string()) // same key → same partition, in write order
//!         .header("source", "shop"),
//! )?;
//! let outbox = PgOutbox::new(topics); // table `outbox_messages`; `with_table` for another
//! outbox.migrate(&pool).await?; // idempotent
//!
//! let sink = KafkaSink::new(&KafkaConfig::new("broker:9092").set("compression.type", "lz4"))?;
//! let relay = Relay::new(outbox.store(pool.clone()), sink, RelayConfig::default())?.start();
//!
//! // In a request handler: the order and its event commit together, or not at all.
//! let mut tx = pool.begin().await?;
//! sqlx::query("INSERT INTO orders (id, customer) VALUES ($1, $2)")
//!     .bind(42_i64)
//!     .bind("alice")
//!     .execute(&mut *tx)
//!     .await?;
//! outbox
//!     .publish(&mut *tx, &OrderCreated { order_id: 42, customer: "alice".into() })
//!     .await?;
//! tx.commit().await?; // LISTEN/NOTIFY wakes the relay
//!
//! // At shutdown: finish what is in flight.
//! relay.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! ## SQLite
//!
//! The default features are enough (`txoutbox = "0.1"`, and sqlx with `sqlite`). SQLite has no
//! notifications: an outbox transaction ([`SqliteOutbox::begin`](sqlite::SqliteOutbox::begin))
//! wakes the relay of its own process when it commits.
//!
//! ```no_run
//! # #[cfg(all(feature = "sqlite", feature = "kafka"))]
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use serde::Serialize;
//! use txoutbox::kafka::{KafkaConfig, KafkaSink};
//! use txoutbox::sqlite::SqliteOutbox;
//! use txoutbox::{Relay, RelayConfig, Topic, Topics};
//!
//! #[derive(Serialize)]
//! struct OrderCreated {
//!     order_id: i64,
//!     total_cents: i64,
//! }
//!
//! let pool = sqlx::SqlitePool::connect("sqlite://shop.db?mode=rwc").await?;
//! let topics = Topics::new()
//!     .with(Topic::<OrderCreated>::json("orders")?.key(|o| o.order_id.to_string()))?;
//! let outbox = SqliteOutbox::new(topics);
//! outbox.migrate(&pool).await?;
//!
//! let sink = KafkaSink::new(&KafkaConfig::new("127.0.0.1:9092"))?;
//! let relay = Relay::new(outbox.store(pool.clone()), sink, RelayConfig::default())?.start();
//! let outbox = outbox.with_wakeup(relay.wakeup()); // commits wake the relay at once
//!
//! let mut tx = outbox.begin(&pool).await?;
//! sqlx::query("INSERT INTO orders (id, total_cents) VALUES (?, ?)")
//!     .bind(1_i64)
//!     .bind(2_500_i64)
//!     .execute(&mut *tx)
//!     .await?;
//! tx.publish(&OrderCreated { order_id: 1, total_cents: 2_500 }).await?;
//! tx.commit().await?;
//!
//! relay.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! ## The relay's lifecycle
//!
//! - **Start**: [`Relay::new`] checks the [`RelayConfig`] and pairs a store with a sink;
//!   [`Relay::start`] spawns it on the current tokio runtime and returns a [`RelayHandle`]
//!   ([`Relay::run_until`] runs it in the current task instead, until a future you pass
//!   resolves). It reads committed rows in id order, hands them to the sink without waiting for
//!   each acknowledgement, and marks (or deletes, the default [`Completion`]) a row only once
//!   Kafka acknowledged it.
//! - **Wake-up**: between reads the relay sleeps at most [`RelayConfig::poll_interval`].
//!   [`Wakeup::notify`] (from [`RelayHandle::wakeup`]) wakes it at once; attach it to the outbox
//!   with `with_wakeup` and the outbox's transactions call it when they commit. Many calls coalesce
//!   into one read. On PostgreSQL, push wake-ups (`PgOutbox::set_push_wakeups`, off by default:
//!   they cost every insert) also wake it through LISTEN/NOTIFY on commits from any process.
//! - **Failures**: a message Kafka refuses is retried with back-off ([`RetryPolicy`]), holding
//!   back only its own key, and dead-lettered after its last attempt ([`OnDeadLetter`],
//!   [`DeadLetters`] to list and replay). An outage of the database or the brokers delays
//!   messages, never drops them. [`RelayHandle::monitor`] and [`HealthCheck`] tell a health
//!   endpoint how far behind the relay is.
//! - **Shutdown**: [`RelayHandle::shutdown`] stops reading, waits up to
//!   [`RelayConfig::shutdown_timeout`] for the messages in flight, marks the delivered ones and
//!   returns the error that stopped the relay, if one did. A message whose delivery is unknown
//!   stays pending and is sent again by the next relay: delivery is at least once (exactly once
//!   into Kafka for read_committed consumers with
//!   [`ExactlyOnceSink`](kafka::ExactlyOnceSink)). Every record carries a stable
//!   [`MESSAGE_ID_HEADER`] for consumers to de-duplicate.
//!
//! ## Several replicas
//!
//! Every replica of a service may run the code above as it is. In the default single mode one
//! relay per table is active: on PostgreSQL it holds the table's advisory lock, on MySQL/MariaDB a
//! server lock, and the others stand by — nothing read, no producer started — and take over when
//! it stops or its connection ends (a graceful stop settles what it sent first, so a hand-over
//! sends nothing twice). SQLite refuses a second relay on a table and file. To have every replica
//! relay a share of the keys, choose work balance (PostgreSQL); exclusive mode keeps one active
//! with leases that also fence a paused node's writes:
//!
//! ```no_run
//! # #[cfg(all(feature = "postgres", feature = "kafka"))]
//! # async fn replicas(pool: sqlx::PgPool, outbox: txoutbox::postgres::PgOutbox, sink: txoutbox::kafka::KafkaSink) -> txoutbox::Result<()> {
//! use txoutbox::coordination::Coordination;
//! use txoutbox::{Relay, RelayConfig};
//!
//! let relay = Relay::coordinated(outbox.store(pool), sink, RelayConfig::default(), Coordination::work_balance())?
//!     .start();
//! # relay.shutdown().await }
//! ```
//!
//! ## Modules
//!
//! - The crate root: [`Topics`] and [`Topic`] (which type goes to which Kafka topic, with its
//!   key and headers), [`Relay`] and [`RelayConfig`], [`Error`], the [`Store`] and [`Sink`]
//!   traits for stores and sinks of your own.
//! - [`postgres`], [`postgres_wal`], [`sqlite`], [`mysql`]: an outbox per database (`migrate`,
//!   `publish`, `publish_all`, `begin`, `store`).
//! - [`kafka`]: [`KafkaSink`](kafka::KafkaSink) and its [`KafkaConfig`](kafka::KafkaConfig) (any
//!   librdkafka property; secret values never appear in logs or `Debug` output).
//! - [`coordination`]: several relay nodes on one table (exclusive and work-balance modes).
//! - [`metrics`]: the metrics the relay records, through the `metrics` crate facade (labelled by
//!   table).
//! - [`axum`] (feature `axum`): the relay's `/live`, `/health`, `/status`, `/metrics` and web
//!   console as a router to mount in an axum application ([`axum::RelayRoutes`]).
//! - [`inbox`] (feature `inbox`): the consumer side — [`inbox::InboxConsumer`] handles each Kafka
//!   record once per message id, in a transaction on your database that may also `publish`
//!   follow-up messages through the outbox.
//!
//! Services in other languages may insert rows into the outbox table directly; the daemon
//! `txoutbox` ([txoutbox-cli](https://crates.io/crates/txoutbox-cli)) relays them without any Rust
//! in the service.
//!
//! [sqlx]: https://docs.rs/sqlx

// docs.rs marks each feature's items with the feature that brings them.
#![cfg_attr(docsrs, feature(doc_cfg))]
// The guide links to every feature's module; with a feature off, its links have no target.
#![cfg_attr(
    not(all(
        feature = "postgres",
        feature = "postgres-wal",
        feature = "sqlite",
        feature = "mysql",
        feature = "kafka",
        feature = "axum",
        feature = "inbox"
    )),
    allow(rustdoc::broken_intra_doc_links)
)]
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
/// (the envelope, the guarantees and the risks of a slot: [`txoutbox_postgres_wal`]).
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

/// The NATS JetStream sink.
#[cfg(feature = "nats")]
pub mod nats {
    pub use txoutbox_nats::*;
}

/// The RabbitMQ sink.
#[cfg(feature = "rabbitmq")]
pub mod rabbitmq {
    pub use txoutbox_rabbitmq::*;
}

/// The Redis Streams sink.
#[cfg(feature = "redis")]
pub mod redis {
    pub use txoutbox_redis::*;
}

/// The relay's HTTP endpoints as an axum router to mount: `/metrics`, `/health`, `/live`,
/// `/status` and the web console.
#[cfg(feature = "axum")]
pub mod axum {
    pub use txoutbox_axum::*;
}

/// The inbox: consume Kafka records effectively once, each in a database transaction that records
/// its message id (the table: `docs/inbox.md`).
#[cfg(feature = "inbox")]
pub mod inbox {
    pub use txoutbox_inbox::*;
}
