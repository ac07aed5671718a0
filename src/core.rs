//! The state a running frugal shares, built in one place ([`Core::build`]) for `serve`,
//! the admin server and `frugal simulate` alike: the policy (swappable), the usage
//! ledger, the pacer and the pacing it publishes, the trace memory, the tail sampler, the
//! per-second rate gates, the in-flight byte budget, frugal's own metrics, the upstreams and the clock.
//!
//! The request path ([`crate::ingest`]) reads it; the app's tasks drive it
//! ([`Core::recompute`], [`Core::roll_and_flush`]); the simulator drives the same methods
//! on a manual clock.

use std::sync::{Arc, Mutex};

use arc_swap::{ArcSwap, ArcSwapOption};

use crate::budget::rate::RateGate;
use crate::budget::series::SeriesAdmission;
use crate::budget::streams::StreamGates;
use crate::budget::{BudgetState, Pacer, Pacing};
use crate::clock::SharedClock;
use crate::forwarder::Export;
use crate::ingest::InFlight;
use crate::ledger::Ledger;
use crate::model::PerSignal;
use crate::period::Period;
use crate::policy::{Policy, Problem};
use crate::sampling::memory::TraceMemory;
use crate::stats::Stats;
use crate::store::series::SeriesStore;
use crate::store::{StoreError, UsageStore};

/// The per-second gate of each signal with a `max_rate`.
pub type RateGates = PerSignal<Option<Arc<RateGate>>>;

/// Everything the request path, the admin API and the background tasks share.
pub struct Core {
    policy: ArcSwap<Policy>,
    /// The period's usage counters.
    pub ledger: Arc<Ledger>,
    /// The pacing in force (keep probabilities per signal and class).
    pub pacing: BudgetState,
    pacer: Mutex<Pacer>,
    /// The probabilities recent traces were first judged at, and (with tail sampling)
    /// each trace's decision.
    pub traces: TraceMemory,
    /// The tail sampler, when the policy has `traces.tail` ([`Core::with_tail`]).
    pub tail: Option<Arc<crate::tail::Tail>>,
    /// Which series exist, admission under the series limit, the minimum interval.
    pub series: SeriesAdmission,
    /// Per-stream limits of Loki pushes (`logs.stream_limit`; rebuilt when a reload
    /// changes it).
    pub streams: ArcSwapOption<StreamGates>,
    /// Per-second ingestion limits (`budgets.<signal>.max_rate`; a signal's gate is
    /// rebuilt when a reload changes its rate).
    pub rate_gates: ArcSwap<RateGates>,
    /// The memory requests in flight may hold together (`ingest.max_in_flight`), taken
    /// by the receivers as bodies arrive and are decoded.
    pub in_flight: InFlight,
    /// frugal's own metrics.
    pub stats: Arc<Stats>,
    /// Where data goes.
    pub upstream: Arc<dyn Export>,
    /// The one door to time.
    pub clock: SharedClock,
}

impl Core {
    /// Opens the ledger on `store` at the clock's time and computes the first pacing.
    pub fn build(
        policy: Arc<Policy>,
        store: Arc<dyn UsageStore>,
        upstream: Arc<dyn Export>,
        clock: SharedClock,
        stats: Arc<Stats>,
    ) -> Result<Core, StoreError> {
        let ledger = Arc::new(Ledger::open(store, policy.period.clone(), clock.now())?);
        let pacer = Pacer::new(&policy, &ledger.period());
        let rate_gates = PerSignal::from_fn(|s| rate_gate(&policy, s, &clock));
        let in_flight = InFlight::new(policy.ingest.max_in_flight_bytes, stats.clone());
        stats
            .in_flight_limit_bytes
            .set(i64::try_from(in_flight.limit_bytes()).unwrap_or(i64::MAX));
        let core = Core {
            in_flight,
            policy: ArcSwap::new(policy.clone()),
            ledger,
            pacing: BudgetState::default(),
            pacer: Mutex::new(pacer),
            traces: TraceMemory::default(),
            tail: None,
            series: SeriesAdmission::new(&policy.metrics),
            streams: ArcSwapOption::from(
                policy
                    .logs
                    .stream_limit
                    .map(|l| Arc::new(StreamGates::new(l))),
            ),
            rate_gates: ArcSwap::from_pointee(rate_gates),
            stats,
            upstream,
            clock,
        };
        core.recompute();
        Ok(core)
    }

    /// Adds the tail sampler on `spool` when the policy has `traces.tail` (the trace
    /// memory then holds its decisions, sized by `decision_cache` and `decision_ttl`);
    /// otherwise returns the core as it is.
    pub fn with_tail(mut self, spool: Arc<dyn crate::store::Spool>) -> prometheus::Result<Core> {
        let Some(settings) = self.policy().traces.tail.clone() else {
            return Ok(self);
        };
        self.traces = TraceMemory::new(settings.decision_cache, settings.decision_ttl);
        let tail = crate::tail::Tail::new(settings, spool, &self.stats)?;
        self.tail = Some(Arc::new(tail));
        Ok(self)
    }

    /// The policy in force.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.load_full()
    }

    /// Puts a validated `new` policy in force (a reload), keeping what the running frugal
    /// holds from its start (see [`crate::reload::effective`]): returns the settings held
    /// back that way, or every problem of the mix (then nothing changes). The period's
    /// counters, the trace memory and the series state are untouched; gates whose limit
    /// changed are rebuilt (a rebuilt gate starts full); pacing follows at once (one
    /// recompute).
    pub fn apply_policy(&self, new: Policy) -> Result<Vec<&'static str>, Vec<Problem>> {
        let old = self.policy();
        let (new, held) = crate::reload::effective(&old, new)?;
        let new = Arc::new(new);
        let gates = self.rate_gates.load_full();
        let changed = |s| {
            let rate = |p: &Policy| p.budgets.bytes(s).and_then(|b| b.max_rate);
            rate(&old) != rate(&new)
        };
        if crate::model::Signal::ALL.into_iter().any(changed) {
            self.rate_gates.store(Arc::new(PerSignal::from_fn(|s| {
                if changed(s) {
                    rate_gate(&new, s, &self.clock)
                } else {
                    gates[s].clone()
                }
            })));
        }
        if old.logs.stream_limit != new.logs.stream_limit {
            self.streams
                .store(new.logs.stream_limit.map(|l| Arc::new(StreamGates::new(l))));
        }
        self.policy.store(new);
        self.recompute();
        Ok(held)
    }

    /// Recomputes the keep probabilities at the clock's time and puts them in force.
    pub fn recompute(&self) -> Arc<Pacing> {
        let now = self.clock.now();
        let policy = self.policy();
        let pacing =
            self.pacer
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .tick(now, &policy, &self.ledger);
        self.pacing.publish(pacing);
        self.pacing.load()
    }

    /// The series state's upkeep (blocking: call it off the async workers, at least once
    /// a minute): at each new minute moves the per-minute figures on and forgets series
    /// past the admission window (and what the minimum interval kept of them); then writes
    /// what changed to `store`. Returns how many series were written.
    pub fn series_upkeep(&self, store: Option<&dyn SeriesStore>) -> Result<usize, StoreError> {
        let now = self.clock.now();
        let s = &self.series;
        s.measure(now.as_millisecond());
        // Forgetting scans every series: once a minute.
        if s.tick(now.as_second().div_euclid(60)) {
            let forgotten = s.tracker.expire(now);
            if let Some(thinner) = &s.thinner {
                let window = self.policy().metrics.admission_window;
                let window = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
                thinner.expire(now.as_millisecond().saturating_sub(window));
            }
            if forgotten > 0 {
                tracing::debug!(forgotten, "series past the admission window forgotten");
            }
        }
        match store {
            Some(store) => s.tracker.persist(store),
            None => Ok(0),
        }
    }

    /// Starts a new period if the clock has passed the current one's end, then writes the
    /// counters to the store (blocking I/O: call it off the async workers). Returns the new
    /// period when one began.
    pub fn roll_and_flush(&self) -> Result<Option<Period>, StoreError> {
        let now = self.clock.now();
        let rolled = self.ledger.roll(now)?;
        if let Some(p) = rolled {
            tracing::info!(start = %p.start, end = %p.end, "a new budget period began");
        }
        self.ledger.flush(now)?;
        Ok(rolled)
    }
}

/// The per-second gate of `signal` under `policy`, if it sets a `max_rate`.
fn rate_gate(
    policy: &Policy,
    signal: crate::model::Signal,
    clock: &SharedClock,
) -> Option<Arc<RateGate>> {
    policy
        .budgets
        .bytes(signal)
        .and_then(|b| b.max_rate)
        .map(|r| Arc::new(RateGate::new(r, clock.clone())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::controller::PacingState;
    use crate::clock::ManualClock;
    use crate::model::Signal;
    use crate::testkit::{core, policy};

    const BUDGETS: &str =
        "budgets: {traces: {limit: 1GB, max_rate: 1MB/s}, logs: {limit: 1GB, max_rate: 1MB/s}}";

    #[test]
    fn a_reload_keeps_the_counters_rebuilds_only_changed_gates_and_paces_at_once() {
        let clock = Arc::new(ManualClock::new("2026-12-10T00:00:00Z".parse().unwrap()));
        let (core, _) = core(policy(BUDGETS), clock);
        core.ledger.set_used(Signal::Traces, 600_000_000);
        let before = core.rate_gates.load_full();
        let period = core.ledger.period();
        assert_eq!(
            core.pacing.load().signal(Signal::Traces).state,
            PacingState::Unconstrained
        );

        let held = core
            .apply_policy(policy(
                "budgets: {traces: {limit: 500MB, max_rate: 2MB/s}, logs: {limit: 1GB, max_rate: 1MB/s}}\nstore: {flush_interval: 2s}",
            ))
            .unwrap();
        assert_eq!(held, ["store.flush_interval"]);
        // The period and its counters as they were.
        assert_eq!(core.ledger.used(Signal::Traces), 600_000_000);
        assert_eq!(core.ledger.period(), period);
        // The traces gate follows its new rate; the logs gate (unchanged) keeps its state.
        let after = core.rate_gates.load_full();
        let same = |s: Signal| match (&before[s], &after[s]) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        assert!(!same(Signal::Traces) && same(Signal::Logs));
        // Pacing already follows the new limit (600 MB used of 500 MB): nothing more goes.
        assert_eq!(
            core.policy().budgets.traces.as_ref().unwrap().limit,
            500_000_000
        );
        assert_eq!(
            core.pacing.load().signal(Signal::Traces).state,
            PacingState::Stopped
        );
        // The restart-only setting kept its running value.
        assert_eq!(
            core.policy().store.flush_interval,
            policy("").store.flush_interval
        );

        // A mix that cannot hold is refused whole: the policy in force stays.
        let problems = core
            .apply_policy(policy(
                "ingest: {max_request_size: 200MiB, max_in_flight: 400MiB}",
            ))
            .unwrap_err();
        assert_eq!(problems[0].path, "ingest.max_request_size");
        assert_eq!(
            core.policy().budgets.traces.as_ref().unwrap().limit,
            500_000_000
        );
        assert!(Arc::ptr_eq(&core.rate_gates.load_full(), &after));
    }

    #[test]
    fn stream_gates_follow_logs_stream_limit() {
        let clock = Arc::new(ManualClock::new("2026-12-10T00:00:00Z".parse().unwrap()));
        let (core, _) = core(policy(""), clock);
        assert!(core.streams.load().is_none());
        core.apply_policy(policy("logs: {stream_limit: {max_rate: 1kB/s}}"))
            .unwrap();
        let gates = core.streams.load_full().unwrap();
        // Unchanged: the same gates (their per-stream state kept).
        core.apply_policy(policy(
            "logs: {stream_limit: {max_rate: 1kB/s}}\nshadow: true",
        ))
        .unwrap();
        assert!(Arc::ptr_eq(&gates, &core.streams.load_full().unwrap()));
        core.apply_policy(policy("")).unwrap();
        assert!(core.streams.load().is_none());
    }
}
