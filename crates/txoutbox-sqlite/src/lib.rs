//! SQLite store for [txoutbox](https://docs.rs/txoutbox), the embedded default: the outbox
//! table's migrations, `publish` / `publish_all` in the caller's transaction, and the relay's
//! queries.
//!
//! One relay process per database file: SQLite has no row locks to share work between relays.
//!
//! Start with [`SqliteOutbox`].

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
mod maintenance;
mod migrate;
mod outbox;
mod sql;
mod store;
mod transaction;

pub use outbox::SqliteOutbox;
pub use store::SqliteStore;
pub use transaction::SqliteOutboxTransaction;
