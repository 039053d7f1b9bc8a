//! The replication slot as `pg_replication_slots` shows it, and what its state means.

use sqlx::PgPool;
use txoutbox_core::{Error, Result};

use crate::config::WalConfig;
use crate::error::db_error;

/// active, confirmed_flush_lsn, lag bytes, wal_status, safe_wal_size, max_slot_wal_keep_size.
pub(crate) type SlotRow = (
    bool,
    Option<String>,
    Option<i64>,
    Option<String>,
    Option<i64>,
    Option<i64>,
);

/// Reads the slot of `config` from `pg_replication_slots` (no replication connection needed).
pub(crate) async fn slot_status(pool: &PgPool, config: &WalConfig) -> Result<SlotStatus> {
    let row: Option<SlotRow> = sqlx::query_as(
        "SELECT active, confirmed_flush_lsn::text, \
           (pg_current_wal_lsn() - coalesce(confirmed_flush_lsn, restart_lsn))::bigint, \
           wal_status, safe_wal_size, \
           nullif(pg_size_bytes(current_setting('max_slot_wal_keep_size')), -1) \
         FROM pg_replication_slots WHERE slot_name = $1 AND database = current_database()",
    )
    .bind(&config.slot)
    .fetch_optional(pool)
    .await
    .map_err(db_error)?;
    let Some((active, confirmed, lag, wal_status, safe, keep)) = row else {
        return Err(missing_slot(config));
    };
    Ok(SlotStatus {
        slot: config.slot.clone(),
        active,
        confirmed_lsn: confirmed,
        lag_bytes: lag.unwrap_or(0).max(0) as u64,
        wal_status: wal_status.unwrap_or_default(),
        safe_wal_size: safe,
        max_slot_wal_keep_size: keep.filter(|&k| k >= 0),
        buffered: 0,
    })
}

/// What [`PgWalStore::slot_status`](crate::PgWalStore::slot_status) reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotStatus {
    /// The slot's name.
    pub slot: String,
    /// Whether a session streams the slot now.
    pub active: bool,
    /// The position the relay confirmed last (`confirmed_flush_lsn`).
    pub confirmed_lsn: Option<String>,
    /// WAL written since the confirmed position, in bytes: what the slot keeps on disk.
    pub lag_bytes: u64,
    /// `reserved`, `extended`, `unreserved` (at risk) or `lost` (invalidated: messages are gone).
    pub wal_status: String,
    /// Bytes of WAL that may still be written before the slot is invalidated
    /// (`max_slot_wal_keep_size`); `None` when unlimited.
    pub safe_wal_size: Option<i64>,
    /// The server's `max_slot_wal_keep_size` in bytes; `None` when unlimited (`-1`).
    pub max_slot_wal_keep_size: Option<i64>,
    /// Messages this store holds decoded, not yet completed (0 when read without a store).
    pub buffered: usize,
}

/// Below this share of `max_slot_wal_keep_size` left (`safe_wal_size`), a slot is reported at
/// risk by [`SlotStatus::problems`] unless a threshold is given: 20 %.
pub const DEFAULT_SAFE_WAL_SHARE: f64 = 0.2;

impl SlotStatus {
    /// Whether PostgreSQL invalidated the slot (`wal_status = lost`): the WAL it needed is gone.
    pub fn is_lost(&self) -> bool {
        self.wal_status == "lost"
    }

    /// What is wrong with the slot, one sentence per problem (empty when it is fine), each
    /// saying what to do:
    /// - `wal_status = lost`: invalidated, messages since its confirmed position are gone;
    /// - `wal_status = unreserved`: it keeps more WAL than `max_slot_wal_keep_size` and will be
    ///   invalidated at the next checkpoint unless the relay catches up;
    /// - `safe_wal_size` below `min_safe_wal_size` (default: [`DEFAULT_SAFE_WAL_SHARE`] of
    ///   `max_slot_wal_keep_size`): it will be invalidated soon if the lag keeps growing.
    pub fn problems(&self, min_safe_wal_size: Option<u64>) -> Vec<String> {
        let slot = &self.slot;
        let mb = |bytes: f64| format!("{:.1} MB", bytes / 1_048_576.0);
        let mut problems = Vec::new();
        match self.wal_status.as_str() {
            "lost" => problems.push(format!(
                "the replication slot {slot:?} was invalidated (wal_status lost: it kept more WAL than \
                 max_slot_wal_keep_size allows): messages committed since its last confirmed position are \
                 gone from the WAL and will not be relayed. Re-publish them from the application's data, \
                 then recreate the slot (txoutbox wal drop-slot --confirm; txoutbox migrate --source wal)"
            )),
            "unreserved" => problems.push(format!(
                "the replication slot {slot:?} keeps more WAL than max_slot_wal_keep_size (wal_status \
                 unreserved, {} behind): PostgreSQL invalidates it at the next checkpoint unless the relay \
                 catches up; fix the relay or Kafka now, or raise max_slot_wal_keep_size",
                mb(self.lag_bytes as f64)
            )),
            _ => {}
        }
        let threshold = min_safe_wal_size.map(|t| t as f64).or_else(|| {
            self.max_slot_wal_keep_size
                .map(|keep| keep as f64 * DEFAULT_SAFE_WAL_SHARE)
        });
        if let (Some(safe), Some(threshold), false) = (self.safe_wal_size, threshold, self.is_lost())
            && (safe as f64) < threshold
            && self.wal_status != "unreserved"
        {
            problems.push(format!(
                "only {} of WAL may still be written before PostgreSQL invalidates the replication slot \
                 {slot:?} (safe_wal_size, below the warning threshold of {}; {} behind): make the relay \
                 catch up or raise max_slot_wal_keep_size",
                mb(safe.max(0) as f64),
                mb(threshold),
                mb(self.lag_bytes as f64)
            ));
        }
        problems
    }
}

pub(crate) fn missing_slot(config: &WalConfig) -> Error {
    Error::Config(format!(
        "the replication slot {:?} does not exist: run the migrations first (`txoutbox migrate \
         --source wal`, or PgWalOutbox::migrate)",
        config.slot
    ))
}

/// The invalidated slot's message: the cause and the recovery.
pub(crate) fn lost_slot(config: &WalConfig, detail: &str) -> String {
    format!(
        "the replication slot {:?} was invalidated (wal_status lost: it kept more WAL than \
         max_slot_wal_keep_size allows){detail}: messages committed since its last confirmed position are \
         gone from the WAL, and the relay will not skip them silently. Re-publish them from the \
         application's data, then recreate the slot: `txoutbox wal drop-slot --confirm` and \
         `txoutbox migrate --source wal` (or PgWalOutbox::drop_slot and migrate)",
        config.slot
    )
}
