//! `logs.stream_limit`: each Loki stream may send `max_rate` bytes a second (a second's
//! worth at once), so one runaway stream — a crash-looping pod, a debug flag — is cut to
//! its share while the others keep everything. A GCRA per stream (its theoretical arrival
//! time), in sharded maps of at most `max_streams` streams; past that, new streams share
//! an overflow bucket (one in each of the 16 shards). Time is passed in: no clock here.
//!
//! Drops are counted per stream (the first [`MAX_REPORTED`] streams named, the rest
//! together) and logged once per stream, not per drop.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::policy::StreamLimit;

const SHARDS: usize = 16;

/// Streams named in the drop counts; others are counted as `other`.
pub const MAX_REPORTED: usize = 1000;

/// The key every stream past `max_streams` shares.
const OVERFLOW: u64 = 0;

const SECOND_NS: i64 = 1_000_000_000;

/// A shard: each stream's theoretical arrival time (ns), and when idle streams were last
/// swept out.
type Shard = (HashMap<u64, i64>, i64);

/// Per-stream rate limits (see the module documentation).
pub struct StreamGates {
    limit: StreamLimit,
    /// Per shard: each stream's theoretical arrival time, and when idle streams were last
    /// swept out.
    shards: Box<[Mutex<Shard>]>,
    tracked: AtomicUsize,
    drops: Mutex<HashMap<String, u64>>,
}

/// A stream's key: FNV-1a 64 of its labels as sent (never 0).
pub fn key(labels: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in labels.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h.max(1)
}

impl StreamGates {
    /// Gates for `limit`.
    pub fn new(limit: StreamLimit) -> Self {
        Self {
            limit,
            shards: (0..SHARDS)
                .map(|_| Mutex::new((HashMap::new(), i64::MIN)))
                .collect(),
            tracked: AtomicUsize::new(0),
            drops: Mutex::new(HashMap::new()),
        }
    }

    /// Takes `bytes` from stream `key`'s share at `now_ns`: true if they fit (an entry
    /// larger than a second's worth passes when the stream's bucket is full).
    pub fn take(&self, key: u64, bytes: u64, now_ns: i64) -> bool {
        let cost = i64::try_from(
            u128::from(bytes) * SECOND_NS as u128 / u128::from(self.limit.max_rate.max(1)),
        )
        .unwrap_or(i64::MAX);
        let mut guard = self.shards[(key >> 60) as usize % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let (shard, swept) = &mut *guard;
        let place = |tracked: &AtomicUsize| {
            tracked
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < self.limit.max_streams).then_some(n + 1)
                })
                .is_ok()
        };
        let key = if shard.contains_key(&key) || place(&self.tracked) {
            key
        } else {
            // Streams idle for a second have a full bucket: forgetting them changes
            // nothing. Swept at most once a second per shard.
            if now_ns.saturating_sub(*swept) >= SECOND_NS {
                *swept = now_ns;
                let before = shard.len();
                shard.retain(|k, tat| *k == OVERFLOW || *tat > now_ns);
                let gone = before - shard.len();
                self.tracked.fetch_sub(gone, Ordering::AcqRel);
            }
            if place(&self.tracked) { key } else { OVERFLOW }
        };
        let tat = shard.entry(key).or_insert(now_ns);
        // A clock stepping back does not stop a stream for longer than its burst.
        *tat = (*tat).min(now_ns.saturating_add(SECOND_NS.saturating_add(cost)));
        let start = (*tat).max(now_ns);
        let fits = start.saturating_sub(now_ns).saturating_add(cost) <= SECOND_NS || *tat <= now_ns;
        if fits {
            *tat = start.saturating_add(cost);
        }
        fits
    }

    /// Counts `n` entries of stream `labels` dropped; logs the first drop of each stream.
    pub fn dropped(&self, labels: &str, n: u64) {
        // Named by at most 256 characters of its labels.
        let labels: String = labels.chars().take(256).collect();
        let labels = labels.as_str();
        let mut drops = self.drops.lock().unwrap_or_else(|e| e.into_inner());
        let name = if drops.contains_key(labels) || drops.len() < MAX_REPORTED {
            labels
        } else {
            "other"
        };
        let count = drops.entry(name.to_string()).or_insert(0);
        if *count == 0 {
            tracing::warn!(
                stream = name,
                max_rate = self.limit.max_rate,
                "a Loki stream is over logs.stream_limit: its entries past the share are dropped (logged once per stream)"
            );
        }
        *count += n;
    }

    /// The streams with the most entries dropped, most first.
    pub fn top(&self, n: usize) -> Vec<(String, u64)> {
        let drops = self.drops.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<(String, u64)> = drops.iter().map(|(k, c)| (k.clone(), *c)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v.truncate(n);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_gets_its_rate_and_a_second_of_burst_and_others_are_apart() {
        let g = StreamGates::new(StreamLimit {
            max_rate: 1000,
            max_streams: 2,
        });
        let (a, b) = (key("{app=\"a\"}"), key("{app=\"b\"}"));
        // A second's worth at once, then nothing until it has drained.
        assert!(g.take(a, 1000, 0));
        assert!(!g.take(a, 1, 0));
        assert!(g.take(b, 1000, 0), "another stream has its own share");
        assert!(g.take(a, 500, SECOND_NS / 2));
        // Over ten seconds of 100 bytes every 10 ms (10 kB/s), about 1 kB/s passes.
        let mut passed = 0;
        for i in 0..1000 {
            if g.take(a, 100, SECOND_NS + i * SECOND_NS / 100) {
                passed += 100;
            }
        }
        assert!((10_000..=11_100).contains(&passed), "{passed}");
        // An entry larger than the burst passes when the bucket is full.
        assert!(g.take(a, 5000, 100 * SECOND_NS));
        // A third stream past max_streams shares the overflow bucket.
        let c = key("{app=\"c\"}");
        assert!(g.take(c, 1000, 0) || g.take(c, 1000, 200 * SECOND_NS));
        g.dropped("{app=\"a\"}", 3);
        g.dropped("{app=\"a\"}", 2);
        assert_eq!(g.top(5), vec![("{app=\"a\"}".to_string(), 5)]);
    }
}
