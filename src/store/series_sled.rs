//! The production [`SeriesStore`]: a tree in the usage store's sled database.
//!
//! It shares [`SledStore`](super::SledStore)'s database (one process holds its lock) and
//! its conventions: each batch is one transaction, flushed before `apply` returns, so what
//! it reports as applied survives `kill -9`.
//!
//! Layout: tree `series`, key the fingerprint as 8 big-endian bytes, value the last-seen
//! minute (since the Unix epoch) as 4 big-endian bytes.

use sled::transaction::ConflictableTransactionError;

use super::StoreError;
use super::series::{Minute, SeriesBatch, SeriesStore};
use super::sled_store::{durable, io};
use crate::metering::fingerprint::Fingerprint;

pub(super) const TREE: &str = "series";

/// Series last-seen minutes in the usage store's sled database.
pub struct SledSeriesStore {
    db: sled::Db,
    tree: sled::Tree,
}

impl SledSeriesStore {
    pub(super) fn new(db: sled::Db, tree: sled::Tree) -> Self {
        Self { db, tree }
    }

    fn decode(key: &[u8], value: &[u8]) -> Result<(Fingerprint, Minute), StoreError> {
        let corrupt = || StoreError::Corrupt {
            key: format!("series/{}", hex::encode(key)),
        };
        let k: [u8; 8] = key.try_into().map_err(|_| corrupt())?;
        let v: [u8; 4] = value.try_into().map_err(|_| corrupt())?;
        Ok((Fingerprint(u64::from_be_bytes(k)), Minute::from_be_bytes(v)))
    }
}

impl SeriesStore for SledSeriesStore {
    fn apply(&self, batch: &SeriesBatch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let result: sled::transaction::TransactionResult<(), StoreError> =
            self.tree.transaction(|tx| {
                let stored = |key: &[u8; 8]| -> Result<
                    Option<Minute>,
                    ConflictableTransactionError<StoreError>,
                > {
                    match tx.get(key)? {
                        Some(v) => Self::decode(key, &v)
                            .map(|(_, m)| Some(m))
                            .map_err(ConflictableTransactionError::Abort),
                        None => Ok(None),
                    }
                };
                for fp in &batch.forgotten {
                    let key = fp.0.to_be_bytes();
                    if stored(&key)?.is_some_and(|m| m < batch.expired_before) {
                        tx.remove(&key)?;
                    }
                }
                for &(fp, minute) in &batch.seen {
                    let key = fp.0.to_be_bytes();
                    if stored(&key)?.is_none_or(|m| m < minute) {
                        tx.insert(&key, &minute.to_be_bytes())?;
                    }
                }
                Ok(())
            });
        durable(&self.db, result)
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
