//! How failed messages are retried: attempts, exponential back-off with a cap and jitter.

use std::time::Duration;

use rand::Rng;

use crate::error::{Error, Result};

/// Retry policy for messages whose delivery failed permanently (transient failures never count).
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts before a message is dead-lettered. Default: 10.
    pub max_attempts: u32,
    /// Delay after the first failed attempt. Default: 1 s.
    pub initial_backoff: Duration,
    /// Upper bound of the delay. Default: 5 min.
    pub max_backoff: Duration,
    /// Growth factor per attempt. Default: 2.
    pub multiplier: f64,
    /// Fraction of the delay randomized away, 0 to 1 (spreads retries of many rows). Default: 0.2.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 10,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
            multiplier: 2.0,
            jitter: 0.2,
        }
    }
}

impl RetryPolicy {
    /// Sets the attempts before dead-lettering.
    #[must_use]
    pub fn with_max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = max_attempts;
        self
    }

    /// Sets the first delay and the cap.
    #[must_use]
    pub fn with_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_backoff = initial;
        self.max_backoff = max;
        self
    }

    /// Sets the jitter fraction (0 disables it).
    #[must_use]
    pub fn with_jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter;
        self
    }

    /// Checks the values.
    pub fn validate(&self) -> Result<()> {
        if self.max_attempts == 0 {
            return Err(Error::Config("retry max_attempts must be at least 1".into()));
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(Error::Config("retry jitter must be between 0 and 1".into()));
        }
        if self.multiplier < 1.0 || !self.multiplier.is_finite() {
            return Err(Error::Config(
                "retry multiplier must be a finite number >= 1".into(),
            ));
        }
        if self.initial_backoff > self.max_backoff {
            return Err(Error::Config(
                "retry initial_backoff must not exceed max_backoff".into(),
            ));
        }
        Ok(())
    }

    /// The delay before the next try after `attempts` failed attempts (1 for the first failure),
    /// or `None` when the message has used all its attempts.
    pub fn backoff(&self, attempts: u32) -> Option<Duration> {
        if attempts >= self.max_attempts {
            return None;
        }
        let exponent = attempts.saturating_sub(1).min(64) as i32;
        let base = self.initial_backoff.as_secs_f64() * self.multiplier.powi(exponent);
        let capped = base.min(self.max_backoff.as_secs_f64());
        let jittered = if self.jitter > 0.0 {
            capped * (1.0 - self.jitter * rand::rng().random::<f64>())
        } else {
            capped
        };
        Some(Duration::try_from_secs_f64(jittered).unwrap_or(self.max_backoff))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_exponentially_up_to_the_cap_then_gives_up() {
        let policy = RetryPolicy::default()
            .with_max_attempts(5)
            .with_backoff(Duration::from_secs(1), Duration::from_secs(5))
            .with_jitter(0.0);
        let delays: Vec<_> = (1..=5).map(|a| policy.backoff(a)).collect();
        assert_eq!(
            delays,
            vec![
                Some(Duration::from_secs(1)),
                Some(Duration::from_secs(2)),
                Some(Duration::from_secs(4)),
                Some(Duration::from_secs(5)),
                None
            ]
        );
    }

    #[test]
    fn jitter_stays_within_its_fraction() {
        let policy = RetryPolicy::default().with_jitter(0.5);
        for _ in 0..100 {
            let d = policy.backoff(1).unwrap();
            assert!(
                d <= Duration::from_secs(1) && d >= Duration::from_millis(500),
                "{d:?}"
            );
        }
    }

    #[test]
    fn rejects_nonsense() {
        assert!(RetryPolicy::default().with_max_attempts(0).validate().is_err());
        assert!(RetryPolicy::default().with_jitter(2.0).validate().is_err());
        RetryPolicy::default().validate().unwrap();
    }
}
