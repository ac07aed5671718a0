//! An in-memory [`UsageStore`]: the simulator's and the tests' store.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::{Counters, StoreError, UsageStore};

/// Usage counters held in memory and lost on exit: the simulator's and the tests' store.
#[derive(Debug, Default)]
pub struct MemoryStore {
    periods: Mutex<BTreeMap<String, Counters>>,
}

impl MemoryStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Counters>> {
        // A panic elsewhere must not make the counters unreadable.
        self.periods.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl UsageStore for MemoryStore {
    fn add(&self, period: &str, deltas: &Counters) -> Result<Counters, StoreError> {
        let mut periods = self.lock();
        if deltas.is_empty() {
            return Ok(periods.get(period).cloned().unwrap_or_default());
        }
        let counters = periods.entry(period.to_string()).or_default();
        for (k, d) in deltas {
            let v = counters.entry(k.clone()).or_default();
            *v = v.saturating_add(*d);
        }
        Ok(counters.clone())
    }

    fn totals(&self, period: &str) -> Result<Counters, StoreError> {
        Ok(self.lock().get(period).cloned().unwrap_or_default())
    }

    fn periods(&self) -> Result<Vec<String>, StoreError> {
        Ok(self.lock().keys().cloned().collect())
    }

    fn remove_period(&self, period: &str) -> Result<(), StoreError> {
        self.lock().remove(period);
        Ok(())
    }
}
