//! MySQL and MariaDB store for [txoutbox](https://docs.rs/txoutbox): the outbox table's
//! migrations, `publish` / `publish_all` in the caller's transaction, and the relay's queries.
//!
//! Needs MySQL 8.0.16+ or MariaDB 10.6+ (checked by `migrate()` and at relay start).
//!
//! - **Wake-ups**: MySQL has no LISTEN/NOTIFY. A commit through [`MySqlOutbox::begin`] wakes a
//!   relay attached with [`MySqlOutbox::with_wakeup`]; everything else (other processes, foreign
//!   writers) is found at the relay's next poll. [`MySqlStore`] has no `watch` task.
//! - **One active relay per table**: the stores of one outbox share a server named lock; relays
//!   of other processes stand by until it frees (see [`MySqlStore`]).
//! - **Late commits**: ids are taken at insert and become visible at commit; the store finds rows
//!   that committed behind the relay's cursor by listing the pending ids there.
//! - Keep sqlx's default session time zone (`+00:00`): timestamps are `TIMESTAMP(6)` in UTC.
//!
//! Start with [`MySqlOutbox`].

// No panic on data (why these lints are here and not in Cargo.toml: clippy.toml).
#![warn(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod error;
mod leases;
mod maintenance;
mod migrate;
mod outbox;
mod relay_lock;
mod sql;
mod store;
mod transaction;
mod version;

pub use outbox::MySqlOutbox;
pub use store::MySqlStore;
pub use transaction::MySqlOutboxTransaction;
