//! The text of the `txoutbox-created-at` header, formatted once per run of equal times.

/// The creation-time header's text, formatted once for a run of messages written at the same
/// time (a transaction's messages in WAL mode, a `publish_all` batch).
#[derive(Debug, Default)]
pub struct CreatedAtText {
    last: Option<(chrono::DateTime<chrono::Utc>, String)>,
}

impl CreatedAtText {
    /// RFC 3339 in UTC with microseconds.
    pub fn format(&mut self, at: chrono::DateTime<chrono::Utc>) -> &str {
        if self.last.as_ref().is_none_or(|(last, _)| *last != at) {
            self.last = Some((at, at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)));
        }
        self.last.as_ref().map_or("", |(_, text)| text.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_at_text_is_rfc3339_micros_and_follows_the_time() {
        let mut stamps = CreatedAtText::default();
        let first = chrono::DateTime::from_timestamp_micros(1_764_400_000_123_456).unwrap();
        assert_eq!(stamps.format(first), "2025-11-29T07:06:40.123456Z");
        assert_eq!(stamps.format(first), "2025-11-29T07:06:40.123456Z");
        let later = first + chrono::TimeDelta::microseconds(1);
        assert_eq!(stamps.format(later), "2025-11-29T07:06:40.123457Z");
    }
}
