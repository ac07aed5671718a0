//! Series admission: which new series may exist under `budgets.metrics.active_series`,
//! and the state it needs — the active-series tracker, the `min_sample_interval` thinner,
//! metric names numbered for per-name counts (series, points sent, series refused) and
//! the points-per-minute figures the cost report and the usage API show.
//!
//! Admission is decided per new series: a series already tracked always flows; a new one
//! is taken while the series in memory (the admission window) are under its class's cap:
//! `target × active_series` for normal series, `active_series` for priority ones (and
//! frugal's own, `frugal_*`), [`BULK_SERIES_SHARE`] of the
//! normal cap for `drop_first` ones. The cap is held by the tracker atomically, so
//! concurrent requests never take more places than there are. What counts against it is
//! the billed figure: the larger of the series in memory and DPM (data points per minute
//! sent, one per series included), so DPM above the series count lowers every cap.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::budget::active_series::{ActiveSeries, NameId, Windows};
use crate::model::Class;
use crate::policy::defaults::{BULK_SERIES_SHARE, DEFAULT_SERIES_REFRESH, MAX_METRIC_NAMES};
use crate::policy::{MetricPolicy, MetricsBudget, SeriesRules};
use crate::sampling::min_interval::MinInterval;

/// The name slot counting every metric name past [`MAX_METRIC_NAMES`].
const OTHER: NameId = MAX_METRIC_NAMES as NameId + 1;

/// The most series tracked at once, with or without a budget: about 180 MB of tracker
/// (BENCHMARKS.md). Past it new remote-write series are refused and new OTLP series go
/// uncounted.
pub const MAX_TRACKED_SERIES: u64 = 2_000_000;

/// Longer metric names are not given a number of their own (they count as `other`):
/// Mimir refuses label values over 2,048 bytes by default.
const MAX_NAME_BYTES: usize = 2048;

/// How a new series is judged before its cap is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Judged {
    /// A `drop` rule matched: never admitted.
    Dropped,
    /// Admitted within this class's cap.
    Class(Class),
}

/// Puts a series (its metric name and a lookup of its labels) in a class by the rules:
/// `drop` first, then `priority` (frugal's own metrics, `frugal_*`, are priority too:
/// admitted up to the limit, never past it), then `drop_first`.
pub fn judge<'a>(rules: &SeriesRules, name: &str, get: impl Fn(&str) -> Option<&'a str>) -> Judged {
    let any =
        |list: &[crate::policy::SeriesRule]| list.iter().any(|r| r.selector.matches_with(&get));
    if any(&rules.drop) {
        Judged::Dropped
    } else if name.starts_with("frugal_") || any(&rules.priority) {
        Judged::Class(Class::Priority)
    } else if any(&rules.drop_first) {
        Judged::Class(Class::Bulk)
    } else {
        Judged::Class(Class::Normal)
    }
}

/// The most series in memory at which a new series of `judged` is still admitted (never
/// more than [`MAX_TRACKED_SERIES`]).
pub fn cap(budget: Option<&MetricsBudget>, judged: &Judged) -> u64 {
    let Some(limit) = budget.and_then(|b| b.active_series) else {
        return match judged {
            Judged::Dropped => 0,
            Judged::Class(_) => MAX_TRACKED_SERIES,
        };
    };
    let limit = limit.min(MAX_TRACKED_SERIES);
    let target = budget.map_or(1.0, |b| b.target);
    let normal = (limit as f64 * target).floor() as u64;
    match judged {
        Judged::Dropped => 0,
        Judged::Class(Class::Priority) => limit,
        Judged::Class(Class::Normal) => normal,
        Judged::Class(Class::Bulk) => (normal as f64 * BULK_SERIES_SHARE).floor() as u64,
    }
}

/// Per-name counters, indexed by [`NameId`].
struct Counters(Box<[AtomicU64]>);

impl Counters {
    fn new() -> Self {
        Self((0..=OTHER).map(|_| AtomicU64::new(0)).collect())
    }

    fn add(&self, id: NameId, n: u64) {
        self.0[(id as usize).min(OTHER as usize)].fetch_add(n, Ordering::Relaxed);
    }

    fn get(&self, id: NameId) -> u64 {
        self.0[(id as usize).min(OTHER as usize)].load(Ordering::Relaxed)
    }

    fn snapshot(&self) -> Vec<u64> {
        self.0.iter().map(|c| c.load(Ordering::Relaxed)).collect()
    }
}

/// Points sent per name in the last whole minute.
#[derive(Default)]
struct PerMinute {
    minute: i64,
    at_start: Vec<u64>,
    last: Vec<u64>,
}

/// One metric name's costs, for the cost report.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct NameCost {
    /// The metric name (`other` for names past the table, `unknown` for series restored
    /// from the store that have not had a sample since).
    pub name: String,
    /// Series of it in memory (the admission window).
    pub series: u64,
    /// Data points of it sent in the last whole minute.
    pub dpm: u64,
    /// New series of it refused.
    pub refused: u64,
}

/// The series state of a running frugal (see the module documentation).
pub struct SeriesAdmission {
    /// Which series exist and when each was last seen.
    pub tracker: ActiveSeries,
    /// At most one point per series per interval (`metrics.min_sample_interval`).
    pub thinner: Option<MinInterval>,
    names: RwLock<HashMap<Arc<str>, NameId>>,
    list: RwLock<Vec<Arc<str>>>,
    /// The name table is full: new names are `other` without taking its lock.
    full: AtomicBool,
    sent: Counters,
    refused: Counters,
    refused_total: AtomicU64,
    per_minute: Mutex<PerMinute>,
    /// Data points sent per minute, all names, over the last minute (see
    /// [`SeriesAdmission::measure`]).
    dpm: AtomicU64,
    /// Data points sent, all names.
    sent_total: AtomicU64,
    /// (ms, `sent_total`) at recent measurements, the last minute's and one before it.
    samples: Mutex<std::collections::VecDeque<(i64, u64)>>,
}

impl SeriesAdmission {
    /// Empty state with the policy's windows and interval.
    pub fn new(metrics: &MetricPolicy) -> Self {
        let windows = Windows {
            billing: metrics.billing_window,
            admission: metrics.admission_window,
            refresh: DEFAULT_SERIES_REFRESH.min(metrics.billing_window / 4),
        };
        let thinner = metrics
            .min_sample_interval
            .map(|d| MinInterval::new(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)));
        Self {
            tracker: ActiveSeries::with_names(windows, OTHER as usize + 1),
            thinner,
            names: RwLock::new(HashMap::new()),
            list: RwLock::new(vec!["unknown".into()]),
            full: AtomicBool::new(false),
            sent: Counters::new(),
            refused: Counters::new(),
            refused_total: AtomicU64::new(0),
            per_minute: Mutex::new(PerMinute::default()),
            dpm: AtomicU64::new(0),
            sent_total: AtomicU64::new(0),
            samples: Mutex::new(std::collections::VecDeque::new()),
        }
    }

    /// The number of a metric name (names past the table, or too long, share `other`).
    /// The table is not emptied while frugal runs: after [`MAX_METRIC_NAMES`] names, new
    /// ones count as `other` until a restart.
    pub fn name_id(&self, name: &str) -> NameId {
        if let Some(id) = self
            .names
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
        {
            return *id;
        }
        if name.len() > MAX_NAME_BYTES || self.full.load(Ordering::Relaxed) {
            return OTHER;
        }
        let mut names = self.names.write().unwrap_or_else(|e| e.into_inner());
        if let Some(id) = names.get(name) {
            return *id;
        }
        let mut list = self.list.write().unwrap_or_else(|e| e.into_inner());
        if list.len() > MAX_METRIC_NAMES {
            self.full.store(true, Ordering::Relaxed);
            return OTHER;
        }
        let id = list.len() as NameId;
        let name: Arc<str> = name.into();
        list.push(name.clone());
        names.insert(name, id);
        id
    }

    /// Counts `points` of name `id` sent.
    pub fn sent(&self, id: NameId, points: u64) {
        self.sent.add(id, points);
        self.sent_total.fetch_add(points, Ordering::Relaxed);
    }

    /// Measures DPM at `now_ms` (called every few seconds, off the request path): the
    /// points sent since the measurement about a minute ago, per minute. Until 5 s have
    /// been measured it stays as it was.
    pub fn measure(&self, now_ms: i64) {
        let total = self.sent_total.load(Ordering::Relaxed);
        let mut samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        samples.push_back((now_ms, total));
        // Keep one sample at least a minute old as the baseline.
        while samples.len() > 2 && samples[1].0 <= now_ms - 60_000 {
            samples.pop_front();
        }
        if let Some(&(t0, n0)) = samples.front() {
            let elapsed = now_ms - t0;
            if elapsed >= 5_000 {
                let per_minute = total.saturating_sub(n0) as f64 * 60_000.0 / elapsed as f64;
                self.dpm.store(per_minute.round() as u64, Ordering::Relaxed);
            }
        }
    }

    /// Counts a new series of name `id` refused.
    pub fn refused(&self, id: NameId) {
        self.refused.add(id, 1);
        self.refused_total.fetch_add(1, Ordering::Relaxed);
    }

    /// New series refused so far.
    pub fn refused_total(&self) -> u64 {
        self.refused_total.load(Ordering::Relaxed)
    }

    /// Moves the per-minute figures on when `unix_minute` is a new minute (called at
    /// least once a minute, off the request path); true if it was.
    pub fn tick(&self, unix_minute: i64) -> bool {
        let mut pm = self.per_minute.lock().unwrap_or_else(|e| e.into_inner());
        if pm.minute == unix_minute {
            return false;
        }
        let now = self.sent.snapshot();
        if !pm.at_start.is_empty() {
            // Points since the last tick, per minute (a tick may come late).
            let minutes = u64::try_from(unix_minute - pm.minute).unwrap_or(1).max(1);
            pm.last = now
                .iter()
                .zip(pm.at_start.iter().chain(std::iter::repeat(&0)))
                .map(|(a, b)| a.saturating_sub(*b).div_ceil(minutes))
                .collect();
        }
        pm.at_start = now;
        pm.minute = unix_minute;
        true
    }

    /// Data points sent per minute over about the last minute, all names.
    pub fn dpm(&self) -> u64 {
        self.dpm.load(Ordering::Relaxed)
    }

    /// How far DPM runs above the series in memory: Grafana bills the larger of active
    /// series and DPM (one data point per series per minute included), so points beyond
    /// one a minute per series take places of the series limit too.
    pub fn dpm_excess(&self) -> u64 {
        self.dpm().saturating_sub(self.tracker.len() as u64)
    }

    /// The metric names holding the most series (then DPM), at most `top`.
    pub fn top(&self, top: usize) -> Vec<NameCost> {
        let list = self.list.read().unwrap_or_else(|e| e.into_inner());
        let pm = self.per_minute.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<NameCost> = (0..=OTHER)
            .filter_map(|id| {
                let name = match list.get(id as usize) {
                    Some(n) => n.to_string(),
                    None if id == OTHER => "other".to_string(),
                    None => return None,
                };
                let cost = NameCost {
                    name,
                    series: self.tracker.series_of(id),
                    dpm: pm.last.get(id as usize).copied().unwrap_or(0),
                    refused: self.refused.get(id),
                };
                (cost.series + cost.dpm + cost.refused > 0).then_some(cost)
            })
            .collect();
        out.sort_by(|a, b| {
            (b.series, b.dpm, b.refused)
                .cmp(&(a.series, a.dpm, a.refused))
                .then_with(|| a.name.cmp(&b.name))
        });
        out.truncate(top);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::SeriesRule;
    use crate::sampling::selector;

    fn rule(name: &str, sel: &str) -> SeriesRule {
        SeriesRule {
            name: name.into(),
            selector: selector::parse(sel).unwrap(),
        }
    }

    #[test]
    fn rules_put_series_in_classes_and_caps_follow_them() {
        let rules = SeriesRules {
            drop: vec![rule("noisy", r#"{__name__="noisy_total"}"#)],
            priority: vec![rule("up", "up")],
            drop_first: vec![rule("buckets", r#"{__name__=~".*_bucket"}"#)],
        };
        let none = |_: &str| None;
        let named = |n: &'static str| move |k: &str| (k == "__name__").then_some(n);
        assert_eq!(
            judge(&rules, "noisy_total", named("noisy_total")),
            Judged::Dropped
        );
        assert_eq!(
            judge(&rules, "up", |k| (k == "__name__").then_some("up")),
            Judged::Class(Class::Priority)
        );
        assert_eq!(
            judge(&rules, "x_bucket", |k| (k == "__name__")
                .then_some("x_bucket")),
            Judged::Class(Class::Bulk)
        );
        assert_eq!(
            judge(&rules, "frugal_up", none),
            Judged::Class(Class::Priority),
            "frugal's own are priority: capped at the limit like any"
        );
        assert_eq!(
            judge(&rules, "y", |k| (k == "__name__").then_some("y")),
            Judged::Class(Class::Normal)
        );
        let b = MetricsBudget {
            active_series: Some(200),
            target: 0.95,
        };
        assert_eq!(cap(Some(&b), &Judged::Class(Class::Normal)), 190);
        assert_eq!(cap(Some(&b), &Judged::Class(Class::Priority)), 200);
        assert_eq!(cap(Some(&b), &Judged::Class(Class::Bulk)), 171);
        assert_eq!(cap(Some(&b), &Judged::Dropped), 0);
        assert_eq!(cap(None, &Judged::Class(Class::Normal)), MAX_TRACKED_SERIES);
        assert_eq!(cap(None, &Judged::Dropped), 0);
    }

    #[test]
    fn names_are_numbered_and_costs_reported_per_name() {
        let s = SeriesAdmission::new(&MetricPolicy::default());
        let a = s.name_id("a_total");
        assert_eq!(s.name_id("a_total"), a);
        let b = s.name_id("b");
        assert_ne!(a, b);
        let now: jiff::Timestamp = "2026-12-01T10:00:00Z".parse().unwrap();
        for i in 0..3 {
            s.tracker
                .admit(crate::fingerprint::Fingerprint(i), a, now, u64::MAX);
        }
        s.tracker
            .admit(crate::fingerprint::Fingerprint(9), b, now, u64::MAX);
        s.tick(100);
        s.measure(6_000_000);
        s.sent(a, 30);
        s.refused(b);
        s.tick(101);
        s.measure(6_060_000);
        let top = s.top(10);
        assert_eq!(
            top[0],
            NameCost {
                name: "a_total".into(),
                series: 3,
                dpm: 30,
                refused: 0
            }
        );
        assert_eq!(
            top[1],
            NameCost {
                name: "b".into(),
                series: 1,
                dpm: 0,
                refused: 1
            }
        );
        assert_eq!(s.dpm(), 30);
        assert_eq!(s.refused_total(), 1);
        s.sent(a, 60);
        s.tick(103);
        assert_eq!(s.top(1)[0].dpm, 30, "two minutes' points, per minute");
        s.sent(a, 15);
        s.measure(6_075_000);
        assert_eq!(
            s.dpm(),
            84,
            "105 points since the baseline 75 s ago, per minute"
        );
        assert_eq!(s.name_id(&"x".repeat(3000)), OTHER, "too long for a number");
    }
}
