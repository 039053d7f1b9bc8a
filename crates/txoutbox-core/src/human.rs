//! Durations in log lines and messages, written for people: `850 ms`, `1.1 s`, `2 min 5 s`.

use std::fmt;
use std::time::Duration;

/// A duration that displays for people: milliseconds under a second, tenths of a second under a
/// minute, then minutes and seconds, then hours and minutes.
///
/// ```
/// use std::time::Duration;
/// use txoutbox_core::HumanDuration;
///
/// assert_eq!(HumanDuration(Duration::from_nanos(1_105_494_068)).to_string(), "1.1 s");
/// assert_eq!(HumanDuration(Duration::from_millis(500)).to_string(), "500 ms");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let millis = self.0.as_millis();
        if millis < 1_000 {
            return write!(f, "{millis} ms");
        }
        let tenths = (millis + 50) / 100;
        if tenths < 600 {
            return write!(f, "{}.{} s", tenths / 10, tenths % 10);
        }
        let seconds = (millis + 500) / 1_000;
        if seconds < 3_600 {
            return write!(f, "{} min {} s", seconds / 60, seconds % 60);
        }
        write!(f, "{} h {} min", seconds / 3_600, seconds % 3_600 / 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn human(millis: u64) -> String {
        HumanDuration(Duration::from_millis(millis)).to_string()
    }

    #[test]
    fn each_range_reads_naturally() {
        assert_eq!(human(0), "0 ms");
        assert_eq!(human(999), "999 ms");
        assert_eq!(human(1_000), "1.0 s");
        assert_eq!(human(1_149), "1.1 s");
        assert_eq!(human(59_949), "59.9 s");
        assert_eq!(human(59_950), "1 min 0 s");
        assert_eq!(human(125_000), "2 min 5 s");
        assert_eq!(human(3_600_000), "1 h 0 min");
        assert_eq!(human(5_400_000), "1 h 30 min");
    }
}
