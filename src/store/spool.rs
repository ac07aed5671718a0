//! Where the tail sampler's acknowledged spans wait for their decision: the [`Spool`]
//! seam.
//!
//! With `traces.tail`, frugal answers a client 2xx once the request's spans are in the
//! spool, not once upstream has them: the spool is what makes that answer true across a
//! crash. Each record is one request's spans (as the buffer holds them); it is released
//! when every trace in it is decided and either acknowledged upstream, refused by
//! upstream, or dropped by policy. On start, the records not released are replayed into
//! the buffer.
//!
//! - [`Spool::append`] resolves only once the record is durable. Appends waiting together
//!   share one flush (group commit).
//! - [`Spool::release`] is durable lazily (with the next flush): a crash before it replays
//!   the record again. Upstream may then see a trace twice, never lose one.
//!
//! Implementations: [`FileSpool`] (production: segment files under the data directory)
//! and [`MemorySpool`] (the simulator and tests). Both pass the conformance suite in this
//! module's tests.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::future::BoxFuture;

pub use super::spool_file::FileSpool;

/// A record's number, unique in its spool, increasing in append order.
pub type RecordId = u64;

/// Why the spool failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SpoolError {
    /// The spool directory could not be opened or read.
    #[error("cannot open the tail-sampling spool at {path}: {reason}")]
    Open {
        /// The spool directory.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// Writing or flushing failed; the record is not durable.
    #[error("tail-sampling spool I/O failed: {0}")]
    Io(String),
    /// The spool is shut down.
    #[error("the tail-sampling spool is closed")]
    Closed,
}

/// Durable records of acknowledged spans, until their traces are done.
pub trait Spool: Send + Sync + 'static {
    /// Appends `record`; resolves with its ID once it is durable.
    fn append(&self, record: Bytes) -> BoxFuture<'static, Result<RecordId, SpoolError>>;
    /// Marks record `id` done: it is not replayed after the next flush.
    fn release(&self, id: RecordId);
    /// The records found when the spool was opened and not released since, in append
    /// order (what the buffer replays at start). Taken once: later calls return none.
    fn take_replay(&self) -> Vec<(RecordId, Bytes)>;
    /// Bytes the spool holds (on disk, or in memory for the twin).
    fn bytes(&self) -> u64;
    /// Makes every release durable (at shutdown).
    fn sync(&self) -> BoxFuture<'static, Result<(), SpoolError>>;
}

#[derive(Default)]
struct MemoryState {
    next: RecordId,
    records: BTreeMap<RecordId, Bytes>,
}

/// The in-memory twin of [`FileSpool`]: records live as long as the state they share
/// ([`MemorySpool::reopen`] is a restart).
#[derive(Default, Clone)]
pub struct MemorySpool {
    state: Arc<Mutex<MemoryState>>,
    replay: Arc<Mutex<Vec<(RecordId, Bytes)>>>,
}

impl MemorySpool {
    /// A spool on the same records, as a restart would find them.
    pub fn reopen(&self) -> MemorySpool {
        let records = self
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .records
            .iter()
            .map(|(id, b)| (*id, b.clone()))
            .collect();
        MemorySpool {
            state: self.state.clone(),
            replay: Arc::new(Mutex::new(records)),
        }
    }
}

impl Spool for MemorySpool {
    fn append(&self, record: Bytes) -> BoxFuture<'static, Result<RecordId, SpoolError>> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let id = s.next;
        s.next += 1;
        s.records.insert(id, record);
        Box::pin(async move { Ok(id) })
    }

    fn release(&self, id: RecordId) {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .records
            .remove(&id);
    }

    fn take_replay(&self) -> Vec<(RecordId, Bytes)> {
        let taken = std::mem::take(&mut *self.replay.lock().unwrap_or_else(|e| e.into_inner()));
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        taken
            .into_iter()
            .filter(|(id, _)| s.records.contains_key(id))
            .collect()
    }

    fn bytes(&self) -> u64 {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.records.values().map(|b| b.len() as u64).sum()
    }

    fn sync(&self) -> BoxFuture<'static, Result<(), SpoolError>> {
        Box::pin(async { Ok(()) })
    }
}

#[cfg(test)]
pub(crate) mod conformance {
    //! What every [`Spool`] must do, run against each implementation.

    use super::*;

    /// Opens a spool on the same storage as a restart would.
    pub trait Reopen {
        /// The spool type.
        type S: Spool;
        /// Opens (or reopens) the spool.
        fn open(&mut self) -> Self::S;
    }

    fn body(i: u32) -> Bytes {
        Bytes::from(format!("record {i} ").repeat(1 + i as usize % 7))
    }

    /// Appends, releases some, restarts, and checks exactly the rest come back, in order.
    pub async fn replays_exactly_the_unreleased<R: Reopen>(mut r: R) {
        let spool = r.open();
        assert!(spool.take_replay().is_empty(), "a new spool is empty");
        let mut ids = Vec::new();
        for i in 0..50 {
            ids.push(spool.append(body(i)).await.unwrap());
        }
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "IDs increase: {ids:?}");
        assert!(spool.bytes() > 0);
        for (i, id) in ids.iter().enumerate() {
            if i % 3 == 0 {
                spool.release(*id);
            }
        }
        spool.sync().await.unwrap();
        drop(spool);
        let again = r.open();
        let back = again.take_replay();
        let want: Vec<Bytes> = (0..50).filter(|i| i % 3 != 0).map(body).collect();
        let got: Vec<Bytes> = back.iter().map(|(_, b)| b.clone()).collect();
        assert_eq!(got, want);
        assert!(again.take_replay().is_empty(), "taken once");
        // Released after the restart: gone after the next one; new IDs do not collide.
        for (id, _) in &back {
            again.release(*id);
        }
        let fresh = again.append(body(99)).await.unwrap();
        assert!(back.iter().all(|(id, _)| *id != fresh));
        again.sync().await.unwrap();
        drop(again);
        let third = r.open();
        let left: Vec<Bytes> = third.take_replay().into_iter().map(|(_, b)| b).collect();
        assert_eq!(left, vec![body(99)]);
    }

    /// Many appends at once all resolve, each with its own ID.
    pub async fn concurrent_appends_all_land<R: Reopen>(mut r: R) {
        let spool = Arc::new(r.open());
        let mut handles = Vec::new();
        for i in 0..200u32 {
            let s = spool.clone();
            handles.push(tokio::spawn(
                async move { s.append(body(i)).await.unwrap() },
            ));
        }
        let mut ids = Vec::new();
        for h in handles {
            ids.push(h.await.unwrap());
        }
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 200);
        drop(spool);
        assert_eq!(r.open().take_replay().len(), 200);
    }

    struct Memory(Option<MemorySpool>);

    impl Reopen for Memory {
        type S = MemorySpool;
        fn open(&mut self) -> MemorySpool {
            let s = match &self.0 {
                None => MemorySpool::default(),
                Some(s) => s.reopen(),
            };
            self.0 = Some(s.clone());
            s
        }
    }

    #[tokio::test]
    async fn memory_spool_conforms() {
        replays_exactly_the_unreleased(Memory(None)).await;
        concurrent_appends_all_land(Memory(None)).await;
    }
}
