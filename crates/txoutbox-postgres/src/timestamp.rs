//! `timestamptz` values as PostgreSQL stores them, decoded without panicking.
//!
//! PostgreSQL accepts times that `chrono` cannot hold: `infinity`, `-infinity`, and years up to
//! 294276 (chrono stops at 262143). sqlx's own decoding of such a value into a `DateTime` panics
//! (an overflowing addition), so every timestamp the store reads from the outbox table, which
//! foreign writers fill, goes through [`PgTimestamp`] instead.

use chrono::{DateTime, Utc};
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgTypeInfo, PgValueFormat, PgValueRef};
use sqlx::{Decode, Postgres, Type};

/// Microseconds since PostgreSQL's epoch, 2000-01-01 00:00:00 UTC (`i64::MAX` is `infinity`,
/// `i64::MIN` is `-infinity`): a `timestamptz` exactly as the server sends it in binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct PgTimestamp(pub(crate) i64);

/// PostgreSQL's epoch in Unix microseconds.
const PG_EPOCH_UNIX_MICROS: i64 = 946_684_800_000_000;

impl PgTimestamp {
    /// The time as a `DateTime`, or what is wrong with it (for a dead letter's reason).
    pub(crate) fn to_utc(self) -> Result<DateTime<Utc>, String> {
        match self.0 {
            i64::MAX => Err("is `infinity`, which is no point in time".to_owned()),
            i64::MIN => Err("is `-infinity`, which is no point in time".to_owned()),
            micros => micros
                .checked_add(PG_EPOCH_UNIX_MICROS)
                .and_then(DateTime::from_timestamp_micros)
                .ok_or_else(|| {
                    format!(
                        "is {micros} µs from 2000-01-01, outside the years -262143 to 262142 that a \
                         record timestamp can carry"
                    )
                }),
        }
    }

    /// The time, or the nearest one a `DateTime` can hold (for listings, which must show every
    /// row).
    pub(crate) fn saturating(self) -> DateTime<Utc> {
        self.to_utc().unwrap_or(if self.0 < 0 {
            DateTime::<Utc>::MIN_UTC
        } else {
            DateTime::<Utc>::MAX_UTC
        })
    }

    /// From a `DateTime` (every `DateTime` fits).
    #[cfg(test)]
    pub(crate) fn from_utc(at: DateTime<Utc>) -> Self {
        Self(at.timestamp_micros() - PG_EPOCH_UNIX_MICROS)
    }
}

impl Type<Postgres> for PgTimestamp {
    fn type_info() -> PgTypeInfo {
        <DateTime<Utc> as Type<Postgres>>::type_info()
    }

    fn compatible(ty: &PgTypeInfo) -> bool {
        <DateTime<Utc> as Type<Postgres>>::compatible(ty)
    }
}

impl<'r> Decode<'r, Postgres> for PgTimestamp {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        match value.format() {
            PgValueFormat::Binary => Ok(Self(<i64 as Decode<Postgres>>::decode(value)?)),
            // Queries with parameters get binary results; text comes only from simple queries.
            PgValueFormat::Text => match value.as_str()? {
                "infinity" => Ok(Self(i64::MAX)),
                "-infinity" => Ok(Self(i64::MIN)),
                _ => {
                    let at = <DateTime<Utc> as Decode<Postgres>>::decode(value)?;
                    Ok(Self(
                        at.timestamp_micros()
                            .checked_sub(PG_EPOCH_UNIX_MICROS)
                            .ok_or("timestamp out of range")?,
                    ))
                }
            },
        }
    }
}

/// The nearest `DateTime` of an optional timestamp (see [`PgTimestamp::saturating`]).
pub(crate) fn saturating(at: Option<PgTimestamp>) -> Option<DateTime<Utc>> {
    at.map(PgTimestamp::saturating)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MICRO: chrono::TimeDelta = chrono::TimeDelta::microseconds(1);

    #[test]
    fn every_stored_value_decodes_to_a_time_or_a_reason() {
        let now = Utc::now();
        let now_us = DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap();
        assert_eq!(PgTimestamp::from_utc(now_us).to_utc().unwrap(), now_us);
        assert!(PgTimestamp(i64::MAX).to_utc().unwrap_err().contains("infinity"));
        assert!(PgTimestamp(i64::MIN).to_utc().unwrap_err().contains("-infinity"));
        // PostgreSQL's largest timestamptz (294276 AD) is beyond chrono's range.
        let beyond = PgTimestamp(9_214_646_400_000_000_000 - 1);
        assert!(beyond.to_utc().unwrap_err().contains("262142"));
        assert_eq!(beyond.saturating(), DateTime::<Utc>::MAX_UTC);
        assert_eq!(PgTimestamp(i64::MIN).saturating(), DateTime::<Utc>::MIN_UTC);
        let edge = PgTimestamp::from_utc(DateTime::<Utc>::MAX_UTC - MICRO);
        assert!(edge.to_utc().is_ok());
    }
}
