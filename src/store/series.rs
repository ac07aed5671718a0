//! Where the active-series tracker persists: the [`SeriesStore`] seam.
//!
//! The tracker (`budget::active_series`) keeps every series it knows in memory and hands
//! the store, in batches off the request path, what changed since the last batch. The
//! store is read back once, at start, so a restart (or `kill -9` after the last batch)
//! does not forget which series exist.
//!
//! Implementations: [`SledSeriesStore`](super::SledSeriesStore) (production, a tree in the
//! usage store's sled database) and [`MemorySeriesStore`](super::MemorySeriesStore) (the
//! simulator and tests). Both pass the conformance suite in this module's tests.

use crate::fingerprint::Fingerprint;

use super::StoreError;

/// Minutes since the Unix epoch: the resolution series are tracked and stored at.
pub type Minute = u32;

/// What changed in the tracker since its last batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeriesBatch {
    /// New series and refreshed last-seen minutes.
    pub seen: Vec<(Fingerprint, Minute)>,
    /// Series the tracker forgot, each removed only if its stored last-seen minute is
    /// before [`expired_before`](Self::expired_before).
    pub forgotten: Vec<Fingerprint>,
    /// The expiry cutoff `forgotten` was decided at.
    pub expired_before: Minute,
}

impl SeriesBatch {
    /// Whether the batch changes nothing.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty() && self.forgotten.is_empty()
    }
}

/// Persistent last-seen minutes of series, by fingerprint.
///
/// The contract, which a shared implementation (Redis, several replicas writing) must
/// keep too:
/// - [`apply`](Self::apply) is atomic (all of a batch or none of it) and durable before it
///   returns `Ok`;
/// - `seen` only moves a series' minute forward: the stored value becomes the larger of
///   the stored and the given minute (`ZADD GT` in a Redis sorted set), so batches from
///   several replicas, or a batch applied twice, give the same result in any order;
/// - `forgotten` is conditional: a series is removed only when its stored minute is still
///   before `expired_before`, so one replica's expiry never removes a series another
///   replica has refreshed since (in Redis, a script comparing the score first);
/// - within a batch, `forgotten` is applied before `seen`;
/// - [`load`](Self::load) returns every stored series once, in no particular order.
pub trait SeriesStore: Send + Sync + 'static {
    /// Applies a batch: atomically and durably, as the trait's contract says.
    fn apply(&self, batch: &SeriesBatch) -> Result<(), StoreError>;

    /// Every stored series with its last-seen minute.
    fn load(&self) -> Result<Vec<(Fingerprint, Minute)>, StoreError>;
}

#[cfg(test)]
pub(crate) mod conformance {
    use super::*;
    use crate::store::{MemorySeriesStore, SledStore, UsageStore};

    fn sorted(store: &dyn SeriesStore) -> Vec<(u64, Minute)> {
        let mut v: Vec<(u64, Minute)> = store
            .load()
            .unwrap()
            .into_iter()
            .map(|(f, m)| (f.0, m))
            .collect();
        v.sort_unstable();
        v
    }

    fn seen(pairs: &[(u64, Minute)]) -> SeriesBatch {
        SeriesBatch {
            seen: pairs.iter().map(|&(f, m)| (Fingerprint(f), m)).collect(),
            ..SeriesBatch::default()
        }
    }

    /// What every series store must do.
    pub fn check(store: &dyn SeriesStore) {
        assert!(store.load().unwrap().is_empty(), "a new store is empty");
        store.apply(&SeriesBatch::default()).unwrap();
        assert!(store.load().unwrap().is_empty());

        store
            .apply(&seen(&[(1, 100), (2, 100), (u64::MAX, 7)]))
            .unwrap();
        assert_eq!(sorted(store), vec![(1, 100), (2, 100), (u64::MAX, 7)]);

        // Refreshes move forward only; applying a batch twice changes nothing.
        let b = seen(&[(1, 130), (2, 90)]);
        store.apply(&b).unwrap();
        store.apply(&b).unwrap();
        assert_eq!(sorted(store), vec![(1, 130), (2, 100), (u64::MAX, 7)]);

        // Forgetting is conditional on the stored minute; unknown series are ignored.
        store
            .apply(&SeriesBatch {
                seen: vec![],
                forgotten: vec![Fingerprint(1), Fingerprint(2), Fingerprint(3)],
                expired_before: 120,
            })
            .unwrap();
        assert_eq!(
            sorted(store),
            vec![(1, 130), (u64::MAX, 7)],
            "2 (last seen 100) goes; 1 was refreshed to 130 and stays"
        );

        // Forgotten before seen: a series forgotten and seen again in one batch stays.
        store
            .apply(&SeriesBatch {
                seen: vec![(Fingerprint(u64::MAX), 200)],
                forgotten: vec![Fingerprint(u64::MAX)],
                expired_before: 150,
            })
            .unwrap();
        assert_eq!(sorted(store), vec![(1, 130), (u64::MAX, 200)]);

        // Many series in one batch.
        let many: Vec<(u64, Minute)> = (1000..3000).map(|f| (f, 5)).collect();
        store.apply(&seen(&many)).unwrap();
        assert_eq!(store.load().unwrap().len(), 2002);
    }

    #[test]
    fn memory_series_store_conforms() {
        check(&MemorySeriesStore::default());
    }

    #[test]
    fn sled_series_store_conforms_survives_reopening_and_keeps_usage_apart() {
        let dir = tempfile::tempdir().unwrap();
        {
            let usage = SledStore::open(dir.path(), 1 << 20).unwrap();
            let s = usage.series_store().unwrap();
            check(&s);
            let c = [("traces/sent_bytes".to_string(), 5)].into_iter().collect();
            usage.add("2026-11-01T00:00:00Z", &c).unwrap();
        }
        let usage = SledStore::open(dir.path(), 1 << 20).unwrap();
        let s = usage.series_store().unwrap();
        assert_eq!(s.load().unwrap().len(), 2002);
        // Two handles on one database see each other's batches.
        let other = usage.series_store().unwrap();
        other.apply(&seen(&[(9, 1)])).unwrap();
        assert_eq!(s.load().unwrap().len(), 2003);
        assert!(sorted(&s).contains(&(u64::MAX, 200)));
        assert_eq!(
            usage.periods().unwrap(),
            vec!["2026-11-01T00:00:00Z".to_string()],
            "series are not usage periods"
        );
    }
}
