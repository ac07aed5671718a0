//! An in-memory [`SeriesStore`]: the simulator's and the tests' store.

use std::collections::HashMap;
use std::sync::Mutex;

use super::StoreError;
use super::series::{Minute, SeriesBatch, SeriesStore};
use crate::fingerprint::Fingerprint;

/// Series last-seen minutes held in memory and lost on exit.
#[derive(Debug, Default)]
pub struct MemorySeriesStore {
    series: Mutex<HashMap<Fingerprint, Minute>>,
}

impl SeriesStore for MemorySeriesStore {
    fn apply(&self, batch: &SeriesBatch) -> Result<(), StoreError> {
        // A panic elsewhere must not make the series unreadable.
        let mut series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        for fp in &batch.forgotten {
            if series.get(fp).is_some_and(|&m| m < batch.expired_before) {
                series.remove(fp);
            }
        }
        for &(fp, minute) in &batch.seen {
            let m = series.entry(fp).or_insert(minute);
            *m = (*m).max(minute);
        }
        Ok(())
    }

    fn load(&self) -> Result<Vec<(Fingerprint, Minute)>, StoreError> {
        let series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        Ok(series.iter().map(|(&f, &m)| (f, m)).collect())
    }
}
