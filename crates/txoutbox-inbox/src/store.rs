//! What the consumer needs from the database: a transaction, the claim of a message id in it,
//! parking, and the removal of old ids.

use std::future::Future;
use std::time::Duration;

use txoutbox_core::Result;

use crate::message::InboxMessage;

/// An inbox table on one database. [`PgInbox`](crate::PgInbox), [`SqliteInbox`](crate::SqliteInbox)
/// and [`MySqlInbox`](crate::MySqlInbox) implement it; `Tx` is the sqlx transaction the handler
/// receives.
pub trait InboxStore: Send + Sync + 'static {
    /// The transaction a record is handled in.
    type Tx: Send + 'static;

    /// Opens a transaction.
    fn begin(&self) -> impl Future<Output = Result<Self::Tx>> + Send;

    /// Records `message`'s id for `consumer` in `tx`: `true` the first time, `false` when the id
    /// is there already (handled or parked before). A concurrent claim of the same id waits for
    /// this transaction's end.
    fn claim(
        &self,
        tx: &mut Self::Tx,
        consumer: &str,
        message: &InboxMessage,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Claims several messages' ids in `tx` (a batch of `records_per_transaction`), in order:
    /// `true` for each id recorded now, `false` for one there already — or claimed earlier in the
    /// same call (a copy within the batch). The default claims them one by one; the SQL stores
    /// claim a batch in one statement. An error leaves `tx` to be rolled back, and the records
    /// are then claimed one by one ([`claim`](Self::claim)): `PgInbox` fails a batch that meets
    /// an id it had while no copies were seen lately (it claims without the check then).
    fn claim_all(
        &self,
        tx: &mut Self::Tx,
        consumer: &str,
        messages: &[&InboxMessage],
    ) -> impl Future<Output = Result<Vec<bool>>> + Send {
        async move {
            let mut claimed = Vec::with_capacity(messages.len());
            for message in messages {
                claimed.push(self.claim(tx, consumer, message).await?);
            }
            Ok(claimed)
        }
    }

    /// Commits `tx`.
    fn commit(&self, tx: Self::Tx) -> impl Future<Output = Result<()>> + Send;

    /// Rolls `tx` back.
    fn rollback(&self, tx: Self::Tx) -> impl Future<Output = Result<()>> + Send;

    /// Records `message` as parked (dead) for `consumer`, with its key, payload and headers and
    /// the last error, in a transaction of its own. A message whose id is recorded already stays
    /// as it is.
    fn park(
        &self,
        consumer: &str,
        message: &InboxMessage,
        attempts: u32,
        error: &str,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Parked records of `consumer` an operator marked for replay (status `replay`), oldest
    /// first, at most `limit`.
    fn replays(&self, consumer: &str, limit: u32) -> impl Future<Output = Result<Vec<InboxMessage>>> + Send;

    /// Takes a replay in `tx` (status `replay` becomes `handled`): `false` when another consumer
    /// process took it first or it is gone.
    fn claim_replay(
        &self,
        tx: &mut Self::Tx,
        consumer: &str,
        message: &InboxMessage,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Parks a replay whose handler failed again, with the new error.
    fn repark(
        &self,
        consumer: &str,
        message: &InboxMessage,
        error: &str,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Deletes at most `limit` handled ids of `consumer` older than `age`; returns how many.
    /// Parked messages stay until purged on purpose.
    fn remove_handled(
        &self,
        consumer: &str,
        age: Duration,
        limit: u32,
    ) -> impl Future<Output = Result<u64>> + Send;
}
