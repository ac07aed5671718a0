//! The active-series tracker: which series exist, when each was last seen, and how many
//! are active in the billing window (Grafana's 20 minutes) and in the admission window
//! (what Mimir's series limit counts: its head holds a series until head compaction, up
//! to about three hours).
//!
//! It owns no I/O and reads no clock: callers pass `now`, and persist through a
//! [`SeriesStore`] with [`ActiveSeries::persist`] (a batch of what changed) and
//! [`ActiveSeries::restore`] (at start). Not wired into ingest yet ("frugal 6").
//!
//! Time is kept at minute resolution (minutes since the Unix epoch, a `u32`). A series is
//! active in a window of W minutes while `now`'s minute minus its last-seen minute is at
//! most W: it counts up to a minute longer than the window, never shorter.
//!
//! Memory: an entry is a fingerprint, two minutes and a name number (24 bytes in the map) in one of
//! [`SHARDS`] mutex-guarded maps, picked by the fingerprint, so callers on different cores
//! rarely meet. The counts are per-minute histograms kept up to date by every change, so
//! [`ActiveSeries::counts`] costs O(window minutes × shards), not O(series).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use jiff::Timestamp;

use crate::fingerprint::Fingerprint;
use crate::policy::defaults::{
    DEFAULT_SERIES_ADMISSION_WINDOW, DEFAULT_SERIES_BILLING_WINDOW, DEFAULT_SERIES_REFRESH,
};
use crate::store::StoreError;
use crate::store::series::{Minute, SeriesBatch, SeriesStore};

/// How many independently locked maps the series are spread over.
pub const SHARDS: usize = 32;

/// The most series [`ActiveSeries::persist`] hands the store at once: one sled batch of a
/// million new series took 26 s and 5 GB; a hundred of 10,000, 9.5 s and a few MB each
/// (BENCHMARKS.md).
pub const PERSIST_CHUNK: usize = 10_000;

/// How far behind the latest minute a caller's `now` may run with exact counts.
const CLOCK_SLACK_MINUTES: usize = 60;

/// The tracker's windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windows {
    /// A series is billed while it had a sample this recently (Grafana: 20 minutes).
    pub billing: Duration,
    /// A series counts against the series limit, and is remembered, this long after its
    /// last sample (Mimir's head: up to about three hours).
    pub admission: Duration,
    /// A series' last-seen time is written to the store again once it has moved this far
    /// past the stored one.
    pub refresh: Duration,
}

impl Windows {
    /// Grafana Cloud's windows, and a 5-minute refresh.
    pub const DEFAULT: Windows = Windows {
        billing: DEFAULT_SERIES_BILLING_WINDOW,
        admission: DEFAULT_SERIES_ADMISSION_WINDOW,
        refresh: DEFAULT_SERIES_REFRESH,
    };
}

/// Whether [`ActiveSeries::observe`] knew the series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Not tracked before (never seen, or forgotten by [`ActiveSeries::expire`]).
    New,
    /// Tracked already.
    Known,
    /// Not tracked, and not taken: the cap given to [`ActiveSeries::admit`] was reached.
    Refused,
}

/// A metric name's index in the caller's table of names (0: unknown, e.g. a series
/// restored from the store before its next sample): the tracker counts series per name.
pub type NameId = u32;

/// Series active at a moment, in each window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ActiveCounts {
    /// Active in the billing window: what Grafana bills.
    pub billing: u64,
    /// Active in the admission window: what the series limit counts.
    pub admission: u64,
}

/// The minute a timestamp falls in (clamped to what a [`Minute`] holds).
pub fn minute_of(t: Timestamp) -> Minute {
    let m = t.as_second().div_euclid(60).max(0);
    Minute::try_from(m).unwrap_or(Minute::MAX)
}

fn minutes(d: Duration) -> Minute {
    Minute::try_from(d.as_secs() / 60).unwrap_or(Minute::MAX)
}

/// murmur3's 64-bit finaliser: FNV-1a's low bits are weak, and the maps index by them.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// Hashes a [`Fingerprint`] (already a hash) by mixing it once more.
#[derive(Default)]
struct MixHasher(u64);

impl Hasher for MixHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }

    fn finish(&self) -> u64 {
        mix(self.0)
    }
}

type Map = HashMap<Fingerprint, Entry, BuildHasherDefault<MixHasher>>;

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// The last minute the series had a sample.
    last: Minute,
    /// The minute last handed out in a batch (or loaded from the store).
    stored: Minute,
    /// The series' metric name, as the caller numbers names.
    name: NameId,
}

/// How many series were last seen in each recent minute: a ring of `(minute, count)`
/// slots, with series whose minute fell off the ring counted in `older`. A slot is reused
/// only for a later minute, so every series is counted exactly once.
#[derive(Debug)]
struct Histogram {
    slots: Vec<(Minute, u64)>,
    older: u64,
}

impl Histogram {
    fn new(len: usize) -> Self {
        Self {
            slots: vec![(0, 0); len.max(1)],
            older: 0,
        }
    }

    fn slot(&mut self, m: Minute) -> &mut (Minute, u64) {
        let len = self.slots.len();
        &mut self.slots[m as usize % len]
    }

    fn add(&mut self, m: Minute) {
        let (tag, count) = *self.slot(m);
        if tag == m {
            self.slot(m).1 = count + 1;
        } else if tag < m {
            self.older += count;
            *self.slot(m) = (m, 1);
        } else {
            self.older += 1;
        }
    }

    fn remove(&mut self, m: Minute) {
        let slot = self.slot(m);
        if slot.0 == m && slot.1 > 0 {
            slot.1 -= 1;
        } else {
            self.older = self.older.saturating_sub(1);
        }
    }

    /// Series last seen at `from` or later.
    fn since(&self, from: Minute) -> u64 {
        self.slots
            .iter()
            .filter(|(tag, _)| *tag >= from)
            .map(|(_, count)| count)
            .sum()
    }
}

#[derive(Debug)]
struct Shard {
    series: Map,
    histogram: Histogram,
    /// Series new or refreshed since the last batch (possibly twice; batches dedupe by
    /// the store's max).
    dirty: Vec<Fingerprint>,
    /// Series forgotten since the last batch.
    forgotten: Vec<Fingerprint>,
    expired_before: Minute,
}

/// Fingerprint → last-seen minute for every series seen within the admission window,
/// with counts per window and the changes the store has not had yet.
#[derive(Debug)]
pub struct ActiveSeries {
    shards: Box<[Mutex<Shard>]>,
    /// Series in the maps: what [`admit`](Self::admit)'s cap is held against.
    tracked: AtomicU64,
    /// Series in the maps per [`NameId`] (the last slot counts every id past it).
    per_name: Box<[AtomicU64]>,
    billing: Minute,
    admission: Minute,
    refresh: Minute,
}

impl ActiveSeries {
    /// An empty tracker counting series for names numbered below `names` (ids past it
    /// are counted together in the last).
    pub fn with_names(windows: Windows, names: usize) -> Self {
        let mut s = Self::new(windows);
        s.per_name = (0..names.max(1)).map(|_| AtomicU64::new(0)).collect();
        s
    }

    /// An empty tracker.
    pub fn new(windows: Windows) -> Self {
        let admission = minutes(windows.admission);
        // One slot per minute of the admission window, its ends included, and an hour for
        // callers whose `now` runs behind the latest one seen (several threads, a clock
        // step back): a minute is only pushed out of the ring by one a ring later.
        let ring = usize::try_from(admission).unwrap_or(usize::MAX / 2) + 2 + CLOCK_SLACK_MINUTES;
        let shards = (0..SHARDS)
            .map(|_| {
                Mutex::new(Shard {
                    series: Map::default(),
                    histogram: Histogram::new(ring),
                    dirty: Vec::new(),
                    forgotten: Vec::new(),
                    expired_before: 0,
                })
            })
            .collect();
        Self {
            shards,
            tracked: AtomicU64::new(0),
            per_name: (0..1).map(|_| AtomicU64::new(0)).collect(),
            billing: minutes(windows.billing),
            admission,
            refresh: minutes(windows.refresh),
        }
    }

    fn shard(&self, fp: Fingerprint) -> MutexGuard<'_, Shard> {
        let i = (mix(fp.0) >> 32) as usize % SHARDS;
        // A panic elsewhere must not make the series unreadable.
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    fn each_shard(&self) -> impl Iterator<Item = MutexGuard<'_, Shard>> {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn name_slot(&self, name: NameId) -> &AtomicU64 {
        let last = self.per_name.len() - 1;
        &self.per_name[(name as usize).min(last)]
    }

    /// Records a sample of series `fp` at `now`: O(1), one shard's lock.
    pub fn observe(&self, fp: Fingerprint, now: Timestamp) -> Seen {
        self.admit(fp, 0, now, u64::MAX)
    }

    /// Records a sample of series `fp` (metric name `name`) at `now` if the series is
    /// tracked, or if fewer than `cap` series are: O(1), one shard's lock. Two callers
    /// racing for the last place cannot both take it.
    pub fn admit(&self, fp: Fingerprint, name: NameId, now: Timestamp, cap: u64) -> Seen {
        let m = minute_of(now);
        let mut guard = self.shard(fp);
        let Shard {
            series,
            histogram,
            dirty,
            ..
        } = &mut *guard;
        match series.get_mut(&fp) {
            Some(e) => {
                if e.name == 0 && name != 0 {
                    self.name_slot(0).fetch_sub(1, Ordering::Relaxed);
                    self.name_slot(name).fetch_add(1, Ordering::Relaxed);
                    e.name = name;
                }
                if m > e.last {
                    histogram.remove(e.last);
                    histogram.add(m);
                    e.last = m;
                    if m >= e.stored.saturating_add(self.refresh) {
                        e.stored = m;
                        dirty.push(fp);
                    }
                }
                Seen::Known
            }
            None => {
                let taken = self
                    .tracked
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                        (n < cap).then_some(n + 1)
                    });
                if taken.is_err() {
                    return Seen::Refused;
                }
                series.insert(
                    fp,
                    Entry {
                        last: m,
                        stored: m,
                        name,
                    },
                );
                self.name_slot(name).fetch_add(1, Ordering::Relaxed);
                histogram.add(m);
                dirty.push(fp);
                Seen::New
            }
        }
    }

    /// Whether `fp` is tracked (seen within the admission window, and not yet expired).
    pub fn contains(&self, fp: Fingerprint) -> bool {
        self.shard(fp).series.contains_key(&fp)
    }

    /// How many series are tracked (what [`expire`](Self::expire) has not forgotten).
    pub fn len(&self) -> usize {
        self.tracked.load(Ordering::Acquire) as usize
    }

    /// How many tracked series have the metric name `name` (0: not known yet).
    pub fn series_of(&self, name: NameId) -> u64 {
        self.name_slot(name).load(Ordering::Relaxed)
    }

    /// Whether no series is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Series active at `now` in the billing and in the admission window.
    pub fn counts(&self, now: Timestamp) -> ActiveCounts {
        let m = minute_of(now);
        let (billing, admission) = (
            m.saturating_sub(self.billing),
            m.saturating_sub(self.admission),
        );
        let mut c = ActiveCounts::default();
        for s in self.each_shard() {
            c.billing += s.histogram.since(billing);
            c.admission += s.histogram.since(admission);
        }
        c
    }

    /// Forgets series last seen before the admission window at `now` (a scan of every
    /// shard, one at a time); the next batch tells the store. Returns how many went.
    pub fn expire(&self, now: Timestamp) -> usize {
        let cutoff = minute_of(now).saturating_sub(self.admission);
        let mut gone = 0;
        for mut guard in self.each_shard() {
            let Shard {
                series,
                histogram,
                forgotten,
                expired_before,
                ..
            } = &mut *guard;
            let before = series.len();
            series.retain(|fp, e| {
                let keep = e.last >= cutoff;
                if !keep {
                    self.name_slot(e.name).fetch_sub(1, Ordering::Relaxed);
                    histogram.remove(e.last);
                    forgotten.push(*fp);
                }
                keep
            });
            if series.len() < before {
                *expired_before = (*expired_before).max(cutoff);
                series.shrink_to_fit();
            }
            // Given back shard by shard: a long scan does not hold places it has freed.
            let n = before - series.len();
            self.tracked.fetch_sub(n as u64, Ordering::AcqRel);
            gone += n;
        }
        gone
    }

    /// What changed since the last batch: new series and last-seen minutes that moved by
    /// the refresh interval, and forgotten series. Hand it to the store, and back to
    /// [`requeue`](Self::requeue) if the store failed.
    pub fn take_batch(&self) -> SeriesBatch {
        let mut batch = SeriesBatch::default();
        for mut guard in self.each_shard() {
            let shard = &mut *guard;
            for fp in std::mem::take(&mut shard.dirty) {
                if let Some(e) = shard.series.get_mut(&fp) {
                    e.stored = e.last;
                    batch.seen.push((fp, e.last));
                }
            }
            for fp in std::mem::take(&mut shard.forgotten) {
                if !shard.series.contains_key(&fp) {
                    batch.forgotten.push(fp);
                }
            }
            batch.expired_before = batch.expired_before.max(shard.expired_before);
        }
        batch
    }

    /// Puts a batch the store did not take back, to go in the next one.
    pub fn requeue(&self, batch: SeriesBatch) {
        for (fp, _) in batch.seen {
            self.shard(fp).dirty.push(fp);
        }
        for fp in batch.forgotten {
            let mut shard = self.shard(fp);
            shard.forgotten.push(fp);
            shard.expired_before = shard.expired_before.max(batch.expired_before);
        }
    }

    /// Writes the changes since the last batch to `store` (blocking: run it off the
    /// request path), in batches of at most [`PERSIST_CHUNK`] series: each is atomic,
    /// and what a failure leaves unwritten stays queued for the next call. Returns how
    /// many series were written.
    pub fn persist(&self, store: &dyn SeriesStore) -> Result<usize, StoreError> {
        let mut batch = self.take_batch();
        let mut written = 0;
        while !batch.is_empty() {
            let forgotten = batch.forgotten.len().min(PERSIST_CHUNK);
            let seen = batch.seen.len().min(PERSIST_CHUNK - forgotten);
            let chunk = SeriesBatch {
                forgotten: batch.forgotten.drain(..forgotten).collect(),
                seen: batch.seen.drain(..seen).collect(),
                expired_before: batch.expired_before,
            };
            if let Err(e) = store.apply(&chunk) {
                self.requeue(chunk);
                self.requeue(batch);
                return Err(e);
            }
            written += forgotten + seen;
        }
        Ok(written)
    }

    /// Loads what `store` holds (at start). A stored minute is at most the refresh
    /// interval behind the series' real last sample, so each series counts as last seen
    /// at the latest minute it may have been: after a restart counts may run a little
    /// high, never low. Returns how many series were loaded.
    pub fn restore(&self, store: &dyn SeriesStore) -> Result<usize, StoreError> {
        let stored = store.load()?;
        let n = stored.len();
        let ahead = self.refresh.saturating_sub(1);
        for (fp, m) in stored {
            let mut guard = self.shard(fp);
            let Shard {
                series, histogram, ..
            } = &mut *guard;
            let last = m.saturating_add(ahead);
            match series.get_mut(&fp) {
                Some(e) if e.last >= last => {}
                Some(e) => {
                    histogram.remove(e.last);
                    histogram.add(last);
                    e.last = last;
                }
                None => {
                    series.insert(
                        fp,
                        Entry {
                            last,
                            stored: m,
                            name: 0,
                        },
                    );
                    self.tracked.fetch_add(1, Ordering::AcqRel);
                    self.name_slot(0).fetch_add(1, Ordering::Relaxed);
                    histogram.add(last);
                }
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{MemorySeriesStore, SledStore};
    use rand::{Rng, SeedableRng};

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn at(start: Timestamp, minutes: i64) -> Timestamp {
        start + jiff::SignedDuration::from_secs(minutes * 60)
    }

    const T0: &str = "2026-12-01T10:00:00Z";

    #[test]
    fn new_then_known_and_counted_in_both_windows() {
        let s = ActiveSeries::new(Windows::DEFAULT);
        let t0 = t(T0);
        assert_eq!(s.observe(Fingerprint(1), t0), Seen::New);
        assert_eq!(s.observe(Fingerprint(1), at(t0, 1)), Seen::Known);
        assert_eq!(s.observe(Fingerprint(2), at(t0, 30)), Seen::New);
        assert_eq!(
            s.counts(at(t0, 30)),
            ActiveCounts {
                billing: 1,
                admission: 2
            },
            "series 1 was last seen 29 minutes ago"
        );
        assert_eq!(s.len(), 2);
        assert!(s.contains(Fingerprint(1)) && !s.contains(Fingerprint(3)));
    }

    #[test]
    fn window_edges_count_up_to_a_minute_long_never_short() {
        let s = ActiveSeries::new(Windows::DEFAULT);
        s.observe(Fingerprint(7), t("2026-12-01T10:00:59Z"));
        assert_eq!(
            s.counts(t("2026-12-01T10:20:30Z")).billing,
            1,
            "19.5 min ago"
        );
        assert_eq!(s.counts(t("2026-12-01T10:20:59Z")).billing, 1);
        assert_eq!(s.counts(t("2026-12-01T10:21:00Z")).billing, 0);
        assert_eq!(s.counts(t("2026-12-01T13:00:59Z")).admission, 1);
        assert_eq!(s.counts(t("2026-12-01T13:01:00Z")).admission, 0);
        assert_eq!(s.expire(t("2026-12-01T13:00:59Z")), 0);
        assert_eq!(s.expire(t("2026-12-01T13:01:00Z")), 1);
        assert!(s.is_empty());
        assert_eq!(
            s.observe(Fingerprint(7), t("2026-12-01T13:01:00Z")),
            Seen::New
        );
    }

    /// The incremental counts against a scan of a plain map, over random samples (time
    /// mostly forward, sometimes back a little, sometimes jumping past the ring) and
    /// expiries.
    #[test]
    fn counts_match_a_scan() {
        let windows = Windows {
            billing: Duration::from_secs(5 * 60),
            admission: Duration::from_secs(30 * 60),
            refresh: Duration::from_secs(60),
        };
        let s = ActiveSeries::new(windows);
        let mut model: HashMap<u64, Minute> = HashMap::new();
        let mut rng = rand::rngs::StdRng::seed_from_u64(10);
        let mut now = t(T0);
        for step in 0..20_000 {
            match rng.random_range(0..100) {
                0..=79 => {
                    let fp = rng.random_range(0..400u64);
                    let seen = s.observe(Fingerprint(fp), now);
                    let m = minute_of(now);
                    let expected = if model.contains_key(&fp) {
                        Seen::Known
                    } else {
                        Seen::New
                    };
                    assert_eq!(seen, expected, "step {step}");
                    let e = model.entry(fp).or_insert(m);
                    *e = (*e).max(m);
                }
                80..=93 => now += jiff::SignedDuration::from_secs(rng.random_range(0..120)),
                94..=96 => now -= jiff::SignedDuration::from_secs(rng.random_range(0..90)),
                97 => now += jiff::SignedDuration::from_secs(rng.random_range(0..7200)),
                _ => {
                    let cutoff = minute_of(now).saturating_sub(30);
                    let before = model.len();
                    model.retain(|_, m| *m >= cutoff);
                    assert_eq!(s.expire(now), before - model.len(), "step {step}");
                }
            }
            let m = minute_of(now);
            let scan = |w: Minute| {
                model
                    .values()
                    .filter(|&&l| l >= m.saturating_sub(w))
                    .count() as u64
            };
            assert_eq!(
                s.counts(now),
                ActiveCounts {
                    billing: scan(5),
                    admission: scan(30)
                },
                "step {step}"
            );
            assert_eq!(s.len(), model.len());
        }
    }

    #[test]
    fn batches_hold_new_refreshed_and_forgotten_series() {
        let s = ActiveSeries::new(Windows::DEFAULT);
        let t0 = t(T0);
        s.observe(Fingerprint(1), t0);
        s.observe(Fingerprint(2), t0);
        let mut b = s.take_batch();
        b.seen.sort();
        let m0 = minute_of(t0);
        assert_eq!(b.seen, vec![(Fingerprint(1), m0), (Fingerprint(2), m0)]);
        assert!(b.forgotten.is_empty());
        assert!(s.take_batch().is_empty(), "nothing changed since");

        s.observe(Fingerprint(1), at(t0, 4));
        assert!(s.take_batch().is_empty(), "within the refresh interval");
        s.observe(Fingerprint(1), at(t0, 5));
        s.observe(Fingerprint(1), at(t0, 6));
        assert_eq!(
            s.take_batch().seen,
            vec![(Fingerprint(1), m0 + 6)],
            "the latest minute"
        );

        let later = at(t0, 6 + 180);
        assert_eq!(s.expire(later), 1);
        let b = s.take_batch();
        assert_eq!(b.forgotten, vec![Fingerprint(2)]);
        assert_eq!(b.expired_before, minute_of(later) - 180);

        // Forgotten, then seen again before the batch: only the new sighting goes out.
        s.expire(at(later, 200));
        s.observe(Fingerprint(1), at(later, 200));
        let b = s.take_batch();
        assert!(b.forgotten.is_empty());
        assert_eq!(b.seen, vec![(Fingerprint(1), minute_of(at(later, 200)))]);
    }

    struct Failing;

    impl SeriesStore for Failing {
        fn apply(&self, _: &SeriesBatch) -> Result<(), StoreError> {
            Err(StoreError::Io("disk full".into()))
        }
        fn load(&self) -> Result<Vec<(Fingerprint, Minute)>, StoreError> {
            Ok(vec![])
        }
    }

    #[test]
    fn a_failed_batch_goes_out_with_the_next() {
        let s = ActiveSeries::new(Windows::DEFAULT);
        let t0 = t(T0);
        s.observe(Fingerprint(1), t0);
        s.observe(Fingerprint(2), at(t0, -200));
        s.expire(t0);
        assert!(s.persist(&Failing).is_err());
        let store = MemorySeriesStore::default();
        store
            .apply(&SeriesBatch {
                seen: vec![(Fingerprint(2), minute_of(at(t0, -200)))],
                ..SeriesBatch::default()
            })
            .unwrap();
        assert_eq!(s.persist(&store).unwrap(), 2);
        assert_eq!(store.load().unwrap(), vec![(Fingerprint(1), minute_of(t0))]);
    }

    /// Fails every apply after the first `ok`.
    struct FailsAfter {
        ok: std::sync::atomic::AtomicUsize,
        inner: MemorySeriesStore,
    }

    impl SeriesStore for FailsAfter {
        fn apply(&self, batch: &SeriesBatch) -> Result<(), StoreError> {
            assert!(batch.seen.len() + batch.forgotten.len() <= PERSIST_CHUNK);
            let left = self.ok.load(std::sync::atomic::Ordering::SeqCst);
            if left == 0 {
                return Err(StoreError::Io("disk full".into()));
            }
            self.ok.store(left - 1, std::sync::atomic::Ordering::SeqCst);
            self.inner.apply(batch)
        }
        fn load(&self) -> Result<Vec<(Fingerprint, Minute)>, StoreError> {
            self.inner.load()
        }
    }

    #[test]
    fn large_batches_go_in_chunks_and_a_failure_keeps_the_rest_queued() {
        let s = ActiveSeries::new(Windows::DEFAULT);
        for i in 0..25_000 {
            s.observe(Fingerprint(i), t(T0));
        }
        let store = FailsAfter {
            ok: 2.into(),
            inner: MemorySeriesStore::default(),
        };
        assert!(s.persist(&store).is_err());
        assert_eq!(store.load().unwrap().len(), 2 * PERSIST_CHUNK);
        store.ok.store(10, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(s.persist(&store).unwrap(), 25_000 - 2 * PERSIST_CHUNK);
        assert_eq!(store.load().unwrap().len(), 25_000);
        assert_eq!(s.persist(&store).unwrap(), 0);
    }

    /// After a restart from the store, series already seen are known and no count is
    /// lower than before it.
    fn check_restart(store: &dyn SeriesStore, reopened: &dyn SeriesStore) {
        let t0 = t(T0);
        let before = ActiveSeries::new(Windows::DEFAULT);
        for i in 0..1000u64 {
            before.observe(Fingerprint(i), at(t0, (i % 200) as i64));
        }
        before.expire(at(t0, 199));
        for i in 0..1000u64 {
            before.observe(Fingerprint(i), at(t0, 199 - (i % 3) as i64));
        }
        before.persist(store).unwrap();
        let now = at(t0, 200);
        let counts = before.counts(now);
        let after = ActiveSeries::new(Windows::DEFAULT);
        assert_eq!(after.restore(reopened).unwrap(), 1000);
        assert_eq!(after.len(), 1000);
        assert_eq!(after.observe(Fingerprint(999), now), Seen::Known);
        let restored = after.counts(now);
        assert!(restored.billing >= counts.billing && restored.admission >= counts.admission);
        assert_eq!(restored.admission, 1000);
        assert!(
            after.take_batch().seen.len() <= 1,
            "loaded series are not written back"
        );
    }

    #[test]
    fn a_restart_from_memory_forgets_nothing() {
        let store = MemorySeriesStore::default();
        check_restart(&store, &store);
    }

    #[test]
    fn a_restart_from_sled_forgets_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let first = SledStore::open(dir.path(), 1 << 20).unwrap();
        let series = first.series_store().unwrap();
        let before = ActiveSeries::new(Windows::DEFAULT);
        before.observe(Fingerprint(5), t(T0));
        before.persist(&series).unwrap();
        drop((series, first));
        // sled lets go of its file lock from a background thread: a reopen right after a
        // drop may find it still held for a moment.
        let reopened = (0..100)
            .find_map(|_| {
                SledStore::open(dir.path(), 1 << 20)
                    .inspect_err(|_| std::thread::sleep(std::time::Duration::from_millis(50)))
                    .ok()
            })
            .unwrap();
        let after = ActiveSeries::new(Windows::DEFAULT);
        assert_eq!(after.restore(&reopened.series_store().unwrap()).unwrap(), 1);
        assert_eq!(after.observe(Fingerprint(5), t(T0)), Seen::Known);

        let dir = tempfile::tempdir().unwrap();
        let usage = SledStore::open(dir.path(), 1 << 20).unwrap();
        let s = usage.series_store().unwrap();
        check_restart(&s, &s);
    }

    #[test]
    fn concurrent_observers_count_every_series_once() {
        let s = ActiveSeries::new(Windows::DEFAULT);
        let now = t(T0);
        std::thread::scope(|scope| {
            for w in 0..4u64 {
                let s = &s;
                // Worker w observes 5,000 series from w × 2,500: each overlaps the next.
                scope.spawn(move || {
                    for i in 0..5000u64 {
                        s.observe(Fingerprint(w * 2500 + i), now);
                    }
                });
            }
        });
        assert_eq!(s.len(), 12_500);
        assert_eq!(s.counts(now).billing, 12_500);
        assert_eq!(s.take_batch().seen.len(), 12_500, "each new series once");
    }
}
