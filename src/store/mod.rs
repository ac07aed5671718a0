//! Where usage counters persist: the [`UsageStore`] seam.
//!
//! Counters are monotonic `u64`s keyed by period and name (`traces/sent_bytes`). The
//! ledger hands the store the deltas it accumulated since the last flush; the store adds
//! them atomically and makes them durable before returning. Adding deltas, rather than
//! writing totals, is what lets several replicas share one budget later (Redis `INCRBY`).
//!
//! Implementations: [`SledStore`] (production, one per pod) and [`MemoryStore`] (the
//! simulator and tests). Both pass the conformance suite in this module's tests.
//!
//! The second seam, [`SeriesStore`] (`series.rs`), persists the active-series tracker:
//! [`SledSeriesStore`] (a tree in the same sled database, from
//! [`SledStore::series_store`]) and [`MemorySeriesStore`], with a conformance suite of
//! its own.
//!
//! The third, [`Spool`] (`spool.rs`), holds the tail sampler's acknowledged spans until
//! their traces are done: [`FileSpool`] (segment files in `<data_dir>/tail-spool`) and
//! [`MemorySpool`], with a conformance suite.

mod memory;
pub mod series;
mod series_memory;
mod series_sled;
mod sled_store;
pub mod spool;
mod spool_file;

use std::collections::BTreeMap;

pub use memory::MemoryStore;
pub use series::{SeriesBatch, SeriesStore};
pub use series_memory::MemorySeriesStore;
pub use series_sled::SledSeriesStore;
pub use sled_store::SledStore;
pub use spool::{FileSpool, MemorySpool, RecordId, Spool, SpoolError};

/// Counter name -> value, for one period.
pub type Counters = BTreeMap<String, u64>;

/// Why the usage store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store could not be opened (or created).
    #[error("cannot open the usage store at {path}: {reason}")]
    Open {
        /// The data directory.
        path: String,
        /// What went wrong (e.g. another process holds the store's lock).
        reason: String,
    },
    /// Reading, writing or flushing the store failed; the message says how.
    #[error("usage store I/O failed: {0}")]
    Io(String),
    /// A stored counter is not a readable number.
    #[error("usage store holds an unreadable value under {key:?}")]
    Corrupt {
        /// The key the value is stored under.
        key: String,
    },
}

/// Persistent, period-keyed usage counters.
pub trait UsageStore: Send + Sync + 'static {
    /// Adds `deltas` to the counters of `period` atomically, durably, and returns the
    /// period's new totals.
    fn add(&self, period: &str, deltas: &Counters) -> Result<Counters, StoreError>;

    /// The counters of `period` (empty for a period never written).
    fn totals(&self, period: &str) -> Result<Counters, StoreError>;

    /// Keys of the periods that have counters, oldest first.
    fn periods(&self) -> Result<Vec<String>, StoreError>;

    /// Removes a period's counters (pruning old history).
    fn remove_period(&self, period: &str) -> Result<(), StoreError>;
}

#[cfg(test)]
pub(crate) mod conformance {
    use super::*;

    fn c(pairs: &[(&str, u64)]) -> Counters {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    /// What every store must do.
    pub fn check(store: &dyn UsageStore) {
        let p1 = "2026-11-01T00:00:00Z";
        let p2 = "2026-12-01T00:00:00Z";
        assert!(
            store.totals(p1).unwrap().is_empty(),
            "a new period is empty"
        );
        let t = store
            .add(
                p1,
                &c(&[("traces/sent_bytes", 100), ("traces/sent_items", 2)]),
            )
            .unwrap();
        assert_eq!(
            t,
            c(&[("traces/sent_bytes", 100), ("traces/sent_items", 2)])
        );
        let t = store
            .add(p1, &c(&[("traces/sent_bytes", 50), ("logs/sent_bytes", 7)]))
            .unwrap();
        assert_eq!(
            t,
            c(&[
                ("logs/sent_bytes", 7),
                ("traces/sent_bytes", 150),
                ("traces/sent_items", 2)
            ])
        );
        assert_eq!(store.totals(p1).unwrap(), t);
        store.add(p2, &c(&[("traces/sent_bytes", 1)])).unwrap();
        assert_eq!(store.totals(p2).unwrap(), c(&[("traces/sent_bytes", 1)]));
        assert_eq!(store.totals(p1).unwrap(), t, "periods are separate");
        assert_eq!(
            store.periods().unwrap(),
            vec![p1.to_string(), p2.to_string()]
        );
        // Empty deltas change nothing; zero deltas are allowed.
        assert_eq!(store.add(p1, &Counters::new()).unwrap(), t);
        assert_eq!(store.add(p1, &c(&[("traces/sent_bytes", 0)])).unwrap(), t);
        // Large values do not wrap.
        let big = store
            .add(p2, &c(&[("traces/sent_bytes", u64::MAX)]))
            .unwrap();
        assert_eq!(big["traces/sent_bytes"], u64::MAX);
        // History counters (`history/<hour>/<signal>/...`) are counters like any other,
        // returned with the period's and removed with it.
        let hour = "history/2026-12-01T05:00:00Z/traces/added_units";
        let h = store.add(p2, &c(&[(hour, 3)])).unwrap();
        assert_eq!((h[hour], h["traces/sent_bytes"]), (3, u64::MAX));
        assert_eq!(store.add(p2, &c(&[(hour, 4)])).unwrap()[hour], 7);
        store.remove_period(p2).unwrap();
        assert!(store.totals(p2).unwrap().is_empty());
        assert_eq!(store.periods().unwrap(), vec![p1.to_string()]);
    }

    #[test]
    fn memory_store_conforms() {
        check(&MemoryStore::default());
    }

    #[test]
    fn sled_store_conforms_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SledStore::open(dir.path(), 1 << 20).unwrap();
            check(&s);
        }
        let s = SledStore::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(
            s.totals("2026-11-01T00:00:00Z").unwrap()["traces/sent_bytes"],
            150
        );
    }

    #[test]
    fn a_second_open_of_the_same_directory_is_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let _first = SledStore::open(dir.path(), 1 << 20).unwrap();
        let err = SledStore::open(dir.path(), 1 << 20).err().unwrap();
        assert!(err.to_string().contains("another frugal"), "{err}");
    }
}
