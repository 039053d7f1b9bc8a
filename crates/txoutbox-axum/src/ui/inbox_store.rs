//! What the console's inbox view reads and changes in a consumer's inbox table (txoutbox-inbox's
//! table contract, docs/inbox.md): [`InboxConsoleStore`] and the records it lists.

use chrono::{DateTime, Utc};
use txoutbox_core::Result;

use super::console_store::BoxFuture;

/// One parked inbox record, without its key, payload or header values (they stay in the table).
/// Serialized as the console's and `txoutbox inbox parked --json`'s JSON: the field names,
/// `received_at` in RFC 3339.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ParkedInboxRecord {
    /// The consumer (its Kafka group id).
    pub consumer: String,
    /// The message id the inbox de-duplicates by.
    pub message_id: String,
    /// `dead` (its handler kept failing) or `replay` (marked for the consumer to run again).
    pub status: String,
    /// The topic it was read from.
    pub topic: String,
    /// Its partition.
    pub partition: i64,
    /// Its offset.
    pub offset: i64,
    /// Handler attempts so far.
    pub attempts: i64,
    /// When it was parked (`None` when the database holds a time the store cannot read).
    pub received_at: Option<DateTime<Utc>>,
    /// The handler's last error.
    pub last_error: Option<String>,
    /// Bytes of the key, if it has one.
    pub key_bytes: Option<i64>,
    /// Bytes of the payload (`None` for a tombstone).
    pub payload_bytes: Option<i64>,
    /// The header names, in the record's order.
    pub header_names: Vec<String>,
}

/// A consumer's inbox table as the console's inbox view sees it (the daemon implements it for
/// `--ui-inbox-table`; an application implements it over its own inbox database). Every action
/// is narrowed to one consumer.
pub trait InboxConsoleStore: Send + Sync + 'static {
    /// The inbox table's name, as shown.
    fn table(&self) -> String;

    /// Up to `limit` parked records (dead or marked for replay) of `consumer`, or of every
    /// consumer, oldest first per consumer.
    fn parked<'a>(
        &'a self,
        consumer: Option<&'a str>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<ParkedInboxRecord>>>;

    /// Marks `consumer`'s dead records (all, or those of `ids`) for replay; how many.
    fn replay<'a>(&'a self, consumer: &'a str, ids: Option<&'a [String]>) -> BoxFuture<'a, Result<u64>>;

    /// Deletes `consumer`'s parked records (all, or those of `ids`); how many.
    fn purge<'a>(&'a self, consumer: &'a str, ids: Option<&'a [String]>) -> BoxFuture<'a, Result<u64>>;
}
