//! Built-in notifications (the policy's `alerts`): when a budget passes a threshold, or
//! its projection reaches the limit before the period ends, the policy's webhooks hear
//! it — once per alert, signal and period, across restarts.
//!
//! - [`decide`]: what fires and what is sent, a pure function of the policy, a usage
//!   snapshot, what the store says already fired and was delivered, and `now`;
//! - [`sink`]: the bodies (generic, Slack, Alertmanager) and the POST with retries;
//! - [`Notifier`]: [`Notifier::check`] reads the period's counters, decides and
//!   **persists new firings before anything is sent**; [`Notifier::deliver`] sends, then
//!   persists each generic and Slack delivery. A `kill -9` between the two resends with
//!   the same idempotency key; Alertmanager is re-posted to with the persisted `startsAt`.
//!
//! The app's notifier task drives it every `pacing.recompute_every`; it never runs on the
//! request path. Time comes from the core's clock.
//!
//! What fired lives in the store's period counters (`alerts/<signal>/<alert>/starts_at`,
//! `.../delivered/<webhook>`), which the ledger ignores. A counter is added to, so two
//! replicas firing the same alert at once would sum their times: several replicas will
//! need the store's set-if-absent (Redis `SETNX`) here.

pub mod decide;
pub mod sink;

use std::sync::{Arc, Mutex};

use jiff::Timestamp;

use crate::core::Core;
use crate::model::Signal;
use crate::policy::{Alerts, WebhookFormat};
use crate::store::{Counters, StoreError};
use decide::{Alert, Budget, Decision, Snapshot, delivered_key, sink_id, starts_at_key};
use sink::Poster;

/// What one check found to send.
#[derive(Debug, Clone)]
pub struct Work {
    /// The usage the decision was made on.
    pub snapshot: Snapshot,
    /// The decision, its firings persisted.
    pub decision: Decision,
}

/// The notifier of one running frugal.
pub struct Notifier {
    core: Arc<Core>,
    alerts: Alerts,
    poster: Poster,
    /// Per webhook: when Alertmanager was last posted to (by this process).
    last_posted: Mutex<Vec<Option<Timestamp>>>,
    /// Per webhook: no delivery is tried before this (after one failed).
    paused_until: Mutex<Vec<Option<Timestamp>>>,
}

impl Notifier {
    /// The notifier for the core's policy; `None` when the policy has no `alerts`.
    pub fn new(core: Arc<Core>) -> Option<Notifier> {
        let alerts = core.policy().alerts.clone()?;
        let n = alerts.webhooks.len();
        for w in &alerts.webhooks {
            tracing::info!(webhook = %w.describe(), "notifications go to");
        }
        Some(Notifier {
            poster: Poster::new(core.clock.clone(), core.stats.clone()),
            core,
            alerts,
            last_posted: Mutex::new(vec![None; n]),
            paused_until: Mutex::new(vec![None; n]),
        })
    }

    /// Decides at the clock's time and persists what fires now (blocking I/O: call it off
    /// the async workers). Firings are logged.
    pub fn check(&self) -> Result<Work, StoreError> {
        let now = self.core.clock.now();
        let snapshot = snapshot(&self.core);
        let last_posted = lock(&self.last_posted).clone();
        let decision = check_in(&self.core, &self.alerts, &snapshot, &last_posted, now)?;
        for a in &decision.fire {
            tracing::warn!(
                signal = a.id.signal.as_str(),
                alert = %a.id.kind.key(),
                "{}",
                sink::summary(a, &snapshot)
            );
        }
        Ok(Work { snapshot, decision })
    }

    /// Sends what `work` says, each webhook in turn of its alerts, the webhooks at once;
    /// persists each generic and Slack delivery as it is acknowledged.
    pub async fn deliver(&self, work: Work) {
        let now = self.core.clock.now();
        let paused = lock(&self.paused_until).clone();
        let sends = self
            .alerts
            .webhooks
            .iter()
            .enumerate()
            .filter(|(i, _)| paused[*i].is_none_or(|until| now >= until))
            .map(|(i, _)| self.deliver_to(i, &work));
        futures_util::future::join_all(sends).await;
    }

    async fn deliver_to(&self, i: usize, work: &Work) {
        let Some(w) = self.alerts.webhooks.get(i) else {
            return;
        };
        let (snapshot, d) = (&work.snapshot, &work.decision);
        let ok = match w.format {
            WebhookFormat::Alertmanager => {
                if !d.post.contains(&i) {
                    return;
                }
                let now = self.core.clock.now();
                let ends_at = decide::ends_at(&snapshot.period, now);
                let body = sink::alertmanager_body(&d.active, snapshot, ends_at);
                let ok = self.poster.post(w, &body, None).await;
                if ok {
                    lock(&self.last_posted)[i] = Some(now);
                }
                ok
            }
            WebhookFormat::Generic | WebhookFormat::Slack => {
                let mut ok = true;
                for (alert, _) in d.deliver.iter().filter(|(_, to)| *to == i) {
                    if !self.send_one(w, alert, snapshot).await {
                        ok = false;
                        break;
                    }
                }
                ok
            }
        };
        let pause = (!ok).then(|| {
            crate::clock::add(
                self.core.clock.now(),
                decide::repost_every(&snapshot.period),
            )
        });
        lock(&self.paused_until)[i] = pause;
    }

    /// One generic or Slack notification; its delivery persisted once acknowledged.
    async fn send_one(&self, w: &crate::policy::Webhook, alert: &Alert, s: &Snapshot) -> bool {
        let body = match w.format {
            WebhookFormat::Slack => sink::slack_body(alert, s),
            _ => sink::generic_body(alert, s),
        };
        let key = decide::idempotency_key(&s.period, alert.id);
        if !self.poster.post(w, &body, Some(&key)).await {
            return false;
        }
        let mut mark = Counters::new();
        let at = self.core.clock.now().as_second().max(1) as u64;
        mark.insert(delivered_key(alert.id, &sink_id(w)), at);
        // A small durable write; if it fails the notification is sent again, with the
        // same key.
        match self.core.ledger.store().add(&s.period.key(), &mark) {
            Ok(_) => tracing::info!(
                webhook = %w.describe(),
                signal = alert.id.signal.as_str(),
                alert = %alert.id.kind.key(),
                "notification delivered"
            ),
            Err(e) => tracing::error!(
                error = %e,
                "a delivered notification could not be marked; it will be sent again with the same idempotency key"
            ),
        }
        true
    }
}

/// The ledger's usage and the pacer's projection of every byte budget, now.
pub fn snapshot(core: &Core) -> Snapshot {
    let policy = core.policy();
    let period = core.ledger.period();
    let pacing = core.pacing.load();
    // A projection made before this period began is the last period's (the pacer has not
    // recomputed since the roll): no projection rather than a stale one.
    let fresh = pacing.updated.filter(|t| *t >= period.start).is_some();
    let budgets = Signal::ALL
        .into_iter()
        .filter_map(|s| {
            let b = policy.budgets.bytes(s)?;
            Some(Budget {
                signal: s,
                used: core.ledger.used(s),
                limit: b.effective_limit(),
                projected_used: fresh.then(|| pacing.signal(s).projected_used),
            })
        })
        .collect();
    Snapshot { period, budgets }
}

/// Reads what fired this period, decides, and persists the new firings before returning:
/// the production check, and the simulator's.
pub fn check_in(
    core: &Core,
    alerts: &Alerts,
    snapshot: &Snapshot,
    last_posted: &[Option<Timestamp>],
    now: Timestamp,
) -> Result<Decision, StoreError> {
    let store = core.ledger.store();
    let key = snapshot.period.key();
    let stored = store.totals(&key)?;
    let decision = decide::decide(alerts, snapshot, &stored, last_posted, now);
    if !decision.fire.is_empty() {
        let fired: Counters = decision
            .fire
            .iter()
            .map(|a| (starts_at_key(a.id), a.starts_at.as_second().max(1) as u64))
            .collect();
        store.add(&key, &fired)?;
    }
    Ok(decision)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests;
