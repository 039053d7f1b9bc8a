//! The daemon's recent history: published-message counts sampled every second, for the publish
//! rate that `txoutbox status` and `/status` show.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// How much history is kept.
const KEPT: Duration = Duration::from_secs(15 * 60);

/// Samples of a monotonically growing counter.
#[derive(Debug, Default)]
pub struct History {
    samples: Mutex<VecDeque<(Instant, u64)>>,
}

impl History {
    /// Records the counter's value now.
    pub fn record(&self, now: Instant, value: u64) {
        let mut samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        samples.push_back((now, value));
        while samples
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > KEPT)
        {
            samples.pop_front();
        }
    }

    /// The counter's growth per second over the last `window` (or as much of it as is known).
    pub fn rate(&self, window: Duration) -> Option<f64> {
        let samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        let (last_at, last) = *samples.back()?;
        let (first_at, first) = *samples
            .iter()
            .find(|(at, _)| last_at.duration_since(*at) <= window)?;
        let elapsed = last_at.duration_since(first_at).as_secs_f64();
        (elapsed > 0.0).then(|| last.saturating_sub(first) as f64 / elapsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_over_a_window() {
        let history = History::default();
        let start = Instant::now();
        assert_eq!(history.rate(Duration::from_secs(60)), None);
        for second in 0..=120u64 {
            history.record(start + Duration::from_secs(second), second * 10);
        }
        let rate = history.rate(Duration::from_secs(60)).unwrap();
        assert!((rate - 10.0).abs() < 1e-9, "{rate}");
    }
}
