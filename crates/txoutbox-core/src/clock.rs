//! The relay's wall clock: what it compares retry times and holds with.
//!
//! `Utc::now()` in a running service. Under simulation (the `simulation` feature, for
//! `txoutbox-sim`) a thread may switch to a virtual clock that follows tokio's (paused) clock,
//! so simulated hours of back-off pass in no time and every run of a seed sees the same times.

use chrono::{DateTime, Utc};

/// The current time: the system's, or the simulation's virtual time on this thread.
pub(crate) fn now() -> DateTime<Utc> {
    #[cfg(feature = "simulation")]
    if let Some(now) = virtual_clock::now() {
        return now;
    }
    Utc::now()
}

/// A virtual wall clock per thread, driven by tokio's clock (simulation only).
#[cfg(feature = "simulation")]
pub mod virtual_clock {
    use std::cell::Cell;

    use chrono::{DateTime, TimeDelta, Utc};

    thread_local! {
        /// The wall time at a tokio instant, when this thread runs on virtual time.
        static ORIGIN: Cell<Option<(DateTime<Utc>, tokio::time::Instant)>> = const { Cell::new(None) };
    }

    /// Switches this thread to virtual time: [`now`] is `start` plus the time tokio's clock
    /// advanced since this call. Call it inside a current-thread runtime with a paused clock;
    /// the clock is the system's again when the guard drops.
    pub fn install(start: DateTime<Utc>) -> Guard {
        ORIGIN.with(|origin| origin.set(Some((start, tokio::time::Instant::now()))));
        Guard(())
    }

    /// The virtual time on this thread, `None` when it runs on the system's.
    pub fn now() -> Option<DateTime<Utc>> {
        let (start, at) = ORIGIN.with(Cell::get)?;
        let passed = TimeDelta::from_std(tokio::time::Instant::now().duration_since(at)).ok()?;
        start.checked_add_signed(passed)
    }

    /// Restores the system clock on this thread when dropped.
    #[derive(Debug)]
    pub struct Guard(());

    impl Drop for Guard {
        fn drop(&mut self) {
            ORIGIN.with(|origin| origin.set(None));
        }
    }
}
