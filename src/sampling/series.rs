//! Deciding a remote-write request series by series: a `drop` rule removes a series; a
//! series the tracker does not know is admitted within its class's cap or refused
//! ([`crate::budget::series`]); the points of an admitted series are thinned to
//! `metrics.min_sample_interval` ([`crate::sampling::min_interval`]). Series are judged by
//! their sorted label set, as Mimir identifies them.

use jiff::Timestamp;

use crate::budget::active_series::{NameId, Seen};
use crate::budget::series::{Judged, MAX_TRACKED_SERIES, SeriesAdmission, cap, judge};
use crate::fingerprint::Fingerprint;
use crate::metering::Weight;
use crate::model::{Class, DropReason};
use crate::policy::Policy;
use crate::proto::remote_write::{Label, TimeSeries, WriteRequest};
use crate::sampling::Account;
use crate::sampling::min_interval::{self, Thinned};

/// What became of one series of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesDecision {
    /// Its class (`Normal` for a dropped one).
    pub class: Class,
    /// Why all its points were dropped, if they were.
    pub dropped: Option<DropReason>,
    /// Indexes of float samples dropped by the minimum interval.
    pub thinned: Vec<u32>,
    /// Its metric name's number.
    pub name: NameId,
    /// Every point was thinned and it carries no exemplar: [`apply`] removes it.
    pub emptied: bool,
}

impl SeriesDecision {
    /// Whether the series is still in the request after [`apply`]: not dropped, and not
    /// left with nothing.
    pub fn remains(&self) -> bool {
        self.dropped.is_none() && !self.emptied
    }
}

/// A series' data points: float samples and native histogram samples (exemplars and
/// metadata are not data points).
pub fn points(ts: &TimeSeries) -> u64 {
    (ts.samples.len() + ts.histograms.len()) as u64
}

/// Data points of a request: items and billable units alike.
pub fn weigh(req: &WriteRequest) -> Weight {
    let n: u64 = req.timeseries.iter().map(points).sum();
    Weight { items: n, units: n }
}

/// The metric name of a series (`""` without `__name__`).
pub fn name_of(labels: &[Label]) -> &str {
    labels
        .iter()
        .find(|l| l.name == "__name__")
        .map_or("", |l| l.value.as_str())
}

/// The fingerprint of a series' label set, sorted by name whatever order it came in.
pub fn fingerprint(labels: &[Label]) -> Fingerprint {
    if labels.is_sorted_by(|a, b| a.name <= b.name) {
        Fingerprint::of_pairs(labels.iter().map(|l| (l.name.as_str(), l.value.as_str())))
    } else {
        let mut sorted: Vec<&Label> = labels.iter().collect();
        sorted.sort_by(|a, b| a.name.cmp(&b.name));
        Fingerprint::of_pairs(sorted.iter().map(|l| (l.name.as_str(), l.value.as_str())))
    }
}

/// Counters, histogram buckets, counts and sums only grow: a decrease is a reset.
fn kind_of(name: &str) -> min_interval::Series {
    let counter = ["_total", "_bucket", "_count", "_sum"]
        .iter()
        .any(|s| name.ends_with(s));
    if counter {
        min_interval::Series::Counter
    } else {
        min_interval::Series::Gauge
    }
}

/// Decides every series of `req` at `now`. In shadow mode (everything is sent) the
/// decisions are counted as they would be, and the series state records what is sent.
pub fn decide_all(
    policy: &Policy,
    state: &SeriesAdmission,
    now: Timestamp,
    req: &WriteRequest,
) -> (Vec<SeriesDecision>, Account) {
    let mut account = Account::default();
    let budget = policy.budgets.metrics.as_ref();
    let shadow = policy.shadow;
    // Grafana bills the larger of series and DPM: points beyond one a minute per series
    // take places too.
    let excess = state.dpm_excess();
    let decisions = req
        .timeseries
        .iter()
        .map(|ts| {
            let name = name_of(&ts.labels);
            let id = state.name_id(name);
            let w = points(ts);
            let weight = Weight { items: w, units: w };
            let judged = judge(&policy.metrics.rules, name, |k| {
                ts.labels
                    .iter()
                    .find(|l| l.name == k)
                    .map(|l| l.value.as_str())
            });
            let class = match judged {
                Judged::Class(c) => c,
                Judged::Dropped => Class::Normal,
            };
            let mut d = SeriesDecision {
                class,
                dropped: None,
                thinned: Vec::new(),
                name: id,
                emptied: false,
            };
            if w == 0 && ts.exemplars.is_empty() {
                // Nothing Mimir would store: no place taken, nothing sent.
                d.emptied = true;
                account.modified = true;
                return d;
            }
            let fp = fingerprint(&ts.labels);
            if judged == Judged::Dropped {
                d.dropped = Some(DropReason::Rule);
                account.record(None, &super::Fate::Drop(DropReason::Rule), weight, false);
                if shadow {
                    // Sent anyway: upstream will hold it.
                    state.tracker.admit(fp, id, now, MAX_TRACKED_SERIES);
                    state.sent(id, w);
                }
                return d;
            }
            let cap = cap(budget, &judged).saturating_sub(excess);
            if state.tracker.admit(fp, id, now, cap) == Seen::Refused {
                state.refused(id);
                d.dropped = Some(DropReason::SeriesLimit);
                account.record(
                    Some(class),
                    &super::Fate::Drop(DropReason::SeriesLimit),
                    weight,
                    false,
                );
                if shadow {
                    // Counted as refused, but sent: upstream holds it, so it is tracked.
                    state.tracker.admit(fp, id, now, MAX_TRACKED_SERIES);
                    state.sent(id, w);
                }
                return d;
            }
            if let Some(thinner) = &state.thinner {
                let kind = kind_of(name);
                for (i, s) in ts.samples.iter().enumerate() {
                    let seen_ms = now.as_millisecond();
                    if thinner.decide(fp, kind, s.timestamp, s.value, seen_ms) == Thinned::Dropped {
                        d.thinned.push(i as u32);
                    }
                }
            }
            let thinned = d.thinned.len() as u64;
            d.emptied = thinned > 0 && thinned == w && ts.exemplars.is_empty();
            // Thinned points never compete for the budget (like a drop rule's): what is
            // offered in the class is what the interval lets through, so thinning a
            // priority series is not a priority drop.
            let kept = w - thinned;
            let kept_w = Weight {
                items: kept,
                units: kept,
            };
            account.offer(class, kept_w);
            // In shadow mode the thinned points go too.
            state.sent(id, if shadow { w } else { kept });
            account.keep(class, kept_w);
            if thinned > 0 {
                account.drop(
                    DropReason::MinInterval,
                    Weight {
                        items: thinned,
                        units: thinned,
                    },
                );
                account.modified = true;
            }
            d
        })
        .collect();
    (decisions, account)
}

/// Removes refused series and thinned points; series left without points go (a series
/// of exemplars only stays).
pub fn apply(req: &mut WriteRequest, decisions: &[SeriesDecision]) {
    let mut i = 0;
    req.timeseries.retain_mut(|ts| {
        let d = &decisions[i];
        i += 1;
        if !d.remains() {
            return false;
        }
        if !d.thinned.is_empty() {
            let mut j = 0u32;
            let mut next = d.thinned.iter().peekable();
            ts.samples.retain(|_| {
                let drop = next.peek() == Some(&&j);
                if drop {
                    next.next();
                }
                j += 1;
                !drop
            });
        }
        true
    });
}

/// Keeps only the series of `class` in a request [`apply`] has been through.
pub fn retain_class(req: &mut WriteRequest, decisions: &[SeriesDecision], class: Class) {
    let mut kept = decisions.iter().filter(|d| d.remains()).map(|d| d.class);
    req.timeseries
        .retain(|_| kept.next().is_some_and(|c| c == class));
}
