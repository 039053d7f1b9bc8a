//! The web console's view of the database a URL names ([`ConsoleStore`] over [`Database`]).

use txoutbox_axum::{BoxFuture, ConsoleStore};
use txoutbox_core::coordination::{LeaseInfo, Leases};
use txoutbox_core::{DeadLetter, DeadLetterFilter, DeadLetters, DeadPayload, Result, Statistics, TopicStats};

use crate::database::{Database, mysql_outbox, pg_outbox};
use crate::with_store;

impl ConsoleStore for Database {
    fn table(&self) -> String {
        Database::table(self).to_string()
    }

    fn list_dead<'a>(
        &'a self,
        filter: &'a DeadLetterFilter,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<DeadLetter>>> {
        Box::pin(async move { with_store!(self, store => store.list_dead(filter, limit).await) })
    }

    fn replay_dead<'a>(&'a self, filter: &'a DeadLetterFilter) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move { with_store!(self, store => store.replay_dead(filter).await) })
    }

    fn purge_dead<'a>(&'a self, filter: &'a DeadLetterFilter) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move { with_store!(self, store => store.purge_dead(filter).await) })
    }

    fn dead_payload(&self, id: i64, max_bytes: usize) -> BoxFuture<'_, Result<Option<DeadPayload>>> {
        Box::pin(async move { with_store!(self, store => store.dead_payload(id, max_bytes).await) })
    }

    fn topic_stats(&self) -> BoxFuture<'_, Result<Vec<TopicStats>>> {
        Box::pin(async move { with_store!(self, store => store.topic_stats().await) })
    }

    /// The leases of coordinated relays (SQLite runs one relay per file: none).
    fn leases(&self) -> BoxFuture<'_, Result<Vec<LeaseInfo>>> {
        Box::pin(async move {
            match self {
                Database::Postgres(pool, table) => pg_outbox(table).store(pool.clone()).leases().await,
                Database::MySql(pool, table) => mysql_outbox(table).store(pool.clone()).leases().await,
                Database::Sqlite(..) => Ok(Vec::new()),
            }
        })
    }
}
