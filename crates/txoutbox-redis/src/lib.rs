//! The Redis Streams sink of [txoutbox](https://docs.rs/txoutbox): the relay adds each outbox
//! message to a stream with `XADD` and marks it delivered once the server replied.
//!
//! ```no_run
//! use txoutbox_redis::{RedisConfig, RedisSink};
//!
//! # async fn run() -> txoutbox_core::Result<()> {
//! let sink = RedisSink::new(&RedisConfig::new("redis://cache:6379/0").stream_key("outbox:{topic}")?)?;
//! // Relay::new(store, sink, RelayConfig::default())?.run(shutdown).await
//! # let _ = sink; Ok(()) }
//! ```
//!
//! A reply means the entry is in the server's memory: how much survives a crash of the server
//! is its persistence settings' business (`appendonly yes` with `appendfsync always` loses
//! nothing acknowledged; `everysec`, up to a second; the default snapshots, minutes).

// No panic on data (why these lints are here and not in Cargo.toml: clippy.toml).
#![warn(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod classify;
mod config;
mod entry;
mod sink;

pub use config::{DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_RESPONSE_TIMEOUT, RedisConfig};
pub use entry::{HEADER_FIELD_PREFIX, KEY_FIELD, PAYLOAD_FIELD};
pub use sink::RedisSink;
