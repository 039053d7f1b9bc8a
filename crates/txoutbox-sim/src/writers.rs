//! Writers: application transactions that insert outbox rows, commit or roll back.
//!
//! Each writer owns its keys and runs its transactions one after another, so one key's rows
//! commit in id order (the order the relay must keep); writers run concurrently, so their
//! transactions interleave and commit late below the relay's cursor. A transaction holds one to
//! four rows and stays open for a while after taking its ids; about one in ten rolls back. Some
//! rows have no key, some are poison (the broker always refuses them), some can never be sent
//! (refused at enqueue) and some are unreadable (a row a store could not decode).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use rand::Rng;
use txoutbox_core::OutboxMessage;

use crate::record::{POISON, REFUSED};
use crate::world::{Shared, lock};

/// The topics rows go to.
pub const TOPICS: [&str; 2] = ["orders", "payments"];

/// Runs writer `writer` until `until` (virtual time since the run began), with `keys` keys.
pub(crate) async fn run(
    world: Shared,
    writer: usize,
    keys: usize,
    until: Duration,
    started: tokio::time::Instant,
) {
    let topics: Vec<Arc<str>> = TOPICS.iter().map(|t| Arc::<str>::from(*t)).collect();
    while started.elapsed() < until {
        let (open_for, rolls_back, ids) = {
            let mut world = lock(&world);
            let rows = world.rng().random_range(1..=4);
            let ids = world.table.take_ids(rows);
            let open_for = Duration::from_micros(world.rng().random_range(0..20_000));
            let rolls_back = world.chance(0.1);
            (open_for, rolls_back, ids)
        };
        tokio::time::sleep(open_for).await;
        {
            let mut world = lock(&world);
            if rolls_back {
                world.table.roll_back(&ids);
                world.log(format_args!("writer {writer}: rolled back {ids:?}"));
            } else {
                let created_at = txoutbox_core::virtual_clock::now().unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
                let rows: Vec<OutboxMessage> = ids
                    .iter()
                    .map(|id| {
                        let rng = world.rng();
                        let topic = Arc::clone(&topics[rng.random_range(0..topics.len())]);
                        let key = (!rng.random_bool(0.1))
                            .then(|| Bytes::from(format!("w{writer}-k{}", rng.random_range(0..keys))));
                        let roll: f64 = rng.random();
                        let mut payload = format!("m{id}").into_bytes();
                        let mut malformed = None;
                        if roll < 0.01 {
                            payload = [POISON, payload.as_slice()].concat();
                        } else if roll < 0.015 {
                            payload = [REFUSED, payload.as_slice()].concat();
                        } else if roll < 0.02 {
                            malformed = Some("simulated: the row could not be read".to_owned());
                        }
                        row(*id, topic, key, payload, created_at, malformed)
                    })
                    .collect();
                let at = world.now_ms();
                world.table.commit(rows, at);
                world.log(format_args!("writer {writer}: committed {ids:?}"));
                for wakeup in world.wakeups.values() {
                    wakeup.notify();
                }
            }
        }
        let pause = Duration::from_micros(lock(&world).rng().random_range(0..30_000));
        tokio::time::sleep(pause).await;
    }
}

fn row(
    id: i64,
    topic: Arc<str>,
    key: Option<Bytes>,
    payload: Vec<u8>,
    created_at: DateTime<Utc>,
    malformed: Option<String>,
) -> OutboxMessage {
    OutboxMessage {
        bucket: crate::leases::bucket_of(key.as_deref()),
        id,
        message_id: format!("message-{id}").into(),
        topic,
        key,
        payload: Some(payload.into()),
        headers: Arc::default(),
        created_at,
        attempts: 0,
        next_attempt_at: None,
        malformed,
    }
}
