//! PostgreSQL store for [txoutbox](https://docs.rs/txoutbox): the outbox table's migrations,
//! `publish` / `publish_all` in the caller's transaction, and the relay's queries.
//!
//! Start with [`PgOutbox`].

// No panic on data (why these lints are here and not in Cargo.toml: clippy.toml).
#![warn(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod error;
mod leases;
mod listen;
mod maintenance;
mod migrate;
mod outbox;
mod relay_lock;
mod sql;
mod store;
mod timestamp;
mod transaction;

pub use outbox::PgOutbox;
pub use store::PgStore;
pub use transaction::PgOutboxTransaction;
