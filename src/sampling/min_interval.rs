//! `metrics.min_sample_interval`: at most one point per series per interval, so a series
//! scraped every second costs Grafana's DPM (data points per minute) as if scraped at the
//! interval. Points are dropped, never changed: the kept ones carry their own values and
//! timestamps, so `rate()` and `increase()` over them are what they were, at coarser
//! resolution.
//!
//! Always kept, whatever the interval: a Prometheus staleness marker (the series ended:
//! dropping it would leave the series dangling for five minutes); the first point after a
//! counter reset (dropping it would hide the reset, and `increase()` would under-count);
//! a point older than the last one kept (out of order: upstream decides, frugal does not
//! hide it); the first point of a series frugal has not seen (or has forgotten).
//!
//! State: per series (its [`Fingerprint`]) the timestamp of the last
//! point kept and the last value seen, in shards so callers do not contend on one lock;
//! [`MinInterval::expire`] forgets series not seen for a while. The decision takes the
//! point's own timestamp, never a clock.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::fingerprint::Fingerprint;

/// The bit pattern of Prometheus's staleness marker (a NaN).
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

const SHARDS: usize = 16;

/// Whether a point's series is a counter (monotonic: counters, histogram buckets, counts
/// and sums), which decides whether a decrease is a reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Series {
    /// A counter-like series.
    Counter,
    /// A gauge or anything not known to be monotonic.
    Gauge,
}

/// What became of a point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Thinned {
    /// Forwarded.
    Kept,
    /// Dropped: another point of its series was kept less than the interval ago.
    Dropped,
}

#[derive(Debug, Clone, Copy)]
struct Last {
    /// Milliseconds since the epoch of the last point kept.
    kept_ms: i64,
    /// The last value seen (kept or not), for reset detection.
    value: f64,
    /// When frugal last saw a point of the series (its clock, ms since the epoch), for
    /// expiry.
    seen_ms: i64,
}

/// At most one point per series per interval (see the module documentation).
#[derive(Debug)]
pub struct MinInterval {
    interval_ms: i64,
    shards: Vec<Mutex<HashMap<Fingerprint, Last>>>,
    dropped: AtomicU64,
}

impl MinInterval {
    /// A thinner keeping a point per series every `interval_ms` milliseconds at most.
    pub fn new(interval_ms: i64) -> MinInterval {
        MinInterval {
            interval_ms: interval_ms.max(0),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            dropped: AtomicU64::new(0),
        }
    }

    fn shard(
        &self,
        fingerprint: Fingerprint,
    ) -> std::sync::MutexGuard<'_, HashMap<Fingerprint, Last>> {
        // The fingerprint is a hash already: its top bits pick the shard.
        let i = (fingerprint.0 >> 60) as usize % SHARDS;
        match self.shards[i].lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Decides one point of the series `fingerprint`, at `timestamp_ms` with `value`,
    /// seen at `seen_ms` (frugal's time, for [`MinInterval::expire`]: a point's own
    /// timestamp may be anything).
    pub fn decide(
        &self,
        fingerprint: Fingerprint,
        kind: Series,
        timestamp_ms: i64,
        value: f64,
        seen_ms: i64,
    ) -> Thinned {
        let mut shard = self.shard(fingerprint);
        let Some(last) = shard.get_mut(&fingerprint) else {
            shard.insert(
                fingerprint,
                Last {
                    kept_ms: timestamp_ms,
                    value,
                    seen_ms,
                },
            );
            return Thinned::Kept;
        };
        let stale = value.to_bits() == STALE_NAN_BITS;
        let reset = kind == Series::Counter && value < last.value;
        let out_of_order = timestamp_ms < last.kept_ms;
        // The point kept last, sent again (a client retrying a request frugal could not
        // deliver) is kept again.
        let due = timestamp_ms.saturating_sub(last.kept_ms) >= self.interval_ms
            || timestamp_ms == last.kept_ms;
        if !stale {
            last.value = value;
        }
        last.seen_ms = last.seen_ms.max(seen_ms);
        if stale || reset || out_of_order || due {
            if !out_of_order {
                last.kept_ms = timestamp_ms;
            }
            Thinned::Kept
        } else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            Thinned::Dropped
        }
    }

    /// Points dropped so far (the DPM saved).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Forgets series last seen (by frugal's clock) before `before_ms`; returns how many.
    pub fn expire(&self, before_ms: i64) -> usize {
        let mut forgotten = 0;
        for shard in &self.shards {
            let mut map = match shard.lock() {
                Ok(g) => g,
                Err(poisoned) => poisoned.into_inner(),
            };
            let n = map.len();
            map.retain(|_, last| last.seen_ms >= before_ms);
            forgotten += n - map.len();
        }
        forgotten
    }

    /// Series remembered.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| match s.lock() {
                Ok(g) => g.len(),
                Err(poisoned) => poisoned.into_inner().len(),
            })
            .sum()
    }

    /// Whether no series is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1000;

    /// Scrapes every second for a minute with a 5 s interval: one point in five is kept,
    /// and the kept ones are the originals.
    #[test]
    fn one_point_per_interval_and_the_kept_ones_unchanged() {
        let t = MinInterval::new(5 * S);
        let kept: Vec<(i64, f64)> = (0..60)
            .map(|i| (i * S, i as f64))
            .filter(|(ts, v)| {
                t.decide(Fingerprint(7), Series::Counter, *ts, *v, *ts) == Thinned::Kept
            })
            .collect();
        assert_eq!(
            kept,
            (0..12)
                .map(|i| (i * 5 * S, (i * 5) as f64))
                .collect::<Vec<_>>()
        );
        assert_eq!(t.dropped(), 48);
        // increase() over the kept points equals the original's over the same span.
        assert_eq!(kept[11].1 - kept[0].1, 55.0);
    }

    #[test]
    fn a_staleness_marker_and_a_counter_reset_are_always_kept() {
        let t = MinInterval::new(60 * S);
        assert_eq!(
            t.decide(Fingerprint(1), Series::Counter, 0, 100.0, 0),
            Thinned::Kept
        );
        assert_eq!(
            t.decide(Fingerprint(1), Series::Counter, S, 101.0, S),
            Thinned::Dropped
        );
        // The counter restarted: the decrease is kept, whatever the interval.
        assert_eq!(
            t.decide(Fingerprint(1), Series::Counter, 2 * S, 3.0, 2 * S),
            Thinned::Kept
        );
        assert_eq!(
            t.decide(Fingerprint(1), Series::Counter, 3 * S, 4.0, 3 * S),
            Thinned::Dropped
        );
        let stale = f64::from_bits(STALE_NAN_BITS);
        assert_eq!(
            t.decide(Fingerprint(1), Series::Counter, 4 * S, stale, 4 * S),
            Thinned::Kept
        );
        // A gauge going down is not a reset.
        assert_eq!(
            t.decide(Fingerprint(2), Series::Gauge, 0, 10.0, 0),
            Thinned::Kept
        );
        assert_eq!(
            t.decide(Fingerprint(2), Series::Gauge, S, 1.0, S),
            Thinned::Dropped
        );
        // An ordinary NaN is a value, not a marker.
        assert_eq!(
            t.decide(Fingerprint(2), Series::Gauge, 2 * S, f64::NAN, 2 * S),
            Thinned::Dropped
        );
    }

    #[test]
    fn series_are_thinned_apart_and_out_of_order_points_pass() {
        let t = MinInterval::new(10 * S);
        assert_eq!(
            t.decide(Fingerprint(1), Series::Gauge, 100 * S, 1.0, 100 * S),
            Thinned::Kept
        );
        assert_eq!(
            t.decide(Fingerprint(2), Series::Gauge, 101 * S, 1.0, 101 * S),
            Thinned::Kept
        );
        assert_eq!(
            t.decide(Fingerprint(1), Series::Gauge, 102 * S, 1.0, 102 * S),
            Thinned::Dropped
        );
        // Older than the last kept: upstream's to judge.
        assert_eq!(
            t.decide(Fingerprint(1), Series::Gauge, 50 * S, 1.0, 50 * S),
            Thinned::Kept
        );
        // ...and it did not move the series' clock back.
        assert_eq!(
            t.decide(Fingerprint(1), Series::Gauge, 105 * S, 1.0, 105 * S),
            Thinned::Dropped
        );
        assert_eq!(
            t.decide(Fingerprint(1), Series::Gauge, 110 * S, 1.0, 110 * S),
            Thinned::Kept
        );
    }

    #[test]
    fn forgotten_series_start_afresh() {
        let t = MinInterval::new(60 * S);
        t.decide(Fingerprint(1), Series::Gauge, 0, 1.0, 0);
        t.decide(Fingerprint(2), Series::Gauge, 100 * S, 1.0, 100 * S);
        assert_eq!(t.expire(50 * S), 1);
        assert_eq!(t.len(), 1);
        assert_eq!(
            t.decide(Fingerprint(1), Series::Gauge, 101 * S, 1.0, 101 * S),
            Thinned::Kept
        );
        assert_eq!(
            t.decide(Fingerprint(2), Series::Gauge, 101 * S, 1.0, 101 * S),
            Thinned::Dropped
        );
    }

    #[test]
    fn expiry_follows_when_frugal_saw_a_series_not_its_timestamps() {
        let t = MinInterval::new(60 * S);
        // A point stamped a year ahead, seen at 10 s: forgotten like any other.
        t.decide(Fingerprint(9), Series::Gauge, 365 * 86_400 * S, 1.0, 10 * S);
        assert_eq!(t.expire(11 * S), 1);
        assert!(t.is_empty());
    }

    #[test]
    fn an_interval_of_zero_keeps_everything() {
        let t = MinInterval::new(0);
        assert!(
            (0..10).all(|i| t.decide(Fingerprint(3), Series::Gauge, i, 1.0, i) == Thinned::Kept)
        );
        assert_eq!(t.dropped(), 0);
    }
}
