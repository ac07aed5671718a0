//! Pacing each period's budget.
//!
//! - [`active_series`]: which metric series exist and how many are active per window;
//! - [`controller`]: the pure computation of keep probabilities;
//! - [`forecast`]: demand forecasts from the incoming rates;
//! - [`rate`]: the per-second ingestion limit (governor);
//! - [`Pacer`]: the state between recomputes — feeds the forecasts from the ledger's
//!   offered counters, runs the controller, and publishes a [`Pacing`] snapshot that the
//!   ingest path reads without locking.

pub mod active_series;
pub mod controller;
pub mod forecast;
pub mod rate;
pub mod series;
pub mod streams;

use std::sync::Arc;

use arc_swap::ArcSwap;
use jiff::Timestamp;
use serde::Serialize;

use crate::ledger::Ledger;
use crate::model::{Class, PerClass, PerSignal, Signal};
use crate::period::Period;
use crate::policy::Policy;
use crate::sampling::{ClassProbabilities, KEEP_ALL};
use controller::{Demand, PacingState};
use forecast::Forecast;

/// The pacing of one signal, as last computed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SignalPacing {
    /// Keep probability per class.
    pub probabilities: ClassProbabilities,
    /// Where pacing stands.
    pub state: PacingState,
    /// Units expected at the period's end.
    pub projected_used: f64,
    /// Units left before the target.
    pub allowance: f64,
    /// Incoming (pre-sampling) demand per class, units per second.
    pub demand: PerClass<Demand>,
    /// Forwarded units per second (short window).
    pub forwarded_rate: f64,
}

impl SignalPacing {
    /// Nothing sampled, nothing known.
    pub const UNCONSTRAINED: SignalPacing = SignalPacing {
        probabilities: KEEP_ALL,
        state: PacingState::Unconstrained,
        projected_used: 0.0,
        allowance: f64::INFINITY,
        demand: PerClass::new(
            [Demand {
                long: 0.0,
                short: 0.0,
            }; Class::ALL.len()],
        ),
        forwarded_rate: 0.0,
    };
}

/// What the ingest path reads: per signal, the current pacing.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Pacing {
    /// Each signal's pacing (unconstrained for a signal without a byte budget).
    pub signals: PerSignal<SignalPacing>,
    /// When it was computed (`None` before the first recompute).
    pub updated: Option<Timestamp>,
}

impl Pacing {
    /// Before the first recompute: nothing is sampled.
    pub const UNCONSTRAINED: Pacing = Pacing {
        signals: PerSignal::new([SignalPacing::UNCONSTRAINED; Signal::ALL.len()]),
        updated: None,
    };

    /// One signal's pacing.
    pub fn signal(&self, s: Signal) -> &SignalPacing {
        &self.signals[s]
    }
}

/// The published pacing, shared by the pacer (writer) and the ingest path (readers).
pub struct BudgetState {
    current: ArcSwap<Pacing>,
}

impl Default for BudgetState {
    fn default() -> Self {
        Self {
            current: ArcSwap::from_pointee(Pacing::UNCONSTRAINED),
        }
    }
}

impl BudgetState {
    /// The pacing in force.
    pub fn load(&self) -> Arc<Pacing> {
        self.current.load_full()
    }

    /// Puts new pacing in force.
    pub fn publish(&self, p: Pacing) {
        self.current.store(Arc::new(p));
    }
}

struct SignalPacer {
    signal: Signal,
    forecasts: PerClass<Forecast>,
    forwarded: Forecast,
    last_offered: PerClass<u64>,
    last_sent: u64,
    previous: Option<(Timestamp, ClassProbabilities)>,
    period: Option<Period>,
}

impl SignalPacer {
    fn new(signal: Signal, bin_seconds: f64, short_seconds: f64) -> Self {
        let f = || Forecast::new(bin_seconds, short_seconds);
        Self {
            signal,
            forecasts: PerClass::from_fn(|_| f()),
            forwarded: f(),
            last_offered: PerClass::default(),
            last_sent: 0,
            previous: None,
            period: None,
        }
    }

    fn tick(&mut self, now: Timestamp, policy: &Policy, ledger: &Ledger) -> SignalPacing {
        let usage = ledger.usage(self.signal);
        let offered = usage.offered.map(|_, w| w.units);
        let period = ledger.period();
        if self.period != Some(period) {
            // A new period (or the first tick): counters start from what the ledger holds.
            let first = self.period.is_none();
            self.period = Some(period);
            self.previous = None;
            self.last_offered = offered;
            self.last_sent = usage.sent.units;
            // Counted since the period began, or since frugal first counted in it (the
            // month it was installed).
            let since = ledger.counting_since().max(period.start);
            let elapsed = crate::clock::seconds_between(since, now).max(0.0);
            let day = period.length_seconds() / 30.0;
            for (class, f) in self.forecasts.iter_mut() {
                f.observe(now, 0.0);
                // After a restart mid-period, the period's average is the best first guess.
                if first && elapsed > period.length_seconds() / 720.0 {
                    f.warm_start(offered[class] as f64 / elapsed, elapsed / day);
                }
            }
            self.forwarded.observe(now, 0.0);
        } else {
            for (class, f) in self.forecasts.iter_mut() {
                f.observe(
                    now,
                    offered[class].saturating_sub(self.last_offered[class]) as f64,
                );
            }
            self.last_offered = offered;
            self.forwarded
                .observe(now, usage.sent.units.saturating_sub(self.last_sent) as f64);
            self.last_sent = usage.sent.units;
        }
        let demand = self.forecasts.map(|_, f| Demand {
            long: f.long(),
            short: f.short(),
        });
        let Some(budget) = policy.budgets.bytes(self.signal) else {
            return SignalPacing {
                demand,
                forwarded_rate: self.forwarded.short(),
                ..SignalPacing::UNCONSTRAINED
            };
        };
        let input = controller::Input {
            now,
            period,
            budget,
            used: usage.used,
            demand,
            previous: self.previous,
            min_probability: match self.signal {
                Signal::Traces => policy.traces.sampling.min_probability,
                _ => 0.0,
            },
            history: self
                .forecasts
                .iter()
                .filter(|(c, _)| demand[*c].long > 0.0 || demand[*c].short > 0.0)
                .map(|(_, f)| f.history())
                .fold(1.0, f64::min),
        };
        let mut out = controller::compute(&input);
        if !policy.pacing.enabled && out.state == PacingState::Pacing {
            out.probabilities = KEEP_ALL;
            out.state = PacingState::Unconstrained;
        }
        self.previous = Some((now, out.probabilities));
        SignalPacing {
            probabilities: out.probabilities,
            state: out.state,
            projected_used: out.projected_used,
            allowance: out.allowance,
            demand,
            forwarded_rate: self.forwarded.short(),
        }
    }
}

/// Recomputes pacing from the ledger; the core calls [`Pacer::tick`] every
/// `pacing.recompute_every` (the app's pacer task, or the simulator on its virtual clock).
pub struct Pacer {
    signals: PerSignal<SignalPacer>,
}

impl Pacer {
    /// A pacer whose windows are scaled to `period`'s length.
    pub fn new(policy: &Policy, period: &Period) -> Self {
        let len = period.length_seconds();
        let recompute = policy.pacing.recompute_every.as_secs_f64();
        let bin = (len / 720.0).max(recompute).max(1.0);
        let short = (len / 8640.0).max(3.0 * recompute);
        Self {
            signals: PerSignal::from_fn(|s| SignalPacer::new(s, bin, short)),
        }
    }

    /// Recomputes every signal's pacing at `now`.
    pub fn tick(&mut self, now: Timestamp, policy: &Policy, ledger: &Ledger) -> Pacing {
        Pacing {
            signals: PerSignal::from_fn(|s| self.signals[s].tick(now, policy, ledger)),
            updated: Some(now),
        }
    }
}
