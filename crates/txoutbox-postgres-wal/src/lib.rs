//! PostgreSQL **WAL mode** for [txoutbox](https://docs.rs/txoutbox): messages travel through the
//! write-ahead log instead of the outbox table.
//!
//! - [`PgWalOutbox::publish`] writes a *transactional logical message*
//!   (`pg_logical_emit_message(true, prefix, envelope)`) in the caller's transaction: PostgreSQL
//!   decodes it only if the transaction commits, in commit order, and no table is written.
//! - [`PgWalStore`] implements [`txoutbox_core::Store`] over a logical replication slot
//!   (`pgoutput`), so the regular relay engine sends the messages to Kafka unchanged; the slot's
//!   confirmed position moves past a transaction only once all its messages were acknowledged
//!   (or dead-lettered), so a crash replays, never skips.
//!
//! The message format is the [`Envelope`] (versioned, [`ENVELOPE_VERSION`]). A replication slot
//! keeps the server's WAL until the relay confirms it: while no relay reads the slot, WAL piles up
//! on the server's disk (or, past `max_slot_wal_keep_size`, the slot is invalidated and its
//! messages are lost). Watch it with [`PgWalOutbox::slot_status`] ([`SlotStatus`]).

// No panic on data (why these lints are here and not in Cargo.toml: clippy.toml).
#![warn(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod buffer;
mod config;
mod connection;
mod envelope;
mod error;
mod outbox;
mod positions;
mod slot;
mod state;
mod store;
mod stream;

pub use config::{DEFAULT_PREFIX, DEFAULT_SLOT, WalConfig};
pub use envelope::{
    ENVELOPE_VERSION, Envelope, decode as decode_envelope, decode_with as decode_envelope_with,
    encode as encode_envelope,
};
pub use outbox::PgWalOutbox;
pub use slot::{DEFAULT_SAFE_WAL_SHARE, SlotStatus};
pub use store::PgWalStore;
