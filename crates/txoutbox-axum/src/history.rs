//! A relay's recent history: published-message counts sampled every second, for the publish
//! rate that `/status` (and `txoutbox status`) shows, and (with the web console) a per-second
//! timeline of publish rate, commit→ack latency and backlog for its charts.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// How much history is kept.
const KEPT: Duration = Duration::from_secs(15 * 60);

/// Samples of a monotonically growing counter.
#[derive(Debug, Default)]
pub(crate) struct History {
    samples: Mutex<VecDeque<(Instant, u64)>>,
}

impl History {
    /// A history whose first sample is `value` at `now` (the counter when the routes are built).
    pub(crate) fn starting_at(now: Instant, value: u64) -> Self {
        let history = Self::default();
        history.record(now, value);
        history
    }

    /// Records the counter's value now.
    pub(crate) fn record(&self, now: Instant, value: u64) {
        let mut samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        samples.push_back((now, value));
        while samples
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > KEPT)
        {
            samples.pop_front();
        }
    }

    /// The counter's growth per second over the `window` before `now`, when it reads `current`
    /// (or over as much of the window as is known).
    pub(crate) fn rate(&self, window: Duration, now: Instant, current: u64) -> Option<f64> {
        let samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        let (first_at, first) = *samples
            .iter()
            .find(|(at, _)| now.saturating_duration_since(*at) <= window)?;
        let elapsed = now.saturating_duration_since(first_at).as_secs_f64();
        (elapsed > 0.0).then(|| current.saturating_sub(first) as f64 / elapsed)
    }
}

/// One second of the console's timeline.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Sample {
    /// When it was taken (wall clock, for the charts' time axis).
    pub at: chrono::DateTime<chrono::Utc>,
    /// Messages published per second since the previous sample.
    pub rate: f64,
    /// Mean commit→ack latency of the messages acknowledged in that second, in milliseconds.
    pub latency_avg_ms: Option<f64>,
    /// Their 99th-percentile latency (estimated from the histogram's buckets), in milliseconds.
    pub latency_p99_ms: Option<f64>,
    /// Pending messages as the latest health check counted them.
    pub pending: Option<u64>,
}

/// The last [`KEPT`] of per-second samples, oldest first.
#[derive(Debug, Default)]
pub(crate) struct Timeline {
    samples: Mutex<VecDeque<Sample>>,
}

impl Timeline {
    /// Appends a sample and forgets those older than [`KEPT`].
    pub(crate) fn push(&self, sample: Sample) {
        let mut samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        samples.push_back(sample);
        let kept = chrono::TimeDelta::from_std(KEPT).unwrap_or(chrono::TimeDelta::MAX);
        while samples.front().is_some_and(|s| sample.at - s.at > kept) {
            samples.pop_front();
        }
    }

    /// The samples of the last `window`, oldest first.
    pub(crate) fn last(&self, window: Duration) -> Vec<Sample> {
        let samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        let Some(newest) = samples.back().map(|s| s.at) else {
            return Vec::new();
        };
        let window = chrono::TimeDelta::from_std(window).unwrap_or(chrono::TimeDelta::MAX);
        samples
            .iter()
            .filter(|s| newest - s.at < window)
            .copied()
            .collect()
    }
}

/// A cumulative latency histogram as rendered in Prometheus text: `(upper bound, count)` buckets,
/// sum and count. Two snapshots a second apart give that second's mean and percentiles.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Histogram {
    buckets: Vec<(f64, u64)>,
    sum: f64,
    count: u64,
}

impl Histogram {
    /// Reads the series of histogram `name` whose labels include every one of `wanted` (one
    /// relay's, e.g. `table`) from Prometheus text; `None` when it is not there yet.
    pub(crate) fn from_prometheus<'a>(
        text: &str,
        name: &str,
        wanted: impl Iterator<Item = (&'a str, &'a str)> + Clone,
    ) -> Option<Self> {
        let mut histogram = Self::default();
        let mut seen = false;
        for line in text.lines() {
            let Some(rest) = line.strip_prefix(name) else {
                continue;
            };
            let Some((series, value)) = rest.rsplit_once(' ') else {
                continue;
            };
            let value: f64 = match value.trim().parse() {
                Ok(v) => v,
                Err(_) => continue,
            };
            let (suffix, labels) = match series.split_once('{') {
                Some((suffix, labels)) => (suffix, labels_of(labels.strip_suffix('}').unwrap_or(labels))),
                None => (series, Vec::new()),
            };
            let has = |key: &str, value: &str| labels.iter().any(|(k, v)| *k == key && v == value);
            if !wanted.clone().all(|(key, value)| has(key, value)) {
                continue;
            }
            if suffix == "_bucket" {
                let Some(le) = labels.iter().find(|(k, _)| *k == "le").map(|(_, v)| v.as_str()) else {
                    continue;
                };
                let bound = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    match le.parse() {
                        Ok(b) => b,
                        Err(_) => continue,
                    }
                };
                histogram.buckets.push((bound, value as u64));
                seen = true;
            } else if suffix == "_sum" {
                histogram.sum = value;
                seen = true;
            } else if suffix == "_count" {
                histogram.count = value as u64;
                seen = true;
            }
        }
        histogram.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        seen.then_some(histogram)
    }

    /// What was observed between `earlier` and `self`: mean and `quantile` (0..1), in the
    /// histogram's unit; `None` when nothing was observed in between.
    pub(crate) fn since(&self, earlier: &Self, quantile: f64) -> Option<(f64, f64)> {
        let count = self.count.checked_sub(earlier.count).filter(|&c| c > 0)?;
        let mean = (self.sum - earlier.sum) / count as f64;
        let delta: Vec<(f64, u64)> = self
            .buckets
            .iter()
            .map(|&(bound, n)| {
                let before = earlier
                    .buckets
                    .iter()
                    .find(|(b, _)| *b == bound)
                    .map_or(0, |(_, n)| *n);
                (bound, n.saturating_sub(before))
            })
            .collect();
        // As Prometheus' histogram_quantile: linear within the bucket that holds the rank.
        let rank = quantile * count as f64;
        let mut lower = (0.0, 0u64);
        for &(bound, cumulative) in &delta {
            if cumulative as f64 >= rank {
                if bound.is_infinite() {
                    return Some((mean, lower.0));
                }
                let in_bucket = cumulative.saturating_sub(lower.1) as f64;
                let fraction = if in_bucket > 0.0 {
                    (rank - lower.1 as f64) / in_bucket
                } else {
                    1.0
                };
                return Some((mean, lower.0 + (bound - lower.0) * fraction));
            }
            lower = (bound, cumulative);
        }
        Some((mean, lower.0))
    }
}

/// The `key="value"` pairs of a Prometheus series' labels (the text between its braces), values
/// unescaped.
fn labels_of(text: &str) -> Vec<(&str, String)> {
    let mut labels = Vec::new();
    let mut rest = text;
    while let Some((key, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((at, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, other)) => value.push(other),
                    None => {}
                },
                '"' => {
                    end = at + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        labels.push((key.trim().trim_start_matches(',').trim(), value));
        rest = after.get(end..).unwrap_or_default();
    }
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_of_one_second_from_two_histogram_snapshots() {
        let text = |b1: u64, b2: u64, inf: u64, sum: f64| {
            format!(
                "# TYPE lat histogram\nlat_bucket{{le=\"0.01\"}} {b1}\nlat_bucket{{le=\"0.1\"}} {b2}\n\
                 lat_bucket{{le=\"+Inf\"}} {inf}\nlat_sum {sum}\nlat_count {inf}\nother 1\n"
            )
        };
        let none = std::iter::empty();
        assert_eq!(Histogram::from_prometheus("other 1\n", "lat", none.clone()), None);
        let before = Histogram::from_prometheus(&text(10, 10, 10, 0.05), "lat", none.clone()).unwrap();
        // 100 more: 0 below 10 ms, 100 between 10 and 100 ms, mean 50 ms.
        let after = Histogram::from_prometheus(&text(10, 110, 110, 5.05), "lat", none).unwrap();
        let (mean, p99) = after.since(&before, 0.99).unwrap();
        assert!((mean - 0.05).abs() < 1e-9, "{mean}");
        assert!((p99 - 0.0991).abs() < 1e-9, "{p99}");
        assert_eq!(after.since(&after, 0.99), None);
    }

    #[test]
    fn one_relays_series_of_several() {
        let text = "# TYPE lat histogram\n\
            lat_bucket{table=\"a\",le=\"0.1\"} 1\nlat_bucket{table=\"a\",le=\"+Inf\"} 1\n\
            lat_sum{table=\"a\"} 0.05\nlat_count{table=\"a\"} 1\n\
            lat_bucket{table=\"b\",le=\"0.1\"} 7\nlat_bucket{table=\"b\",le=\"+Inf\"} 9\n\
            lat_sum{table=\"b\"} 3\nlat_count{table=\"b\"} 9\n";
        let a = Histogram::from_prometheus(text, "lat", [("table", "a")].into_iter()).unwrap();
        assert_eq!(a.count, 1);
        assert_eq!(a.buckets, [(0.1, 1), (f64::INFINITY, 1)]);
        let b = Histogram::from_prometheus(text, "lat", [("table", "b")].into_iter()).unwrap();
        assert_eq!((b.count, b.sum), (9, 3.0));
        assert_eq!(
            Histogram::from_prometheus(text, "lat", [("table", "c")].into_iter()),
            None
        );
        assert_eq!(
            labels_of(r#"table="x\"y",le="1""#),
            [("table", "x\"y".to_owned()), ("le", "1".to_owned())]
        );
    }

    #[test]
    fn the_timeline_keeps_the_last_window() {
        let timeline = Timeline::default();
        let start = chrono::Utc::now();
        for second in 0..20 {
            timeline.push(Sample {
                at: start + chrono::TimeDelta::seconds(second),
                rate: second as f64,
                latency_avg_ms: None,
                latency_p99_ms: None,
                pending: Some(0),
            });
        }
        let last = timeline.last(Duration::from_secs(5));
        assert_eq!(last.len(), 5);
        assert_eq!(last[0].rate, 15.0);
    }

    #[test]
    fn rate_over_a_window() {
        let history = History::default();
        let start = Instant::now();
        let minute = Duration::from_secs(60);
        assert_eq!(history.rate(minute, start, 0), None);
        for second in 0..=120u64 {
            history.record(start + Duration::from_secs(second), second * 10);
        }
        let rate = history
            .rate(minute, start + Duration::from_secs(120), 1_200)
            .unwrap();
        assert!((rate - 10.0).abs() < 1e-9, "{rate}");
        // Growth since the last sample counts too.
        let rate = history
            .rate(minute, start + Duration::from_secs(120), 1_800)
            .unwrap();
        assert!((rate - 20.0).abs() < 1e-9, "{rate}");
    }

    #[test]
    fn a_burst_within_the_first_second_has_a_rate() {
        let history = History::default();
        let start = Instant::now();
        history.record(start, 0);
        let rate = history.rate(Duration::from_secs(60), start + Duration::from_millis(500), 1_000);
        assert_eq!(rate, Some(2_000.0));
    }
}
