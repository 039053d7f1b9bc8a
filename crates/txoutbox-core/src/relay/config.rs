//! Relay settings.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::retry::RetryPolicy;
use crate::store::Completion;

/// How a relay reads, sends and completes messages.
///
/// ```
/// use std::time::Duration;
/// use txoutbox_core::RelayConfig;
///
/// let config = RelayConfig::default()
///     .with_batch_size(2_000)
///     .with_poll_interval(Duration::from_millis(250));
/// config.validate()?;
/// # Ok::<(), txoutbox_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RelayConfig {
    /// Rows read and sent per batch. Default: 1,000.
    pub batch_size: usize,
    /// Messages sent but not yet acknowledged and completed, at most. Bounds memory and the
    /// number of messages a crash can resend. Default: 10,000.
    pub max_in_flight: usize,
    /// How long an idle relay waits before looking again when nothing woke it. Default: 1 s.
    pub poll_interval: Duration,
    /// What happens to delivered rows. Default: [`Completion::Delete`].
    pub completion: Completion,
    /// Retries of messages that failed permanently.
    pub retry: RetryPolicy,
    /// How long a graceful shutdown waits for messages already handed to the sink. Messages whose
    /// delivery is still unknown then stay pending and are sent again by the next relay.
    /// Default: 30 s.
    pub shutdown_timeout: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            batch_size: 1_000,
            max_in_flight: 10_000,
            poll_interval: Duration::from_secs(1),
            completion: Completion::default(),
            retry: RetryPolicy::default(),
            shutdown_timeout: Duration::from_secs(30),
        }
    }
}

impl RelayConfig {
    /// Sets the batch size.
    #[must_use]
    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size;
        self
    }

    /// Sets the in-flight limit.
    #[must_use]
    pub fn with_max_in_flight(mut self, max_in_flight: usize) -> Self {
        self.max_in_flight = max_in_flight;
        self
    }

    /// Sets the poll interval.
    #[must_use]
    pub fn with_poll_interval(mut self, poll_interval: Duration) -> Self {
        self.poll_interval = poll_interval;
        self
    }

    /// Sets what happens to delivered rows.
    #[must_use]
    pub fn with_completion(mut self, completion: Completion) -> Self {
        self.completion = completion;
        self
    }

    /// Sets the retry policy.
    #[must_use]
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Sets the graceful-shutdown wait.
    #[must_use]
    pub fn with_shutdown_timeout(mut self, shutdown_timeout: Duration) -> Self {
        self.shutdown_timeout = shutdown_timeout;
        self
    }

    /// Checks the values and their consistency.
    pub fn validate(&self) -> Result<()> {
        if self.batch_size == 0 {
            return Err(Error::Config("relay batch_size must be at least 1".into()));
        }
        if self.max_in_flight < self.batch_size {
            return Err(Error::Config(format!(
                "relay max_in_flight ({}) must be at least batch_size ({})",
                self.max_in_flight, self.batch_size
            )));
        }
        if self.max_in_flight > u32::MAX as usize / 2 {
            return Err(Error::Config("relay max_in_flight is too large".into()));
        }
        if self.poll_interval.is_zero() {
            return Err(Error::Config("relay poll_interval must be above zero".into()));
        }
        self.retry.validate()
    }
}
