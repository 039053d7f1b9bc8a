//! The lease conformance cases: what every store that coordinates several relay nodes
//! ([`Leases`]) must do, statement by statement — claims are exclusive, an expired or taken
//! lease fences the old session's writes off, a lost session rejoins with a greater epoch, node
//! ids are compared exactly, and a work-balance node reads only its buckets. Each store's test
//! file runs them with [`lease_conformance!`](crate::lease_conformance).

use std::time::Duration;

use txoutbox_core::coordination::{Leases, Ownership, Scope};
use txoutbox_core::{Completion, ReadLimit, Store};

use crate::{Harness, StoreHarness, topics};

const LONG: Duration = Duration::from_secs(60);

/// Expands the lease cases into one `#[tokio::test]` each for a harness whose store implements
/// [`Leases`].
#[macro_export]
macro_rules! lease_conformance {
    ($harness:ty) => {
        $crate::lease_conformance!(@cases $harness;
            a_bucket_has_one_holder_until_it_is_released,
            writes_of_a_session_whose_lease_was_taken_are_fenced_off,
            fenced_completions_of_runs_and_lists_change_only_their_rows,
            a_work_balance_node_reads_only_its_buckets,
            node_ids_are_compared_exactly,
            claims_name_the_sessions_whose_expired_leases_they_take,
        );
    };
    (@cases $harness:ty; $($case:ident),+ $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                $crate::leases::$case::<$harness>().await;
            }
        )+
    };
}

/// A store attached to `ownership`, as a coordinated relay's.
fn attached<H: StoreHarness>(harness: &H, ownership: &Ownership) -> H::Store
where
    H::Store: Leases,
{
    let mut store = harness.store();
    store.attach(ownership.clone());
    store
}

/// Inserts one row per key as a foreign writer would, and returns (id, bucket) of each (the
/// bucket as the relay reads it).
async fn rows<H: Harness>(harness: &H, keys: &[String]) -> Vec<(i64, i32)> {
    let ids = rows_of(harness, keys).await;
    let read = harness
        .store()
        .fetch_pending(ReadLimit::rows(keys.len() + 1))
        .await
        .expect("read the rows");
    ids.iter()
        .map(|id| {
            let message = read.iter().find(|m| m.id == *id).expect("every row is read");
            (*id, message.bucket)
        })
        .collect()
}

/// Waits (up to 5 s) until no lease of `store`'s table is held any more.
async fn every_lease_expired<L: Leases>(store: &L) {
    let expired = txoutbox_testing::eventually(Duration::from_secs(5), || async {
        let now = chrono::Utc::now();
        store
            .leases()
            .await
            .unwrap()
            .iter()
            .all(|l| l.lease_until.is_none_or(|t| t < now))
    })
    .await;
    assert!(expired, "the leases did not run out");
}

async fn status<H: StoreHarness>(harness: &H, id: i64) -> Option<String> {
    harness.row(id).await.map(|row| row.status)
}

/// Epochs grow; a held bucket is nobody else's until released; renewal needs the same epoch.
pub async fn a_bucket_has_one_holder_until_it_is_released<H: Harness>()
where
    H::Store: Leases,
{
    let harness = H::ready(topics()).await;
    let store = harness.store();
    assert_eq!(store.bucket_count(), 64);
    let a = store.join("a", "work-balance", LONG).await.unwrap();
    let b = store.join("b", "work-balance", LONG).await.unwrap();
    assert!(b > a, "epochs grow");
    assert_eq!(store.claim("a", a, &[1, 2], LONG).await.unwrap(), [1, 2]);
    let mut got = store.claim("b", b, &[2, 3], LONG).await.unwrap();
    got.sort_unstable();
    assert_eq!(got, [3], "bucket 2 is a's");
    // Renewal by the holder works; by the same node at another epoch it does not.
    assert_eq!(store.claim("a", a, &[2], LONG).await.unwrap(), [2]);
    assert!(store.claim("a", a + 100, &[2], LONG).await.unwrap().is_empty());
    store.release("a", a, &[2]).await.unwrap();
    assert_eq!(store.claim("b", b, &[2], LONG).await.unwrap(), [2]);
    let live = store.heartbeat("b", b, LONG).await.unwrap().unwrap();
    let names: Vec<&str> = live.iter().map(|n| n.node_id.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    // A node that joins again gets a new session: the old one is lost.
    let a2 = store.join("a", "work-balance", LONG).await.unwrap();
    assert!(a2 > b);
    assert!(
        store.heartbeat("a", a, LONG).await.unwrap().is_none(),
        "the old session is lost"
    );
    assert!(store.heartbeat("a", a2, LONG).await.unwrap().is_some());
    store.leave("a", a2).await.unwrap();
    store.leave("a", a).await.unwrap();
    let leases = store.leases().await.unwrap();
    assert!(
        leases.iter().all(|l| l.owner.as_deref() != Some("a")),
        "{leases:?}"
    );
    assert!(
        leases
            .iter()
            .any(|l| l.owner.as_deref() == Some("b") && l.epoch == Some(b) && l.lease_until.is_some()),
        "{leases:?}"
    );
    harness.teardown().await;
}

/// A session whose lease ran out and was taken changes nothing any more; the new holder does.
pub async fn writes_of_a_session_whose_lease_was_taken_are_fenced_off<H: Harness>()
where
    H::Store: Leases,
{
    let harness = H::ready(topics()).await;
    let rows = rows(&harness, &["k1".to_owned(), "k2".to_owned()]).await;
    let store = harness.store();
    let old = store.join("old", "work-balance", LONG).await.unwrap();
    let buckets: Vec<i32> = rows.iter().map(|(_, b)| *b).collect();
    // A short lease that runs out.
    store
        .claim("old", old, &buckets, Duration::from_millis(200))
        .await
        .unwrap();
    let old_view = Ownership::new("old");
    let old_store = attached(&harness, &old_view);
    every_lease_expired(&store).await;
    let new = store.join("new", "work-balance", LONG).await.unwrap();
    let mut taken = store.claim("new", new, &buckets, LONG).await.unwrap();
    taken.sort_unstable();
    let mut expected = buckets.clone();
    expected.sort_unstable();
    expected.dedup();
    assert_eq!(taken, expected, "expired leases can be taken");

    // The old session's completion and failure change nothing; the new one's go through.
    old_view.begin_for_tests(old);
    old_store
        .complete(&[rows[0].0], Completion::Delete)
        .await
        .unwrap();
    assert_eq!(status(&harness, rows[0].0).await.as_deref(), Some("pending"));
    assert_eq!(old_view.write_counts(), (0, 1));
    let failure = txoutbox_core::Failure {
        id: rows[1].0,
        attempts: 1,
        error: "refused".to_owned(),
        next_attempt_at: None,
    };
    old_store
        .record_failures(std::slice::from_ref(&failure))
        .await
        .unwrap();
    assert_eq!(status(&harness, rows[1].0).await.as_deref(), Some("pending"));
    assert_eq!(old_view.write_counts(), (0, 2));
    let new_view = Ownership::new("new");
    new_view.begin_for_tests(new);
    let new_store = attached(&harness, &new_view);
    new_store
        .complete(&[rows[0].0], Completion::Delete)
        .await
        .unwrap();
    assert_eq!(status(&harness, rows[0].0).await, None);
    new_store.record_failures(&[failure]).await.unwrap();
    assert_eq!(status(&harness, rows[1].0).await.as_deref(), Some("dead"));
    assert_eq!(new_view.write_counts(), (2, 0));

    // The old session learns it at its next renewal: the leases are not its any more.
    assert!(store.claim("old", old, &buckets, LONG).await.unwrap().is_empty());
    harness.teardown().await;
}

/// A node's fenced completions, of a run of consecutive ids and of ids with a gap between them,
/// by either completion, change those rows and no others while it holds their buckets, and
/// nothing once another session took them.
pub async fn fenced_completions_of_runs_and_lists_change_only_their_rows<H: Harness>()
where
    H::Store: Leases,
{
    let harness = H::ready(topics()).await;
    let keys: Vec<String> = (0..6).map(|i| format!("fenced-{i}")).collect();
    let rows = rows(&harness, &keys).await;
    let ids: Vec<i64> = rows.iter().map(|(id, _)| *id).collect();
    let buckets: Vec<i32> = rows.iter().map(|(_, b)| *b).collect();
    let store = harness.store();
    let epoch = store.join("node", "work-balance", LONG).await.unwrap();
    store.claim("node", epoch, &buckets, LONG).await.unwrap();
    let view = Ownership::new("node");
    view.begin_for_tests(epoch);
    let node = attached(&harness, &view);

    node.complete(&ids[0..2], Completion::MarkPublished)
        .await
        .unwrap();
    node.complete(&[ids[2], ids[4]], Completion::MarkPublished)
        .await
        .unwrap();
    node.complete(&[ids[3], ids[5]], Completion::Delete)
        .await
        .unwrap();
    let published: Vec<Option<String>> = statuses(&harness, &ids).await;
    assert_eq!(
        published,
        [
            Some("published"),
            Some("published"),
            Some("published"),
            None,
            Some("published"),
            None
        ]
        .map(|s| s.map(str::to_owned)),
        "runs and lists change exactly their rows"
    );
    assert_eq!(view.write_counts(), (6, 0));

    // Another session takes the buckets: this node's writes change nothing.
    let more = rows_of(&harness, &keys).await;
    store.release("node", epoch, &buckets).await.unwrap();
    let other = store.join("other", "work-balance", LONG).await.unwrap();
    store.claim("other", other, &buckets, LONG).await.unwrap();
    node.complete(&more, Completion::Delete).await.unwrap();
    node.complete(&[more[0], more[2]], Completion::MarkPublished)
        .await
        .unwrap();
    for id in &more {
        assert_eq!(
            status(&harness, *id).await.as_deref(),
            Some("pending"),
            "row {id}"
        );
    }
    harness.teardown().await;
}

/// The status of each of `ids` (`None`: deleted).
async fn statuses<H: StoreHarness>(harness: &H, ids: &[i64]) -> Vec<Option<String>> {
    let mut statuses = Vec::with_capacity(ids.len());
    for id in ids {
        statuses.push(status(harness, *id).await);
    }
    statuses
}

/// Inserts one row per key as a foreign writer would, and returns their ids.
async fn rows_of<H: Harness>(harness: &H, keys: &[String]) -> Vec<i64> {
    let mut ids = Vec::with_capacity(keys.len());
    for key in keys {
        ids.push(
            harness
                .insert_foreign("t", Some(key.as_bytes()), Some(b"x"), None)
                .await,
        );
    }
    ids
}

/// A work-balance node reads the rows of its buckets only — from the start and after a cursor —,
/// an exclusive one (or one holding every bucket) every row, a node without leases none.
pub async fn a_work_balance_node_reads_only_its_buckets<H: Harness>()
where
    H::Store: Leases,
{
    let harness = H::ready(topics()).await;
    let keys: Vec<String> = (0..40).map(|i| format!("key-{i}")).collect();
    let rows = rows(&harness, &keys).await;
    let mine = rows[0].1;
    let ownership = Ownership::new("n");
    ownership.begin_for_tests(1);
    ownership.set_for_tests(Scope::Buckets(vec![mine]));
    let store = attached(&harness, &ownership);
    let expected: Vec<i64> = rows
        .iter()
        .filter(|(_, b)| *b == mine)
        .map(|(id, _)| *id)
        .collect();
    assert!(!expected.is_empty() && expected.len() < rows.len());
    let fetched: Vec<i64> = store
        .fetch_pending(ReadLimit::rows(100))
        .await
        .unwrap()
        .iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(fetched, expected);
    let after_first: Vec<i64> = store
        .fetch_after(expected[0], ReadLimit::rows(100))
        .await
        .unwrap()
        .iter()
        .map(|m| m.id)
        .filter(|id| *id > expected[0])
        .collect();
    assert_eq!(after_first, expected[1..]);
    for everything in [Scope::All, Scope::Buckets((0..64).collect())] {
        ownership.set_for_tests(everything);
        assert_eq!(
            store.fetch_pending(ReadLimit::rows(100)).await.unwrap().len(),
            rows.len()
        );
    }
    ownership.set_for_tests(Scope::Nothing);
    assert!(
        store
            .fetch_pending(ReadLimit::rows(100))
            .await
            .unwrap()
            .is_empty()
    );
    harness.teardown().await;
}

/// Node ids that differ only in case or trailing spaces are different nodes.
pub async fn node_ids_are_compared_exactly<H: Harness>()
where
    H::Store: Leases,
{
    let harness = H::ready(topics()).await;
    let store = harness.store();
    let plain = store.join("node", "work-balance", LONG).await.unwrap();
    let upper = store.join("NODE", "work-balance", LONG).await.unwrap();
    let spaced = store.join("node ", "work-balance", LONG).await.unwrap();
    let live = store.heartbeat("node", plain, LONG).await.unwrap();
    let mut names: Vec<String> = live
        .expect("still alive")
        .into_iter()
        .map(|n| n.node_id)
        .collect();
    names.sort();
    assert_eq!(names, ["NODE", "node", "node "]);
    assert_eq!(store.claim("node", plain, &[5], LONG).await.unwrap(), [5]);
    assert!(store.claim("NODE", upper, &[5], LONG).await.unwrap().is_empty());
    assert!(store.claim("node ", spaced, &[5], LONG).await.unwrap().is_empty());
    harness.teardown().await;
}

/// [`Leases::claim_fresh`] takes free leases and renews its own, but leaves a lease that ran out
/// under another session, naming it; [`Leases::take_over`] takes such leases only from that
/// session and completes the given rows of the buckets it took in the same transaction.
pub async fn claims_name_the_sessions_whose_expired_leases_they_take<H: Harness>()
where
    H::Store: Leases,
{
    use txoutbox_core::coordination::ExpiredLease;

    let harness = H::ready(topics()).await;
    let rows = rows(&harness, &["k1".to_owned(), "k2".to_owned(), "k3".to_owned()]).await;
    let mut buckets: Vec<i32> = rows.iter().map(|(_, b)| *b).collect();
    buckets.sort_unstable();
    buckets.dedup();
    let store = harness.store();
    let a = store.join("a", "work-balance", LONG).await.unwrap();
    let first = store
        .claim_fresh("a", a, &buckets, Duration::from_millis(300))
        .await
        .unwrap();
    assert_eq!(first.held, buckets);
    assert!(first.expired.is_empty(), "new leases were nobody's: {first:?}");
    every_lease_expired(&store).await;

    // A bucket nobody holds yet is taken; the expired ones are named, not taken.
    let fresh = (0..64).find(|b| !buckets.contains(b)).unwrap();
    let b = store.join("b", "work-balance", LONG).await.unwrap();
    let mut wanted = buckets.clone();
    wanted.push(fresh);
    let mut claimed = store.claim_fresh("b", b, &wanted, LONG).await.unwrap();
    claimed.expired.sort_by_key(|e| e.bucket);
    assert_eq!(claimed.held, [fresh]);
    let from_a: Vec<ExpiredLease> = buckets
        .iter()
        .map(|&bucket| ExpiredLease {
            bucket,
            node_id: "a".into(),
            epoch: a,
        })
        .collect();
    assert_eq!(claimed.expired, from_a);

    // The take-over takes them and completes the given rows, at once.
    let c = store.join("c", "work-balance", LONG).await.unwrap();
    let (delivered, kept) = (&rows[..2], rows[2].0);
    let ids: Vec<i64> = delivered.iter().map(|(id, _)| *id).collect();
    let taken = store
        .take_over("c", c, a, &buckets, &ids, Completion::Delete, LONG)
        .await
        .unwrap();
    assert_eq!(taken, buckets);
    for id in &ids {
        assert_eq!(
            status(&harness, *id).await,
            None,
            "the lost session's delivered row {id} is completed"
        );
    }
    assert_eq!(
        status(&harness, kept).await.as_deref(),
        Some("pending"),
        "the others stay pending"
    );
    // Nobody takes them from the lost session again, and a fresh claim leaves them to their holder.
    let again = store
        .take_over("b", b, a, &buckets, &[kept], Completion::Delete, LONG)
        .await
        .unwrap();
    assert!(again.is_empty(), "{again:?}");
    let own = store
        .take_over("c", c, a, &buckets, &[kept], Completion::Delete, LONG)
        .await
        .unwrap();
    assert!(
        own.is_empty(),
        "what a session already holds is not taken now: {own:?}"
    );
    assert_eq!(status(&harness, kept).await.as_deref(), Some("pending"));
    let refused = store.claim_fresh("b", b, &buckets, LONG).await.unwrap();
    assert!(
        refused.held.is_empty() && refused.expired.is_empty(),
        "{refused:?}"
    );
    assert_eq!(
        store.claim_fresh("c", c, &buckets, LONG).await.unwrap().held,
        buckets
    );
}
