//! Usage history: how much of each budget was used, step by step through the period (an
//! hour for a month), for the status page's burn-down charts.
//!
//! History is kept as more counters of the period, beside the ledger's own, under
//! `history/<step start>/<signal>/added_units` and `.../subtracted_units`: what a flush
//! added to `used` (sent, adjustments up) and took from it (refusals, adjustments down) in
//! the step it happened. The ledger writes them in the same `add` as the counters they come
//! from, so history and counters never disagree, survive what the counters survive, and
//! several replicas adding to one store add up. A period holds at most [`MAX_STEPS`] steps.
//!
//! Pure: keys and sums over counters handed in; no I/O, no clock.

use jiff::Timestamp;

use crate::model::{PerSignal, Signal};
use crate::period::Period;
use crate::store::Counters;

/// Every history counter's name starts with this; readers of the period's counters
/// look their own names up and never see these.
pub const PREFIX: &str = "history/";

/// The most steps a period is cut into: a month's hours (744), and one more for the month
/// that gains an hour when a time zone leaves daylight saving time.
pub const MAX_STEPS: u64 = 745;

/// Step lengths in seconds, the shortest fitting [`MAX_STEPS`] is taken: an hour for a
/// month, 2 minutes for a day, a second for a 10-minute test period.
const STEPS: [u64; 19] = [
    1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400,
    604_800,
];

/// What moved one signal's `used` (billable units): `used = added - subtracted`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Movement {
    /// Sent, and adjusted up.
    pub added: u64,
    /// Certainly refused, and adjusted down.
    pub subtracted: u64,
}

impl Movement {
    /// The `used` figure this movement comes to.
    pub fn used(self) -> u64 {
        self.added.saturating_sub(self.subtracted)
    }

    fn plus(self, o: Movement) -> Movement {
        Movement {
            added: self.added.saturating_add(o.added),
            subtracted: self.subtracted.saturating_add(o.subtracted),
        }
    }

    fn minus(self, o: Movement) -> Movement {
        Movement {
            added: self.added.saturating_sub(o.added),
            subtracted: self.subtracted.saturating_sub(o.subtracted),
        }
    }
}

/// One point of a signal's history: `used` units at `t` (Unix seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Point {
    /// Unix seconds.
    pub t: i64,
    /// Billable units used in the period up to `t`.
    pub used: u64,
}

/// A period's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct History {
    /// The period.
    pub period: Period,
    /// The step's length in seconds.
    pub step_seconds: u64,
    /// Per signal: the period's start at 0, the end of every step passed, and now.
    pub points: PerSignal<Vec<Point>>,
}

/// The step `period` is cut into, in seconds.
pub fn step_seconds(period: &Period) -> u64 {
    let len = whole_seconds(period);
    STEPS
        .into_iter()
        .find(|s| len.div_ceil(*s) <= MAX_STEPS)
        .unwrap_or(len.div_ceil(MAX_STEPS))
}

/// The period's length in whole seconds, at least one.
fn whole_seconds(period: &Period) -> u64 {
    period.length_seconds().max(1.0).ceil() as u64
}

fn steps_in(period: &Period, step: u64) -> u64 {
    whole_seconds(period).div_ceil(step)
}

/// The step `t` falls in (a time outside the period counts in its first or last step: a
/// late flush of a finished period lands in its last hour).
fn step_index(period: &Period, step: u64, t: Timestamp) -> u64 {
    let elapsed = period.elapsed_seconds(t).floor() as u64;
    (elapsed / step).min(steps_in(period, step).saturating_sub(1))
}

fn step_start(period: &Period, step: u64, index: u64) -> Timestamp {
    let secs = period
        .start
        .as_second()
        .saturating_add_unsigned(index * step);
    Timestamp::from_second(secs).unwrap_or(period.end)
}

fn key(start: Timestamp, signal: Signal, part: &str) -> String {
    format!("{PREFIX}{start}/{signal}/{part}")
}

/// Adds to `deltas` (a flush's, about to be written) the history counters of what
/// `moved` per signal, in the step `now` falls in.
pub fn record(period: &Period, now: Timestamp, moved: &PerSignal<Movement>, deltas: &mut Counters) {
    let step = step_seconds(period);
    let start = step_start(period, step, step_index(period, step, now));
    for (s, m) in moved.iter() {
        for (part, v) in [("added_units", m.added), ("subtracted_units", m.subtracted)] {
            if v > 0 {
                deltas.insert(key(start, s, part), v);
            }
        }
    }
}

/// Reads a period's history from its stored counters (`totals`).
///
/// `total` is the movement the period's own counters show per signal: what history does
/// not account for (counted before this version of frugal kept history) is shown in the
/// first step that has history, or now. `live` is each signal's `used` now, the last
/// point (it includes what is not yet flushed).
pub fn read(
    period: &Period,
    totals: &Counters,
    total: &PerSignal<Movement>,
    now: Timestamp,
    live: &PerSignal<u64>,
) -> History {
    let step = step_seconds(period);
    let current = step_index(period, step, now);
    let mut per_step: PerSignal<std::collections::BTreeMap<u64, Movement>> = Default::default();
    for (k, v) in totals.range(PREFIX.to_string()..) {
        let Some(rest) = k.strip_prefix(PREFIX) else {
            break;
        };
        let mut parts = rest.split('/');
        let (Some(at), Some(signal), Some(part)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let (Ok(at), Some(signal)) = (at.parse::<Timestamp>(), Signal::parse(signal)) else {
            continue;
        };
        let m = per_step[signal]
            .entry(step_index(period, step, at))
            .or_default();
        match part {
            "added_units" => m.added = m.added.saturating_add(*v),
            "subtracted_units" => m.subtracted = m.subtracted.saturating_add(*v),
            _ => {}
        }
    }
    let points = PerSignal::from_fn(|s| {
        let steps = &per_step[s];
        let recorded = steps.values().fold(Movement::default(), |a, m| a.plus(*m));
        let before = total[s].minus(recorded);
        let first = steps.keys().next().copied().unwrap_or(current);
        let mut sum = Movement::default();
        let mut out = Vec::with_capacity(current as usize + 2);
        out.push(Point {
            t: period.start.as_second(),
            used: 0,
        });
        for i in 0..current {
            if i == first {
                sum = sum.plus(before);
            }
            sum = sum.plus(steps.get(&i).copied().unwrap_or_default());
            out.push(Point {
                t: step_start(period, step, i + 1).as_second(),
                used: sum.used(),
            });
        }
        out.push(Point {
            t: now.clamp(period.start, period.end).as_second(),
            used: live[s],
        });
        out
    });
    History {
        period: *period,
        step_seconds: step,
        points,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::period::PeriodSpec;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn period(every: &str) -> Period {
        match every {
            "month" => PeriodSpec::utc_month().period_at(ts("2026-12-02T17:30:00Z")),
            secs => PeriodSpec::Every {
                every: std::time::Duration::from_secs(secs.parse().unwrap()),
                anchor: ts("2026-12-02T17:00:00Z"),
            }
            .period_at(ts("2026-12-02T17:00:00Z")),
        }
    }

    #[test]
    fn a_month_is_cut_in_hours_shorter_periods_finer_never_more_than_745_steps() {
        for (every, step) in [
            ("month", 3600),
            ("86400", 120),
            ("600", 1),
            ("3600", 5),
            ("180", 1),
            ("1", 1),
            ("2678400", 3600), // 31 days: 744 hours
            ("2682000", 3600), // 31 days and the hour daylight saving time gives back
            ("2685600", 7200),
            ("31536000", 43200), // a year
        ] {
            let p = period(every);
            assert_eq!(step_seconds(&p), step, "{every}");
            assert!(steps_in(&p, step) <= MAX_STEPS, "{every}");
        }
    }

    #[test]
    fn a_flush_is_recorded_in_the_step_of_its_time_and_late_flushes_in_the_last_one() {
        let p = period("month");
        let moved = PerSignal::from_fn(|s| match s {
            Signal::Traces => Movement {
                added: 10,
                subtracted: 3,
            },
            Signal::Logs => Movement {
                added: 5,
                subtracted: 0,
            },
            Signal::Metrics => Movement::default(),
        });
        let mut d = Counters::new();
        record(&p, ts("2026-12-02T17:59:59.9Z"), &moved, &mut d);
        let want: Counters = [
            ("history/2026-12-02T17:00:00Z/traces/added_units", 10),
            ("history/2026-12-02T17:00:00Z/traces/subtracted_units", 3),
            ("history/2026-12-02T17:00:00Z/logs/added_units", 5),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        assert_eq!(d, want);
        let mut late = Counters::new();
        record(&p, ts("2027-01-01T00:00:01Z"), &moved, &mut late);
        assert!(
            late.contains_key("history/2026-12-31T23:00:00Z/logs/added_units"),
            "{late:?}"
        );
    }

    /// Stored counters from (time, signal, added, subtracted) flushes.
    fn stored(p: &Period, flushes: &[(&str, Signal, u64, u64)]) -> Counters {
        let mut out = Counters::new();
        for (t, s, added, subtracted) in flushes {
            let mut moved = PerSignal::<Movement>::default();
            moved[*s] = Movement {
                added: *added,
                subtracted: *subtracted,
            };
            let mut d = Counters::new();
            record(p, ts(t), &moved, &mut d);
            for (k, v) in d {
                *out.entry(k).or_default() += v;
            }
        }
        out
    }

    fn check(
        flushes: &[(&str, Signal, u64, u64)],
        (added, subtracted): (u64, u64),
        now: &str,
        live: u64,
        want: &[(&str, u64)],
    ) {
        let p = period("month");
        let mut totals = stored(&p, flushes);
        totals.insert("traces/sent_units".to_string(), 1);
        let mut t = PerSignal::<Movement>::default();
        t[Signal::Traces] = Movement { added, subtracted };
        let mut l = PerSignal::<u64>::default();
        l[Signal::Traces] = live;
        let h = read(&p, &totals, &t, ts(now), &l);
        let got: Vec<Point> = h.points[Signal::Traces].clone();
        let want: Vec<Point> = want
            .iter()
            .map(|(t, used)| Point {
                t: ts(t).as_second(),
                used: *used,
            })
            .collect();
        assert_eq!(got, want);
        assert_eq!(h.step_seconds, 3600);
        assert_eq!(
            h.points[Signal::Logs].len(),
            want.len(),
            "every signal alike"
        );
    }

    #[test]
    fn history_is_the_running_sum_with_a_point_every_hour_and_one_now() {
        check(
            &[
                ("2026-12-01T00:10:00Z", Signal::Traces, 100, 0),
                ("2026-12-01T00:50:00Z", Signal::Traces, 50, 20),
                ("2026-12-01T02:30:00Z", Signal::Traces, 30, 0),
                ("2026-12-01T02:40:00Z", Signal::Logs, 99, 0),
            ],
            (180, 20),
            "2026-12-01T03:15:00Z",
            175,
            &[
                ("2026-12-01T00:00:00Z", 0),
                ("2026-12-01T01:00:00Z", 130),
                ("2026-12-01T02:00:00Z", 130),
                ("2026-12-01T03:00:00Z", 160),
                ("2026-12-01T03:15:00Z", 175),
            ],
        );
    }

    #[test]
    fn what_history_does_not_account_for_shows_where_history_begins() {
        // 1000 counted before history was kept; history from 01:xx on.
        check(
            &[("2026-12-01T01:30:00Z", Signal::Traces, 10, 0)],
            (1010, 0),
            "2026-12-01T02:30:00Z",
            1010,
            &[
                ("2026-12-01T00:00:00Z", 0),
                ("2026-12-01T01:00:00Z", 0),
                ("2026-12-01T02:00:00Z", 1010),
                ("2026-12-01T02:30:00Z", 1010),
            ],
        );
        // No history at all: only the start and now.
        check(
            &[],
            (7, 0),
            "2026-12-01T00:30:00Z",
            7,
            &[("2026-12-01T00:00:00Z", 0), ("2026-12-01T00:30:00Z", 7)],
        );
    }

    #[test]
    fn an_adjustment_down_takes_the_line_down_and_never_below_zero() {
        check(
            &[
                ("2026-12-01T00:10:00Z", Signal::Traces, 100, 0),
                ("2026-12-01T01:10:00Z", Signal::Traces, 0, 500),
                ("2026-12-01T02:10:00Z", Signal::Traces, 600, 0),
            ],
            (700, 500),
            "2026-12-01T03:00:00Z",
            200,
            &[
                ("2026-12-01T00:00:00Z", 0),
                ("2026-12-01T01:00:00Z", 100),
                ("2026-12-01T02:00:00Z", 0),
                ("2026-12-01T03:00:00Z", 200),
                ("2026-12-01T03:00:00Z", 200),
            ],
        );
    }

    #[test]
    fn other_counters_and_unreadable_history_keys_are_ignored() {
        let p = period("month");
        let mut totals = Counters::new();
        for k in [
            "history/not-a-time/traces/added_units",
            "history/2026-12-01T00:00:00Z/spans/added_units",
            "history/2026-12-01T00:00:00Z/traces/other",
            "history/2026-12-01T00:00:00Z/traces",
            "meta/since_seconds",
            "traces/sent_units",
        ] {
            totals.insert(k.to_string(), 5);
        }
        let h = read(
            &p,
            &totals,
            &PerSignal::default(),
            ts("2026-12-01T01:30:00Z"),
            &PerSignal::default(),
        );
        assert!(
            h.points[Signal::Traces].iter().all(|p| p.used == 0),
            "{h:?}"
        );
    }

    #[test]
    fn a_month_has_at_most_745_points_the_last_now() {
        let p = period("month");
        let h = read(
            &p,
            &Counters::new(),
            &PerSignal::default(),
            ts("2026-12-31T23:59:59Z"),
            &PerSignal::default(),
        );
        assert_eq!(h.points[Signal::Traces].len(), 745);
    }
}
