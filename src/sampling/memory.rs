//! The keep probability a trace was first judged at, remembered for a while.
//!
//! Pacing moves keep probabilities every few seconds, and a trace's spans and logs arrive
//! in several requests over a few seconds. Judging each at the probability of its own
//! moment would split traces at every change, and could keep a log whose trace was
//! dropped a second later. So the first time frugal sees a trace (in a span or a log), it
//! notes the probability it was judged at; the trace's later non-priority items are
//! judged at the same one. Consistent sampling then keeps all or none of them, and a
//! log follows its trace exactly.
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

#[derive(Debug, Default)]
struct Inner {
    map: HashMap<[u8; 16], (f64, Timestamp)>,
    order: VecDeque<([u8; 16], Timestamp)>,
}

#[derive(Debug, Default)]
pub struct TraceMemory {
    inner: Mutex<Inner>,
}

/// One request's view of the memory, holding its lock.
pub struct Session<'a> {
    inner: std::sync::MutexGuard<'a, Inner>,
    now: Timestamp,
}

impl TraceMemory {
    pub fn session(&self, now: Timestamp) -> Session<'_> {
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
        Session { inner, now }
    }

    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Session<'_> {
    /// The probability trace `id` was first judged at, if remembered.
    pub fn get(&self, id: &[u8]) -> Option<f64> {
        let key = <[u8; 16]>::try_from(id).ok()?;
        self.inner
            .map
            .get(&key)
            .filter(|&&(_, at)| seconds_between(at, self.now) <= TTL_SECONDS)
            .map(|&(p, _)| p)
    }

    /// The probability for trace `id` now: remembered if it was judged before; otherwise
    /// `current`, remembered when it samples (below 1).
    pub fn judge(&mut self, id: &[u8], current: f64) -> f64 {
        if current < 1.0 {
            self.fix(id, current)
        } else if self.inner.map.is_empty() {
            current
        } else {
            self.get(id).unwrap_or(current)
        }
    }

    /// Overrides what is remembered of trace `id` (a gate dropped its spans: 0).
    pub fn set(&mut self, id: &[u8; 16], p: f64) {
        self.inner.map.insert(*id, (p, self.now));
        self.inner.order.push_back((*id, self.now));
    }

    /// The probability trace `id` is judged at: the one it was first judged at, or
    /// `current` (which is then remembered).
    pub fn fix(&mut self, id: &[u8], current: f64) -> f64 {
        let Ok(key) = <[u8; 16]>::try_from(id) else {
            return current;
        };
        if let Some(&(p, at)) = self.inner.map.get(&key)
            && seconds_between(at, self.now) <= TTL_SECONDS
        {
            return p;
        }
        self.inner.map.insert(key, (current, self.now));
        self.inner.order.push_back((key, self.now));
        current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trace_keeps_its_first_probability_for_a_while() {
        let m = TraceMemory::default();
        let t0: Timestamp = "2026-11-25T00:00:00Z".parse().unwrap();
        let id = [7u8; 16];
        assert_eq!(m.session(t0).fix(&id, 0.5), 0.5);
        let t1 = crate::clock::add(t0, std::time::Duration::from_secs(10));
        assert_eq!(m.session(t1).fix(&id, 0.2), 0.5);
        let t2 = crate::clock::add(t0, std::time::Duration::from_secs(61));
        assert_eq!(m.session(t2).fix(&id, 0.2), 0.2, "forgotten after the TTL");
        assert_eq!(
            m.session(t2).fix(&[1, 2], 0.3),
            0.3,
            "invalid IDs are not remembered"
        );
    }

    #[test]
    fn memory_is_bounded() {
        let m = TraceMemory::default();
        let t0: Timestamp = "2026-11-25T00:00:00Z".parse().unwrap();
        {
            let mut s = m.session(t0);
            for i in 0..(CAPACITY + 500) as u64 {
                let mut id = [0u8; 16];
                id[..8].copy_from_slice(&i.to_be_bytes());
                s.fix(&id, 0.5);
            }
        }
        drop(m.session(t0));
        assert!(m.len() <= CAPACITY + 1, "{}", m.len());
    }
}
