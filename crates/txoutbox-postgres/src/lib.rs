//! PostgreSQL store for [txoutbox](https://docs.rs/txoutbox): the outbox table's migrations,
//! `publish` / `publish_all` in the caller's transaction, and the relay's queries.
//!
//! Start with [`PgOutbox`].

// No panic on data: rows, envelopes, requests and settings come from outside. These lints hold
// for the library and daemon code of every crate that ships (unit tests may unwrap: clippy.toml);
// Cargo's `[lints]` table would also cover the integration tests and examples, where unwrapping
// is how a test fails, so they are set here.
#![warn(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::unreachable,
    clippy::unimplemented
)]

mod error;
mod leases;
mod listen;
mod maintenance;
mod migrate;
mod outbox;
mod sql;
mod store;
mod timestamp;
mod transaction;

pub use outbox::PgOutbox;
pub use store::PgStore;
pub use transaction::PgOutboxTransaction;
