//! The production [`SeriesStore`]: a tree in the usage store's sled database.
//!
//! It shares [`SledStore`](super::SledStore)'s database (one process holds its lock) and
//! its conventions: each batch is applied atomically (one sled `Batch`) and flushed before
//! `apply` returns, so what it reports as applied survives `kill -9`.
//!
//! Layout: tree `series`, key the fingerprint as 8 big-endian bytes, value the last-seen
//! minute (since the Unix epoch) as 4 big-endian bytes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::StoreError;
use super::series::{Minute, SeriesBatch, SeriesStore};
use super::sled_store::io;
use crate::fingerprint::Fingerprint;

pub(super) const TREE: &str = "series";

/// Series last-seen minutes in the usage store's sled database.
pub struct SledSeriesStore {
    db: sled::Db,
    tree: sled::Tree,
    /// Shared by every series store of the database (`SledStore::series_store`).
    writer: Arc<Mutex<()>>,
}

impl SledSeriesStore {
    pub(super) fn new(db: sled::Db, tree: sled::Tree, writer: Arc<Mutex<()>>) -> Self {
        Self { db, tree, writer }
    }

    fn decode(key: &[u8], value: &[u8]) -> Result<(Fingerprint, Minute), StoreError> {
        let corrupt = || StoreError::Corrupt {
            key: format!("series/{}", hex::encode(key)),
        };
        let k: [u8; 8] = key.try_into().map_err(|_| corrupt())?;
        let v: [u8; 4] = value.try_into().map_err(|_| corrupt())?;
        Ok((Fingerprint(u64::from_be_bytes(k)), Minute::from_be_bytes(v)))
    }

    fn current(
        &self,
        after: &HashMap<Fingerprint, Option<Minute>>,
        fp: Fingerprint,
    ) -> Result<Option<Minute>, StoreError> {
        if let Some(m) = after.get(&fp) {
            return Ok(*m);
        }
        let key = fp.0.to_be_bytes();
        match self.tree.get(key).map_err(io)? {
            Some(v) => Self::decode(&key, &v).map(|(_, m)| Some(m)),
            None => Ok(None),
        }
    }
}

impl SeriesStore for SledSeriesStore {
    fn apply(&self, batch: &SeriesBatch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        // Reads, then one atomic `apply_batch`, under the writer lock: a sled transaction
        // keeps every key it touches in memory (gigabytes for a first batch of a million
        // series), a batch does not; one process holds the database and every series
        // store of it shares this lock, so the reads stay true until the batch is applied.
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        // What this batch has decided so far, over what the tree holds.
        let mut after: HashMap<Fingerprint, Option<Minute>> = HashMap::new();
        let mut changes = sled::Batch::default();
        for &fp in &batch.forgotten {
            if self
                .current(&after, fp)?
                .is_some_and(|m| m < batch.expired_before)
            {
                after.insert(fp, None);
                changes.remove(&fp.0.to_be_bytes());
            }
        }
        for &(fp, minute) in &batch.seen {
            if self.current(&after, fp)?.is_none_or(|m| m < minute) {
                after.insert(fp, Some(minute));
                changes.insert(&fp.0.to_be_bytes(), &minute.to_be_bytes());
            }
        }
        self.tree.apply_batch(changes).map_err(io)?;
        self.db.flush().map_err(io)?;
        Ok(())
    }

    fn load(&self) -> Result<Vec<(Fingerprint, Minute)>, StoreError> {
        self.tree
            .iter()
            .map(|item| {
                let (k, v) = item.map_err(io)?;
                Self::decode(&k, &v)
            })
            .collect()
    }
}
