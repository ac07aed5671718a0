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
//! Bounded: entries older than [`TTL_SECONDS`] are forgotten, and past [`CAPACITY`] the
//! oldest go first. Memory is about 40 bytes an entry (4 MB at capacity).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use jiff::Timestamp;

use crate::clock::seconds_between;

/// How long a trace's probability is remembered.
pub const TTL_SECONDS: f64 = 60.0;
/// How many traces are remembered at most.
pub const CAPACITY: usize = 100_000;

type Probabilities = super::ClassProbabilities;

#[derive(Debug, Default)]
struct Inner {
    map: HashMap<[u8; 16], (Probabilities, Timestamp)>,
    order: VecDeque<([u8; 16], Timestamp)>,
}

/// The keep probabilities each recent trace was first judged at (zeros for a trace whose
/// spans a gate dropped), for [`TTL_SECONDS`] and at most [`CAPACITY`] traces.
#[derive(Debug, Default)]
pub struct TraceMemory {
    inner: Mutex<Inner>,
}

/// One request's view of the memory, holding its lock.
pub struct Session<'a> {
    inner: std::sync::MutexGuard<'a, Inner>,
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

impl TraceMemory {
    /// Opens one request's session at `now`, first forgetting traces past the TTL or over
    /// capacity; `remember` says which traces seen for the first time are noted.
    pub fn session(&self, now: Timestamp, remember: Remember) -> Session<'_> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        // Forget what is too old, and what is over capacity.
        while let Some(&(id, at)) = inner.order.front() {
            if seconds_between(at, now) > TTL_SECONDS || inner.order.len() > CAPACITY {
                inner.order.pop_front();
                if inner.map.get(&id).is_some_and(|&(_, t)| t == at) {
                    inner.map.remove(&id);
                }
            } else {
                break;
            }
        }
        Session {
            inner,
            now,
            remember,
        }
    }

    /// How many traces are held (expired ones go when the next session opens).
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map
            .len()
    }

    /// Whether no trace is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Session<'_> {
    /// The probabilities trace `id` was first judged at, if remembered.
    pub fn get(&self, id: &[u8]) -> Option<Probabilities> {
        let key = <[u8; 16]>::try_from(id).ok()?;
        self.inner
            .map
            .get(&key)
            .filter(|&&(_, at)| seconds_between(at, self.now) <= TTL_SECONDS)
            .map(|&(p, _)| p)
    }

    /// Notes what trace `id` is judged at from now on (a gate dropped its spans: zeros).
    pub fn set(&mut self, id: &[u8; 16], p: Probabilities) {
        self.inner.map.insert(*id, (p, self.now));
        self.inner.order.push_back((*id, self.now));
    }

    /// The probabilities trace `id` is judged at: those it was first judged at, or
    /// `current` (remembered as the session says; `by_log` for a log record's judgement).
    pub fn judge(&mut self, id: &[u8], current: &Probabilities, by_log: bool) -> Probabilities {
        let remember = match self.remember {
            Remember::Always => true,
            Remember::Logs => by_log,
            Remember::Never => false,
        };
        if !remember && self.inner.map.is_empty() {
            return *current;
        }
        if let Some(p) = self.get(id) {
            return p;
        }
        if remember && let Ok(key) = <[u8; 16]>::try_from(id) {
            self.set(&key, *current);
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
        drop(m.session(t0, Remember::Always));
        assert!(m.len() <= CAPACITY + 1, "{}", m.len());
    }
}
