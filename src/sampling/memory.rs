//! The keep probabilities a trace was first judged at, remembered for a while.
//!
//! Pacing moves keep probabilities every few seconds, and a trace's spans and logs arrive
//! in several requests over a few seconds. Judging each at the probabilities of its own
//! moment would split traces at every change, and could keep a log whose trace was
//! dropped a second later. So the first time frugal sees a trace (in a span or a log)
//! while pacing samples, it notes the trace classes' probabilities of that moment; the
//! trace's later items are judged at the same ones, each by its own class. Consistent
//! sampling then keeps all or none of a class's spans, and a log follows its trace
//! exactly. A trace whose spans a gate dropped (at the limit, over the rate) is noted as
//! dropped.
//!
//! With tail sampling (`traces.tail`) the memory is also the decision cache: each trace's
//! whole-trace decision ([`TraceDecision`]) is kept for `decision_ttl`, so a span arriving
//! after it (a late span) and the trace's logs get the same answer.
//!
//! Bounded: entries past their time are forgotten, and past the capacity the oldest go
//! first. Sharded by trace ID, so requests do not contend on one lock. Memory is about
//! 100 bytes an entry (10 MB for 100,000 traces).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use jiff::Timestamp;

/// How long a trace's probability is remembered.
pub const TTL_SECONDS: f64 = 60.0;
/// How many traces are remembered at most.
pub const CAPACITY: usize = 100_000;
/// Traces are spread over this many independently locked shards (by the trace ID's last
/// byte, which is random in W3C trace IDs).
const SHARDS: usize = 16;

type Probabilities = super::ClassProbabilities;

/// The tail sampler's decision about a whole trace, remembered so its late spans and its
/// logs get the same answer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TraceDecision {
    /// The probability the trace was kept at (0 when dropped): a late span is decided at
    /// it, by the same consistent sampling, so it gets the trace's answer.
    pub p: f64,
    /// The tail policy that decided it (an index into `traces.tail.policies`).
    pub by: Option<u16>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    p: Probabilities,
    at: Timestamp,
    expires: Timestamp,
    decided: Option<TraceDecision>,
}

#[derive(Debug, Default)]
struct Inner {
    map: HashMap<[u8; 16], Entry>,
    order: VecDeque<([u8; 16], Timestamp)>,
}

/// The keep probabilities each recent trace was first judged at (zeros for a trace whose
/// spans a gate dropped), for [`TTL_SECONDS`], and with tail sampling each trace's
/// decision for longer (`traces.tail.decision_ttl`); at most a capacity of traces.
#[derive(Debug)]
pub struct TraceMemory {
    shards: Vec<Mutex<Inner>>,
    len: AtomicUsize,
    capacity_per_shard: usize,
    decision_ttl: Duration,
}

impl Default for TraceMemory {
    fn default() -> Self {
        TraceMemory::new(CAPACITY, Duration::from_secs_f64(TTL_SECONDS))
    }
}

/// One request's view of the memory.
pub struct Session<'a> {
    memory: &'a TraceMemory,
    now: Timestamp,
    /// What traces seen for the first time are remembered by.
    remember: Remember,
}

/// When a trace seen for the first time is remembered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Remember {
    /// Pacing samples: by spans and by logs.
    Always,
    /// Nothing is sampled yet: by logs only (so the spans of a trace whose log was kept at
    /// probability 1 are kept too, if pacing starts between them); spans are not
    /// remembered, which keeps the unconstrained path cheap.
    Logs,
    /// At a hard stop: not at all (its zeros are the limit's, not a decision about the
    /// trace).
    Never,
}

fn key(id: &[u8]) -> Option<[u8; 16]> {
    <[u8; 16]>::try_from(id).ok()
}

fn later(t: Timestamp, d: Duration) -> Timestamp {
    crate::clock::add(t, d)
}

impl TraceMemory {
    /// A memory of at most `capacity` traces, remembering tail decisions for
    /// `decision_ttl` (first judgements for [`TTL_SECONDS`]).
    pub fn new(capacity: usize, decision_ttl: Duration) -> Self {
        TraceMemory {
            shards: (0..SHARDS).map(|_| Mutex::new(Inner::default())).collect(),
            len: AtomicUsize::new(0),
            capacity_per_shard: capacity.div_ceil(SHARDS).max(1),
            decision_ttl,
        }
    }

    fn shard(&self, id: &[u8; 16]) -> std::sync::MutexGuard<'_, Inner> {
        self.shards[id[15] as usize % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Opens one request's session at `now`; `remember` says which traces seen for the
    /// first time are noted.
    pub fn session(&self, now: Timestamp, remember: Remember) -> Session<'_> {
        Session {
            memory: self,
            now,
            remember,
        }
    }

    fn insert(&self, id: &[u8; 16], e: Entry, now: Timestamp) {
        let mut inner = self.shard(id);
        // Forget what is too old, and what is over capacity.
        while let Some(&(old, at)) = inner.order.front() {
            let expired = inner
                .map
                .get(&old)
                .is_none_or(|e| e.at != at || e.expires <= now);
            if expired || inner.order.len() >= self.capacity_per_shard {
                inner.order.pop_front();
                if inner.map.get(&old).is_some_and(|e| e.at == at) {
                    inner.map.remove(&old);
                    self.len.fetch_sub(1, Ordering::Relaxed);
                }
            } else {
                break;
            }
        }
        if inner.map.insert(*id, e).is_none() {
            self.len.fetch_add(1, Ordering::Relaxed);
        }
        inner.order.push_back((*id, e.at));
    }

    fn entry(&self, id: &[u8], now: Timestamp) -> Option<Entry> {
        let k = key(id)?;
        self.shard(&k)
            .map
            .get(&k)
            .filter(|e| e.expires > now)
            .copied()
    }

    /// Notes the tail sampler's decision about trace `id`, for `decision_ttl`.
    pub fn decide(&self, id: &[u8; 16], d: TraceDecision, now: Timestamp) {
        let e = Entry {
            p: Probabilities::new([d.p; 3]),
            at: now,
            expires: later(now, self.decision_ttl),
            decided: Some(d),
        };
        self.insert(id, e, now);
    }

    /// The tail sampler's decision about trace `id`, if remembered, and when it was made.
    pub fn decided(&self, id: &[u8], now: Timestamp) -> Option<(TraceDecision, Timestamp)> {
        let e = self.entry(id, now)?;
        Some((e.decided?, e.at))
    }

    /// How many traces are held (expired ones go as others arrive).
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Whether no trace is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Session<'_> {
    /// The probabilities trace `id` was first judged at (or decided at), if remembered.
    pub fn get(&self, id: &[u8]) -> Option<Probabilities> {
        self.memory.entry(id, self.now).map(|e| e.p)
    }

    /// Notes what trace `id` is judged at from now on (a gate dropped its spans: zeros).
    pub fn set(&mut self, id: &[u8; 16], p: Probabilities) {
        let e = Entry {
            p,
            at: self.now,
            expires: later(self.now, Duration::from_secs_f64(TTL_SECONDS)),
            decided: None,
        };
        self.memory.insert(id, e, self.now);
    }

    /// The probabilities trace `id` is judged at: those it was first judged at, or
    /// `current` (remembered as the session says; `by_log` for a log record's judgement).
    pub fn judge(&mut self, id: &[u8], current: &Probabilities, by_log: bool) -> Probabilities {
        let remember = match self.remember {
            Remember::Always => true,
            Remember::Logs => by_log,
            Remember::Never => false,
        };
        if !remember && self.memory.is_empty() {
            return *current;
        }
        if let Some(p) = self.get(id) {
            return p;
        }
        if remember && let Some(k) = key(id) {
            self.set(&k, *current);
        }
        *current
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::PerClass;

    #[test]
    fn a_trace_keeps_its_first_probabilities_for_a_while() {
        let m = TraceMemory::default();
        let t0: Timestamp = "2026-11-25T00:00:00Z".parse().unwrap();
        let id = [7u8; 16];
        let first = PerClass::new([1.0, 0.5, 0.25]);
        let always = Remember::Always;
        assert_eq!(m.session(t0, always).judge(&id, &first, false), first);
        let t1 = crate::clock::add(t0, std::time::Duration::from_secs(10));
        assert_eq!(
            m.session(t1, always)
                .judge(&id, &PerClass::new([1.0, 0.2, 0.1]), false),
            first
        );
        assert_eq!(
            m.session(t1, Remember::Never)
                .judge(&id, &PerClass::new([1.0; 3]), false),
            first,
            "read even when not remembering"
        );
        let t2 = crate::clock::add(t0, std::time::Duration::from_secs(61));
        assert_eq!(
            m.session(t2, always)
                .judge(&id, &PerClass::new([1.0, 0.2, 0.2]), false),
            PerClass::new([1.0, 0.2, 0.2]),
            "forgotten after the TTL"
        );
        assert_eq!(
            m.session(t2, always).judge(&[1, 2], &first, false),
            first,
            "invalid IDs are not remembered"
        );
        let other = [9u8; 16];
        m.session(t2, Remember::Logs)
            .judge(&other, &PerClass::new([1.0; 3]), false);
        assert_eq!(
            m.session(t2, Remember::Never).get(&other),
            None,
            "spans do not remember while nothing is sampled"
        );
        m.session(t2, Remember::Logs)
            .judge(&other, &PerClass::new([1.0; 3]), true);
        assert_eq!(
            m.session(t2, Remember::Never).get(&other),
            Some(PerClass::new([1.0; 3])),
            "logs do"
        );
    }

    #[test]
    fn memory_is_bounded() {
        let m = TraceMemory::default();
        let t0: Timestamp = "2026-11-25T00:00:00Z".parse().unwrap();
        {
            let mut s = m.session(t0, Remember::Always);
            for i in 0..(CAPACITY + 500) as u64 {
                let mut id = [0u8; 16];
                id[..8].copy_from_slice(&i.to_be_bytes());
                s.judge(&id, &PerClass::new([1.0, 0.5, 0.5]), false);
            }
        }
        assert!(m.len() <= CAPACITY + SHARDS, "{}", m.len());
    }
}
