//! Which offsets of each assigned partition are finished, so that only offsets below every
//! unfinished record are committed: a crash re-delivers whatever was not finished, never skips it.
//!
//! A record read is *in flight* until it is finished (handled, a duplicate, or parked). Records
//! given up unfinished — skipped because their partition is being revoked, or left at shutdown —
//! stay in flight, so the committed position never passes them. A handler *runs* a record between
//! [`Progress::begin`] and its end; a revoke waits only for the running ones.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// A partition of a topic.
pub(crate) type Partition = (String, i32);

/// One assignment of one partition: a revoke ends it, and work of an ended assignment that
/// finishes late changes nothing.
#[derive(Debug, Default)]
struct PartitionProgress {
    generation: u64,
    in_flight: BTreeSet<i64>,
    /// One past the highest offset read in this assignment.
    next: Option<i64>,
    /// The position last committed (or handed out to be committed).
    committed: Option<i64>,
    /// Records a handler runs now.
    running: usize,
    /// Being revoked: records not begun yet are skipped.
    revoking: bool,
}

impl PartitionProgress {
    /// The position to commit: the first unfinished offset, or one past the last read.
    fn position(&self) -> Option<i64> {
        self.in_flight.first().copied().or(self.next)
    }
}

#[derive(Debug, Default)]
struct State {
    partitions: HashMap<Partition, PartitionProgress>,
    next_generation: u64,
    in_flight_bytes: usize,
}

/// The progress of every assigned partition, shared by the poll thread and the handlers.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    state: Mutex<State>,
    changed: Condvar,
}

/// A record handed out: its partition, offset, size, and the assignment it belongs to.
#[derive(Debug, Clone)]
pub(crate) struct Ticket {
    pub(crate) partition: Partition,
    pub(crate) offset: i64,
    pub(crate) bytes: usize,
    generation: u64,
}

impl Progress {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves counters that are still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts a new assignment of each partition.
    pub(crate) fn assign(&self, partitions: impl IntoIterator<Item = Partition>) {
        let mut state = self.lock();
        for partition in partitions {
            state.next_generation += 1;
            let generation = state.next_generation;
            // Bytes of an earlier assignment's records are given back when their lane gets to
            // them.
            state.partitions.insert(
                partition,
                PartitionProgress {
                    generation,
                    ..PartitionProgress::default()
                },
            );
        }
    }

    /// How many assignments were made so far (changes with every rebalance that assigns).
    pub(crate) fn assignments(&self) -> u64 {
        self.lock().next_generation
    }

    /// Ends the assignments of these partitions; work of theirs still queued is skipped.
    pub(crate) fn revoke(&self, partitions: &[Partition]) {
        let mut state = self.lock();
        for partition in partitions {
            state.partitions.remove(partition);
        }
        self.changed.notify_all();
    }

    /// Records that `offset` of `partition` was read and handed to a lane; `None` when the
    /// partition is not assigned (a record read across a rebalance: skipped, it comes again).
    pub(crate) fn start(&self, partition: &Partition, offset: i64, bytes: usize) -> Option<Ticket> {
        let mut state = self.lock();
        let progress = state.partitions.get_mut(partition)?;
        progress.in_flight.insert(offset);
        progress.next = Some(progress.next.map_or(offset + 1, |n| n.max(offset + 1)));
        let generation = progress.generation;
        state.in_flight_bytes += bytes;
        Some(Ticket {
            partition: partition.clone(),
            offset,
            bytes,
            generation,
        })
    }

    /// A lane is about to run `ticket`'s record: `false` when its assignment ended or is being
    /// revoked (then the lane skips it with [`skip`](Self::skip)).
    pub(crate) fn begin(&self, ticket: &Ticket) -> bool {
        let mut state = self.lock();
        match state.partitions.get_mut(&ticket.partition) {
            Some(progress) if progress.generation == ticket.generation && !progress.revoking => {
                progress.running += 1;
                true
            }
            _ => false,
        }
    }

    /// A begun record is finished (handled, a duplicate, or parked).
    pub(crate) fn finish(&self, ticket: &Ticket) {
        self.end(ticket, true, true);
    }

    /// A begun record was given up unfinished (shutdown): its offset stays uncommitted and the
    /// record comes again.
    pub(crate) fn abandon(&self, ticket: &Ticket) {
        self.end(ticket, true, false);
    }

    /// A record never begun is given up (revoked partition, shutdown): only its bytes go back.
    pub(crate) fn skip(&self, ticket: &Ticket) {
        self.end(ticket, false, false);
    }

    fn end(&self, ticket: &Ticket, began: bool, finished: bool) {
        let mut state = self.lock();
        state.in_flight_bytes = state.in_flight_bytes.saturating_sub(ticket.bytes);
        if let Some(progress) = state.partitions.get_mut(&ticket.partition)
            && progress.generation == ticket.generation
        {
            if began {
                progress.running = progress.running.saturating_sub(1);
            }
            if finished {
                progress.in_flight.remove(&ticket.offset);
            }
        }
        self.changed.notify_all();
    }

    /// Positions that moved since they were last taken, for a commit; `only` limits them to some
    /// partitions.
    pub(crate) fn take_positions(&self, only: Option<&[Partition]>) -> Vec<(Partition, i64)> {
        let mut state = self.lock();
        let mut out = Vec::new();
        for (partition, progress) in &mut state.partitions {
            if only.is_some_and(|only| !only.contains(partition)) {
                continue;
            }
            if let Some(position) = progress.position()
                && progress.committed != Some(position)
            {
                progress.committed = Some(position);
                out.push((partition.clone(), position));
            }
        }
        out
    }

    /// Forgets that these positions were taken (their commit failed): the next take has them.
    pub(crate) fn untake(&self, positions: &[(Partition, i64)]) {
        let mut state = self.lock();
        for (partition, position) in positions {
            if let Some(progress) = state.partitions.get_mut(partition)
                && progress.committed == Some(*position)
            {
                progress.committed = None;
            }
        }
    }

    /// Marks `partitions` as being revoked (their queued records will be skipped) and waits until
    /// no handler runs a record of theirs, or `timeout`; returns whether they went idle.
    pub(crate) fn quiesce(&self, partitions: &[Partition], timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        for partition in partitions {
            if let Some(progress) = state.partitions.get_mut(partition) {
                progress.revoking = true;
            }
        }
        loop {
            let busy = partitions.iter().any(|p| {
                state
                    .partitions
                    .get(p)
                    .is_some_and(|progress| progress.running > 0)
            });
            if !busy {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            state = self
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Whether the records read and not finished hold `max` bytes or more (the poll thread then
    /// pauses fetching).
    pub(crate) fn is_full(&self, max: usize) -> bool {
        self.lock().in_flight_bytes >= max
    }

    /// Bytes of records read and not finished.
    #[cfg(test)]
    pub(crate) fn in_flight_bytes(&self) -> usize {
        self.lock().in_flight_bytes
    }

    /// Records read and not finished, over every partition.
    pub(crate) fn in_flight_records(&self) -> usize {
        self.lock().partitions.values().map(|p| p.in_flight.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(n: i32) -> Partition {
        ("t".to_owned(), n)
    }

    fn begun(progress: &Progress, partition: &Partition, offset: i64, bytes: usize) -> Ticket {
        let ticket = progress.start(partition, offset, bytes).unwrap();
        assert!(progress.begin(&ticket));
        ticket
    }

    #[test]
    fn commits_only_below_the_first_unfinished_offset() {
        let progress = Progress::default();
        progress.assign([p(0)]);
        let tickets: Vec<_> = (10..15).map(|o| begun(&progress, &p(0), o, 1)).collect();
        assert_eq!(progress.take_positions(None), vec![(p(0), 10)]);
        progress.finish(&tickets[1]);
        progress.finish(&tickets[2]);
        assert!(progress.take_positions(None).is_empty(), "10 is still running");
        progress.finish(&tickets[0]);
        assert_eq!(progress.take_positions(None), vec![(p(0), 13)]);
        progress.abandon(&tickets[3]);
        progress.finish(&tickets[4]);
        assert!(
            progress.take_positions(None).is_empty(),
            "13 was abandoned: it comes again"
        );
        assert_eq!(progress.in_flight_bytes(), 0);
    }

    #[test]
    fn a_revoke_waits_for_running_records_only_and_skips_queued_ones() {
        let progress = Progress::default();
        progress.assign([p(1)]);
        let running = begun(&progress, &p(1), 5, 3);
        let queued = progress.start(&p(1), 6, 3).unwrap();
        assert!(!progress.quiesce(&[p(1)], Duration::from_millis(10)), "5 runs");
        assert!(
            !progress.begin(&queued),
            "a revoking partition's queued record is skipped"
        );
        progress.skip(&queued);
        progress.finish(&running);
        assert!(progress.quiesce(&[p(1)], Duration::ZERO));
        assert_eq!(
            progress.take_positions(Some(&[p(1)])),
            vec![(p(1), 6)],
            "6 was skipped: it comes again"
        );
        progress.revoke(&[p(1)]);
        assert!(progress.start(&p(1), 7, 1).is_none(), "not assigned");
        assert_eq!(progress.in_flight_bytes(), 0);
    }

    #[test]
    fn late_work_of_an_ended_assignment_changes_nothing_and_a_failed_commit_is_taken_again() {
        let progress = Progress::default();
        progress.assign([p(1)]);
        let old = begun(&progress, &p(1), 5, 3);
        progress.revoke(&[p(1)]);
        progress.assign([p(1)]);
        let new = begun(&progress, &p(1), 5, 3);
        progress.finish(&old);
        assert_eq!(
            progress.in_flight_records(),
            1,
            "the old ticket does not finish the new one"
        );
        progress.finish(&new);
        let taken = progress.take_positions(None);
        assert_eq!(taken, vec![(p(1), 6)]);
        progress.untake(&taken);
        assert_eq!(progress.take_positions(None), taken);
    }

    #[test]
    fn full_at_the_bound_in_bytes() {
        let progress = Progress::default();
        progress.assign([p(0)]);
        assert!(!progress.is_full(10));
        let t = progress.start(&p(0), 0, 100).unwrap();
        assert!(progress.is_full(10));
        progress.skip(&t);
        assert!(!progress.is_full(10));
    }
}
