//! The inbox half of [txoutbox](https://docs.rs/txoutbox): consume Kafka records **effectively
//! once**.
//!
//! An at-least-once pipeline hands some records to a consumer twice (a relay resent them, the
//! consumer restarted before committing its offsets, a rebalance moved a partition). The inbox
//! makes the second delivery a no-op: for each record it opens a transaction on the consumer's
//! own database, records the record's message id in the inbox table, runs the application's
//! [`Handler`] in that transaction, and commits. A record whose id is there already is skipped.
//! Kafka offsets are committed only after the database commit, so a crash anywhere re-delivers,
//! and the re-delivery finds the id.
//!
//! The handler's transaction is a plain sqlx transaction: publish follow-up messages through a
//! txoutbox outbox on the same database (`outbox.publish(&mut **tx, &event)`) and consuming,
//! changing and publishing commit as one — effectively-once end to end without Kafka
//! transactions.
//!
//! - **Ids:** the `txoutbox-message-id` header by default ([`MessageIdSource`]).
//! - **Order:** records of one key run one after another in offset order; other keys and
//!   partitions run concurrently up to [`InboxConfig::concurrency`]. A rebalance waits for the
//!   records of revoked partitions before giving them up.
//! - **Failures:** a failing handler is retried with back-off, then the record is *parked*:
//!   recorded as dead in the inbox table with its key, payload, headers and error. A database
//!   outage never uses up attempts.
//! - **Retention:** handled ids are removed after [`InboxConfig::retention`], in small batches.
//! - **Stores:** [`PgInbox`] (`postgres` feature), [`SqliteInbox`] (`sqlite`), [`MySqlInbox`]
//!   (`mysql`); the table is described in `docs/inbox.md`.

// No panic on data (why these lints are here and not in Cargo.toml: clippy.toml).
#![warn(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod config;
mod consumer;
mod error;
mod handler;
mod kafka_context;
mod message;
mod message_id;
pub mod metrics;
#[cfg(feature = "mysql")]
mod mysql;
mod poller;
#[cfg(feature = "postgres")]
mod postgres;
mod progress;
mod replay;
#[cfg(any(feature = "postgres", feature = "sqlite", feature = "mysql"))]
mod sql_store;
#[cfg(feature = "sqlite")]
mod sqlite;
mod store;
mod worker;

pub use config::{ConsumerConfig, InboxConfig};
pub use consumer::{InboxConsumer, RunningInbox};
pub use handler::{Handler, HandlerError};
pub use message::InboxMessage;
pub use message_id::{DeriveId, MAX_MESSAGE_ID_BYTES, MESSAGE_ID_HEADER, MessageIdSource};
#[cfg(feature = "mysql")]
pub use mysql::MySqlInbox;
#[cfg(feature = "postgres")]
pub use postgres::PgInbox;
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteInbox;
pub use store::InboxStore;

/// The default name of the inbox table.
pub const DEFAULT_INBOX_TABLE: &str = "inbox_messages";

/// [`DEFAULT_INBOX_TABLE`] as a table name.
#[cfg(any(feature = "postgres", feature = "sqlite", feature = "mysql"))]
fn default_table() -> txoutbox_core::TableName {
    // A constant that passes validation (a unit test checks it).
    txoutbox_core::TableName::new(DEFAULT_INBOX_TABLE).unwrap_or_default()
}

#[cfg(all(test, any(feature = "postgres", feature = "sqlite", feature = "mysql")))]
mod tests {
    #[test]
    fn the_default_table_name_is_valid() {
        assert_eq!(super::default_table().table(), super::DEFAULT_INBOX_TABLE);
    }
}
