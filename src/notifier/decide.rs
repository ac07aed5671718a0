//! What to notify, decided without I/O: a pure function of the policy's `alerts`, a
//! snapshot of usage, what the store says has fired and been delivered this period, and
//! `now`. Several replicas sharing one store would decide alike.
//!
//! What has fired is kept in the period's store counters (see [`starts_at_key`]), so it
//! survives restarts and ends with the period.

use std::time::Duration;

use jiff::Timestamp;

use crate::model::Signal;
use crate::period::Period;
use crate::policy::{Alerts, Threshold, Webhook, WebhookFormat};
use crate::store::Counters;

/// What an alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// Usage reached this fraction of the limit.
    Used(Threshold),
    /// The projection at the current keep probabilities reaches the limit before the
    /// period ends.
    ProjectedOverage,
}

impl Kind {
    /// The alert's name in the store, the idempotency key and the generic body:
    /// `used_50`, `used_99.5`, `projected_overage`.
    pub fn key(self) -> String {
        match self {
            Kind::Used(t) => format!("used_{}", t.label().trim_end_matches('%')),
            Kind::ProjectedOverage => "projected_overage".to_string(),
        }
    }

    /// The threshold it stands for (the limit itself for a projected overage).
    pub fn threshold(self) -> Threshold {
        match self {
            Kind::Used(t) => t,
            Kind::ProjectedOverage => Threshold::LIMIT,
        }
    }
}

/// One alert: a kind for one signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AlertId {
    /// The signal whose budget it is about.
    pub signal: Signal,
    /// What happened.
    pub kind: Kind,
}

/// An alert that has fired this period, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Alert {
    /// Which alert.
    pub id: AlertId,
    /// When it fired (persisted: the same after a restart).
    pub starts_at: Timestamp,
}

/// Store counter under which an alert's firing time (Unix seconds) is kept:
/// `alerts/traces/used_50/starts_at`.
pub fn starts_at_key(id: AlertId) -> String {
    format!("alerts/{}/{}/starts_at", id.signal.as_str(), id.kind.key())
}

/// Store counter marking an alert delivered to one webhook (Unix seconds):
/// `alerts/traces/used_50/delivered/<sink>`.
pub fn delivered_key(id: AlertId, sink: &str) -> String {
    format!(
        "alerts/{}/{}/delivered/{sink}",
        id.signal.as_str(),
        id.kind.key()
    )
}

/// A webhook's name in the store: a hash of its format and URL (the URL is a secret and
/// is never stored), so reordering webhooks does not resend, and a new one catches up.
pub fn sink_id(w: &Webhook) -> String {
    let text = format!("{} {}", w.format.as_str(), w.url);
    format!(
        "{:08x}",
        crate::sampling::hash_seed::hash(text.as_bytes(), 0)
    )
}

/// The key a receiver can deduplicate one notification by: the same for every attempt
/// and every restart, different for every alert and period.
pub fn idempotency_key(period: &Period, id: AlertId) -> String {
    format!(
        "frugal:{}:{}:{}",
        period.start,
        id.signal.as_str(),
        id.kind.key()
    )
}

/// One budget's state, as the ledger and the pacer have it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    /// The signal.
    pub signal: Signal,
    /// Units used this period.
    pub used: u64,
    /// The limit, less what is reserved for other senders.
    pub limit: u64,
    /// Units expected at the period's end at the current keep probabilities (`None`
    /// before the first recompute).
    pub projected_used: Option<f64>,
}

/// Usage at one moment: the period and each byte budget.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// The ledger's current period.
    pub period: Period,
    /// Each signal that has a byte budget.
    pub budgets: Vec<Budget>,
}

impl Snapshot {
    /// The budget of `signal`, if it has one.
    pub fn budget(&self, signal: Signal) -> Option<&Budget> {
        self.budgets.iter().find(|b| b.signal == signal)
    }
}

/// What to do now.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decision {
    /// Alerts that fire now: their `starts_at` is persisted before anything is sent.
    pub fire: Vec<Alert>,
    /// Every alert that has fired this period (those of `fire` included), in order.
    pub active: Vec<Alert>,
    /// One POST each: an alert and the index of a generic or Slack webhook that has not
    /// had it yet.
    pub deliver: Vec<(Alert, usize)>,
    /// Indexes of the Alertmanager webhooks to post every active alert to now.
    pub post: Vec<usize>,
}

/// How often Alertmanager hears the active alerts again: a hundredth of the period, 1 s
/// to 60 s (Prometheus re-sends every minute).
pub fn repost_every(period: &Period) -> Duration {
    Duration::from_secs_f64((period.length_seconds() / 100.0).clamp(1.0, 60.0))
}

/// The least time an alert is announced ahead: longer than a check, its retries against a
/// slow webhook (about 25 s) and a missed re-post together, so an active alert never
/// expires in Alertmanager between two posts (and notifies again when it reappears).
pub const MIN_ALERT_HORIZON: Duration = Duration::from_secs(180);

/// How long Alertmanager keeps an alert that stops arriving: a few re-posts (at least
/// [`MIN_ALERT_HORIZON`]), but never past the period's end, where every alert of the
/// period resolves.
pub fn ends_at(period: &Period, now: Timestamp) -> Timestamp {
    crate::clock::add(now, (repost_every(period) * 4).max(MIN_ALERT_HORIZON)).min(period.end)
}

/// Decides what fires and what is sent at `now`. `stored` is the period's store counters
/// (what fired and was delivered before); `last_posted` holds, per webhook, when
/// Alertmanager was last posted to by this process (`None`: not yet, or not one).
pub fn decide(
    alerts: &Alerts,
    snapshot: &Snapshot,
    stored: &Counters,
    last_posted: &[Option<Timestamp>],
    now: Timestamp,
) -> Decision {
    let period = &snapshot.period;
    let mut d = Decision::default();
    if now < period.start || now >= period.end {
        // The period is over (the ledger rolls it at once): nothing more belongs to it.
        return d;
    }
    for b in &snapshot.budgets {
        for id in candidates(alerts, b.signal) {
            let stored_at = stored
                .get(&starts_at_key(id))
                .copied()
                .filter(|s| *s > 0)
                .and_then(|s| Timestamp::from_second(i64::try_from(s).ok()?).ok());
            let alert = match stored_at {
                Some(starts_at) => Alert { id, starts_at },
                None if holds(id.kind, b) => {
                    // Whole seconds, as persisted: the first post and every later one
                    // (after a restart too) carry the same startsAt.
                    let starts_at = Timestamp::from_second(now.as_second()).unwrap_or(now);
                    let a = Alert { id, starts_at };
                    d.fire.push(a);
                    a
                }
                None => continue,
            };
            d.active.push(alert);
        }
    }
    for (i, w) in alerts.webhooks.iter().enumerate() {
        match w.format {
            WebhookFormat::Alertmanager => {
                let due = last_posted.get(i).copied().flatten().is_none_or(|at| {
                    crate::clock::seconds_between(at, now) >= repost_every(period).as_secs_f64()
                });
                if !d.active.is_empty() && (due || !d.fire.is_empty()) {
                    d.post.push(i);
                }
            }
            WebhookFormat::Generic | WebhookFormat::Slack => {
                let sink = sink_id(w);
                for a in &d.active {
                    if !stored.contains_key(&delivered_key(a.id, &sink)) {
                        d.deliver.push((*a, i));
                    }
                }
            }
        }
    }
    d
}

/// The alerts the policy asks for on one signal.
fn candidates(alerts: &Alerts, signal: Signal) -> Vec<AlertId> {
    let mut out: Vec<AlertId> = alerts
        .thresholds
        .iter()
        .map(|t| AlertId {
            signal,
            kind: Kind::Used(*t),
        })
        .collect();
    if alerts.projected_overage {
        out.push(AlertId {
            signal,
            kind: Kind::ProjectedOverage,
        });
    }
    out
}

/// Whether an alert's condition holds for a budget.
fn holds(kind: Kind, b: &Budget) -> bool {
    match kind {
        // used / limit >= t, in integers: exact at the threshold.
        Kind::Used(t) => u128::from(b.used) * 10_000 >= u128::from(t.0) * u128::from(b.limit),
        Kind::ProjectedOverage => b.projected_used.is_some_and(|p| p >= b.limit as f64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::period::PeriodSpec;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn hook(url: &str, format: WebhookFormat) -> Webhook {
        Webhook {
            url: url.to_string(),
            format,
            headers: Vec::new(),
        }
    }

    fn alerts() -> Alerts {
        Alerts {
            thresholds: vec![Threshold(5000), Threshold(8000), Threshold(9500)],
            projected_overage: true,
            webhooks: vec![
                hook("http://generic.example/hook", WebhookFormat::Generic),
                hook("http://am.example:9093", WebhookFormat::Alertmanager),
                hook("https://hooks.slack.com/services/x", WebhookFormat::Slack),
            ],
        }
    }

    fn november() -> Period {
        PeriodSpec::utc_month().period_at(ts("2026-11-15T00:00:00Z"))
    }

    fn snapshot(traces_used: u64, projected: Option<f64>) -> Snapshot {
        Snapshot {
            period: november(),
            budgets: vec![
                Budget {
                    signal: Signal::Traces,
                    used: traces_used,
                    limit: 1000,
                    projected_used: projected,
                },
                Budget {
                    signal: Signal::Logs,
                    used: 0,
                    limit: 1000,
                    projected_used: Some(10.0),
                },
            ],
        }
    }

    fn names(v: &[Alert]) -> Vec<String> {
        v.iter()
            .map(|a| format!("{}/{}", a.id.signal.as_str(), a.id.kind.key()))
            .collect()
    }

    /// What `d` fires, persisted the way the notifier persists it.
    fn persist(stored: &mut Counters, d: &Decision) {
        for a in &d.fire {
            stored.insert(starts_at_key(a.id), a.starts_at.as_second() as u64);
        }
    }

    #[test]
    fn below_every_threshold_nothing_fires() {
        let now = ts("2026-11-10T00:00:00Z");
        let d = decide(
            &alerts(),
            &snapshot(499, Some(900.0)),
            &Counters::new(),
            &[],
            now,
        );
        assert_eq!(d, Decision::default());
    }

    #[test]
    fn each_threshold_fires_once_per_period() {
        let a = alerts();
        let mut stored = Counters::new();
        let t1 = ts("2026-11-10T00:00:00Z");
        let d = decide(
            &a,
            &snapshot(500, Some(900.0)),
            &stored,
            &[],
            ts("2026-11-10T00:00:00.75Z"),
        );
        assert_eq!(names(&d.fire), ["traces/used_50"]);
        assert_eq!(d.fire[0].starts_at, t1, "in whole seconds, as persisted");
        // The generic and Slack webhooks get one POST each; Alertmanager is posted to.
        assert_eq!(
            d.deliver.iter().map(|(_, i)| *i).collect::<Vec<_>>(),
            [0, 2]
        );
        assert_eq!(d.post, [1]);
        persist(&mut stored, &d);
        // Later, higher: only the new thresholds fire; the first keeps its time.
        let t2 = ts("2026-11-20T00:00:00Z");
        let d = decide(&a, &snapshot(960, Some(990.0)), &stored, &[Some(t1)], t2);
        assert_eq!(names(&d.fire), ["traces/used_80", "traces/used_95"]);
        assert_eq!(
            names(&d.active),
            ["traces/used_50", "traces/used_80", "traces/used_95"]
        );
        assert_eq!(d.active[0].starts_at, t1);
        persist(&mut stored, &d);
        // Usage set back down: what fired stays fired, nothing fires again.
        let d = decide(&a, &snapshot(10, Some(20.0)), &stored, &[Some(t2)], t2);
        assert!(d.fire.is_empty());
        assert_eq!(d.active.len(), 3);
        // The next period starts from nothing: a new period key, no counters.
        let december = PeriodSpec::utc_month().period_at(ts("2026-12-02T00:00:00Z"));
        let mut s = snapshot(600, None);
        s.period = december;
        let d = decide(&a, &s, &Counters::new(), &[], ts("2026-12-02T00:00:00Z"));
        assert_eq!(names(&d.fire), ["traces/used_50"]);
    }

    #[test]
    fn a_threshold_holds_exactly_at_its_value() {
        let b = |used| Budget {
            signal: Signal::Traces,
            used,
            limit: 50_000_000_000,
            projected_used: None,
        };
        let t = Kind::Used(Threshold(8000));
        assert!(!holds(t, &b(39_999_999_999)));
        assert!(holds(t, &b(40_000_000_000)));
        assert!(holds(Kind::Used(Threshold(10_000)), &b(u64::MAX)));
        assert!(
            !holds(Kind::ProjectedOverage, &b(u64::MAX)),
            "no projection yet"
        );
    }

    #[test]
    fn a_projected_overage_fires_once_when_the_projection_reaches_the_limit() {
        let mut a = alerts();
        let now = ts("2026-11-05T00:00:00Z");
        let d = decide(&a, &snapshot(100, Some(999.0)), &Counters::new(), &[], now);
        assert!(d.fire.is_empty());
        let d = decide(&a, &snapshot(100, Some(1000.0)), &Counters::new(), &[], now);
        assert_eq!(names(&d.fire), ["traces/projected_overage"]);
        assert_eq!(d.fire[0].id.kind.threshold(), Threshold::LIMIT);
        a.projected_overage = false;
        let d = decide(&a, &snapshot(100, Some(5000.0)), &Counters::new(), &[], now);
        assert!(d.fire.is_empty());
    }

    #[test]
    fn a_restart_resends_only_what_was_not_delivered() {
        let a = alerts();
        let t1 = ts("2026-11-10T00:00:00Z");
        let mut stored = Counters::new();
        let d = decide(&a, &snapshot(800, None), &stored, &[], t1);
        persist(&mut stored, &d);
        // The generic webhook had the 50% notification before the kill, not the 80% one;
        // Slack had neither.
        let generic = sink_id(&a.webhooks[0]);
        let fifty = AlertId {
            signal: Signal::Traces,
            kind: Kind::Used(Threshold(5000)),
        };
        stored.insert(delivered_key(fifty, &generic), 1);
        let t2 = ts("2026-11-10T00:05:00Z");
        let d = decide(&a, &snapshot(800, None), &stored, &[None, None, None], t2);
        assert!(d.fire.is_empty(), "persisted firings do not fire again");
        let sent: Vec<(String, usize)> = d
            .deliver
            .iter()
            .map(|(al, i)| (al.id.kind.key(), *i))
            .collect();
        assert_eq!(
            sent,
            [
                ("used_80".to_string(), 0),
                ("used_50".to_string(), 2),
                ("used_80".to_string(), 2)
            ]
        );
        // Alertmanager hears every active alert again at once, with the first times.
        assert_eq!(d.post, [1]);
        assert!(d.active.iter().all(|al| al.starts_at == t1));
    }

    #[test]
    fn alertmanager_is_posted_to_again_every_interval_until_the_period_ends() {
        let a = alerts();
        let p = november();
        assert_eq!(repost_every(&p), Duration::from_secs(60));
        let t1 = ts("2026-11-10T00:00:00Z");
        let mut stored = Counters::new();
        let d = decide(&a, &snapshot(500, None), &stored, &[], t1);
        persist(&mut stored, &d);
        let at = |s: u64| crate::clock::add(t1, Duration::from_secs(s));
        let posted = [None, Some(t1), None];
        assert!(
            decide(&a, &snapshot(500, None), &stored, &posted, at(59))
                .post
                .is_empty()
        );
        assert_eq!(
            decide(&a, &snapshot(500, None), &stored, &posted, at(60)).post,
            [1]
        );
        // A new firing is posted at once.
        assert_eq!(
            decide(&a, &snapshot(800, None), &stored, &posted, at(1)).post,
            [1]
        );
        // endsAt: four re-posts ahead, but never past the period's end.
        assert_eq!(ends_at(&p, t1), at(240));
        assert_eq!(ends_at(&p, ts("2026-11-30T23:59:00Z")), p.end);
        // A 10-minute period re-posts every 6 s, but announces at least 3 minutes ahead:
        // a slow webhook holding up a check cannot let an active alert expire.
        let short = Period {
            start: ts("2026-11-30T12:00:00Z"),
            end: ts("2026-11-30T12:10:00Z"),
        };
        assert_eq!(repost_every(&short), Duration::from_secs(6));
        assert_eq!(
            ends_at(&short, ts("2026-11-30T12:01:00Z")),
            ts("2026-11-30T12:04:00Z")
        );
        // At and after the end nothing is decided for the old period.
        assert_eq!(
            decide(&a, &snapshot(900, None), &stored, &posted, p.end),
            Decision::default()
        );
        // Short periods re-post sooner (a hundredth of the period, at least 1 s).
        let ten_minutes = Period {
            start: t1,
            end: at(600),
        };
        assert_eq!(repost_every(&ten_minutes), Duration::from_secs(6));
    }

    #[test]
    fn names_and_keys_are_stable() {
        let id = AlertId {
            signal: Signal::Logs,
            kind: Kind::Used(Threshold(9950)),
        };
        assert_eq!(starts_at_key(id), "alerts/logs/used_99.5/starts_at");
        assert_eq!(
            idempotency_key(&november(), id),
            "frugal:2026-11-01T00:00:00Z:logs:used_99.5"
        );
        let w = hook("https://hooks.slack.com/services/x", WebhookFormat::Slack);
        let sink = sink_id(&w);
        assert_eq!(sink.len(), 8);
        assert_eq!(sink, sink_id(&w.clone()));
        assert_ne!(
            sink,
            sink_id(&hook(
                "https://hooks.slack.com/services/x",
                WebhookFormat::Generic
            ))
        );
        assert!(!delivered_key(id, &sink).contains("slack"));
    }
}
