//! Demand forecasts from measured incoming (pre-sampling) rates, per priority class.
//!
//! Two windows, both scaled to the period's length (a "scaled hour" is 1/720 of the
//! period: an hour of a 30-day month, 15 s of a 3-hour period):
//! - **long**: the median of the last 72 hourly rates (three scaled days). A median ignores
//!   a one-day spike entirely and follows a slow daily rhythm at its middle, so the keep
//!   probability stays steady through the day instead of chasing every peak;
//! - **short**: the rate over the last few recompute intervals, which sees a burst
//!   within minutes.
//!
//! Until three hourly bins have completed, the long window falls back to a warm start
//! (the period's average so far, from persisted counters, after a restart) or to the
//! short window. Pure state driven by `observe(now, bytes)`; no clock of its own.

use std::collections::VecDeque;

use jiff::Timestamp;

use crate::clock::seconds_between;

/// How many completed bins the long window spans.
pub const LONG_BINS: usize = 72;
/// Completed bins needed before the median is trusted.
const MIN_BINS: usize = 3;
/// Bins in a scaled day.
pub const DAY_BINS: usize = 24;

/// A demand forecast in bytes/s from observed byte counts: the long window (median of
/// scaled-hour bins) and the short one. The pacer keeps one per priority class, and one
/// for what was forwarded.
#[derive(Debug, Clone)]
pub struct Forecast {
    bin_seconds: f64,
    short_seconds: f64,
    /// Completed bins' rates (bytes/s), newest last.
    bins: VecDeque<f64>,
    bin_start: Option<Timestamp>,
    bin_bytes: f64,
    last: Option<Timestamp>,
    /// Recent observations for the short window: (time, bytes).
    recent: VecDeque<(Timestamp, f64)>,
    warm_start: Option<f64>,
    /// How much of a scaled day the warm start's average covers (0 to 1).
    warm_history: f64,
}

impl Forecast {
    /// A forecast whose hourly bins last `bin_seconds` and whose short window spans
    /// `short_seconds`.
    pub fn new(bin_seconds: f64, short_seconds: f64) -> Self {
        Self {
            bin_seconds: bin_seconds.max(1e-3),
            short_seconds: short_seconds.max(1e-3),
            bins: VecDeque::with_capacity(LONG_BINS + 1),
            bin_start: None,
            bin_bytes: 0.0,
            last: None,
            recent: VecDeque::new(),
            warm_start: None,
            warm_history: 0.0,
        }
    }

    /// Seeds the long window (e.g. with the period's average rate after a restart), an
    /// average over `history` scaled days (0 to 1 counts).
    pub fn warm_start(&mut self, rate: f64, history: f64) {
        if rate.is_finite() && rate >= 0.0 {
            self.warm_start = Some(rate);
            self.warm_history = history.clamp(0.0, 1.0);
        }
    }

    /// Records `bytes` offered between the previous observation and `now` (the first
    /// observation only sets the starting point).
    pub fn observe(&mut self, now: Timestamp, bytes: f64) {
        let Some(last) = self.last.replace(now) else {
            self.bin_start = Some(now);
            self.recent.push_back((now, 0.0));
            return;
        };
        let span = seconds_between(last, now);
        if span <= 0.0 {
            // Same instant, or the clock stepped back: count it in the current bin.
            self.bin_bytes += bytes.max(0.0);
            if span < 0.0 {
                self.bin_start = Some(now);
            }
            return;
        }
        let rate = bytes / span;
        let mut t = last;
        let mut bin_start = self.bin_start.unwrap_or(last);
        let bin = std::time::Duration::from_secs_f64(self.bin_seconds);
        for _ in 0..=LONG_BINS + 1 {
            let bin_end = crate::clock::add(bin_start, bin);
            if now < bin_end {
                break;
            }
            self.bin_bytes += rate * seconds_between(t, bin_end).max(0.0);
            self.push_bin(self.bin_bytes / self.bin_seconds);
            self.bin_bytes = 0.0;
            bin_start = bin_end;
            t = bin_end;
        }
        if seconds_between(bin_start, now) >= self.bin_seconds {
            // A gap longer than the whole window: start over from now.
            bin_start = now;
            t = now;
        }
        self.bin_bytes += rate * seconds_between(t, now).max(0.0);
        self.bin_start = Some(bin_start);
        self.recent.push_back((now, bytes));
        while self.recent.len() > 2 {
            let second = self.recent[1].0;
            if seconds_between(second, now) >= self.short_seconds {
                self.recent.pop_front();
            } else {
                break;
            }
        }
    }

    fn push_bin(&mut self, rate: f64) {
        self.bins.push_back(rate);
        while self.bins.len() > LONG_BINS {
            self.bins.pop_front();
        }
    }

    /// The short-window rate (bytes/s): what was offered since the oldest observation kept.
    pub fn short(&self) -> f64 {
        let (Some(&(first, _)), Some(&(last, _))) = (self.recent.front(), self.recent.back())
        else {
            return 0.0;
        };
        // The first observation's bytes accrued before `first`, outside the span.
        let span = seconds_between(first, last);
        if span <= 0.0 {
            return 0.0;
        }
        let bytes: f64 = self.recent.iter().skip(1).map(|(_, b)| b).sum();
        bytes / span
    }

    /// The long-window rate (bytes/s): the median of the newest whole scaled days of bins
    /// (a partial day would lean toward whatever hours it holds of a daily rhythm).
    pub fn long(&self) -> f64 {
        let n = self.bins.len();
        if n >= MIN_BINS {
            let whole = if n >= DAY_BINS {
                n / DAY_BINS * DAY_BINS
            } else {
                n
            };
            median(self.bins.iter().skip(n - whole).copied())
        } else if let Some(w) = self.warm_start {
            w
        } else {
            self.short()
        }
    }

    /// Whether the long window rests on measured bins rather than a fallback.
    pub fn is_warm(&self) -> bool {
        self.bins.len() >= MIN_BINS
    }

    /// How much of a scaled day of history the long window holds, from 0 to 1.
    pub fn history(&self) -> f64 {
        (self.bins.len() as f64 / DAY_BINS as f64)
            .min(1.0)
            .max(self.warm_history)
    }
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn feed(
        f: &mut Forecast,
        start: Timestamp,
        seconds: u64,
        rate: impl Fn(u64) -> f64,
    ) -> Timestamp {
        let mut t = start;
        for s in 0..seconds / 10 {
            t = crate::clock::add(t, Duration::from_secs(10));
            f.observe(t, rate(s * 10) * 10.0);
        }
        t
    }

    #[test]
    fn steady_traffic_is_measured_in_both_windows() {
        let mut f = Forecast::new(3600.0, 300.0);
        let t0: Timestamp = "2026-11-01T00:00:00Z".parse().unwrap();
        feed(&mut f, t0, 6 * 3600, |_| 1000.0);
        assert!((f.long() - 1000.0).abs() < 1.0, "{}", f.long());
        assert!((f.short() - 1000.0).abs() < 1.0, "{}", f.short());
    }

    #[test]
    fn a_one_day_spike_moves_the_short_window_not_the_median() {
        let mut f = Forecast::new(3600.0, 300.0);
        let t0: Timestamp = "2026-11-01T00:00:00Z".parse().unwrap();
        let t = feed(&mut f, t0, 2 * 86400, |_| 1000.0);
        let t = feed(&mut f, t, 86400 / 2, |_| 20_000.0);
        assert!((f.short() - 20_000.0).abs() < 1.0);
        assert!(
            (f.long() - 1000.0).abs() < 1.0,
            "half a day of spike: {}",
            f.long()
        );
        feed(&mut f, t, 3600, |_| 1000.0);
        assert!((f.short() - 1000.0).abs() < 1.0, "the burst is over");
    }

    #[test]
    fn a_daily_rhythm_gives_a_steady_long_forecast() {
        let mut f = Forecast::new(3600.0, 300.0);
        let t0: Timestamp = "2026-11-01T00:00:00Z".parse().unwrap();
        let rhythm =
            |s: u64| 1000.0 * (1.0 + 0.6 * (s as f64 / 86400.0 * std::f64::consts::TAU).sin());
        let mut t = feed(&mut f, t0, 3 * 86400, rhythm);
        let mut seen = Vec::new();
        for _ in 0..24 {
            t = feed(&mut f, t, 3600, rhythm);
            seen.push(f.long());
        }
        let (lo, hi) = seen
            .iter()
            .fold((f64::MAX, 0.0f64), |(lo, hi), &x| (lo.min(x), hi.max(x)));
        assert!(
            hi / lo < 1.15,
            "long forecast swings {lo}..{hi} through the day"
        );
    }

    #[test]
    fn warm_start_until_bins_fill() {
        let mut f = Forecast::new(3600.0, 300.0);
        f.warm_start(500.0, 1.0);
        assert_eq!(
            f.history(),
            1.0,
            "a restart after a day keeps its confidence"
        );
        let t0: Timestamp = "2026-11-01T00:00:00Z".parse().unwrap();
        feed(&mut f, t0, 600, |_| 2000.0);
        assert_eq!(f.long(), 500.0);
        assert!(!f.is_warm());
    }
}
