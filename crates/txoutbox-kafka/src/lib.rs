//! Kafka sink for [txoutbox](https://docs.rs/txoutbox), over [rdkafka] with the bundled librdkafka.
//!
//! The producer is idempotent with `acks=all`: each partition keeps its order across retries, and
//! an acknowledged message survives the loss of its leader. Any librdkafka property passes
//! through [`KafkaConfig::set`] (TLS, SASL, compression, ...); secret values never reach the logs.

// No panic on data (why these lints are here and not in Cargo.toml: clippy.toml).
#![warn(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod classify;
mod config;
mod context;
mod enqueue;
mod exactly_once;
mod record_headers;
mod sink;

pub use config::KafkaConfig;
pub use exactly_once::{ExactlyOnceSettings, ExactlyOnceSink};
pub use sink::KafkaSink;
