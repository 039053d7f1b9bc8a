//! Positions that outlive a relay's session, for stores whose row ids do not.

/// Stable positions for a store whose row ids hold for one session only: a log stream (the
/// PostgreSQL WAL store numbers messages as it decodes them, afresh at every start).
///
/// A transactional sink records in its progress which messages its transactions hold, and a
/// successor skips them. Row ids cannot say that across sessions for such a store, so the sink
/// asks the store to describe them in its own positions instead (WAL positions), and hands the
/// last description back to it at the next start. The relay connects the two:
/// [`Store::stream_positions`](crate::Store::stream_positions) to
/// [`Sink::use_stream_positions`](crate::Sink::use_stream_positions), before it recovers.
pub trait StreamPositions: Send + Sync + 'static {
    /// Describes everything this store no longer needs delivered (completed in this session, or
    /// skipped at its start) plus `delivered`: ids it handed out in this session that the
    /// transport holds for good (or will hold once the transaction carrying the description
    /// commits) and the store has not completed yet. The description is the store's own
    /// versioned format; the sink stores it as it is.
    fn describe(&self, delivered: &[i64]) -> serde_json::Value;

    /// Called once when the relay starts, before it reads, with the last description the
    /// transport holds for good: the store skips every message it names, as delivered. An error
    /// when the description is not one this store wrote (say which relay did, and what to do).
    fn resume(&self, description: &serde_json::Value) -> crate::Result<()>;
}
