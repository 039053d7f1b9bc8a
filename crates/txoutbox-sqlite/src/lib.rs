//! SQLite store for [txoutbox](https://docs.rs/txoutbox), the embedded default: the outbox
//! table's migrations, `publish` / `publish_all` in the caller's transaction, and the relay's
//! queries.
//!
//! One relay process per database file: SQLite has no row locks to share work between relays.
//!
//! Start with [`SqliteOutbox`].

// No panic on data (why these lints are here and not in Cargo.toml: clippy.toml).
#![warn(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
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
