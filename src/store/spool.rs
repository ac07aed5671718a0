//! Where the tail sampler's acknowledged spans wait for their decision: the [`Spool`]
//! seam.
//!
//! With `traces.tail`, frugal answers a client 2xx once the request's spans are in the
//! spool, not once upstream has them: the spool is what makes that answer true across a
//! crash. Each record is one request's spans (the buffer holds where each trace's are,
//! and reads them with [`Spool::read`] at its decision); it is released when every trace
//! in it is decided and either acknowledged upstream, refused by upstream, or dropped by
//! policy. On start, the records not released are replayed into
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
    /// A read asked for a record the spool does not hold (released, or never written),
    /// or for bytes past its end.
    #[error("tail-sampling spool record {id} has no bytes {from}..{to}")]
    NotHeld {
        /// The record.
        id: RecordId,
        /// The first byte asked for.
        from: u64,
        /// The byte after the last asked for.
        to: u64,
    },
}

impl SpoolError {
    /// Record `id` has no `len` bytes at `offset`.
    pub fn not_held(id: RecordId, offset: u32, len: u32) -> SpoolError {
        SpoolError::NotHeld {
            id,
            from: u64::from(offset),
            to: u64::from(offset) + u64::from(len),
        }
    }
}

/// Where `len` bytes at `offset` are in a record's payload of `payload_len` bytes, if it
/// has them.
pub(super) fn slice_of(
    id: RecordId,
    payload_len: u64,
    offset: u32,
    len: u32,
) -> Result<std::ops::Range<u64>, SpoolError> {
    let (from, to) = (u64::from(offset), u64::from(offset) + u64::from(len));
    if to > payload_len {
        return Err(SpoolError::not_held(id, offset, len));
    }
    Ok(from..to)
}

/// Durable records of acknowledged spans, until their traces are done.
pub trait Spool: Send + Sync + 'static {
    /// Appends `record`; resolves with its ID once it is durable.
    fn append(&self, record: Bytes) -> BoxFuture<'static, Result<RecordId, SpoolError>>;
    /// `len` bytes at `offset` of record `id` (one appended and not released): the
    /// buffer holds where a trace's spans are, and reads them at its decision.
    fn read(&self, id: RecordId, offset: u32, len: u32) -> Result<Bytes, SpoolError>;
    /// Marks record `id` done: it is not replayed after the next flush, nor read.
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

    fn read(&self, id: RecordId, offset: u32, len: u32) -> Result<Bytes, SpoolError> {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let record = s
            .records
            .get(&id)
            .ok_or(SpoolError::not_held(id, offset, len))?;
        let r = slice_of(id, record.len() as u64, offset, len)?;
        Ok(record.slice(r.start as usize..r.end as usize))
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

    /// Reads give back slices of records held, from before a restart too, and refuse
    /// released records and bytes past a record's end.
    pub async fn reads_slices_of_held_records<R: Reopen>(mut r: R) {
        let spool = r.open();
        let mut ids = Vec::new();
        for i in 0..20 {
            ids.push(spool.append(body(i)).await.unwrap());
        }
        for (i, id) in ids.iter().enumerate() {
            let b = body(i as u32);
            let at = (i % 5) as u32;
            let len = b.len() as u32 - at - 1;
            assert_eq!(
                spool.read(*id, at, len).unwrap(),
                b.slice(at as usize..(at + len) as usize)
            );
            let whole = b.len() as u32;
            assert!(spool.read(*id, 0, whole).is_ok());
            assert!(
                matches!(spool.read(*id, 1, whole), Err(SpoolError::NotHeld { .. })),
                "past the end"
            );
        }
        spool.release(ids[0]);
        spool.sync().await.unwrap();
        assert!(matches!(
            spool.read(ids[0], 0, 1),
            Err(SpoolError::NotHeld { .. })
        ));
        assert!(matches!(
            spool.read(u64::MAX, 0, 1),
            Err(SpoolError::NotHeld { .. })
        ));
        drop(spool);
        let again = r.open();
        let back = again.take_replay();
        assert_eq!(back.len(), 19);
        for (id, bytes) in back {
            assert_eq!(again.read(id, 2, 3).unwrap(), bytes.slice(2..5));
        }
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
        reads_slices_of_held_records(Memory(None)).await;
    }
}
