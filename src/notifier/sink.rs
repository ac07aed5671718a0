//! Where notifications go: the bodies of each webhook format, and one POST with retries
//! (the forwarder's client and retry decisions). Never logs a webhook's URL or headers.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, header};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use jiff::Timestamp;
use serde_json::{Value, json};

use super::decide::{Alert, Kind, Snapshot, idempotency_key};
use crate::clock::SharedClock;
use crate::forwarder::retry::{self, Attempt, Next};
use crate::policy::{Retry, Webhook, WebhookFormat};
use crate::stats::Stats;
use crate::units::format_size;

/// The header carrying a notification's idempotency key (generic and Slack webhooks).
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";

/// The path Alertmanager takes alerts at (appended to a base URL).
pub const ALERTMANAGER_PATH: &str = "/api/v2/alerts";

/// One attempt's timeout.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// Retries of one POST: 5xx, 429, timeouts and connection errors, for up to 20 s; after
/// that the notification waits for a later check.
const RETRY: Retry = Retry {
    initial_backoff: Duration::from_millis(500),
    max_backoff: Duration::from_secs(5),
    max_elapsed: Duration::from_secs(20),
};

/// Attempts per POST at most.
const MAX_ATTEMPTS: u32 = 8;

/// The webhook's URL for `format`: Alertmanager's is its base URL with
/// `/api/v2/alerts` appended, unless it already ends so.
pub fn url(w: &Webhook) -> String {
    match w.format {
        WebhookFormat::Alertmanager => {
            let base = w.url.trim_end_matches('/');
            if base.ends_with(ALERTMANAGER_PATH) {
                base.to_string()
            } else {
                format!("{base}{ALERTMANAGER_PATH}")
            }
        }
        _ => w.url.clone(),
    }
}

/// One line saying what happened, for Slack, logs and the generic body.
pub fn summary(alert: &Alert, snapshot: &Snapshot) -> String {
    let signal = alert.id.signal.as_str();
    let budget = snapshot.budget(alert.id.signal);
    let (used, limit) = budget.map_or((0, 0), |b| (b.used, b.limit));
    match alert.id.kind {
        Kind::Used(t) => format!(
            "frugal: {signal} reached {} of this period's budget ({} of {})",
            t.label(),
            format_size(used),
            format_size(limit)
        ),
        Kind::ProjectedOverage => format!(
            "frugal: {signal} is projected to use up this period's budget of {} before {} ({} used so far)",
            format_size(limit),
            snapshot.period.end,
            format_size(used)
        ),
    }
}

/// The generic webhook's body (documented in the README).
pub fn generic_body(alert: &Alert, snapshot: &Snapshot) -> Value {
    let budget = snapshot.budget(alert.id.signal);
    let (used, limit) = budget.map_or((0, 0), |b| (b.used, b.limit));
    let threshold = alert.id.kind.threshold();
    json!({
        "version": 1,
        "idempotency_key": idempotency_key(&snapshot.period, alert.id),
        "alert": match alert.id.kind {
            Kind::Used(_) => "budget_used",
            Kind::ProjectedOverage => "projected_overage",
        },
        "signal": alert.id.signal.as_str(),
        "threshold": threshold.label(),
        "threshold_ratio": threshold.ratio(),
        "period": {"start": snapshot.period.start.to_string(), "end": snapshot.period.end.to_string()},
        "starts_at": alert.starts_at.to_string(),
        "used": used,
        "limit": limit,
        "used_ratio": if limit > 0 { used as f64 / limit as f64 } else { 0.0 },
        "projected_used": budget.and_then(|b| b.projected_used),
        "summary": summary(alert, snapshot),
    })
}

/// Slack's incoming-webhook body.
pub fn slack_body(alert: &Alert, snapshot: &Snapshot) -> Value {
    json!({ "text": summary(alert, snapshot) })
}

/// Alertmanager's `postableAlerts`: every active alert with stable labels, its persisted
/// `startsAt` and an `endsAt` a few re-posts ahead (at most the period's end).
pub fn alertmanager_body(active: &[Alert], snapshot: &Snapshot, ends_at: Timestamp) -> Value {
    let alerts: Vec<Value> = active
        .iter()
        .map(|a| {
            let name = match a.id.kind {
                Kind::Used(_) => "FrugalBudgetUsed",
                Kind::ProjectedOverage => "FrugalProjectedOverage",
            };
            json!({
                "labels": {
                    "alertname": name,
                    "signal": a.id.signal.as_str(),
                    "threshold": a.id.kind.threshold().label(),
                    "period_start": snapshot.period.start.to_string(),
                },
                "annotations": {"summary": summary(a, snapshot)},
                "startsAt": a.starts_at.to_string(),
                "endsAt": ends_at.to_string(),
            })
        })
        .collect();
    Value::Array(alerts)
}

/// POSTs JSON bodies to webhooks, retrying with backoff, counting every outcome.
pub struct Poster {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    clock: SharedClock,
    stats: Arc<Stats>,
}

impl Poster {
    /// A poster on its own connection pool.
    pub fn new(clock: SharedClock, stats: Arc<Stats>) -> Self {
        Self {
            client: crate::forwarder::https_client(ATTEMPT_TIMEOUT),
            clock,
            stats,
        }
    }

    /// POSTs `body` to `w` (with `idempotency` as [`IDEMPOTENCY_HEADER`] if given) until it
    /// is acknowledged (2xx) or the retries run out; true when acknowledged.
    pub async fn post(&self, w: &Webhook, body: &Value, idempotency: Option<&str>) -> bool {
        let format = w.format.as_str();
        let body = Bytes::from(serde_json::to_vec(body).unwrap_or_default());
        let deadline = crate::clock::add(self.clock.now(), RETRY.max_elapsed);
        let mut n = 0;
        loop {
            n += 1;
            let attempt = self.attempt(w, body.clone(), idempotency).await;
            if attempt == Attempt::Success {
                crate::stats::inc(&self.stats.notifications, &[format, "delivered"], 1);
                return true;
            }
            let next = retry::next(
                &attempt,
                &RETRY,
                n,
                rand::random(),
                self.clock.now(),
                deadline,
            );
            match next {
                Next::RetryAfter(wait) if attempt.should_retry() && n < MAX_ATTEMPTS => {
                    crate::stats::inc(&self.stats.notifications, &[format, "retried"], 1);
                    tokio::time::sleep(wait).await;
                }
                _ => {
                    crate::stats::inc(&self.stats.notifications, &[format, "failed"], 1);
                    tracing::warn!(
                        webhook = %w.describe(),
                        outcome = attempt.label(),
                        attempts = n,
                        "a notification could not be delivered; trying again later"
                    );
                    return false;
                }
            }
        }
    }

    async fn attempt(&self, w: &Webhook, body: Bytes, idempotency: Option<&str>) -> Attempt {
        let mut b = Request::post(url(w));
        for (k, v) in &w.headers {
            b = b.header(k.as_str(), v.as_str());
        }
        // The URL and headers were validated with the policy.
        let Ok(mut req) = b.body(Full::new(body)) else {
            return Attempt::Rejected { status: 0 };
        };
        // frugal's own headers replace the user's of the same name (never sent twice).
        let h = req.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        );
        h.insert(
            header::USER_AGENT,
            header::HeaderValue::from_static(concat!("frugal/", env!("CARGO_PKG_VERSION"))),
        );
        if let Some(key) = idempotency.and_then(|k| header::HeaderValue::from_str(k).ok()) {
            h.insert(IDEMPOTENCY_HEADER, key);
        }
        let result = tokio::time::timeout(ATTEMPT_TIMEOUT, async {
            let resp = self.client.request(req).await?;
            let status = resp.status().as_u16();
            let retry_after = retry::retry_after(resp.headers(), self.clock.now());
            // Read (a little of) the answer so the connection can be reused.
            let _ = Limited::new(resp.into_body(), 64 * 1024).collect().await;
            Ok::<_, hyper_util::client::legacy::Error>((status, retry_after))
        })
        .await;
        match result {
            Err(_) => Attempt::Timeout,
            Ok(Err(e)) if e.is_connect() => Attempt::ConnectFailed,
            Ok(Err(_)) => Attempt::Broken,
            Ok(Ok((status, retry_after))) => Attempt::from_status(status, retry_after),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Signal;
    use crate::notifier::decide::{AlertId, Budget};
    use crate::period::PeriodSpec;
    use crate::policy::Threshold;

    fn snapshot() -> Snapshot {
        let t: Timestamp = "2026-11-10T00:00:00Z".parse().unwrap();
        Snapshot {
            period: PeriodSpec::utc_month().period_at(t),
            budgets: vec![Budget {
                signal: Signal::Traces,
                used: 40_000_000_000,
                limit: 50_000_000_000,
                projected_used: Some(47.5e9),
            }],
        }
    }

    fn alert(kind: Kind) -> Alert {
        Alert {
            id: AlertId {
                signal: Signal::Traces,
                kind,
            },
            starts_at: "2026-11-10T12:00:00Z".parse().unwrap(),
        }
    }

    #[test]
    fn alertmanager_accepts_a_base_url_or_the_full_path() {
        let w = |url: &str| Webhook {
            url: url.to_string(),
            format: WebhookFormat::Alertmanager,
            headers: Vec::new(),
        };
        for u in [
            "http://am:9093",
            "http://am:9093/",
            "http://am:9093/api/v2/alerts",
        ] {
            assert_eq!(url(&w(u)), "http://am:9093/api/v2/alerts", "{u}");
        }
        assert_eq!(
            url(&w("https://proxy.example/am/")),
            "https://proxy.example/am/api/v2/alerts"
        );
        let mut generic = w("http://hook.example/x/");
        generic.format = WebhookFormat::Generic;
        assert_eq!(url(&generic), "http://hook.example/x/");
    }

    #[test]
    fn bodies_say_what_happened() {
        let s = snapshot();
        let a = alert(Kind::Used(Threshold(8000)));
        let g = generic_body(&a, &s);
        assert_eq!(g["alert"], "budget_used");
        assert_eq!(g["threshold"], "80%");
        assert_eq!(g["threshold_ratio"], 0.8);
        assert_eq!(g["used_ratio"], 0.8);
        assert_eq!(g["starts_at"], "2026-11-10T12:00:00Z");
        assert_eq!(
            g["idempotency_key"],
            "frugal:2026-11-01T00:00:00Z:traces:used_80"
        );
        assert_eq!(
            slack_body(&a, &s)["text"],
            "frugal: traces reached 80% of this period's budget (40GB of 50GB)"
        );
        let o = alert(Kind::ProjectedOverage);
        assert_eq!(generic_body(&o, &s)["alert"], "projected_overage");
        let ends: Timestamp = "2026-11-10T12:04:00Z".parse().unwrap();
        let am = alertmanager_body(&[a, o], &s, ends);
        assert_eq!(
            am[0]["labels"],
            json!({"alertname": "FrugalBudgetUsed", "signal": "traces", "threshold": "80%",
                   "period_start": "2026-11-01T00:00:00Z"})
        );
        assert_eq!(am[1]["labels"]["alertname"], "FrugalProjectedOverage");
        assert_eq!(am[1]["labels"]["threshold"], "100%");
        assert_eq!(am[0]["startsAt"], "2026-11-10T12:00:00Z");
        assert_eq!(am[0]["endsAt"], "2026-11-10T12:04:00Z");
    }
}
