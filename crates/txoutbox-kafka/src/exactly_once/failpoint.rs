//! Crash points for the exactly-once tests (internal feature `__failpoints` only): the process aborts, as on
//! `kill -9`, at a chosen step of the N-th transaction.

/// A step of a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// After `begin_transaction`, before any record is produced.
    BeforeProduce,
    /// After the records and the progress record are produced and acknowledged by the broker
    /// (so an aborted transaction leaves records a read_uncommitted consumer sees), before the
    /// commit.
    BeforeCommit,
    /// After Kafka committed, before the database marks the rows.
    AfterCommit,
    /// After the database marked the rows.
    AfterMark,
}

/// Aborts the process when `TXOUTBOX_CRASH_AT=<step>` names this step and this is the
/// `TXOUTBOX_CRASH_AFTER=<n>`-th time it is reached (default 1).
#[cfg(feature = "__failpoints")]
pub(crate) fn hit(step: Step) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static REACHED: AtomicU64 = AtomicU64::new(0);
    let name = match step {
        Step::BeforeProduce => "before-produce",
        Step::BeforeCommit => "before-commit",
        Step::AfterCommit => "after-commit",
        Step::AfterMark => "after-mark",
    };
    if std::env::var("TXOUTBOX_CRASH_AT").as_deref() == Ok(name) {
        let after: u64 = std::env::var("TXOUTBOX_CRASH_AFTER")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(1);
        if REACHED.fetch_add(1, Ordering::SeqCst) + 1 == after {
            eprintln!("txoutbox failpoint: crashing at {name}");
            std::process::abort();
        }
    }
}

/// Without the feature, crash points cost nothing.
#[cfg(not(feature = "__failpoints"))]
#[inline(always)]
pub(crate) fn hit(_step: Step) {}
