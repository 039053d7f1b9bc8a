//! The simulated store's harness: the in-memory table of `txoutbox-sim`, which the engine's
//! simulation runs the relay against, held to the same cases as the database stores through
//! txoutbox's API, so that it cannot drift from their semantics.
//!
//! Publishing encodes with the outbox's [`Topics`] as the database outboxes do, takes the rows'
//! ids when the transaction starts and makes them visible when it commits (a rolled-back
//! transaction leaves a gap), as the simulation's writers do.

use std::sync::MutexGuard;
use std::time::Duration;

use chrono::{DateTime, Utc};
use txoutbox_core::{NewMessage, Result, Topics};
use txoutbox_sim::store::SimStore;
use txoutbox_sim::table::RowState as SimRowState;
use txoutbox_sim::{Shared, World};
use uuid::Uuid;

use crate::{HeldTransaction, RowState, StoreHarness, TxEnd};

/// One simulated world of its own, without faults, and the store over its table.
#[derive(Debug)]
pub struct SimHarness {
    world: Shared,
    topics: Topics,
}

impl SimHarness {
    fn world(&self) -> MutexGuard<'_, World> {
        txoutbox_sim::lock(&self.world)
    }

    /// Writes `messages` in one transaction that ends as `end`.
    fn write(&self, messages: Vec<NewMessage>, end: TxEnd) -> Vec<Uuid> {
        let mut world = self.world();
        let ids = world.table.take_ids(messages.len());
        let message_ids = messages.iter().map(|m| m.message_id).collect();
        match end {
            TxEnd::Rollback => world.table.roll_back(&ids),
            TxEnd::Commit => commit(&mut world, ids, messages),
        }
        message_ids
    }
}

/// Commits a transaction's `messages` under the `ids` it took.
fn commit(world: &mut World, ids: Vec<i64>, messages: Vec<NewMessage>) {
    let now = world.wall_now();
    let rows = messages
        .into_iter()
        .zip(ids)
        .map(|(message, id)| message.into_outbox_message(id, now))
        .collect();
    let at = world.now_ms();
    world.table.commit(rows, at);
}

impl StoreHarness for SimHarness {
    type Store = SimStore;

    async fn ready(topics: Topics) -> Self {
        Self {
            world: World::calm(),
            topics,
        }
    }

    fn store(&self) -> SimStore {
        // Calls answer within 2 ms: the timeout only bounds the faults this world has none of.
        SimStore::new(self.world.clone(), Duration::from_secs(5))
    }

    async fn publish<T: Sync + 'static>(&self, message: &T, end: TxEnd) -> Result<Uuid> {
        let message = self.topics.encode(message)?;
        Ok(self.write(vec![message], end).remove(0))
    }

    async fn publish_all<T: Sync + 'static>(&self, messages: &[T], end: TxEnd) -> Result<Vec<Uuid>> {
        let messages = self.topics.encode_all(messages)?;
        Ok(self.write(messages, end))
    }

    async fn publish_message(&self, message: NewMessage, end: TxEnd) -> Result<Uuid> {
        Ok(self.write(vec![message], end).remove(0))
    }

    async fn publish_messages(&self, messages: Vec<NewMessage>, end: TxEnd) -> Result<Vec<Uuid>> {
        Ok(self.write(messages, end))
    }

    async fn publish_held(&self, messages: Vec<NewMessage>) -> Option<HeldTransaction> {
        let ids = self.world().table.take_ids(messages.len());
        let world = self.world.clone();
        Some(Box::pin(async move {
            commit(&mut txoutbox_sim::lock(&world), ids, messages);
        }))
    }

    async fn row(&self, id: i64) -> Option<RowState> {
        let world = self.world();
        let row = world.table.row(id)?;
        let status = match row.state {
            SimRowState::Pending => "pending",
            SimRowState::Dead => "dead",
            SimRowState::Published => "published",
        };
        Some(RowState {
            status: status.to_owned(),
            attempts: row.message.attempts,
            last_error: row.last_error.clone(),
            next_attempt_at: row.message.next_attempt_at,
            published_at: row.published_at,
        })
    }

    async fn row_count(&self) -> i64 {
        i64::try_from(self.world().table.rows().count()).unwrap_or(i64::MAX)
    }

    async fn backdate(&self, id: i64, created_at: DateTime<Utc>) {
        self.world().table.backdate(id, created_at);
    }

    async fn teardown(self) {}
}
