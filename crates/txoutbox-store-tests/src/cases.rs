//! The conformance cases, each generic over a [`StoreHarness`] (txoutbox's API) or a [`Harness`]
//! (a database's too) and run by [`crate::store_conformance!`].
//!
//! Every `pub async fn` here is a case and must be listed in the macro (a unit test checks).
//! Each case sets up its own database and tears it down when it passes.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, TimeDelta, Utc};
use txoutbox_core::{Backlog, Completion, Error, Failure, NewMessage, OutboxMessage, Store, Topic};
use uuid::Uuid;

use crate::{Harness, NotRegistered, ORDERS_TOPIC, OrderCreated, RowState, StoreHarness, TxEnd, topics};

/// How far a database timestamp may be from the test's clock (same host; SQLite keeps ms).
const CLOCK_SLACK: TimeDelta = TimeDelta::seconds(5);

/// A harness over [`topics`] with the table ready.
async fn migrated<H: StoreHarness>() -> H {
    H::ready(topics()).await
}

async fn fetch_all<S: Store>(store: &S) -> Vec<OutboxMessage> {
    store
        .fetch_pending(txoutbox_core::ReadLimit::rows(100_000))
        .await
        .expect("fetch_pending")
}

async fn pending_ids<S: Store>(store: &S) -> Vec<i64> {
    fetch_all(store).await.iter().map(|m| m.id).collect()
}

async fn row<H: StoreHarness>(h: &H, id: i64) -> RowState {
    h.row(id).await.unwrap_or_else(|| panic!("row {id} should exist"))
}

/// Publishes `n` orders, each in its own committed transaction; returns their row ids.
async fn publish_orders<H: StoreHarness>(h: &H, n: u64) -> Vec<i64> {
    let mut message_ids = Vec::new();
    for i in 1..=n {
        message_ids.push(
            h.publish(&OrderCreated::new(i), TxEnd::Commit)
                .await
                .expect("publish")
                .to_string(),
        );
    }
    let fetched = fetch_all(&h.store()).await;
    message_ids
        .iter()
        .map(|mid| {
            fetched
                .iter()
                .find(|m| *m.message_id == **mid)
                .unwrap_or_else(|| panic!("published message {mid} is not pending"))
                .id
        })
        .collect()
}

fn assert_recent(at: DateTime<Utc>, before: DateTime<Utc>, after: DateTime<Utc>, what: &str) {
    assert!(
        at >= before - CLOCK_SLACK && at <= after + CLOCK_SLACK,
        "{what} should be close to now ({before} .. {after}), got {at}"
    );
}

fn assert_ascending(ids: &[i64]) {
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ids should be strictly ascending: {ids:?}"
    );
}

/// Now, truncated to the millisecond (the precision every store keeps).
fn now_ms() -> DateTime<Utc> {
    DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).unwrap()
}

fn new_message(
    topic: &str,
    key: Option<&[u8]>,
    payload: Option<&[u8]>,
    headers: &[(&str, &str)],
) -> NewMessage {
    NewMessage {
        message_id: Uuid::now_v7(),
        topic: topic.to_owned(),
        key: key.map(<[u8]>::to_vec),
        payload: payload.map(<[u8]>::to_vec),
        headers: headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        strategy: Default::default(),
    }
}

/// `fetched` is what `sent` must come back as.
fn assert_round_trip(fetched: &OutboxMessage, sent: &NewMessage) {
    assert_eq!(&*fetched.message_id, sent.message_id.to_string(), "message_id");
    assert_eq!(&*fetched.topic, sent.topic, "topic");
    assert_eq!(
        fetched.key.as_deref().map(<[u8]>::to_vec),
        sent.key,
        "key of {}",
        sent.message_id
    );
    assert_eq!(
        fetched.payload.as_deref().map(<[u8]>::to_vec),
        sent.payload,
        "payload of {}",
        sent.message_id
    );
    assert_eq!(
        fetched.headers.to_vec(),
        sent.headers,
        "headers of {}, in order",
        sent.message_id
    );
    assert_eq!(fetched.malformed, None);
    assert_eq!(fetched.attempts, 0);
    assert_eq!(fetched.next_attempt_at, None);
}

fn expect_err<T>(result: txoutbox_core::Result<T>, what: &str) -> Error {
    match result {
        Ok(_) => panic!("{what} should fail"),
        Err(e) => e,
    }
}

/// Migrating twice (also concurrently) is harmless and keeps the rows; `check` before the
/// migrations fails with `SchemaNotReady` saying to run them, and passes after.
pub async fn migrate_is_idempotent_and_check_says_to_run_it<H: Harness>() {
    let h = H::setup(topics()).await;
    let store = h.store();

    let err = expect_err(store.check().await, "check before migrate");
    assert!(matches!(err, Error::SchemaNotReady { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("run the migrations"), "{message}");
    assert!(message.contains(&h.table().to_string()), "{message}");
    assert!(!err.is_retryable());
    // `check` only looks: it still fails.
    let err = expect_err(store.check().await, "second check before migrate");
    assert!(matches!(err, Error::SchemaNotReady { .. }), "{err:?}");

    let (first, second) = tokio::join!(h.migrate(), h.migrate());
    first.expect("concurrent migrate");
    second.expect("concurrent migrate");
    store.check().await.expect("check after migrate");
    let versions = h.schema_versions().await;
    assert!(!versions.is_empty(), "migrate records its schema version");
    assert!(
        versions.windows(2).all(|w| w[0] < w[1]),
        "each version once: {versions:?}"
    );

    let message_id = h.publish(&OrderCreated::new(1), TxEnd::Commit).await.unwrap();
    h.migrate().await.expect("migrate again");
    h.migrate().await.expect("and again");
    store.check().await.expect("check after migrating again");
    assert_eq!(h.schema_versions().await, versions);
    let pending = fetch_all(&store).await;
    assert_eq!(pending.len(), 1, "migrate keeps the rows");
    assert_eq!(&*pending[0].message_id, message_id.to_string());
    h.teardown().await;
}

/// A table migrated by a newer txoutbox is refused by `check` and by `migrate`.
pub async fn newer_schema_version_is_refused<H: Harness>() {
    let h = migrated::<H>().await;
    let store = h.store();
    let latest = *h.schema_versions().await.last().unwrap();
    h.record_schema_version(latest + 1).await;

    let err = expect_err(store.check().await, "check of a newer schema");
    assert!(matches!(err, Error::SchemaNotReady { .. }), "{err:?}");
    assert!(err.to_string().contains(&(latest + 1).to_string()), "{err}");
    let err = expect_err(h.migrate().await, "migrate of a newer schema");
    assert!(matches!(err, Error::SchemaNotReady { .. }), "{err:?}");
    assert!(err.to_string().contains("upgrade txoutbox"), "{err}");
    assert_eq!(*h.schema_versions().await.last().unwrap(), latest + 1);
    h.teardown().await;
}

/// A typed message published in a committed transaction is fetched with its topic, key, payload,
/// headers (static and dynamic), the returned message id, its creation time and no attempt yet.
pub async fn published_message_is_fetched_with_every_field<H: StoreHarness>() {
    let h = migrated::<H>().await;
    let store = h.store();
    let order = OrderCreated {
        id: 42,
        customer: "Ada \"Countess\" Lovelace, żółw".to_owned(),
    };
    let before = Utc::now();
    let message_id = h.publish(&order, TxEnd::Commit).await.expect("publish");
    let after = Utc::now();

    let pending = store
        .fetch_pending(txoutbox_core::ReadLimit::rows(10))
        .await
        .unwrap();
    assert_eq!(pending.len(), 1, "{pending:?}");
    let m = &pending[0];
    assert_eq!(&*m.message_id, message_id.to_string());
    assert_eq!(&*m.topic, ORDERS_TOPIC);
    assert_eq!(m.key.as_deref(), Some(&b"42"[..]));
    assert_eq!(
        m.payload.as_deref().map(<[u8]>::to_vec),
        Some(order.expected_payload())
    );
    assert_eq!(m.headers.to_vec(), order.expected_headers(), "headers, in order");
    assert_recent(m.created_at, before, after, "created_at");
    assert_eq!(m.attempts, 0);
    assert_eq!(m.next_attempt_at, None);
    assert_eq!(m.malformed, None);
    assert!(m.is_due(Utc::now()));
    assert_eq!(
        row(&h, m.id).await,
        RowState {
            status: "pending".to_owned(),
            attempts: 0,
            last_error: None,
            next_attempt_at: None,
            published_at: None,
        }
    );
    h.teardown().await;
}

/// Whatever is published in a rolled-back transaction is not there.
pub async fn rolled_back_publish_leaves_nothing<H: StoreHarness>() {
    let h = migrated::<H>().await;
    let store = h.store();
    h.publish(&OrderCreated::new(1), TxEnd::Rollback).await.unwrap();
    h.publish_all(&[OrderCreated::new(2), OrderCreated::new(3)], TxEnd::Rollback)
        .await
        .unwrap();
    h.publish_message(new_message("raw", Some(b"k"), Some(b"v"), &[]), TxEnd::Rollback)
        .await
        .unwrap();
    h.publish_messages(
        vec![
            new_message("raw", None, Some(b"a"), &[]),
            new_message("raw", None, None, &[]),
        ],
        TxEnd::Rollback,
    )
    .await
    .unwrap();

    assert!(
        store
            .fetch_pending(txoutbox_core::ReadLimit::rows(100))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(h.row_count().await, 0);
    assert_eq!(store.backlog().await.unwrap(), Backlog::default());

    // The outbox works on after rollbacks.
    let kept = h.publish(&OrderCreated::new(4), TxEnd::Commit).await.unwrap();
    let pending = fetch_all(&store).await;
    assert_eq!(pending.len(), 1);
    assert_eq!(&*pending[0].message_id, kept.to_string());
    h.teardown().await;
}

/// `publish_all` of 1,000 messages writes 1,000 rows whose ids ascend in the given order.
pub async fn publish_all_of_a_thousand_keeps_the_given_order<H: StoreHarness>() {
    const N: u64 = 1_000;
    let h = migrated::<H>().await;
    let store = h.store();
    // Descending order ids, so that no other order (key, payload) coincides with the given one.
    let orders: Vec<OrderCreated> = (0..N).map(|i| OrderCreated::new(N - i)).collect();
    let message_ids = h.publish_all(&orders, TxEnd::Commit).await.expect("publish_all");
    assert_eq!(message_ids.len(), orders.len());
    assert_eq!(
        message_ids.iter().collect::<HashSet<_>>().len(),
        orders.len(),
        "message ids are unique"
    );

    let pending = fetch_all(&store).await;
    assert_eq!(pending.len(), orders.len());
    assert_ascending(&pending.iter().map(|m| m.id).collect::<Vec<_>>());
    for ((m, order), message_id) in pending.iter().zip(&orders).zip(&message_ids) {
        assert_eq!(
            *m.message_id,
            message_id.to_string(),
            "row {} is out of order",
            m.id
        );
        assert_eq!(
            m.payload.as_deref().map(<[u8]>::to_vec),
            Some(order.expected_payload())
        );
        assert_eq!(
            m.key.as_deref().map(<[u8]>::to_vec),
            Some(order.id.to_string().into_bytes())
        );
        assert_eq!(m.headers.to_vec(), order.expected_headers(), "headers, in order");
        assert_eq!(&*m.topic, ORDERS_TOPIC);
    }
    assert_eq!(h.row_count().await, N as i64);
    assert_eq!(store.backlog().await.unwrap().pending, N);
    h.teardown().await;
}

/// Encoded messages come back byte for byte, through `publish_message` and `publish_messages`:
/// every byte value in keys and payloads, a tombstone (no payload) apart from an empty payload,
/// no key apart from an empty key, and headers in their order (not sorted), with quotes and
/// non-ASCII text in values.
pub async fn encoded_messages_round_trip_bytes_and_tombstones<H: StoreHarness>() {
    let h = migrated::<H>().await;
    let store = h.store();
    let every_byte: Vec<u8> = (0..=255).collect();
    let reversed: Vec<u8> = (0..=255).rev().collect();
    let messages = || {
        vec![
            new_message(
                "raw.bytes",
                Some(&every_byte),
                Some(&reversed),
                &[
                    ("quote", r#"say "hi" \ bye"#),
                    ("unicode", "żółw 🐢"),
                    ("empty", ""),
                ],
            ),
            new_message("raw.tombstones", Some(b"gone"), None, &[]),
            new_message("raw.empty", Some(b""), Some(b""), &[]),
            new_message("raw.unkeyed", None, Some(b"\0nul\0"), &[("h", "v")]),
        ]
    };

    let singles = messages();
    for message in &singles {
        let id = h
            .publish_message(message.clone(), TxEnd::Commit)
            .await
            .expect("publish_message");
        assert_eq!(id, message.message_id);
    }
    let batch = messages();
    let ids = h
        .publish_messages(batch.clone(), TxEnd::Commit)
        .await
        .expect("publish_messages");
    assert_eq!(ids, batch.iter().map(|m| m.message_id).collect::<Vec<_>>());

    let pending = fetch_all(&store).await;
    assert_eq!(pending.len(), singles.len() + batch.len());
    for (fetched, sent) in pending.iter().zip(singles.iter().chain(&batch)) {
        assert_round_trip(fetched, sent);
    }
    h.teardown().await;
}

/// `fetch_pending` returns at most `limit` rows, the lowest ids first, across transactions.
pub async fn fetch_pending_respects_the_limit_in_id_order<H: StoreHarness>() {
    let h = migrated::<H>().await;
    let store = h.store();
    let orders: Vec<OrderCreated> = (1..=4).map(OrderCreated::new).collect();
    h.publish_all(&orders, TxEnd::Commit).await.unwrap();
    h.publish(&OrderCreated::new(5), TxEnd::Commit).await.unwrap();
    h.publish_messages(
        (6..=10)
            .map(|i: u8| new_message("raw", Some(&[i]), Some(&[i]), &[]))
            .collect(),
        TxEnd::Commit,
    )
    .await
    .unwrap();

    let all = pending_ids(&store).await;
    assert_eq!(all.len(), 10);
    assert_ascending(&all);
    let ids = |rows: Vec<OutboxMessage>| rows.iter().map(|m| m.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store
            .fetch_pending(txoutbox_core::ReadLimit::rows(3))
            .await
            .unwrap()),
        all[..3]
    );
    assert_eq!(
        ids(store
            .fetch_pending(txoutbox_core::ReadLimit::rows(1))
            .await
            .unwrap()),
        all[..1]
    );
    assert!(
        store
            .fetch_pending(txoutbox_core::ReadLimit::rows(0))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        ids(store
            .fetch_pending(txoutbox_core::ReadLimit::rows(10))
            .await
            .unwrap()),
        all
    );
    assert_eq!(
        ids(store
            .fetch_pending(txoutbox_core::ReadLimit::rows(usize::MAX))
            .await
            .unwrap()),
        all
    );

    store
        .complete(&[all[0], all[2]], Completion::Delete)
        .await
        .unwrap();
    assert_eq!(
        ids(store
            .fetch_pending(txoutbox_core::ReadLimit::rows(3))
            .await
            .unwrap()),
        [all[1], all[3], all[4]]
    );
    h.teardown().await;
}

/// `Completion::Delete` removes exactly the given rows; completing again, completing unknown ids
/// and completing nothing are harmless.
pub async fn complete_delete_removes_rows_and_is_idempotent<H: StoreHarness>() {
    let h = migrated::<H>().await;
    let store = h.store();
    let ids = publish_orders(&h, 5).await;

    store
        .complete(&[ids[0], ids[3]], Completion::Delete)
        .await
        .expect("complete");
    assert_eq!(h.row(ids[0]).await, None);
    assert_eq!(h.row(ids[3]).await, None);
    assert_eq!(pending_ids(&store).await, [ids[1], ids[2], ids[4]]);

    store
        .complete(&[ids[0], ids[3]], Completion::Delete)
        .await
        .expect("completing twice is harmless");
    store
        .complete(&[ids[0], ids[1]], Completion::Delete)
        .await
        .expect("completing a mix of done and pending ids");
    store
        .complete(&[i64::MAX, -1, 0], Completion::Delete)
        .await
        .expect("unknown ids are harmless");
    store
        .complete(&[], Completion::Delete)
        .await
        .expect("nothing to complete");
    assert_eq!(pending_ids(&store).await, [ids[2], ids[4]]);
    assert_eq!(h.row_count().await, 2);
    assert_eq!(store.backlog().await.unwrap().pending, 2);
    h.teardown().await;
}

/// Completing a run of consecutive ids (which stores may name by its range) completes exactly
/// those rows, by either completion, repeated ids included, and leaves the rows on either side.
pub async fn completing_a_run_of_ids_leaves_the_rows_around_it<H: StoreHarness>() {
    let h = migrated::<H>().await;
    let store = h.store();
    let ids = publish_orders(&h, 9).await;

    store
        .complete(&[ids[3], ids[2], ids[4], ids[3]], Completion::Delete)
        .await
        .expect("complete a run");
    assert_eq!(
        pending_ids(&store).await,
        [ids[0], ids[1], ids[5], ids[6], ids[7], ids[8]]
    );
    store
        .complete(&ids[5..8], Completion::MarkPublished)
        .await
        .expect("publish a run");
    assert_eq!(pending_ids(&store).await, [ids[0], ids[1], ids[8]]);
    for &id in &ids[5..8] {
        assert_eq!(row(&h, id).await.status, "published", "row {id}");
    }
    assert_eq!(
        h.row_count().await,
        6,
        "published rows are kept, deleted ones gone"
    );
    assert_eq!(store.backlog().await.unwrap().pending, 3);
    h.teardown().await;
}

/// `Completion::MarkPublished` keeps the rows as `published` with their time, out of the pending
/// rows and the backlog; completing them again changes nothing, and a late failure report does not
/// bring them back.
pub async fn complete_mark_published_keeps_rows_out_of_the_backlog<H: StoreHarness>() {
    let h = migrated::<H>().await;
    let store = h.store();
    let ids = publish_orders(&h, 3).await;
    // The first row failed once before it went through.
    store
        .record_failures(&[Failure {
            id: ids[0],
            attempts: 1,
            error: "broker timeout".to_owned(),
            next_attempt_at: Some(Utc::now() - TimeDelta::seconds(1)),
        }])
        .await
        .unwrap();

    let before = Utc::now();
    store
        .complete(&[ids[0], ids[1]], Completion::MarkPublished)
        .await
        .expect("complete");
    let after = Utc::now();
    let failed_once = row(&h, ids[0]).await;
    assert_eq!(
        (failed_once.attempts, failed_once.last_error.as_deref()),
        (1, Some("broker timeout")),
        "publishing keeps the failure history"
    );
    for &id in &ids[..2] {
        let state = row(&h, id).await;
        assert_eq!(state.status, "published", "row {id}");
        assert_eq!(state.next_attempt_at, None, "row {id}: no retry pending");
        assert_recent(
            state.published_at.expect("published_at is set"),
            before,
            after,
            "published_at",
        );
    }
    assert_eq!(pending_ids(&store).await, [ids[2]]);
    assert_eq!(h.row_count().await, 3);
    let backlog = store.backlog().await.unwrap();
    assert_eq!((backlog.pending, backlog.dead), (1, 0));

    let first = row(&h, ids[0]).await;
    store
        .complete(&[ids[0]], Completion::MarkPublished)
        .await
        .expect("completing twice is harmless");
    assert_eq!(
        row(&h, ids[0]).await,
        first,
        "a second completion changes nothing"
    );
    store
        .record_failures(&[
            Failure {
                id: ids[0],
                attempts: 9,
                error: "stale report".to_owned(),
                next_attempt_at: Some(Utc::now()),
            },
            Failure {
                id: ids[1],
                attempts: 9,
                error: "stale report".to_owned(),
                next_attempt_at: None,
            },
        ])
        .await
        .unwrap();
    assert_eq!(row(&h, ids[0]).await, first, "a published row stays published");
    assert_eq!(row(&h, ids[1]).await.status, "published");
    assert_eq!(pending_ids(&store).await, [ids[2]]);
    h.teardown().await;
}

/// A failure with a retry time keeps the row pending (and fetched: the relay holds back later
/// rows of its key) with its attempts, error and retry time, the latter to the millisecond.
pub async fn failure_with_retry_time_keeps_the_row_pending<H: StoreHarness>() {
    let h = migrated::<H>().await;
    let store = h.store();
    let ids = publish_orders(&h, 3).await;
    // Sub-millisecond digits on purpose: stores keep at least milliseconds.
    let soon = Utc::now() + TimeDelta::seconds(90) + TimeDelta::nanoseconds(123_456);
    let later = Utc::now() + TimeDelta::hours(1);
    let error = r#"broker said "no" — ünïcode, 'quotes', \backslash"#;
    store
        .record_failures(&[
            Failure {
                id: ids[0],
                attempts: 1,
                error: error.to_owned(),
                next_attempt_at: Some(soon),
            },
            Failure {
                id: ids[1],
                attempts: 7,
                error: "timeout".to_owned(),
                next_attempt_at: Some(later),
            },
        ])
        .await
        .expect("record_failures");

    let state = row(&h, ids[0]).await;
    assert_eq!(state.status, "pending");
    assert_eq!(state.attempts, 1);
    assert_eq!(state.last_error.as_deref(), Some(error));
    let stored = state.next_attempt_at.expect("next_attempt_at is stored");
    assert_eq!(stored.timestamp_millis(), soon.timestamp_millis());
    let state = row(&h, ids[1]).await;
    assert_eq!(
        (state.status.as_str(), state.attempts, state.last_error.as_deref()),
        ("pending", 7, Some("timeout"))
    );

    let pending = fetch_all(&store).await;
    assert_eq!(
        pending.iter().map(|m| m.id).collect::<Vec<_>>(),
        ids,
        "rows backing off are still fetched, in id order"
    );
    assert_eq!(pending[0].attempts, 1);
    assert_eq!(
        pending[0].next_attempt_at.map(|at| at.timestamp_millis()),
        Some(soon.timestamp_millis())
    );
    assert!(!pending[0].is_due(Utc::now()));
    assert!(pending[0].is_due(soon + TimeDelta::milliseconds(1)));
    assert_eq!(pending[1].attempts, 7);
    assert_eq!(
        pending[1].next_attempt_at.map(|at| at.timestamp_millis()),
        Some(later.timestamp_millis())
    );
    assert_eq!((pending[2].attempts, pending[2].next_attempt_at), (0, None));
    let backlog = store.backlog().await.unwrap();
    assert_eq!((backlog.pending, backlog.dead), (3, 0));

    // A later failure overwrites the earlier one.
    store
        .record_failures(&[Failure {
            id: ids[0],
            attempts: 2,
            error: "again".to_owned(),
            next_attempt_at: Some(later),
        }])
        .await
        .unwrap();
    let state = row(&h, ids[0]).await;
    assert_eq!(
        (state.status.as_str(), state.attempts, state.last_error.as_deref()),
        ("pending", 2, Some("again"))
    );
    assert_eq!(
        state.next_attempt_at.map(|at| at.timestamp_millis()),
        Some(later.timestamp_millis())
    );
    h.teardown().await;
}

/// A failure without a retry time moves the row to `dead`: kept with its attempts and error,
/// no longer fetched, counted by the backlog, and left alone by later completions and failures.
pub async fn failure_without_retry_time_dead_letters_the_row<H: StoreHarness>() {
    let h = migrated::<H>().await;
    let store = h.store();
    let ids = publish_orders(&h, 2).await;
    store
        .record_failures(&[Failure {
            id: ids[0],
            attempts: 5,
            error: "message too large".to_owned(),
            next_attempt_at: None,
        }])
        .await
        .expect("record_failures");

    let dead = RowState {
        status: "dead".to_owned(),
        attempts: 5,
        last_error: Some("message too large".to_owned()),
        next_attempt_at: None,
        published_at: None,
    };
    assert_eq!(row(&h, ids[0]).await, dead);
    let pending = fetch_all(&store).await;
    assert_eq!(pending.iter().map(|m| m.id).collect::<Vec<_>>(), [ids[1]]);
    assert_eq!(
        store.backlog().await.unwrap(),
        Backlog {
            pending: 1,
            oldest_pending: Some(pending[0].created_at),
            dead: 1,
        }
    );

    // Only pending rows are completed or failed: a dead letter stays as it is.
    store.complete(&[ids[0]], Completion::Delete).await.unwrap();
    store
        .complete(&[ids[0]], Completion::MarkPublished)
        .await
        .unwrap();
    store
        .record_failures(&[Failure {
            id: ids[0],
            attempts: 6,
            error: "stale report".to_owned(),
            next_attempt_at: Some(Utc::now()),
        }])
        .await
        .unwrap();
    assert_eq!(row(&h, ids[0]).await, dead);
    assert_eq!(store.backlog().await.unwrap().dead, 1);
    h.teardown().await;
}

/// `dead_keys` lists each `(topic, key)` that has a dead row once, and forgets it when the dead
/// row is replayed or purged (a relay that parks keys reads it).
pub async fn dead_keys_lists_each_dead_key_once<H: StoreHarness>() {
    let h = migrated::<H>().await;
    let store = h.store();
    assert_eq!(store.dead_keys().await.unwrap(), Vec::new());
    // Orders 1, 2, 1: two rows of key "1".
    for id in [1, 2, 1] {
        h.publish(&OrderCreated::new(id), TxEnd::Commit)
            .await
            .expect("publish");
    }
    let ids: Vec<i64> = fetch_all(&store).await.iter().map(|m| m.id).collect();
    let dead = |id| Failure {
        id,
        attempts: 1,
        error: "refused".to_owned(),
        next_attempt_at: None,
    };
    store
        .record_failures(&[dead(ids[0]), dead(ids[2])])
        .await
        .unwrap();
    assert_eq!(
        store.dead_keys().await.unwrap(),
        vec![(ORDERS_TOPIC.to_owned(), b"1".to_vec())],
        "two dead rows of one key: listed once; the pending key 2 is not listed"
    );
    store.record_failures(&[dead(ids[1])]).await.unwrap();
    let mut keys = store.dead_keys().await.unwrap();
    keys.sort();
    assert_eq!(
        keys,
        vec![
            (ORDERS_TOPIC.to_owned(), b"1".to_vec()),
            (ORDERS_TOPIC.to_owned(), b"2".to_vec())
        ]
    );
    h.teardown().await;
}

/// `backlog` counts pending rows (backing off or not) and dead rows, and gives the creation time
/// of the oldest pending row.
pub async fn backlog_counts_pending_and_dead_and_finds_the_oldest<H: StoreHarness>() {
    let h = migrated::<H>().await;
    let store = h.store();
    assert_eq!(store.backlog().await.unwrap(), Backlog::default());

    let ids = publish_orders(&h, 4).await;
    let base = now_ms();
    let created: Vec<DateTime<Utc>> = (0..4).map(|i| base - TimeDelta::hours(4 - i)).collect();
    for (&id, &at) in ids.iter().zip(&created) {
        h.backdate(id, at).await;
    }
    let backlog = |pending, oldest: Option<usize>, dead| Backlog {
        pending,
        oldest_pending: oldest.map(|i| created[i]),
        dead,
    };
    assert_eq!(store.backlog().await.unwrap(), backlog(4, Some(0), 0));

    store.complete(&[ids[0]], Completion::Delete).await.unwrap();
    assert_eq!(store.backlog().await.unwrap(), backlog(3, Some(1), 0));

    store
        .complete(&[ids[1]], Completion::MarkPublished)
        .await
        .unwrap();
    assert_eq!(store.backlog().await.unwrap(), backlog(2, Some(2), 0));

    let failure = |id, next_attempt_at| Failure {
        id,
        attempts: 3,
        error: "failed".to_owned(),
        next_attempt_at,
    };
    store.record_failures(&[failure(ids[2], None)]).await.unwrap();
    assert_eq!(store.backlog().await.unwrap(), backlog(1, Some(3), 1));

    store
        .record_failures(&[failure(ids[3], Some(Utc::now() + TimeDelta::hours(1)))])
        .await
        .unwrap();
    assert_eq!(
        store.backlog().await.unwrap(),
        backlog(1, Some(3), 1),
        "a row backing off is still pending"
    );

    store.complete(&[ids[3]], Completion::Delete).await.unwrap();
    assert_eq!(store.backlog().await.unwrap(), backlog(0, None, 1));
    h.teardown().await;
}

/// A row a foreign application inserted with only a topic and a payload is fetched with a
/// generated message id, a creation time, no attempts, no key and no headers.
pub async fn foreign_row_with_topic_and_payload_gets_defaults<H: Harness>() {
    let h = migrated::<H>().await;
    let store = h.store();
    let ours = h.publish(&OrderCreated::new(1), TxEnd::Commit).await.unwrap();
    let before = Utc::now();
    let first = h.insert_minimal("legacy.events", br#"{"v":1}"#).await;
    let second = h.insert_minimal("legacy.events", br#"{"v":2}"#).await;
    let after = Utc::now();

    let pending = fetch_all(&store).await;
    assert_eq!(pending.len(), 3);
    assert_eq!(&*pending[0].message_id, ours.to_string());
    assert_eq!(
        pending[1..].iter().map(|m| m.id).collect::<Vec<_>>(),
        [first, second]
    );
    for (m, payload) in pending[1..].iter().zip([br#"{"v":1}"#, br#"{"v":2}"#]) {
        assert!(
            !m.message_id.is_empty(),
            "row {} has no generated message_id",
            m.id
        );
        assert_eq!(&*m.topic, "legacy.events");
        assert_eq!(m.payload.as_deref(), Some(&payload[..]));
        assert_eq!(m.key.as_deref().map(<[u8]>::to_vec), None);
        assert!(m.headers.is_empty());
        assert_eq!(m.malformed, None);
        assert_eq!(m.attempts, 0);
        assert_eq!(m.next_attempt_at, None);
        assert_recent(m.created_at, before, after, "generated created_at");
        assert_eq!(row(&h, m.id).await.status, "pending");
    }
    let message_ids: HashSet<&str> = pending.iter().map(|m| &*m.message_id).collect();
    assert_eq!(message_ids.len(), 3, "generated message ids are unique");

    // The relay's statements work on foreign rows like on its own.
    store.complete(&[first], Completion::Delete).await.unwrap();
    store
        .complete(&[second], Completion::MarkPublished)
        .await
        .unwrap();
    assert_eq!(h.row(first).await, None);
    assert_eq!(row(&h, second).await.status, "published");
    h.teardown().await;
}

/// A foreign row with a key and headers (a JSON object, values of any JSON type) is read as given,
/// headers in the order of the object's members; non-string header values come back as their
/// JSON text as written, and JSON `null` means no headers.
pub async fn foreign_row_with_key_and_headers_is_read_as_given<H: Harness>() {
    let h = migrated::<H>().await;
    let store = h.store();
    let with_headers = h
        .insert_foreign(
            "legacy.events",
            Some(b"customer-7"),
            Some(b"payload"),
            Some(r#"{"trace": "abc-123", "n": 5, "ok": true, "nested": {"a": [1]}}"#),
        )
        .await;
    let null_headers = h.insert_foreign("legacy.events", None, None, Some("null")).await;

    let pending = fetch_all(&store).await;
    assert_eq!(
        pending.iter().map(|m| m.id).collect::<Vec<_>>(),
        [with_headers, null_headers]
    );
    let m = &pending[0];
    assert_eq!(m.key.as_deref(), Some(&b"customer-7"[..]));
    assert_eq!(m.payload.as_deref(), Some(&b"payload"[..]));
    assert_eq!(m.malformed, None);
    // In the order of the object's members, not sorted.
    let expected: Vec<(String, String)> = [
        ("trace", "abc-123"),
        ("n", "5"),
        ("ok", "true"),
        ("nested", r#"{"a": [1]}"#),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    assert_eq!(m.headers.to_vec(), expected);

    let m = &pending[1];
    assert_eq!((m.key.as_deref(), m.payload.as_deref()), (None, None));
    assert!(m.headers.is_empty());
    assert_eq!(m.malformed, None);
    h.teardown().await;
}

/// Headers that are valid JSON but not an object mark that row `malformed` (so the relay can
/// dead-letter it); the other rows of the fetch are unaffected.
pub async fn malformed_foreign_headers_flag_the_row_only<H: Harness>() {
    let h = migrated::<H>().await;
    let store = h.store();
    let ours = h.publish(&OrderCreated::new(1), TxEnd::Commit).await.unwrap();
    let array = h
        .insert_foreign("legacy.events", Some(b"k"), Some(b"array"), Some("[1, 2]"))
        .await;
    let string = h
        .insert_foreign("legacy.events", None, Some(b"string"), Some(r#""a=b""#))
        .await;
    let number = h
        .insert_foreign("legacy.events", None, Some(b"number"), Some("5"))
        .await;
    let fine = h.insert_minimal("legacy.events", b"fine").await;

    let pending = fetch_all(&store).await;
    assert_eq!(pending.len(), 5, "a malformed row does not fail the fetch");
    assert_eq!(&*pending[0].message_id, ours.to_string());
    assert_eq!(pending[0].malformed, None);
    for (m, (id, payload)) in pending[1..4].iter().zip([
        (array, &b"array"[..]),
        (string, &b"string"[..]),
        (number, &b"number"[..]),
    ]) {
        assert_eq!(m.id, id);
        let reason = m
            .malformed
            .as_deref()
            .unwrap_or_else(|| panic!("row {id} should be malformed"));
        assert!(reason.contains("JSON object"), "{reason}");
        assert!(m.headers.is_empty());
        assert_eq!(&*m.topic, "legacy.events");
        assert_eq!(m.payload.as_deref(), Some(payload));
    }
    assert_eq!(pending[1].key.as_deref(), Some(&b"k"[..]));
    assert_eq!((pending[4].id, pending[4].malformed.as_deref()), (fine, None));
    h.teardown().await;
}

/// Publishing a type without a topic is `Error::UnknownTopic` and writes nothing, even when the
/// transaction then commits.
pub async fn unknown_message_type_is_a_typed_error_and_writes_nothing<H: StoreHarness>() {
    let h = migrated::<H>().await;
    let store = h.store();

    let err = expect_err(
        h.publish(&NotRegistered { id: 1 }, TxEnd::Commit).await,
        "publish of an unregistered type",
    );
    assert!(
        matches!(err, Error::UnknownTopic { type_name } if type_name.ends_with("NotRegistered")),
        "{err:?}"
    );
    assert!(err.to_string().contains("Topic::<"), "{err}");
    assert!(!err.is_retryable());
    let err = expect_err(
        h.publish_all(&[NotRegistered { id: 2 }, NotRegistered { id: 3 }], TxEnd::Commit)
            .await,
        "publish_all of an unregistered type",
    );
    assert!(matches!(err, Error::UnknownTopic { .. }), "{err:?}");

    assert_eq!(h.row_count().await, 0);
    assert!(fetch_all(&store).await.is_empty());
    h.teardown().await;
}

/// Invalid names are typed errors: a topic name Kafka would refuse is `InvalidTopicName`, a table
/// name that is not a plain identifier is `InvalidIdentifier` before anything is created, and the
/// table itself refuses an empty topic from an encoded message (a non-retryable database error).
pub async fn invalid_names_are_typed_errors<H: Harness>() {
    for name in ["orders created!", "", "..", "ü"] {
        let err = expect_err(Topic::<OrderCreated>::json(name), "an invalid topic name");
        assert!(
            matches!(&err, Error::InvalidTopicName { name: n, .. } if n == name),
            "{name:?}: {err:?}"
        );
    }
    for table in ["outbox-messages", "x\"; DROP TABLE y; --", "1st", ""] {
        let err = expect_err(
            H::setup_with_table(topics(), table).await,
            "setup with an invalid table name",
        );
        assert!(
            matches!(&err, Error::InvalidIdentifier { what: "table", value, .. } if value == table),
            "{table:?}: {err:?}"
        );
    }

    let h = migrated::<H>().await;
    let err = expect_err(
        h.publish_message(new_message("", None, Some(b"x"), &[]), TxEnd::Commit)
            .await,
        "publish_message with an empty topic",
    );
    assert!(
        matches!(&err, Error::InvalidTopicName { name, .. } if name.is_empty()),
        "{err:?}"
    );
    assert!(!err.is_retryable(), "{err:?}");
    let err = expect_err(
        h.publish_messages(
            vec![
                new_message("raw", None, Some(b"x"), &[]),
                new_message("", None, Some(b"y"), &[]),
            ],
            TxEnd::Commit,
        )
        .await,
        "publish_messages with an empty topic among them",
    );
    assert!(matches!(&err, Error::InvalidTopicName { .. }), "{err:?}");
    assert_eq!(h.row_count().await, 0, "nothing of a refused batch is written");
    h.teardown().await;
}

/// A table with a custom name is what every statement uses: `check`, `migrate`, publishing,
/// fetching, completing, recording failures and the backlog.
pub async fn custom_table_name_is_used_by_every_statement<H: Harness>() {
    const TABLE: &str = "custom_outbox_events";
    let h = H::setup_with_table(topics(), TABLE)
        .await
        .unwrap_or_else(|e| panic!("setup: {e}"));
    assert_eq!(h.table().table(), TABLE);
    let store = h.store();
    let err = expect_err(store.check().await, "check before migrate");
    assert!(err.to_string().contains(TABLE), "{err}");
    h.migrate().await.expect("migrate");
    store.check().await.expect("check");

    let orders: Vec<OrderCreated> = (1..=2).map(OrderCreated::new).collect();
    h.publish_all(&orders, TxEnd::Commit).await.unwrap();
    h.publish(&OrderCreated::new(3), TxEnd::Commit).await.unwrap();
    h.publish_message(new_message("raw", None, Some(b"x"), &[]), TxEnd::Commit)
        .await
        .unwrap();
    h.insert_minimal("raw", b"y").await;
    assert_eq!(h.row_count().await, 5);

    let ids = pending_ids(&store).await;
    assert_eq!(ids.len(), 5);
    store.complete(&ids[..1], Completion::Delete).await.unwrap();
    store
        .complete(&ids[1..2], Completion::MarkPublished)
        .await
        .unwrap();
    store
        .record_failures(&[
            Failure {
                id: ids[2],
                attempts: 1,
                error: "dead".to_owned(),
                next_attempt_at: None,
            },
            Failure {
                id: ids[3],
                attempts: 1,
                error: "retry".to_owned(),
                next_attempt_at: Some(Utc::now()),
            },
        ])
        .await
        .unwrap();
    let pending = fetch_all(&store).await;
    assert_eq!(pending.iter().map(|m| m.id).collect::<Vec<_>>(), ids[3..]);
    assert_eq!(pending[0].attempts, 1);
    assert_eq!(
        store.backlog().await.unwrap(),
        Backlog {
            pending: 2,
            oldest_pending: Some(pending[0].created_at),
            dead: 1,
        }
    );
    assert_eq!(h.row_count().await, 4);
    h.teardown().await;
}

/// Rows with equal keys share a bucket, whoever wrote them, and every bucket is in
/// `0..H::BUCKETS`; with more than one bucket, distinct keys spread over several.
pub async fn equal_keys_share_a_bucket_within_range<H: Harness>() {
    let h = migrated::<H>().await;
    let store = h.store();
    // 32 keys, each twice, in two transactions; plus unkeyed and empty-keyed rows.
    let orders: Vec<OrderCreated> = (0..32).map(OrderCreated::new).collect();
    h.publish_all(&orders, TxEnd::Commit).await.unwrap();
    h.publish_all(&orders, TxEnd::Commit).await.unwrap();
    h.publish_messages(
        vec![
            new_message("raw", None, Some(b"a"), &[]),
            new_message("raw", None, Some(b"b"), &[]),
            new_message("raw", Some(b""), Some(b"c"), &[]),
        ],
        TxEnd::Commit,
    )
    .await
    .unwrap();
    // A foreign writer's row with a key of ours.
    h.insert_foreign("raw", Some(b"7"), Some(b"foreign"), None).await;

    let pending = fetch_all(&store).await;
    assert_eq!(pending.len(), 64 + 3 + 1);
    let mut by_key: HashMap<Option<bytes::Bytes>, HashSet<i32>> = HashMap::new();
    for m in &pending {
        assert!(
            (0..H::BUCKETS).contains(&m.bucket),
            "row {} has bucket {}, outside 0..{}",
            m.id,
            m.bucket,
            H::BUCKETS
        );
        by_key.entry(m.key.clone()).or_default().insert(m.bucket);
    }
    for (key, buckets) in &by_key {
        assert_eq!(buckets.len(), 1, "key {key:?} is in buckets {buckets:?}");
    }
    assert_eq!(by_key[&Some(bytes::Bytes::from_static(b"7"))].len(), 1);
    let used: HashSet<i32> = pending.iter().map(|m| m.bucket).collect();
    if H::BUCKETS > 1 {
        assert!(
            used.len() > 1,
            "32 distinct keys should not all hash to one bucket: {used:?}"
        );
    } else {
        assert_eq!(used, HashSet::from([0]));
    }
    h.teardown().await;
}

/// Row ids are never reused, even after the newest rows were deleted: the relay relies on id
/// order being write order.
pub async fn ids_are_never_reused_after_deletes<H: Harness>() {
    let h = migrated::<H>().await;
    let store = h.store();
    let ids = publish_orders(&h, 3).await;
    store.complete(&ids[1..], Completion::Delete).await.unwrap();
    store
        .complete(&ids[..1], Completion::MarkPublished)
        .await
        .unwrap();
    h.publish(&OrderCreated::new(4), TxEnd::Commit).await.unwrap();
    let next = h.insert_minimal("raw", b"x").await;
    let pending = pending_ids(&store).await;
    assert_eq!(pending.len(), 2);
    let max = *ids.iter().max().unwrap();
    assert!(
        pending.iter().all(|&id| id > max),
        "new ids {pending:?} must be above the deleted {max}"
    );
    assert_eq!(pending[1], next);
    h.teardown().await;
}

/// The table remembers the progress keys of exactly-once relays, each exactly as given, and
/// recording one twice changes nothing.
pub async fn progress_keys_are_remembered_exactly<H: Harness>() {
    let h = migrated::<H>().await;
    let store = h.store();
    let key = "txoutbox-outbox_messages";
    assert_eq!(store.progress_kept(key).await.unwrap(), Some(false));
    store.keep_progress(key).await.unwrap();
    store.keep_progress(key).await.unwrap();
    assert_eq!(store.progress_kept(key).await.unwrap(), Some(true));
    for other in [
        "TXOUTBOX-OUTBOX_MESSAGES",
        "txoutbox-outbox_messages ",
        "txoutbox-outbox",
    ] {
        assert_eq!(
            store.progress_kept(other).await.unwrap(),
            Some(false),
            "{other:?}"
        );
    }
    assert_eq!(
        h.store().progress_kept(key).await.unwrap(),
        Some(true),
        "another store of the table sees it"
    );
    h.teardown().await;
}

/// Empty batches are no-ops on every method that takes one.
pub async fn empty_batches_are_no_ops<H: StoreHarness>() {
    let h = migrated::<H>().await;
    let store = h.store();
    assert_eq!(
        h.publish_messages(Vec::new(), TxEnd::Commit).await.unwrap(),
        Vec::<Uuid>::new()
    );
    assert_eq!(
        h.publish_all::<OrderCreated>(&[], TxEnd::Commit).await.unwrap(),
        Vec::<Uuid>::new()
    );
    let ids = publish_orders(&h, 1).await;
    store.complete(&[], Completion::Delete).await.unwrap();
    store.complete(&[], Completion::MarkPublished).await.unwrap();
    store.record_failures(&[]).await.unwrap();
    assert_eq!(pending_ids(&store).await, ids);
    assert_eq!(h.row_count().await, 1);
    h.teardown().await;
}

/// A row a foreign application managed to insert never makes `fetch_pending` fail: the table
/// either refuses a key or payload of another type (a number where bytes belong), or the store
/// reads the row, with the literal's text as bytes or flagged `malformed` (the relay then
/// dead-letters it). One unreadable row must not stop the relay.
pub async fn foreign_row_of_another_type_never_blocks_fetching<H: Harness>() {
    let h = migrated::<H>().await;
    let store = h.store();
    let good = h.insert_minimal("legacy.events", b"good").await;
    let mut problems = Vec::new();
    for (key, payload, key_text, payload_text) in [
        ("42", "'a text payload'", "42", "a text payload"),
        ("'a text key'", "1.5", "a text key", "1.5"),
        ("7", "8", "7", "8"),
    ] {
        let inserted = h.try_insert_literals("legacy.events", key, payload).await;
        let pending = match store.fetch_pending(txoutbox_core::ReadLimit::rows(100)).await {
            Ok(pending) => pending,
            Err(e) => {
                problems.push(format!(
                    "a foreign row with key {key} and payload {payload} was accepted and now \
                     fetch_pending fails: {e}"
                ));
                continue;
            }
        };
        if pending.first().map(|m| m.id) != Some(good) {
            problems.push(format!("row {good} is not fetched first: {pending:?}"));
        }
        let Some(id) = inserted else { continue };
        match pending.iter().find(|m| m.id == id) {
            None => problems.push(format!(
                "the accepted row {id} (key {key}, payload {payload}) is not fetched"
            )),
            Some(m) if m.malformed.is_some() => {}
            Some(m) => {
                let expected = (Some(key_text.as_bytes()), Some(payload_text.as_bytes()));
                if (m.key.as_deref(), m.payload.as_deref()) != expected {
                    problems.push(format!(
                        "row {id} (key {key}, payload {payload}) is neither read as text bytes \
                         nor flagged malformed: {m:?}"
                    ));
                }
            }
        }
        store.complete(&[id], Completion::Delete).await.unwrap();
    }
    h.teardown().await; // before asserting: this case may be a known failure
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// A header value is any text, including the NUL character (Kafka header values are bytes):
/// it is published and fetched unchanged, through `publish_message` and `publish_messages`.
pub async fn header_value_with_a_nul_character_round_trips<H: StoreHarness>() {
    let h = migrated::<H>().await;
    let store = h.store();
    let message = || new_message("raw", Some(b"k"), Some(b"v"), &[("nul", "a\0b"), ("plain", "x")]);
    let single = message();
    let batch = vec![message()];
    let published = (
        h.publish_message(single.clone(), TxEnd::Commit).await,
        h.publish_messages(batch.clone(), TxEnd::Commit).await,
    );
    let pending = store.fetch_pending(txoutbox_core::ReadLimit::rows(10)).await;
    h.teardown().await; // before asserting: this case is a known failure on some stores

    published.0.expect("publish_message with a NUL in a header value");
    published
        .1
        .expect("publish_messages with a NUL in a header value");
    let pending = pending.expect("fetch_pending");
    assert_eq!(pending.len(), 2);
    assert_round_trip(&pending[0], &single);
    assert_round_trip(&pending[1], &batch[0]);
}

/// A read keeps to its byte budget: rows in id order while what they bring adds up to less than
/// the budget (always at least one, however large), and a row larger than the largest message
/// comes back without payload and headers, marked unsendable with its size, keeping its topic
/// and key — and costing only those against the budget.
pub async fn reads_keep_to_their_byte_budget_and_larger_rows_come_back_empty<H: StoreHarness>() {
    let h = migrated::<H>().await;
    let store = h.store();
    // Five rows of 1,000-byte payloads (topic "raw": 1,003 bytes each with the key), then one of
    // 5,000 bytes, then one more small row.
    let mut messages: Vec<NewMessage> = (0..5u8)
        .map(|i| new_message("raw", Some(b"k"), Some(&[i; 1_000]), &[]))
        .collect();
    messages.push(new_message("raw", Some(b"big"), Some(&[7; 5_000]), &[("h", "v")]));
    messages.push(new_message("raw", Some(b"k"), Some(&[9; 10]), &[]));
    h.publish_messages(messages, TxEnd::Commit).await.unwrap();
    let all = pending_ids(&store).await;
    assert_eq!(all.len(), 7);
    let read = |limit: txoutbox_core::ReadLimit| {
        let store = &store;
        async move { store.fetch_pending(limit).await.unwrap() }
    };
    let ids = |rows: &[OutboxMessage]| rows.iter().map(|m| m.id).collect::<Vec<_>>();

    // 0, 1,004, 2,008 bytes before the first three: under 2,500; the fourth would start at 3,012.
    let cut = read(txoutbox_core::ReadLimit::rows(100).with_bytes(2_500)).await;
    assert_eq!(ids(&cut), all[..3], "cut by bytes");
    for bytes in [0, 1] {
        let one = read(txoutbox_core::ReadLimit::rows(100).with_bytes(bytes)).await;
        assert_eq!(
            ids(&one),
            all[..1],
            "at least one row, however large ({bytes} bytes)"
        );
    }

    // The 5,000-byte row over a 4,000-byte message limit: its size only, and its route.
    let limited = read(
        txoutbox_core::ReadLimit::rows(100)
            .with_bytes(1 << 20)
            .with_message_bytes(4_000),
    )
    .await;
    assert_eq!(ids(&limited), all, "every row, the large one too");
    let large = &limited[5];
    assert_eq!(large.payload, None);
    assert!(large.headers.is_empty());
    assert_eq!((&*large.topic, large.key.as_deref()), ("raw", Some(&b"big"[..])));
    let reason = large.malformed.as_deref().unwrap_or_default();
    assert!(
        reason.contains("too large") && reason.contains("4000"),
        "{reason}"
    );
    assert!(
        limited[..5]
            .iter()
            .chain(&limited[6..])
            .all(|m| m.malformed.is_none())
    );
    // It costs only its topic and key: the rows after it still fit a budget it would break.
    let after = read(
        txoutbox_core::ReadLimit::rows(100)
            .with_bytes(5 * 1_004 + 100)
            .with_message_bytes(4_000),
    )
    .await;
    assert_eq!(ids(&after), all, "{:?}", ids(&after));
    h.teardown().await;
}

/// A transaction that took its ids before another one committed, and commits after a read,
/// puts rows at or below that read's cursor: `fetch_after(cursor)` returns them with the rows
/// above the cursor, in id order; a late row its byte budget cut off comes back on the next call;
/// nothing pending is skipped. Where writers take ids in commit order (SQLite), only the rows
/// above the cursor are checked.
pub async fn late_commits_below_the_cursor_are_read_after_it<H: StoreHarness>() {
    let h = migrated::<H>().await;
    let store = h.store();
    // Two rows of 1,007 bytes each: a budget of 1,000 takes one.
    let late: Vec<NewMessage> = (1..=2u8)
        .map(|i| new_message("raw", Some(b"late"), Some(&[i; 1_000]), &[]))
        .collect();
    let (cursor, late_ids) = commit_behind_a_read(&h, &store, late).await;
    let above = h
        .publish_message(new_message("raw", Some(b"above"), Some(b"a"), &[]), TxEnd::Commit)
        .await
        .unwrap()
        .to_string();

    let cut = store
        .fetch_after(cursor, txoutbox_core::ReadLimit::rows(100).with_bytes(1_000))
        .await
        .unwrap();
    let rest = fetch_after_all(&store, cursor).await;
    for read in [&cut, &rest] {
        assert_ascending(&read.iter().map(|m| m.id).collect::<Vec<_>>());
    }
    let first_expected = late_ids.first().unwrap_or(&above);
    assert_eq!(
        cut.iter().map(|m| &*m.message_id).collect::<Vec<_>>(),
        [first_expected.as_str()],
        "the lowest new row first, within the byte budget"
    );
    if !late_ids.is_empty() {
        assert!(
            cut[0].id < cursor,
            "the late row took its id before the row at the cursor ({cursor}): {}",
            cut[0].id
        );
    }
    let read: HashSet<&str> = cut.iter().chain(&rest).map(|m| &*m.message_id).collect();
    for expected in late_ids.iter().chain([&above]) {
        assert!(
            read.contains(expected.as_str()),
            "{expected} was committed after the read at the cursor and is not read after it: {read:?}"
        );
    }
    h.teardown().await;
}

/// A read from the cursor whose byte budget takes every late row and cuts the rows above the
/// cursor short has read every late row: the next read from its new cursor returns the rows the
/// budget left above it, and not the late row again (it is still pending, in flight). One budget
/// covers the late rows and those above the cursor. Where writers take ids in commit order
/// (SQLite), only the rows above the cursor are checked.
pub async fn a_read_cut_above_the_cursor_returns_its_late_rows_once<H: StoreHarness>() {
    let h = migrated::<H>().await;
    let store = h.store();
    let late = vec![new_message("raw", Some(b"late"), Some(&[0; 600]), &[])];
    let (cursor, late_ids) = commit_behind_a_read(&h, &store, late).await;
    let late_id = late_ids.first().cloned();
    let mut above = Vec::new();
    for i in 1..=3u8 {
        let id = h
            .publish_message(
                new_message("raw", Some(b"above"), Some(&[i; 600]), &[]),
                TxEnd::Commit,
            )
            .await
            .unwrap();
        above.push(id.to_string());
    }

    // Rows of 607 and 608 bytes: a budget of 1,000 takes two of them.
    let cut = store
        .fetch_after(cursor, txoutbox_core::ReadLimit::rows(100).with_bytes(1_000))
        .await
        .unwrap();
    let taken = 2 - usize::from(late_id.is_some());
    let expected: Vec<&str> = late_id
        .iter()
        .chain(&above[..taken])
        .map(String::as_str)
        .collect();
    assert_eq!(
        cut.iter().map(|m| &*m.message_id).collect::<Vec<_>>(),
        expected,
        "the late row first, then the rows above the cursor, within one byte budget"
    );
    let next_cursor = cut.iter().map(|m| m.id).max().unwrap_or(cursor);
    let next = fetch_after_all(&store, next_cursor).await;
    assert_eq!(
        next.iter().map(|m| &*m.message_id).collect::<Vec<_>>(),
        above[taken..].iter().map(String::as_str).collect::<Vec<_>>(),
        "the rows the budget left, and no row returned before"
    );
    h.teardown().await;
}

/// Publishes `late` in a transaction held open while a row commits after it and a read returns
/// that row alone, then commits `late` behind the read: the read's cursor, and the message ids of
/// `late` (none where writers take ids in commit order, as on SQLite, and nothing can be late).
async fn commit_behind_a_read<H: StoreHarness>(
    h: &H,
    store: &H::Store,
    late: Vec<NewMessage>,
) -> (i64, Vec<String>) {
    let held = h.publish_held(late.clone()).await;
    let on_time = h
        .publish_message(
            new_message("raw", Some(b"on time"), Some(b"t"), &[]),
            TxEnd::Commit,
        )
        .await
        .unwrap();
    let first = fetch_all(store).await;
    assert_eq!(
        first.iter().map(|m| &*m.message_id).collect::<Vec<_>>(),
        [on_time.to_string()],
        "only committed rows are read"
    );
    let late_ids = match held {
        Some(commit) => {
            commit.await;
            late.iter().map(|m| m.message_id.to_string()).collect()
        }
        None => Vec::new(),
    };
    (first[0].id, late_ids)
}

async fn fetch_after_all<S: Store>(store: &S, after: i64) -> Vec<OutboxMessage> {
    store
        .fetch_after(after, txoutbox_core::ReadLimit::rows(100_000))
        .await
        .expect("fetch_after")
}
