//! [`FileSpool`]: the spool as append-only segment files, written by one thread.
//!
//! A segment is `spool-NNNNNNNNNN.log`, a sequence of records:
//! `kind (1 byte) | length (u32 LE) | CRC-32 of the payload (u32 LE) | id (u64 LE) | payload`.
//! Kind 1 holds a record's bytes; kind 2 (empty payload) says record `id` was released.
//! The writer thread takes every command waiting, writes them, and flushes once
//! (`fdatasync`) before answering the appends among them: group commit. A segment whose
//! records are all released is deleted once the writer has moved past it (at
//! [`SEGMENT_BYTES`]).
//!
//! Readers ([`Spool::read`]) find a record through the [`Index`] the writer keeps (its
//! segment and where its payload starts) and read it with `pread` on a handle of their
//! own; a segment deleted while a read holds its handle stays readable until it ends.
//!
//! Opening reads every segment (a torn record ends its segment: it was never
//! acknowledged), keeps the records not released, writes them into a fresh segment,
//! flushes it, and only then deletes the old ones: the spool starts compact, and a crash
//! while opening loses nothing.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{IoSlice, Read, Write};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use tokio::sync::oneshot;

use super::spool::{RecordId, Spool, SpoolError, slice_of};

/// A segment is closed (and a new one begun) past this size.
pub const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// A segment with nothing live is closed (and deleted) past this size.
pub const IDLE_ROLL_BYTES: u64 = 1024 * 1024;
/// The most commands written together under one flush.
const MAX_BATCH: usize = 4096;
const HEADER: usize = 1 + 4 + 4 + 8;
const DATA: u8 = 1;
const RELEASE: u8 = 2;
/// A record's payload may not be larger (a request is at most `ingest.max_request_size`).
const MAX_RECORD: u32 = 1 << 30;

enum Cmd {
    Append(Bytes, oneshot::Sender<Result<RecordId, SpoolError>>),
    Release(RecordId),
    Sync(oneshot::Sender<Result<(), SpoolError>>),
}

/// The spool on disk, in `dir`.
pub struct FileSpool {
    dir: PathBuf,
    tx: Mutex<mpsc::Sender<Cmd>>,
    bytes: Arc<AtomicU64>,
    replay: Mutex<Vec<(RecordId, Bytes)>>,
    index: Arc<Mutex<Index>>,
}

/// Where the records not released are: kept by the writer, looked up by readers.
#[derive(Default)]
struct Index {
    /// Per record: its segment, where its payload starts there, and its length.
    records: HashMap<RecordId, (u64, u64, u64)>,
    /// Read handles, per segment, opened at its first read.
    files: HashMap<u64, Arc<File>>,
}

fn lock(index: &Mutex<Index>) -> std::sync::MutexGuard<'_, Index> {
    index.lock().unwrap_or_else(|e| e.into_inner())
}

struct Writer {
    dir: PathBuf,
    current: File,
    current_seq: u64,
    current_len: u64,
    next_id: RecordId,
    /// Records not released, shared with readers.
    index: Arc<Mutex<Index>>,
    /// Per segment: its size and how many records in it are not released.
    segments: HashMap<u64, (u64, u64)>,
    bytes: Arc<AtomicU64>,
}

fn io(e: impl std::fmt::Display) -> SpoolError {
    SpoolError::Io(e.to_string())
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("spool-{seq:010}.log"))
}

fn header(kind: u8, id: RecordId, payload: &[u8]) -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[0] = kind;
    h[1..5].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    h[5..9].copy_from_slice(&crc32fast::hash(payload).to_le_bytes());
    h[9..].copy_from_slice(&id.to_le_bytes());
    h
}

fn encode(buf: &mut Vec<u8>, kind: u8, id: RecordId, payload: &[u8]) {
    buf.extend_from_slice(&header(kind, id, payload));
    buf.extend_from_slice(payload);
}

/// Writes `pieces` one after the other, with as few calls as the system allows, without
/// copying them into one buffer.
fn write_pieces(f: &mut File, pieces: &[Bytes]) -> std::io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = pieces.iter().map(|b| IoSlice::new(b)).collect();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        let n = f.write_vectored(rest)?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut rest, n);
    }
    Ok(())
}

/// The records of one segment's bytes, up to the first torn or corrupt one.
fn parse(mut data: &[u8]) -> Vec<(u8, RecordId, &[u8])> {
    let mut out = Vec::new();
    while data.len() >= HEADER {
        let kind = data[0];
        let len = u32::from_le_bytes([data[1], data[2], data[3], data[4]]);
        let crc = u32::from_le_bytes([data[5], data[6], data[7], data[8]]);
        let mut id = [0u8; 8];
        id.copy_from_slice(&data[9..17]);
        let id = u64::from_le_bytes(id);
        if !matches!(kind, DATA | RELEASE) || len > MAX_RECORD {
            break;
        }
        let end = HEADER + len as usize;
        if data.len() < end {
            break;
        }
        let payload = &data[HEADER..end];
        if crc32fast::hash(payload) != crc {
            break;
        }
        out.push((kind, id, payload));
        data = &data[end..];
    }
    out
}

fn segments_in(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if let Some(seq) = name
            .strip_prefix("spool-")
            .and_then(|n| n.strip_suffix(".log"))
            .and_then(|n| n.parse::<u64>().ok())
        {
            found.push((seq, path));
        }
    }
    found.sort();
    Ok(found)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

impl FileSpool {
    /// Opens (creating) the spool in `dir`: reads what a previous run left, compacts it
    /// into one fresh segment, and starts the writer thread.
    pub fn open(dir: &Path) -> Result<FileSpool, SpoolError> {
        let err = |e: std::io::Error| SpoolError::Open {
            path: dir.display().to_string(),
            reason: e.to_string(),
        };
        fs::create_dir_all(dir).map_err(err)?;
        let old = segments_in(dir).map_err(err)?;
        let mut records: Vec<(RecordId, Bytes)> = Vec::new();
        let mut released = std::collections::HashSet::new();
        let mut max_id = None::<RecordId>;
        for (_, path) in &old {
            let mut data = Vec::new();
            File::open(path)
                .and_then(|mut f| f.read_to_end(&mut data))
                .map_err(err)?;
            for (kind, id, payload) in parse(&data) {
                max_id = Some(max_id.map_or(id, |m| m.max(id)));
                match kind {
                    DATA => records.push((id, Bytes::copy_from_slice(payload))),
                    _ => {
                        released.insert(id);
                    }
                }
            }
        }
        records.retain(|(id, _)| !released.contains(id));
        let seq = old.last().map_or(0, |(s, _)| s + 1);
        let path = segment_path(dir, seq);
        let mut current = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(err)?;
        let mut buf = Vec::new();
        let mut index = Index::default();
        for (id, payload) in &records {
            let at = (buf.len() + HEADER) as u64;
            encode(&mut buf, DATA, *id, payload);
            index.records.insert(*id, (seq, at, payload.len() as u64));
        }
        let index = Arc::new(Mutex::new(index));
        current.write_all(&buf).map_err(err)?;
        current.sync_data().map_err(err)?;
        sync_dir(dir).map_err(err)?;
        for (_, p) in &old {
            fs::remove_file(p).map_err(err)?;
        }
        let len = buf.len() as u64;
        let bytes = Arc::new(AtomicU64::new(len));
        let writer = Writer {
            dir: dir.to_path_buf(),
            current,
            current_seq: seq,
            current_len: len,
            next_id: max_id.map_or(0, |m| m + 1),
            index: index.clone(),
            segments: HashMap::from([(seq, (len, records.len() as u64))]),
            bytes: bytes.clone(),
        };
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("frugal-spool".into())
            .spawn(move || writer.run(rx))
            .map_err(err)?;
        Ok(FileSpool {
            dir: dir.to_path_buf(),
            tx: Mutex::new(tx),
            bytes,
            replay: Mutex::new(records),
            index,
        })
    }

    fn send(&self, cmd: Cmd) -> bool {
        self.tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(cmd)
            .is_ok()
    }
}

impl Spool for FileSpool {
    fn append(&self, record: Bytes) -> BoxFuture<'static, Result<RecordId, SpoolError>> {
        let (tx, rx) = oneshot::channel();
        let sent = self.send(Cmd::Append(record, tx));
        Box::pin(async move {
            if !sent {
                return Err(SpoolError::Closed);
            }
            rx.await.unwrap_or(Err(SpoolError::Closed))
        })
    }

    fn read(&self, id: RecordId, offset: u32, len: u32) -> Result<Bytes, SpoolError> {
        let (file, at) = {
            let mut ix = lock(&self.index);
            let &(seq, start, payload_len) = ix
                .records
                .get(&id)
                .ok_or(SpoolError::not_held(id, offset, len))?;
            let r = slice_of(id, payload_len, offset, len)?;
            let file = match ix.files.get(&seq) {
                Some(f) => f.clone(),
                None => {
                    let f = Arc::new(File::open(segment_path(&self.dir, seq)).map_err(io)?);
                    ix.files.insert(seq, f.clone());
                    f
                }
            };
            (file, start + r.start)
        };
        let mut buf = vec![0u8; len as usize];
        file.read_exact_at(&mut buf, at).map_err(io)?;
        Ok(Bytes::from(buf))
    }

    fn release(&self, id: RecordId) {
        self.send(Cmd::Release(id));
    }

    fn take_replay(&self) -> Vec<(RecordId, Bytes)> {
        std::mem::take(&mut *self.replay.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    fn sync(&self) -> BoxFuture<'static, Result<(), SpoolError>> {
        let (tx, rx) = oneshot::channel();
        let sent = self.send(Cmd::Sync(tx));
        Box::pin(async move {
            if !sent {
                return Err(SpoolError::Closed);
            }
            rx.await.unwrap_or(Err(SpoolError::Closed))
        })
    }
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Cmd>) {
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(c) => batch.push(c),
                    Err(_) => break,
                }
            }
            self.write(batch);
        }
        // Every sender is gone: what was written is flushed.
        let _ = self.current.sync_data();
    }

    fn write(&mut self, batch: Vec<Cmd>) {
        // Headers and payloads as they are (a payload is not copied).
        let mut pieces: Vec<Bytes> = Vec::new();
        let mut written = 0u64;
        let mut appended = Vec::new();
        let mut syncs = Vec::new();
        let mut emptied = Vec::new();
        let index = self.index.clone();
        let mut ix = lock(&index);
        for cmd in batch {
            match cmd {
                Cmd::Append(payload, reply) => {
                    let id = self.next_id;
                    self.next_id += 1;
                    let at = written + HEADER as u64;
                    let len = payload.len() as u64;
                    pieces.push(Bytes::copy_from_slice(&header(DATA, id, &payload)));
                    pieces.push(payload);
                    written = at + len;
                    appended.push((id, at, len, reply));
                }
                Cmd::Release(id) => {
                    let Some((seq, _, _)) = ix.records.remove(&id) else {
                        continue;
                    };
                    pieces.push(Bytes::copy_from_slice(&header(RELEASE, id, &[])));
                    written += HEADER as u64;
                    if let Some(s) = self.segments.get_mut(&seq) {
                        s.1 = s.1.saturating_sub(1);
                        if s.1 == 0 && seq != self.current_seq {
                            emptied.push(seq);
                        }
                    }
                }
                Cmd::Sync(reply) => syncs.push(reply),
            }
        }
        drop(ix);
        let durable = if pieces.is_empty() {
            Ok(())
        } else {
            write_pieces(&mut self.current, &pieces).map_err(io)
        };
        drop(pieces);
        let durable = durable.and_then(|()| {
            if appended.is_empty() && syncs.is_empty() {
                Ok(())
            } else {
                self.current.sync_data().map_err(io)
            }
        });
        match &durable {
            Ok(()) => {
                let base = self.current_len;
                self.current_len += written;
                if let Some(s) = self.segments.get_mut(&self.current_seq) {
                    s.0 = self.current_len;
                    s.1 += appended.len() as u64;
                }
                let mut ix = lock(&self.index);
                for (id, at, len, _) in &appended {
                    ix.records.insert(*id, (self.current_seq, base + at, *len));
                }
            }
            Err(e) => tracing::error!(error = %e, "tail-sampling spool write failed"),
        }
        for seq in emptied {
            self.delete(seq);
        }
        // A full segment is closed; so is a smaller one once nothing in it is live, so
        // the disk is given back when the buffer empties.
        let live_here = self.segments.get(&self.current_seq).map_or(0, |s| s.1);
        if self.current_len >= SEGMENT_BYTES
            || (live_here == 0 && self.current_len >= IDLE_ROLL_BYTES)
        {
            self.roll();
        }
        let total = self.segments.values().map(|(len, _)| len).sum();
        self.bytes.store(total, Ordering::Relaxed);
        for (id, _, _, reply) in appended {
            let _ = reply.send(durable.clone().map(|()| id));
        }
        for reply in syncs {
            let _ = reply.send(durable.clone());
        }
    }

    /// Deletes segment `seq` (nothing in it is live) and its read handle.
    fn delete(&mut self, seq: u64) {
        if fs::remove_file(segment_path(&self.dir, seq)).is_ok() {
            self.segments.remove(&seq);
            lock(&self.index).files.remove(&seq);
        }
    }

    /// Begins a new segment; the old one goes once its records are released.
    fn roll(&mut self) {
        let seq = self.current_seq + 1;
        let opened = OpenOptions::new()
            .create(true)
            .append(true)
            .open(segment_path(&self.dir, seq));
        match opened {
            Ok(f) => {
                let old = self.current_seq;
                self.current = f;
                self.current_seq = seq;
                self.current_len = 0;
                self.segments.insert(seq, (0, 0));
                let _ = sync_dir(&self.dir);
                if self.segments.get(&old).is_some_and(|s| s.1 == 0) {
                    self.delete(old);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot begin a new tail-sampling spool segment")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::spool::conformance::{self, Reopen};

    struct Dir(tempfile::TempDir);

    impl Reopen for Dir {
        type S = FileSpool;
        fn open(&mut self) -> FileSpool {
            FileSpool::open(self.0.path()).unwrap()
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn file_spool_conforms() {
        conformance::replays_exactly_the_unreleased(Dir(tempfile::tempdir().unwrap())).await;
        conformance::concurrent_appends_all_land(Dir(tempfile::tempdir().unwrap())).await;
        conformance::reads_slices_of_held_records(Dir(tempfile::tempdir().unwrap())).await;
    }

    #[tokio::test]
    async fn a_torn_record_ends_its_segment_and_the_rest_survive() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = FileSpool::open(dir.path()).unwrap();
            s.append(Bytes::from_static(b"one")).await.unwrap();
            s.append(Bytes::from_static(b"two")).await.unwrap();
        }
        // A crash mid-write: half a record at the end of the newest segment.
        let (_, path) = segments_in(dir.path()).unwrap().pop().unwrap();
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        let mut half = Vec::new();
        encode(&mut half, DATA, 9, b"three");
        f.write_all(&half[..half.len() - 2]).unwrap();
        drop(f);
        let s = FileSpool::open(dir.path()).unwrap();
        let back: Vec<Bytes> = s.take_replay().into_iter().map(|(_, b)| b).collect();
        assert_eq!(
            back,
            vec![Bytes::from_static(b"one"), Bytes::from_static(b"two")]
        );
        assert_eq!(segments_in(dir.path()).unwrap().len(), 1, "compacted");
    }

    #[tokio::test]
    async fn the_disk_is_given_back_once_everything_is_released() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileSpool::open(dir.path()).unwrap();
        let body = Bytes::from(vec![1u8; 300 * 1024]);
        let mut ids = Vec::new();
        for _ in 0..5 {
            ids.push(s.append(body.clone()).await.unwrap());
        }
        assert!(s.bytes() > 1024 * 1024);
        for id in ids {
            s.release(id);
        }
        s.sync().await.unwrap();
        assert_eq!(s.bytes(), 0);
    }

    #[tokio::test]
    async fn released_segments_are_deleted_after_a_roll() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileSpool::open(dir.path()).unwrap();
        let big = Bytes::from(vec![7u8; (SEGMENT_BYTES / 2) as usize + 1]);
        let a = s.append(big.clone()).await.unwrap();
        let b = s.append(big.clone()).await.unwrap();
        let c = s.append(Bytes::from_static(b"small")).await.unwrap();
        assert_eq!(
            segments_in(dir.path()).unwrap().len(),
            2,
            "{:?}",
            segments_in(dir.path())
        );
        s.release(a);
        s.release(b);
        s.sync().await.unwrap();
        assert_eq!(
            segments_in(dir.path()).unwrap().len(),
            1,
            "{:?}",
            segments_in(dir.path())
        );
        assert!(s.bytes() < 1024, "{}", s.bytes());
        drop(s);
        let again = FileSpool::open(dir.path()).unwrap();
        let back = again.take_replay();
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].0, c);
    }
}
