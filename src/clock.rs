//! The one door through which frugal reads time.
//!
//! Production uses [`SystemClock`]; the simulator and the tests use [`ManualClock`] and move
//! it themselves, so they drive exactly the code that runs in production. Nothing else in
//! the crate calls `SystemTime::now`, `Instant::now` or `Timestamp::now` (clippy's
//! `disallowed-methods` enforces it). Sleeping is left to tokio, whose time tests pause.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use jiff::Timestamp;

/// A source of wall-clock time.
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> Timestamp;
}

/// A shared clock handle, as passed around the crate.
pub type SharedClock = Arc<dyn Clock>;

/// The real time of day.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // the one permitted call
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A clock that only moves when told to: the simulator's virtual month, the tests' time.
#[derive(Debug)]
pub struct ManualClock {
    nanos: AtomicI64,
}

impl ManualClock {
    /// A clock standing at `start`.
    pub fn new(start: Timestamp) -> Self {
        Self {
            nanos: AtomicI64::new(nanos_of(start)),
        }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let by = i64::try_from(by.as_nanos()).unwrap_or(i64::MAX);
        self.nanos.fetch_add(by, Ordering::SeqCst);
    }

    /// Puts the clock at `to` (which may be earlier: tests of clock steps use that).
    pub fn set(&self, to: Timestamp) {
        self.nanos.store(nanos_of(to), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        let nanos = self.nanos.load(Ordering::SeqCst);
        Timestamp::from_nanosecond(i128::from(nanos)).unwrap_or(Timestamp::UNIX_EPOCH)
    }
}

fn nanos_of(t: Timestamp) -> i64 {
    i64::try_from(t.as_nanosecond()).unwrap_or(i64::MAX)
}

/// A clock that follows tokio's time from a starting timestamp, so tests that pause tokio
/// (`tokio::time::pause`, `start_paused`) move frugal's clock and tokio's timers together.
#[derive(Debug)]
pub struct TokioClock {
    start: Timestamp,
    base: tokio::time::Instant,
}

impl TokioClock {
    /// A clock reading `start` now, advancing with tokio's time.
    #[allow(clippy::disallowed_methods)] // reads tokio's (pausable) time, not the wall clock
    pub fn new(start: Timestamp) -> Self {
        Self {
            start,
            base: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    #[allow(clippy::disallowed_methods)] // reads tokio's (pausable) time, not the wall clock
    fn now(&self) -> Timestamp {
        add(
            self.start,
            tokio::time::Instant::now().duration_since(self.base),
        )
    }
}

/// Adapts a [`Clock`] to governor's clock trait, so the per-second rate limits run on the
/// same time as everything else.
#[derive(Clone)]
pub struct GovernorClock(pub SharedClock);

impl governor::clock::Clock for GovernorClock {
    type Instant = governor::nanos::Nanos;

    fn now(&self) -> Self::Instant {
        let nanos = self.0.now().as_nanosecond().max(0);
        governor::nanos::Nanos::from(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

/// Seconds between two timestamps as a float (negative when `to` is earlier).
pub fn seconds_between(from: Timestamp, to: Timestamp) -> f64 {
    let d = to.as_nanosecond() - from.as_nanosecond();
    d as f64 / 1e9
}

/// `t + d`, saturating at the end of time.
pub fn add(t: Timestamp, d: Duration) -> Timestamp {
    let nanos = t.as_nanosecond().saturating_add(d.as_nanos() as i128);
    Timestamp::from_nanosecond(nanos).unwrap_or(Timestamp::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_tokio_clock_follows_paused_time() {
        let start: Timestamp = "2026-11-01T00:00:00Z".parse().unwrap();
        let clock = TokioClock::new(start);
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert_eq!(clock.now(), add(start, Duration::from_secs(3600)));
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let start: Timestamp = "2026-11-01T00:00:00Z".parse().unwrap();
        let clock = ManualClock::new(start);
        assert_eq!(clock.now(), start);
        clock.advance(Duration::from_secs(90));
        assert_eq!(
            clock.now(),
            "2026-11-01T00:01:30Z".parse::<Timestamp>().unwrap()
        );
        use governor::clock::Clock as _;
        let g = GovernorClock(Arc::new(clock));
        let a = g.now();
        assert_eq!(u64::from(a), 1_793_491_290_000_000_000);
    }
}
