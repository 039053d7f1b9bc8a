//! How the messages of a topic reach the broker: by the relay only, or also right after commit.

/// How messages published on a topic reach Kafka.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum PublishStrategy {
    /// Written to the outbox table; the background relay sends it (the default).
    #[default]
    BackgroundOnly,
    /// Written to the outbox table, and sent by the publishing process right after its
    /// transaction commits (through an outbox transaction's `commit()`); the row is deleted once
    /// Kafka acknowledged it. The background relay leaves the row alone for `grace`, then delivers
    /// it if the immediate send did not (broker down, process crash). Messages of one key sent
    /// immediately by concurrent transactions can reach Kafka in either order.
    ImmediateWithFallback {
        /// How long the relay waits before it takes over.
        grace: std::time::Duration,
    },
}

impl PublishStrategy {
    /// Immediate with fallback after 5 s.
    pub const IMMEDIATE: PublishStrategy = PublishStrategy::ImmediateWithFallback {
        grace: std::time::Duration::from_secs(5),
    };
}
