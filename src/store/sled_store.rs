//! The production [`UsageStore`]: counters in a sled tree, flushed deliberately.
//!
//! sled 0.34 is durable only after `flush()`, so [`SledStore::add`] flushes before it
//! returns: what it reports as added survives `kill -9`. The page cache is set by the
//! policy (sled's own default is 1 GiB, far too much for a small pod).
//!
//! Layout: tree `usage`, key `<period>\0<counter>`, value the counter as 8 big-endian
//! bytes. The period key is the period's start (RFC 3339, UTC), so keys sort by time.

use std::path::Path;

use super::{Counters, StoreError, UsageStore};

const TREE: &str = "usage";
const SEP: u8 = 0;

/// Usage counters in a sled database on disk, flushed before each `add` returns.
pub struct SledStore {
    db: sled::Db,
    tree: sled::Tree,
    /// Held by every series store of this database while it applies a batch.
    series_writer: std::sync::Arc<std::sync::Mutex<()>>,
}

impl SledStore {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Self, StoreError> {
        let open_err = |reason: String| StoreError::Open {
            path: dir.display().to_string(),
            reason,
        };
        std::fs::create_dir_all(dir).map_err(|e| open_err(format!("cannot create it: {e}")))?;
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .flush_every_ms(None)
            .mode(sled::Mode::LowSpace)
            .open()
            .map_err(|e| {
                let msg = e.to_string();
                if msg.contains("lock") || msg.contains("WouldBlock") {
                    open_err(format!(
                        "it is in use by another frugal (or another process): {msg}"
                    ))
                } else {
                    open_err(msg)
                }
            })?;
        let tree = db.open_tree(TREE).map_err(|e| open_err(e.to_string()))?;
        Ok(Self {
            db,
            tree,
            series_writer: Default::default(),
        })
    }

    /// The active-series store in the same database (tree `series`), sharing its lock and
    /// its flushes.
    pub fn series_store(&self) -> Result<super::SledSeriesStore, StoreError> {
        let tree = self.db.open_tree(super::series_sled::TREE).map_err(io)?;
        Ok(super::SledSeriesStore::new(
            self.db.clone(),
            tree,
            self.series_writer.clone(),
        ))
    }

    fn key(period: &str, counter: &str) -> Vec<u8> {
        let mut k = Vec::with_capacity(period.len() + counter.len() + 1);
        k.extend_from_slice(period.as_bytes());
        k.push(SEP);
        k.extend_from_slice(counter.as_bytes());
        k
    }

    fn prefix(period: &str) -> Vec<u8> {
        let mut k = period.as_bytes().to_vec();
        k.push(SEP);
        k
    }

    fn decode(key: &[u8], value: &[u8]) -> Result<u64, StoreError> {
        let bytes: [u8; 8] = value.try_into().map_err(|_| StoreError::Corrupt {
            key: String::from_utf8_lossy(key).into_owned(),
        })?;
        Ok(u64::from_be_bytes(bytes))
    }
}

pub(super) fn io(e: impl std::fmt::Display) -> StoreError {
    StoreError::Io(e.to_string())
}

impl UsageStore for SledStore {
    fn add(&self, period: &str, deltas: &Counters) -> Result<Counters, StoreError> {
        if !deltas.is_empty() {
            let result: sled::transaction::TransactionResult<(), StoreError> =
                self.tree.transaction(|tx| {
                    for (name, delta) in deltas {
                        let key = Self::key(period, name);
                        let old = match tx.get(&key)? {
                            Some(v) => Self::decode(&key, &v)
                                .map_err(sled::transaction::ConflictableTransactionError::Abort)?,
                            None => 0,
                        };
                        tx.insert(key, &old.saturating_add(*delta).to_be_bytes())?;
                    }
                    Ok(())
                });
            match result {
                Ok(()) => {}
                Err(sled::transaction::TransactionError::Abort(e)) => return Err(e),
                Err(sled::transaction::TransactionError::Storage(e)) => return Err(io(e)),
            }
            self.db.flush().map_err(io)?;
        }
        self.totals(period)
    }

    fn totals(&self, period: &str) -> Result<Counters, StoreError> {
        let prefix = Self::prefix(period);
        let mut out = Counters::new();
        for item in self.tree.scan_prefix(&prefix) {
            let (k, v) = item.map_err(io)?;
            let name = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            out.insert(name, Self::decode(&k, &v)?);
        }
        Ok(out)
    }

    fn periods(&self) -> Result<Vec<String>, StoreError> {
        let mut out: Vec<String> = Vec::new();
        for item in self.tree.iter() {
            let (k, _) = item.map_err(io)?;
            let end = k.iter().position(|&b| b == SEP).unwrap_or(k.len());
            let p = String::from_utf8_lossy(&k[..end]).into_owned();
            if out.last() != Some(&p) {
                out.push(p);
            }
        }
        Ok(out)
    }

    fn remove_period(&self, period: &str) -> Result<(), StoreError> {
        let prefix = Self::prefix(period);
        let keys: Vec<sled::IVec> = self
            .tree
            .scan_prefix(&prefix)
            .keys()
            .collect::<Result<_, _>>()
            .map_err(io)?;
        for k in keys {
            self.tree.remove(k).map_err(io)?;
        }
        self.db.flush().map_err(io)?;
        Ok(())
    }
}
