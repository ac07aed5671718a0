//! The budget controller: from the period, the usage so far, the budget and the demand
//! forecast, the keep probability of each priority class. Pure logic: no I/O, `now` is an
//! argument, and the same inputs always give the same output.
//!
//! The method (budget pacing, as online advertising paces a campaign's budget):
//! - allowance `A = target * (limit - reserved) - used`, time left `tau`;
//! - each class's expected demand for the rest of the period is
//!   `D = long * tau + max(0, short - long) * min(tau, H)`: the long-window rate for the
//!   time left, plus the burst the short window sees, assumed to last `H` more (a quarter
//!   of a scaled day: 6 hours of a 30-day month). Near the end (`tau < H`) this is simply
//!   the higher of the two rates: conservative where overshooting is close;
//! - early in the period forecasts are least certain and there is most time to correct,
//!   so sampling starts only when demand exceeds the allowance by a margin that falls
//!   from 10% at the start to 0 at the end (`m = 1 + 0.1 * tau / T`, plus 0.2 until the
//!   forecasts have seen a whole scaled day); the margin fades out as demand grows to
//!   twice the allowance, so a real overload is paced at once;
//! - classes spend in order: `p_priority = min(1, A' / D_priority)` (where `A'` runs to
//!   the limit with `keep_priority`, to the target with `drop_all`), then normal gets
//!   `clamp((A - p_priority * D_priority) / D_normal, floor, 1)`, then bulk (never more
//!   than normal);
//! - with a per-second limit (`max_rate`), the non-priority classes are scaled so the kept
//!   rate stays under 90% of it;
//! - the probability moves at most 2x per scaled minute (1/43200 of the period: a minute of
//!   a 30-day month), except at the hard stops;
//! - past the target, only priority traffic (`keep_priority`) or nothing (`drop_all`); at
//!   the limit, nothing. The ingest path enforces these per request, atomically; the
//!   controller's probabilities say the same thing between recomputes.

use jiff::Timestamp;
use serde::Serialize;

use crate::clock::seconds_between;
use crate::model::{Class, PerClass};
use crate::period::Period;
use crate::policy::{AtLimit, ByteBudget};
use crate::sampling::{ClassProbabilities, KEEP_ALL};

/// The demand forecast of one class, in billable units per second.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Demand {
    /// The long window: the median hourly rate over the last days.
    pub long: f64,
    /// The short window: the rate over the last scaled minutes.
    pub short: f64,
}

/// Where pacing stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PacingState {
    /// Demand fits the budget: nothing is sampled.
    Unconstrained,
    /// Sampling to end the period at the target.
    Pacing,
    /// Past the target: only priority items are sent.
    PriorityOnly,
    /// At the limit (or past the target with `drop_all`): nothing is sent.
    Stopped,
}

impl PacingState {
    /// Every state.
    pub const ALL: [PacingState; 4] = [
        PacingState::Unconstrained,
        PacingState::Pacing,
        PacingState::PriorityOnly,
        PacingState::Stopped,
    ];

    /// The state's name (a metric label value).
    pub fn as_str(self) -> &'static str {
        match self {
            PacingState::Unconstrained => "unconstrained",
            PacingState::Pacing => "pacing",
            PacingState::PriorityOnly => "priority_only",
            PacingState::Stopped => "stopped",
        }
    }
}

/// Everything the controller looks at.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    /// The time of the computation.
    pub now: Timestamp,
    /// The current period.
    pub period: Period,
    /// The budget being paced.
    pub budget: &'a ByteBudget,
    /// Units used so far this period.
    pub used: u64,
    /// Forecast demand per class.
    pub demand: PerClass<Demand>,
    /// The probabilities last set, and when.
    pub previous: Option<(Timestamp, ClassProbabilities)>,
    /// The lowest probability the normal and bulk classes get while budget remains.
    pub min_probability: f64,
    /// How much of a scaled day of history the forecasts rest on (0 to 1): until a whole
    /// day has been seen, a daily rhythm can mislead them.
    pub history: f64,
}

/// What the controller decided.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Output {
    /// Keep probability per class.
    pub probabilities: ClassProbabilities,
    /// Where pacing stands.
    pub state: PacingState,
    /// Units expected at the end of the period at these probabilities.
    pub projected_used: f64,
    /// Units that may still be spent before the target.
    pub allowance: f64,
}

/// How much forecast demand may exceed the allowance, at the start of a period, before
/// anything is sampled (falling to 0 at the end).
pub const FORECAST_MARGIN: f64 = 0.1;

/// The extra margin while the forecasts have seen less than a scaled day.
pub const FIRST_DAY_MARGIN: f64 = 0.2;

/// A quarter of a scaled day (6 hours of a 30-day month): how much longer a burst is
/// assumed to last.
pub fn burst_horizon_seconds(period: &Period) -> f64 {
    period.length_seconds() / 120.0
}

/// A scaled minute: the time over which the probability may change 2x.
pub fn smoothing_seconds(period: &Period) -> f64 {
    period.length_seconds() / 43_200.0
}

/// The keep probability for an allowance/demand ratio `x`, with the forecast margin:
/// 1 while demand is within the margin of the allowance, `x` itself once demand is twice
/// the allowance or more, and a straight line between (so there is no jump).
fn with_margin(x: f64, margin: f64) -> f64 {
    if margin <= 1.0 {
        return x.min(1.0);
    }
    let full = 1.0 / margin;
    if x >= full {
        return 1.0;
    }
    let blend = ((x - 0.5) / (full - 0.5)).clamp(0.0, 1.0);
    (x * (1.0 + (margin - 1.0) * blend)).min(1.0)
}

/// The keep probabilities that end the period at the target (see ARCHITECTURE.md).
pub fn compute(input: &Input<'_>) -> Output {
    use Class::{Bulk, Normal, Priority};
    let b = input.budget;
    let limit = b.effective_limit() as f64;
    let target = b.target_bytes() as f64;
    let used = input.used as f64;
    let tau = input.period.remaining_seconds(input.now);
    let h = burst_horizon_seconds(&input.period).min(tau);
    let expected = input
        .demand
        .map(|_, d| d.long.max(0.0) * tau + (d.short - d.long).max(0.0) * h);
    let rate_now = input.demand.map(|_, d| d.long.max(d.short).max(0.0));
    let none = PerClass::from_fn(|_| 0.0);

    if used >= limit {
        return Output {
            probabilities: none,
            state: PacingState::Stopped,
            projected_used: used,
            allowance: 0.0,
        };
    }
    if used >= target {
        return match b.at_limit {
            AtLimit::DropAll => Output {
                probabilities: none,
                state: PacingState::Stopped,
                projected_used: used,
                allowance: 0.0,
            },
            AtLimit::KeepPriority => Output {
                probabilities: PerClass::new([1.0, 0.0, 0.0]),
                state: PacingState::PriorityOnly,
                projected_used: (used + expected[Priority]).min(limit),
                allowance: 0.0,
            },
        };
    }

    let allowance = target - used;
    // Forecasts are least certain early in the period, where there is also the most time
    // to correct: demand must exceed the allowance by a margin shrinking from 10% at the
    // start to nothing at the end before anything is sampled.
    let mut margin = 1.0 + FORECAST_MARGIN * (tau / input.period.length_seconds()).clamp(0.0, 1.0);
    if input.history < 1.0 {
        margin += FIRST_DAY_MARGIN;
    }
    // Priority items may spend up to the limit with keep_priority (the others stop at the
    // target), so they keep probability 1 until the limit itself is close.
    let priority_allowance = match b.at_limit {
        AtLimit::KeepPriority => limit - used,
        AtLimit::DropAll => allowance,
    };
    let mut p = KEEP_ALL;
    let d = expected[Priority];
    if d > 0.0 {
        p[Priority] = (priority_allowance / d).clamp(0.0, 1.0);
    }
    let mut left = (allowance - p[Priority] * d).max(0.0);
    // Normal spends what priority left; bulk never gets more than normal.
    for (class, ceiling_class) in [(Normal, None), (Bulk, Some(Normal))] {
        let d = expected[class];
        let ceiling = ceiling_class.map_or(1.0, |c| p[c]);
        p[class] = if d <= 0.0 {
            ceiling
        } else {
            with_margin(left / d, margin).clamp(input.min_probability.min(ceiling), ceiling)
        };
        left = (left - p[class] * d).max(0.0);
    }

    if let Some(max_rate) = b.max_rate {
        let cap = 0.9 * max_rate as f64;
        let priority_rate = p[Priority] * rate_now[Priority];
        let rest_rate = p[Normal] * rate_now[Normal] + p[Bulk] * rate_now[Bulk];
        if rest_rate > 0.0 && priority_rate + rest_rate > cap {
            let scale = ((cap - priority_rate).max(0.0) / rest_rate).clamp(0.0, 1.0);
            p[Normal] *= scale;
            p[Bulk] *= scale;
        }
    }

    // The floor, after the rate limit's scaling (the rate gate still holds bursts).
    let floor = input.min_probability;
    if floor > 0.0 {
        p[Normal] = p[Normal].max(floor);
        p[Bulk] = p[Bulk].max(floor.min(p[Normal]));
    }

    if let Some((at, prev)) = input.previous {
        let dt = seconds_between(at, input.now).max(0.0);
        let factor = 2f64.powf(dt / smoothing_seconds(&input.period).max(1e-9));
        for (c, p) in p.iter_mut() {
            // From a stop (0), moves restart from the computed value.
            if prev[c] > 0.0 {
                *p = p.clamp(prev[c] / factor, (prev[c] * factor).min(1.0));
            }
        }
    }

    let unconstrained = p.values().all(|&x| x >= 1.0);
    let projected_used = used + p.iter().map(|(c, p)| p * expected[c]).sum::<f64>();
    Output {
        probabilities: p,
        state: if unconstrained {
            PacingState::Unconstrained
        } else {
            PacingState::Pacing
        },
        projected_used,
        allowance,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(at_limit: AtLimit) -> ByteBudget {
        ByteBudget {
            limit: 50_000_000_000,
            reserved: 0,
            target: 0.95,
            max_rate: None,
            at_limit,
        }
    }

    fn month() -> Period {
        Period {
            start: "2026-11-01T00:00:00Z".parse().unwrap(),
            end: "2026-12-01T00:00:00Z".parse().unwrap(),
        }
    }

    /// Even-pace rate of the target over November.
    const PACE: f64 = 0.95 * 50e9 / (30.0 * 86400.0);

    fn input(b: &ByteBudget, used: u64, demand: [f64; 3]) -> Input<'_> {
        Input {
            now: "2026-11-16T00:00:00Z".parse().unwrap(),
            period: month(),
            budget: b,
            used,
            demand: PerClass::new(demand.map(|r| Demand { long: r, short: r })),
            previous: None,
            min_probability: 0.0,
            history: 1.0,
        }
    }

    #[test]
    fn below_the_target_nothing_is_sampled() {
        let b = budget(AtLimit::KeepPriority);
        let out = compute(&input(
            &b,
            20_000_000_000,
            [0.1 * PACE, 0.5 * PACE, 0.2 * PACE],
        ));
        assert_eq!(out.probabilities, KEEP_ALL);
        assert_eq!(out.state, PacingState::Unconstrained);
    }

    #[test]
    fn priority_spends_first_and_the_rest_share_what_is_left() {
        let b = budget(AtLimit::KeepPriority);
        // Half the period left, half the target left: the even pace is PACE.
        let half = (0.95 * 50e9 / 2.0) as u64;
        let out = compute(&input(&b, half, [0.2 * PACE, 1.6 * PACE, 0.0]));
        assert_eq!(out.probabilities[Class::Priority], 1.0);
        assert!(
            (out.probabilities[Class::Normal] - 0.5).abs() < 1e-9,
            "{:?}",
            out
        );
        assert_eq!(out.state, PacingState::Pacing);
        assert!((out.projected_used - 0.95 * 50e9).abs() < 1e3);
        // Bulk never gets more than normal.
        let out = compute(&input(&b, half, [0.0, 2.0 * PACE, 0.01 * PACE]));
        assert!(out.probabilities[Class::Bulk] <= out.probabilities[Class::Normal]);
    }

    #[test]
    fn hard_stops_at_target_and_limit() {
        let b = budget(AtLimit::KeepPriority);
        let out = compute(&input(&b, 48_000_000_000, [PACE; 3]));
        assert_eq!(out.probabilities, PerClass::new([1.0, 0.0, 0.0]));
        assert_eq!(out.state, PacingState::PriorityOnly);
        let out = compute(&input(&b, 50_000_000_000, [PACE; 3]));
        assert_eq!(out.probabilities, PerClass::new([0.0; 3]));
        let b = budget(AtLimit::DropAll);
        let out = compute(&input(&b, 48_000_000_000, [PACE; 3]));
        assert_eq!(out.state, PacingState::Stopped);
    }

    #[test]
    fn a_burst_is_assumed_to_last_a_quarter_of_a_scaled_day_more() {
        let b = budget(AtLimit::KeepPriority);
        let half = (0.95 * 50e9 / 2.0) as u64;
        let mut i = input(&b, half, [0.0, 2.0 * PACE, 0.0]);
        let steady = compute(&i).probabilities[Class::Normal];
        i.demand[Class::Normal].short = 40.0 * PACE;
        let burst = compute(&i).probabilities[Class::Normal];
        // 15 days of 2x plus a quarter day of +38x: 39.5 pace-days for 15 of allowance.
        assert!((burst - 15.0 / 39.5).abs() < 1e-6, "{burst}");
        assert!(burst < steady && burst > steady / 4.0);
    }

    #[test]
    fn probabilities_move_at_most_twice_per_scaled_minute() {
        let b = budget(AtLimit::KeepPriority);
        let half = (0.95 * 50e9 / 2.0) as u64;
        let mut i = input(&b, half, [0.0, 10.0 * PACE, 0.0]);
        let now = i.now;
        i.previous = Some((
            crate::clock::add(now, std::time::Duration::ZERO)
                .checked_sub(jiff::SignedDuration::from_secs(60))
                .unwrap(),
            KEEP_ALL,
        ));
        let out = compute(&i);
        assert!(
            (out.probabilities[Class::Normal] - 0.5).abs() < 1e-9,
            "{:?}",
            out.probabilities
        );
    }

    #[test]
    fn the_margin_is_continuous_and_fades_with_overload() {
        let m = 1.1;
        assert_eq!(with_margin(1.0 / 1.1, m), 1.0);
        assert_eq!(with_margin(0.95, m), 1.0);
        assert_eq!(with_margin(0.5, m), 0.5);
        assert_eq!(with_margin(0.2, m), 0.2);
        let mut prev = 0.0;
        for i in 1..=1000 {
            let v = with_margin(f64::from(i) / 1000.0, m);
            assert!(
                v >= prev - 1e-12 && v - prev < 0.01,
                "monotone and continuous at {i}"
            );
            prev = v;
        }
        assert_eq!(with_margin(0.7, 1.0), 0.7, "no margin at the period's end");
    }

    #[test]
    fn max_rate_caps_the_kept_rate() {
        let mut b = budget(AtLimit::KeepPriority);
        b.max_rate = Some(500_000);
        // An hour before the end with the whole budget left: only the rate limit binds.
        let mut i = input(&b, 0, [0.0, 2_000_000.0, 0.0]);
        i.now = "2026-11-30T23:00:00Z".parse().unwrap();
        let out = compute(&i);
        assert!((out.probabilities[Class::Normal] * 2_000_000.0 - 450_000.0).abs() < 1.0);
    }
}
