//! The trace buffer: where each trace's spans are in the spool, until its decision.
//!
//! Sharded by trace ID (each shard its own lock); each shard keeps its traces in a map
//! and a heap of due times. A trace is due `decision_wait` after its first span, or
//! `root_grace` after its root span arrived if that is sooner, or at once when it is over
//! `max_trace_size` or follows a decision already made (late spans). Bytes are counted as
//! the spans' encoded sizes (with shares of their resources and scopes); the bound itself (`max_buffer`) is held by the caller,
//! which takes the soonest-due traces early ([`Buffer::take_soonest`]) when it is near.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use jiff::Timestamp;

use crate::model::Class;
use crate::sampling::memory::TraceDecision;
use crate::store::RecordId;

use super::record::Chunk;

const SHARDS: usize = 16;

/// Why a trace was decided before its time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Early {
    /// The buffer was at `max_buffer`.
    BufferFull,
    /// The trace passed `max_trace_size`.
    TraceSize,
}

impl Early {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Early::BufferFull => "buffer_full",
            Early::TraceSize => "trace_size",
        }
    }
}

/// One trace's spans, waiting.
#[derive(Debug)]
pub struct Pending {
    /// Where its spans are: a chunk per request that brought some.
    pub chunks: Vec<Chunk>,
    /// What they are counted as (spans' bytes and shares of envelopes).
    pub bytes: u64,
    /// When its first span arrived.
    pub first_seen: Timestamp,
    /// When it is decided.
    pub due: Timestamp,
    /// The class span rules put it in: the highest of its spans' (priority bytes are set
    /// aside in the budget).
    pub class: Class,
    /// The decision its trace already had, and when it was made (late spans).
    pub late: Option<(TraceDecision, Timestamp)>,
    /// Why it was decided early, if it was.
    pub early: Option<Early>,
}

impl Pending {
    /// The spool record of each of its chunks.
    pub fn records(&self) -> impl Iterator<Item = RecordId> + '_ {
        self.chunks.iter().map(|c| c.record)
    }
}

/// What one request brings to one trace.
#[derive(Debug)]
pub struct Arrival {
    /// The trace.
    pub id: [u8; 16],
    /// Where its spans of this request are.
    pub chunk: Chunk,
    /// Whether the root span (no parent) is among them.
    pub has_root: bool,
    /// The highest class span rules put them in.
    pub class: Class,
    /// How many spans.
    pub spans: u64,
    /// The trace's decision, if it was decided before.
    pub late: Option<(TraceDecision, Timestamp)>,
}

/// What became of an arrival.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inserted {
    /// It began a trace in the buffer (not a late one).
    pub new: bool,
    /// Its trace is due at once.
    pub due_now: bool,
    /// It follows a decision made at this time (a late span).
    pub late: Option<Timestamp>,
}

/// How a trace is timed.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// `traces.tail.decision_wait`.
    pub wait: Duration,
    /// `traces.tail.root_grace`.
    pub root_grace: Duration,
    /// `traces.tail.max_trace_size`.
    pub max_trace_size: u64,
}

#[derive(Default)]
struct Shard {
    map: HashMap<[u8; 16], Pending>,
    due: BinaryHeap<Reverse<(Timestamp, [u8; 16])>>,
    /// Traces taken for their decision and not yet settled, with what arrived for them
    /// meanwhile: it follows the decision once it is made ([`Buffer::settle`]).
    deciding: HashMap<[u8; 16], Vec<Arrival>>,
}

/// Traces waiting for their decision.
pub struct Buffer {
    shards: Vec<Mutex<Shard>>,
    bytes: AtomicU64,
    priority_bytes: AtomicU64,
    traces: AtomicI64,
}

impl Default for Buffer {
    fn default() -> Self {
        Buffer {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            bytes: AtomicU64::new(0),
            priority_bytes: AtomicU64::new(0),
            traces: AtomicI64::new(0),
        }
    }
}

impl Buffer {
    fn shard(&self, id: &[u8; 16]) -> std::sync::MutexGuard<'_, Shard> {
        self.shards[id[15] as usize % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Adds `a` at `now`. A trace neither held nor being
    /// decided is looked up with `decided` (under the shard's lock, so a decision made
    /// meanwhile is never missed); one being decided waits for its decision.
    pub fn insert(
        &self,
        mut a: Arrival,
        now: Timestamp,
        t: Timing,
        decided: impl Fn(&[u8; 16]) -> Option<(TraceDecision, Timestamp)>,
    ) -> Inserted {
        let len = a.chunk.bytes;
        let mut shard = self.shard(&a.id);
        let Shard { map, due, deciding } = &mut *shard;
        let new = !map.contains_key(&a.id);
        if new && a.late.is_none() {
            if let Some(parked) = deciding.get_mut(&a.id) {
                parked.push(a);
                drop(shard);
                self.bytes.fetch_add(len, Ordering::Relaxed);
                return Inserted {
                    new: false,
                    due_now: false,
                    late: None,
                };
            }
            a.late = decided(&a.id);
        }
        let late = a.late.map(|(_, at)| at);
        let p = map.entry(a.id).or_insert_with(|| Pending {
            chunks: Vec::new(),
            bytes: 0,
            first_seen: now,
            due: if a.late.is_some() {
                now
            } else {
                crate::clock::add(now, t.wait)
            },
            class: Class::Bulk,
            late: a.late,
            early: None,
        });
        if new {
            due.push(Reverse((p.due, a.id)));
        }
        p.chunks.push(a.chunk);
        p.bytes += len;
        if a.class == Class::Priority && p.class != Class::Priority {
            self.priority_bytes
                .fetch_add(p.bytes - len, Ordering::Relaxed);
        }
        p.class = p.class.min(a.class);
        if p.class == Class::Priority {
            self.priority_bytes.fetch_add(len, Ordering::Relaxed);
        }
        let mut sooner = None;
        if a.has_root {
            sooner = Some(crate::clock::add(now, t.root_grace));
        }
        if p.bytes > t.max_trace_size && p.early.is_none() && p.late.is_none() {
            p.early = Some(Early::TraceSize);
            sooner = Some(now);
        }
        if let Some(s) = sooner
            && s < p.due
        {
            p.due = s;
            due.push(Reverse((s, a.id)));
        }
        let due_now = p.due <= now;
        drop(shard);
        self.bytes.fetch_add(len, Ordering::Relaxed);
        if new {
            self.traces.fetch_add(1, Ordering::Relaxed);
        }
        Inserted {
            new: new && late.is_none(),
            due_now,
            late,
        }
    }

    /// Trace `id` was decided: what arrived for it while it was being decided follows the
    /// decision, as late spans. Returns how many spans those were, and whether any is due.
    pub fn settle(
        &self,
        id: &[u8; 16],
        d: TraceDecision,
        at: Timestamp,
        now: Timestamp,
        t: Timing,
    ) -> (u64, bool) {
        let parked = self.shard(id).deciding.remove(id).unwrap_or_default();
        let mut spans = 0;
        let mut due = false;
        for mut a in parked {
            self.bytes.fetch_sub(a.chunk.bytes, Ordering::Relaxed);
            spans += a.spans;
            a.late = Some((d, at));
            due |= self.insert(a, now, t, |_| None).due_now;
        }
        (spans, due)
    }

    fn remove(&self, p: &Pending) {
        self.bytes.fetch_sub(p.bytes, Ordering::Relaxed);
        if p.class == Class::Priority {
            self.priority_bytes.fetch_sub(p.bytes, Ordering::Relaxed);
        }
        self.traces.fetch_sub(1, Ordering::Relaxed);
    }

    /// Takes every trace due at `now`; each is being decided until [`Buffer::settle`].
    pub fn take_due(&self, now: Timestamp) -> Vec<([u8; 16], Pending)> {
        let mut out = Vec::new();
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            let Shard { map, due, deciding } = &mut *shard;
            while let Some(Reverse((at, id))) = due.peek().copied() {
                if at > now {
                    break;
                }
                due.pop();
                // A trace due sooner than first planned has two entries: the first taken
                // wins, the other finds it gone.
                if map.get(&id).is_some_and(|p| p.due == at)
                    && let Some(p) = map.remove(&id)
                {
                    deciding.entry(id).or_default();
                    out.push((id, p));
                }
            }
        }
        for (_, p) in &out {
            self.remove(p);
        }
        out
    }

    /// Takes the traces due soonest (about the oldest), shard by shard, until `want` bytes
    /// are taken or none is left; each is marked decided early for `reason`, and is being
    /// decided until [`Buffer::settle`].
    pub fn take_soonest(&self, want: u64, reason: Early) -> Vec<([u8; 16], Pending)> {
        let mut out = Vec::new();
        let mut taken = 0u64;
        while taken < want {
            let mut any = false;
            for shard in &self.shards {
                let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
                let Shard { map, due, deciding } = &mut *shard;
                while let Some(Reverse((at, id))) = due.pop() {
                    if map.get(&id).is_some_and(|p| p.due == at)
                        && let Some(mut p) = map.remove(&id)
                    {
                        deciding.entry(id).or_default();
                        taken += p.bytes;
                        p.early.get_or_insert(reason);
                        out.push((id, p));
                        any = true;
                        break;
                    }
                }
                if taken >= want {
                    break;
                }
            }
            if !any {
                break;
            }
        }
        for (_, p) in &out {
            self.remove(p);
        }
        out
    }

    /// Bytes of the traces held.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Bytes of the traces held with a priority span (set aside in the budget).
    pub fn priority_bytes(&self) -> u64 {
        self.priority_bytes.load(Ordering::Relaxed)
    }

    /// Traces held.
    pub fn traces(&self) -> u64 {
        self.traces.load(Ordering::Relaxed).max(0) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: u64) -> Timestamp {
        crate::clock::add(
            "2026-12-01T00:00:00Z".parse().unwrap(),
            Duration::from_millis(s),
        )
    }

    const TIMING: Timing = Timing {
        wait: Duration::from_secs(10),
        root_grace: Duration::from_secs(1),
        max_trace_size: 1000,
    };

    fn arrival(id: u8, len: usize, root: bool) -> Arrival {
        Arrival {
            id: [id; 16],
            chunk: Chunk {
                record: 0,
                offset: 0,
                len: len as u32,
                envelopes: Vec::new().into(),
                bytes: len as u64,
            },
            has_root: root,
            class: Class::Normal,
            spans: 1,
            late: None,
        }
    }

    fn put(b: &Buffer, mut a: Arrival, record: RecordId, at: Timestamp) -> (bool, bool) {
        a.chunk.record = record;
        let i = b.insert(a, at, TIMING, |_| None);
        (i.new, i.due_now)
    }

    #[test]
    fn a_trace_is_due_after_the_wait_or_soon_after_its_root() {
        let b = Buffer::default();
        assert_eq!(put(&b, arrival(1, 10, false), 0, t(0)), (true, false));
        assert_eq!(put(&b, arrival(2, 10, false), 0, t(0)), (true, false));
        assert_eq!(put(&b, arrival(1, 10, false), 1, t(500)), (false, false));
        assert_eq!(b.traces(), 2);
        assert_eq!(b.bytes(), 30);
        // Trace 2's root arrives at 2 s: due at 3 s, not 10 s.
        put(&b, arrival(2, 10, true), 1, t(2000));
        assert!(b.take_due(t(2999)).is_empty());
        let due = b.take_due(t(3000));
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].0, [2; 16]);
        assert_eq!(due[0].1.records().collect::<Vec<_>>(), vec![0, 1]);
        assert!(
            b.take_due(t(9999)).is_empty(),
            "its first due time is stale"
        );
        let due = b.take_due(t(10_000));
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].1.chunks.len(), 2);
        assert_eq!((b.traces(), b.bytes()), (0, 0));
    }

    #[test]
    fn a_trace_over_its_cap_is_due_at_once_and_the_soonest_go_first_under_pressure() {
        let b = Buffer::default();
        put(&b, arrival(1, 600, false), 0, t(0));
        assert_eq!(put(&b, arrival(1, 600, false), 1, t(100)), (false, true));
        let due = b.take_due(t(100));
        assert_eq!(due[0].1.early, Some(Early::TraceSize));
        for i in 2..10u8 {
            put(&b, arrival(i, 100, false), 0, t(u64::from(i) * 100));
        }
        let taken = b.take_soonest(250, Early::BufferFull);
        let ids: Vec<u8> = taken.iter().map(|(id, _)| id[0]).collect();
        assert_eq!(ids, vec![2, 3, 4]);
        assert!(
            taken
                .iter()
                .all(|(_, p)| p.early == Some(Early::BufferFull))
        );
        assert_eq!(b.bytes(), 500);
    }

    #[test]
    fn spans_arriving_while_their_trace_is_decided_follow_the_decision() {
        let b = Buffer::default();
        put(&b, arrival(1, 10, true), 0, t(0));
        assert_eq!(b.take_due(t(1000)).len(), 1);
        let i = b.insert(arrival(1, 5, false), t(1001), TIMING, |_| {
            panic!("not looked up while its trace is being decided")
        });
        assert_eq!(
            i,
            Inserted {
                new: false,
                due_now: false,
                late: None
            }
        );
        assert_eq!(b.bytes(), 5, "held meanwhile");
        let d = TraceDecision { p: 1.0, by: None };
        assert_eq!(b.settle(&[1; 16], d, t(1002), t(1002), TIMING), (1, true));
        let late = b.take_due(t(1002));
        assert_eq!(late[0].1.late.map(|(d, _)| d.p), Some(1.0));
        assert_eq!(b.settle(&[1; 16], d, t(1002), t(1002), TIMING), (0, false));
        // Settled: a later span looks the decision up.
        let i = b.insert(arrival(1, 5, false), t(1003), TIMING, |_| {
            Some((d, t(1002)))
        });
        assert_eq!(i.late, Some(t(1002)));
        assert!(!i.new);
    }

    #[test]
    fn priority_bytes_are_counted_from_the_first_priority_span() {
        let b = Buffer::default();
        put(&b, arrival(1, 100, false), 0, t(0));
        let mut a = arrival(1, 50, false);
        a.class = Class::Priority;
        put(&b, a, 1, t(1));
        put(&b, arrival(1, 25, false), 2, t(2));
        assert_eq!(b.priority_bytes(), 175);
        b.take_soonest(1, Early::BufferFull);
        assert_eq!(b.priority_bytes(), 0);
    }
}
