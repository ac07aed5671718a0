//! Pacing under Grafana's per-second ingestion limits (e.g. 500 kB/s of traces): a burst
//! over them is discarded upstream, so frugal holds it back itself. A GCRA limiter from
//! `governor`, in kilobyte cells, running on frugal's clock.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::{Quota, RateLimiter, clock::Clock as _, state::InMemoryState, state::NotKeyed};

use crate::clock::{GovernorClock, SharedClock};

/// Bytes per cell: limits go up to 4 TB/s in u32 cells.
const CELL: u64 = 1000;

/// A per-second ingestion limit (`budgets.<signal>.max_rate`): a bucket of one second's
/// worth of bytes, refilled on frugal's clock. A request that does not fit keeps only its
/// priority items.
pub struct RateGate {
    limiter: RateLimiter<NotKeyed, InMemoryState, GovernorClock, NoOpMiddleware<Nanos>>,
    clock: GovernorClock,
    burst_cells: u32,
    /// Until when a request larger than the burst, which passed when the bucket was full,
    /// is still being paid for: later requests wait, so the average rate holds.
    debt_until: std::sync::Mutex<Option<jiff::Timestamp>>,
}

impl RateGate {
    /// A gate letting `bytes_per_second` through, with a burst of one second's worth (so
    /// `burst_cells` is also the rate in cells a second).
    pub fn new(bytes_per_second: u64, clock: SharedClock) -> Self {
        let cells = u32::try_from(bytes_per_second.div_ceil(CELL))
            .unwrap_or(u32::MAX)
            .max(1);
        let per_second = NonZeroU32::new(cells).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::per_second(per_second);
        let clock = GovernorClock(clock);
        Self {
            limiter: RateLimiter::direct_with_clock(quota, clock.clone()),
            clock,
            burst_cells: cells,
            debt_until: std::sync::Mutex::new(None),
        }
    }

    /// Takes `bytes` if they fit now; otherwise says how long until they would. A request
    /// larger than the burst passes when the bucket is full and leaves the rest as a debt
    /// the following requests wait out.
    pub fn try_take(&self, bytes: u64) -> Result<(), Duration> {
        let mut debt_until = self.debt_until.lock().unwrap_or_else(|e| e.into_inner());
        let now = self.clock.0.now();
        if let Some(until) = *debt_until {
            let left = crate::clock::seconds_between(now, until);
            if left > 0.0 {
                return Err(Duration::from_secs_f64(left));
            }
            *debt_until = None;
        }
        let cells = bytes.div_ceil(CELL).max(1);
        let first = cells.min(u64::from(self.burst_cells)) as u32;
        self.check(first)?;
        if cells > u64::from(first) {
            // The bucket refills while the debt runs, so the debt is the whole request's
            // time at the rate: on average, exactly the rate passes.
            let secs = cells as f64 / f64::from(self.burst_cells);
            *debt_until = Some(crate::clock::add(now, Duration::from_secs_f64(secs)));
        }
        Ok(())
    }

    fn check(&self, cells: u32) -> Result<(), Duration> {
        let n = NonZeroU32::new(cells.max(1)).unwrap_or(NonZeroU32::MIN);
        match self.limiter.check_n(n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(not_until.wait_time_from(self.clock.now())),
            Err(_) => Err(Duration::from_secs(1)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use std::sync::Arc;

    #[test]
    fn holds_bytes_to_the_rate() {
        let clock = Arc::new(ManualClock::new("2026-11-01T00:00:00Z".parse().unwrap()));
        let gate = RateGate::new(500_000, clock.clone());
        assert!(gate.try_take(300_000).is_ok());
        assert!(gate.try_take(200_000).is_ok());
        let wait = gate.try_take(100_000).unwrap_err();
        assert!(
            wait > Duration::from_millis(150) && wait <= Duration::from_millis(250),
            "{wait:?}"
        );
        clock.advance(Duration::from_millis(200));
        assert!(gate.try_take(100_000).is_ok());
        // Over a simulated minute, no more than a minute's worth (plus the burst) passes.
        let mut passed = 0u64;
        for _ in 0..6000 {
            clock.advance(Duration::from_millis(10));
            if gate.try_take(20_000).is_ok() {
                passed += 20_000;
            }
        }
        assert!(passed <= 60 * 500_000 + 500_000, "{passed}");
        assert!(passed >= 59 * 500_000, "{passed}");
    }

    #[test]
    fn requests_larger_than_the_burst_are_paced_too() {
        let clock = Arc::new(ManualClock::new("2026-11-01T00:00:00Z".parse().unwrap()));
        let gate = RateGate::new(500_000, clock.clone());
        // 3 MB batches against 500 kB/s: one every 6 s, not one a second.
        let mut passed = 0u64;
        for _ in 0..600 {
            clock.advance(Duration::from_millis(100));
            if gate.try_take(3_000_000).is_ok() {
                passed += 3_000_000;
            }
        }
        assert!(passed <= 60 * 500_000 + 3_000_000, "{passed}");
        assert!(passed >= 60 * 500_000 - 3_000_000, "{passed}");
    }
}
