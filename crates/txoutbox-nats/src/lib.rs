//! The NATS JetStream sink of [txoutbox](https://docs.rs/txoutbox): the relay publishes each
//! outbox message to a JetStream stream and marks it delivered once the stream acknowledges it.
//!
//! ```no_run
//! use txoutbox_nats::{NatsConfig, NatsSink};
//!
//! # async fn run() -> txoutbox_core::Result<()> {
//! let sink = NatsSink::connect(&NatsConfig::new("nats://127.0.0.1:4222").subject("outbox.{topic}")?).await?;
//! // Relay::new(store, sink, RelayConfig::default())?.run(shutdown).await
//! # let _ = sink; Ok(()) }
//! ```
//!
//! The stream is yours to create (its subjects must cover the subjects the template gives, e.g.
//! `outbox.>`); a message whose subject no stream takes fails like a message to a missing Kafka
//! topic. `Nats-Msg-Id` is the message id, so the stream's duplicate window removes the copies a
//! relay sends again after a crash or a lost acknowledgement.

// No panic on data (why these lints are here and not in Cargo.toml: clippy.toml).
#![warn(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod classify;
mod config;
mod message_headers;
mod sink;
mod subject;

pub use config::{DEFAULT_ACK_TIMEOUT, DEFAULT_MAX_ACKS_IN_FLIGHT, NatsAuth, NatsConfig};
pub use message_headers::{KEY_BASE64_HEADER, KEY_HEADER, key_header};
pub use sink::NatsSink;
pub use subject::SubjectTemplate;
