//! The RabbitMQ sink of [txoutbox](https://docs.rs/txoutbox): the relay publishes each outbox
//! message to an exchange, persistent and mandatory, and marks it delivered once the broker
//! confirms it.
//!
//! ```no_run
//! use txoutbox_rabbitmq::{RabbitMqConfig, RabbitMqSink};
//!
//! # fn run() -> txoutbox_core::Result<()> {
//! let sink = RabbitMqSink::new(&RabbitMqConfig::new("amqp://relay:secret@rabbit:5672/%2f").exchange("events"))?;
//! // Relay::new(store, sink, RelayConfig::default())?.run(shutdown).await
//! # let _ = sink; Ok(()) }
//! ```
//!
//! Exchanges, queues and bindings are yours to declare (quorum queues or streams for messages
//! that must survive a node); a message no queue is bound for fails like a message to a missing
//! Kafka topic.

// No panic on data (why these lints are here and not in Cargo.toml: clippy.toml).
#![warn(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod classify;
mod config;
mod message_properties;
mod sink;

pub use config::{DEFAULT_CONFIRM_TIMEOUT, DEFAULT_MAX_MESSAGE_BYTES, RabbitMqConfig};
pub use message_properties::KEY_HEADER;
pub use sink::RabbitMqSink;
