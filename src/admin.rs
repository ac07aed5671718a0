//! The admin port: `/` (the status page, [`crate::status`]), `/metrics` (Prometheus text
//! format), `/healthz`, `/readyz`, `/api/v1/usage` (JSON: each signal's usage, limit,
//! fraction, pacing, period), `/api/v1/usage/history` (each signal's used amount through
//! the period, for the page's charts), and `PUT /api/v1/usage/{signal}` (what `frugal
//! usage set --admin` calls).
//!
//! Readiness means "ready to accept": the store is open and the listeners are up. It does
//! not follow upstream health, or a Grafana outage would take frugal out of its Service
//! and lose the data frugal would otherwise answer 503 for.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::budget::controller::PacingState;
use crate::core::Core;
use crate::ledger::SignalUsage;
use crate::metering::Weight;
use crate::model::{Signal, Unit};
use crate::policy::Policy;
use crate::receivers::connections::{self, Listener};
use crate::table::{Key, Table};

/// The file in the data directory where a running frugal writes its admin address, so
/// `frugal usage` finds it (the store itself is locked while frugal runs).
pub const ADDRESS_FILE: &str = "admin.address";

/// The address a local client reaches `bound` at (a wildcard becomes loopback).
pub fn local_address(bound: std::net::SocketAddr) -> std::net::SocketAddr {
    let mut a = bound;
    if a.ip().is_unspecified() {
        a.set_ip(match a.ip() {
            std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    a
}

/// What the admin endpoints read.
pub struct Admin {
    /// The running frugal's shared state.
    pub core: Arc<Core>,
    /// Whether frugal accepts data (false before the store opens and while draining).
    pub ready: Arc<AtomicBool>,
}

type Body = Full<Bytes>;

/// Serves the admin API on `listener` until `shutdown` is cancelled. Its connections have
/// their own cap (`listen.connections.admin_max`), apart from the OTLP ports', so
/// saturated OTLP ports leave `/readyz` and `/metrics` answering; each request must be
/// answered within `listen.connections.request_timeout` (408 otherwise).
pub async fn serve(mut listener: Listener, admin: Arc<Admin>, shutdown: CancellationToken) {
    let builder = connections::http_builder(listener.limits());
    let within = listener.limits().request_timeout;
    loop {
        let conn = tokio::select! {
            c = listener.accept() => c,
            () = shutdown.cancelled() => break,
        };
        let (peer, watch) = (conn.peer(), conn.watch());
        let admin = admin.clone();
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let admin = admin.clone();
            let in_flight = watch.begin(req.version() == http::Version::HTTP_2);
            async move {
                let resp = match tokio::time::timeout(within, route(&admin, peer, req)).await {
                    Ok(r) => r,
                    Err(_) => json_reply(
                        StatusCode::REQUEST_TIMEOUT,
                        &json!({"error": format!(
                            "the request took longer than {} (listen.connections.request_timeout)",
                            crate::units::format_duration(within)
                        )}),
                    ),
                };
                drop(in_flight);
                Ok::<_, Infallible>(resp)
            }
        });
        let builder = builder.clone();
        tokio::spawn(async move {
            let _ = builder.serve_connection(TokioIo::new(conn), service).await;
        });
    }
}

fn reply(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// The status page, with a fresh nonce in it and in its Content-Security-Policy: only its
/// own inline script and style run, it may fetch only from the admin port itself, and no
/// other site may frame it.
fn status_page() -> Response<Body> {
    let nonce = crate::status::nonce();
    let mut r = reply(
        StatusCode::OK,
        "text/html; charset=utf-8",
        crate::status::page(&nonce),
    );
    let h = r.headers_mut();
    if let Ok(csp) = HeaderValue::from_str(&crate::status::content_security_policy(&nonce)) {
        h.insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn json_reply(status: StatusCode, v: &Value) -> Response<Body> {
    let body = serde_json::to_vec_pretty(v).unwrap_or_default();
    reply(status, "application/json", body)
}

async fn route(
    admin: &Admin,
    peer: std::net::SocketAddr,
    req: Request<Incoming>,
) -> Response<Body> {
    let path = req.uri().path().to_string();
    match (req.method().clone(), path.as_str()) {
        (Method::GET, "/healthz") => reply(StatusCode::OK, "text/plain", "ok\n"),
        (Method::GET, "/readyz") => {
            if admin.ready.load(Ordering::SeqCst) {
                reply(StatusCode::OK, "text/plain", "ready\n")
            } else {
                reply(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "not ready\n")
            }
        }
        (Method::GET, "/metrics") => {
            refresh_gauges(&admin.core);
            reply(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                admin.core.stats.render(),
            )
        }
        (Method::GET, "/api/v1/usage") => json_reply(StatusCode::OK, &usage_json(&admin.core)),
        // Compact: the page polls it every 2 s, with up to 745 points a signal.
        // It scans the period's counters in the store: off the async workers.
        (Method::GET, "/api/v1/usage/history") => match history_off_workers(&admin.core).await {
            Ok(Ok(v)) => reply(
                StatusCode::OK,
                "application/json",
                serde_json::to_vec(&v).unwrap_or_default(),
            ),
            Ok(Err(e)) => json_reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                &json!({"error": e.to_string()}),
            ),
            Err(e) => json_reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                &json!({"error": format!("reading the history failed: {e}")}),
            ),
        },
        (Method::GET, "/api/v1/series") => {
            let top = req
                .uri()
                .query()
                .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("top=")))
                .and_then(|v| v.parse().ok())
                .unwrap_or(DEFAULT_TOP);
            json_reply(StatusCode::OK, &series_json(&admin.core, top))
        }
        (Method::PUT, p) if p.starts_with("/api/v1/usage/") => set_usage(admin, peer, req).await,
        (Method::GET, "/") => status_page(),
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    }
}

/// Who may change usage: with the ingest credential when the policy sets one; without
/// one, only a caller on the same host (the pod itself, `kubectl exec` or `port-forward`),
/// IPv4-mapped loopback included.
fn may_set_usage(
    policy: &Policy,
    peer: std::net::IpAddr,
    credential: Option<&HeaderValue>,
) -> Result<(), (StatusCode, &'static str)> {
    match &policy.ingest.auth {
        Some(auth) if !crate::auth::authorized(Some(auth), credential) => Err((
            StatusCode::UNAUTHORIZED,
            "missing or wrong credentials (frugal usage set --token)",
        )),
        Some(_) => Ok(()),
        None if peer.to_canonical().is_loopback() => Ok(()),
        None => Err((
            StatusCode::FORBIDDEN,
            "usage can only be set from the same host, unless the policy sets ingest.auth",
        )),
    }
}

async fn set_usage(
    admin: &Admin,
    peer: std::net::SocketAddr,
    req: Request<Incoming>,
) -> Response<Body> {
    let policy = admin.core.policy();
    if let Err((status, error)) =
        may_set_usage(&policy, peer.ip(), req.headers().get(header::AUTHORIZATION))
    {
        return json_reply(status, &json!({ "error": error }));
    }
    let name = req
        .uri()
        .path()
        .trim_start_matches("/api/v1/usage/")
        .to_string();
    let Some(signal) = Signal::parse(&name) else {
        return json_reply(
            StatusCode::NOT_FOUND,
            &json!({"error": format!("no signal {name:?} (traces, logs, metrics)")}),
        );
    };
    let body = match Limited::new(req.into_body(), 4096).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return json_reply(StatusCode::BAD_REQUEST, &json!({"error": "body too large"})),
    };
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return json_reply(
                StatusCode::BAD_REQUEST,
                &json!({"error": format!("not JSON: {e}")}),
            );
        }
    };
    let units = match v.get("used") {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => crate::units::parse_size(s).ok(),
        _ => None,
    };
    let Some(units) = units else {
        return json_reply(
            StatusCode::BAD_REQUEST,
            &json!({"error": "give {\"used\": \"12GB\"} (a size, or a number)"}),
        );
    };
    let limit = policy.budgets.bytes(signal).map(|b| b.limit);
    if let Err(error) = crate::ledger::check_set_used(signal, units, limit) {
        return json_reply(StatusCode::BAD_REQUEST, &json!({ "error": error }));
    }
    let ledger = &admin.core.ledger;
    let before = ledger.used(signal);
    ledger.set_used(signal, units);
    if let Err(e) = ledger.flush(admin.core.clock.now()) {
        return json_reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            &json!({"error": format!("set, but not yet flushed: {e}")}),
        );
    }
    tracing::info!(
        signal = signal.as_str(),
        before,
        after = units,
        "usage set by the admin API"
    );
    json_reply(
        StatusCode::OK,
        &json!({"signal": signal.as_str(), "before": before, "used": ledger.used(signal)}),
    )
}

fn limit_of(policy: &Policy, s: Signal) -> (Option<u64>, Option<u64>) {
    match policy.budgets.bytes(s) {
        Some(b) => (Some(b.effective_limit()), Some(b.target_bytes())),
        None => (None, None),
    }
}

/// A table of weights as the API shows it: only non-zero entries, by name.
fn pairs<K: Key, const N: usize>(t: &Table<K, Weight, N>, unit: Unit) -> Value {
    let m: serde_json::Map<String, Value> = t
        .iter()
        .filter(|(_, w)| !w.is_zero())
        .map(|(k, w)| {
            (
                k.name().to_string(),
                json!({"items": w.items, unit.as_str(): w.units}),
            )
        })
        .collect();
    Value::Object(m)
}

/// How many metric names `/api/v1/series` lists unless asked (`?top=N`).
const DEFAULT_TOP: usize = 20;

/// The cost report of `/api/v1/series` (`frugal top`): the series counts, and the metric
/// names holding the most series (then DPM), each with the Alloy `prometheus.relabel` rule
/// that would drop it at the source.
pub fn series_json(core: &Core, top: usize) -> Value {
    let policy = core.policy();
    let series = &core.series;
    let counts = series.tracker.counts(core.clock.now());
    let metrics: Vec<Value> = series
        .top(top)
        .into_iter()
        .map(|c| {
            let relabel = relabel_rule(&c.name).unwrap_or_default();
            json!({
                "name": c.name,
                "series": c.series,
                "dpm": c.dpm,
                "refused": c.refused,
                "relabel": relabel,
            })
        })
        .collect();
    json!({
        "total_series": series.tracker.len(),
        "active_series": counts.billing,
        "series_limit": policy.budgets.metrics.as_ref().and_then(|m| m.active_series),
        "series_refused": series.refused_total(),
        "dpm": series.dpm(),
        "metrics": metrics,
    })
}

/// The Alloy `prometheus.relabel` rule dropping metric `name` at the source; none for
/// the pseudo-names (`other`, `unknown`), which are no metric.
fn relabel_rule(name: &str) -> Option<String> {
    if name == "other" || name == "unknown" {
        return None;
    }
    // The regex, written as an Alloy (River) string literal.
    let mut lit = String::new();
    for ch in regex::escape(name).chars() {
        match ch {
            '\\' => lit.push_str("\\\\"),
            '"' => lit.push_str("\\\""),
            '\n' => lit.push_str("\\n"),
            c if c.is_control() => lit.push_str(&format!("\\u{:04x}", c as u32)),
            c => lit.push(c),
        }
    }
    Some(format!(
        "rule {{\n  source_labels = [\"__name__\"]\n  regex         = \"{lit}\"\n  action        = \"drop\"\n}}"
    ))
}

/// The usage document of `/api/v1/usage`.
pub fn usage_json(core: &Core) -> Value {
    let policy = core.policy();
    let ledger = &core.ledger;
    let period = ledger.period();
    let now = core.clock.now();
    let pacing = core.pacing.load();
    let mut signals = serde_json::Map::new();
    for s in Signal::ALL {
        let u: SignalUsage = ledger.usage(s);
        let unit = s.budget_unit();
        let (limit, target) = limit_of(&policy, s);
        let p = pacing.signal(s);
        let fraction = limit.map(|l| u.used as f64 / l as f64);
        let offered = u.offered_total();
        let mut doc = json!({
            "unit": unit.as_str(),
            "used": u.used,
            "limit": limit,
            "target": target,
            "fraction": fraction,
            "offered": {
                "items": offered.items,
                unit.as_str(): offered.units,
                "by_class": u.offered.iter().map(|(c, w)| (c.as_str().to_string(), json!({
                    "items": w.items,
                    unit.as_str(): w.units,
                }))).collect::<serde_json::Map<_, _>>(),
            },
            "dropped": pairs(&u.dropped, unit),
            "sent": {"items": u.sent.items, unit.as_str(): u.sent.units},
            "acknowledged": {"items": u.acked.items, unit.as_str(): u.acked.units},
            "rejected": pairs(&u.rejected, unit),
            "adjustment": u.adjustment,
        });
        if policy.shadow {
            doc["would_drop"] = pairs(&u.shadow_dropped, unit);
        }
        if let Some(l) = limit {
            let runs_out = run_out_at(
                l as f64 - u.used as f64,
                p.forwarded_rate,
                unix_seconds(now),
                unix_seconds(period.end),
            );
            doc["pacing"] = json!({
                "state": p.state,
                "keep_probability": p.probabilities,
                "demand_per_second": p.demand,
                "forwarded_per_second": p.forwarded_rate,
                "projected_used": p.projected_used,
                "projected_fraction": p.projected_used / l as f64,
                "runs_out_at": (runs_out > 0.0)
                    .then(|| jiff::Timestamp::from_millisecond((runs_out * 1000.0) as i64).ok())
                    .flatten()
                    .map(|t| t.to_string()),
            });
        }
        if s == Signal::Logs
            && let Some(g) = &*core.streams.load()
        {
            doc["streams_dropped"] = g
                .top(10)
                .into_iter()
                .map(|(labels, entries)| json!({"labels": labels, "entries": entries}))
                .collect();
        }
        if s == Signal::Metrics {
            let series = &core.series;
            let counts = series.tracker.counts(now);
            let limit = policy
                .budgets
                .metrics
                .as_ref()
                .and_then(|m| m.active_series);
            let dpm = series.dpm();
            doc["active_series"] = json!(counts.billing);
            doc["series_in_memory"] = json!(series.tracker.len());
            doc["series_limit"] = json!(limit);
            doc["active_series_limit"] = json!(limit);
            doc["series_target"] = json!(policy.budgets.metrics.as_ref().map(|m| m.target));
            doc["series_refused"] = json!(series.refused_total());
            doc["dpm"] = json!(dpm);
            // Grafana bills the larger of active series and DPM over the included one per
            // series per minute.
            doc["billed_series"] = json!(counts.billing.max(dpm));
            doc["min_sample_interval_seconds"] =
                json!(policy.metrics.min_sample_interval.map(|d| d.as_secs_f64()));
        }
        signals.insert(s.as_str().to_string(), doc);
    }
    let previous = match ledger.previous() {
        Ok(Some((p, used))) => {
            let signals: serde_json::Map<String, Value> = used
                .iter()
                .map(|(s, used)| {
                    let (limit, _) = limit_of(&policy, s);
                    (
                        s.as_str().to_string(),
                        json!({"used": used, "limit": limit, "fraction": limit.map(|l| *used as f64 / l as f64)}),
                    )
                })
                .collect();
            json!({"start": p.start.to_string(), "end": p.end.to_string(), "signals": signals})
        }
        _ => Value::Null,
    };
    json!({
        "previous_period": previous,
        "period": {
            "start": period.start.to_string(),
            "end": period.end.to_string(),
            "kind": ledger.period_spec().describe(),
            "elapsed_fraction": period.elapsed_seconds(now) / period.length_seconds(),
        },
        "shadow": policy.shadow,
        "signals": signals,
    })
}

/// [`history_json`] on a blocking thread (it reads the store).
async fn history_off_workers(
    core: &Arc<Core>,
) -> Result<Result<Value, crate::store::StoreError>, tokio::task::JoinError> {
    let core = core.clone();
    tokio::task::spawn_blocking(move || history_json(&core)).await
}

/// The history document of `/api/v1/usage/history`: the period, and per signal its unit,
/// limit, target, where the even pace to the target stands now, the projection at the
/// period's end, the pacing state, and `points` (`t` in Unix seconds, `used`): the
/// period's start, the end of each step passed (an hour in a month) and now.
pub fn history_json(core: &Core) -> Result<Value, crate::store::StoreError> {
    let policy = core.policy();
    let now = core.clock.now();
    let h = core.ledger.history(now)?;
    let period = h.period;
    let elapsed = (period.elapsed_seconds(now) / period.length_seconds()).clamp(0.0, 1.0);
    let pacing = core.pacing.load();
    let signals: serde_json::Map<String, Value> = Signal::ALL
        .iter()
        .map(|&s| {
            let (limit, target) = limit_of(&policy, s);
            let p = pacing.signal(s);
            let doc = json!({
                "unit": s.budget_unit().as_str(),
                "limit": limit,
                "target": target,
                "pace": target.map(|t| t as f64 * elapsed),
                "projected_used": limit.map(|_| p.projected_used),
                "state": limit.map(|_| p.state),
                "points": h.points[s],
            });
            (s.as_str().to_string(), doc)
        })
        .collect();
    Ok(json!({
        "period": {
            "start": period.start.to_string(),
            "end": period.end.to_string(),
            "start_seconds": period.start.as_second(),
            "end_seconds": period.end.as_second(),
            "step_seconds": h.step_seconds,
        },
        "now": now.as_second(),
        "signals": signals,
    }))
}

fn unix_seconds(t: jiff::Timestamp) -> f64 {
    t.as_millisecond() as f64 / 1000.0
}

/// When a budget with `left` bytes runs out at `rate` bytes/s, in Unix seconds: `now` if
/// nothing is left, 0 if it lasts past the period's `end` (or nothing is being sent).
fn run_out_at(left: f64, rate: f64, now: f64, end: f64) -> f64 {
    if left <= 0.0 {
        return now;
    }
    if rate <= 0.0 {
        return 0.0;
    }
    let at = now + left / rate;
    if at >= end { 0.0 } else { at }
}

fn refresh_gauges(core: &Core) {
    core.stats
        .in_flight_bytes
        .set(i64::try_from(core.in_flight.held_bytes()).unwrap_or(i64::MAX));
    let g = &core.stats.period;
    let policy = core.policy();
    let ledger = &core.ledger;
    let period = ledger.period();
    g.start.set(period.start.as_second() as f64);
    g.end.set(period.end.as_second() as f64);
    let now = core.clock.now();
    g.elapsed_ratio
        .set((period.elapsed_seconds(now) / period.length_seconds()).clamp(0.0, 1.0));
    let (end, now_s) = (unix_seconds(period.end), unix_seconds(now));
    let pacing = core.pacing.load();
    for s in Signal::ALL {
        let sig = s.as_str();
        let u = ledger.usage(s);
        if s.budget_unit() == Unit::DataPoints {
            g.usage_data_points
                .with_label_values(&[sig])
                .set(u.used as f64);
            if let Some(m) = policy
                .budgets
                .metrics
                .as_ref()
                .and_then(|m| m.active_series)
            {
                g.active_series_limit.set(m as f64);
            }
            let series = &core.series;
            g.active_series
                .set(series.tracker.counts(now).billing as f64);
            g.series_in_memory.set(series.tracker.len() as f64);
            let refused = g.series_refused.with_label_values(&[] as &[&str]);
            refused.inc_by(series.refused_total().saturating_sub(refused.get()));
            g.dpm.set(series.dpm() as f64);
            continue;
        }
        g.usage_bytes.with_label_values(&[sig]).set(u.used as f64);
        for (c, w) in u.offered.iter() {
            g.offered_bytes
                .with_label_values(&[sig, c.as_str()])
                .set(w.units as f64);
        }
        for (r, w) in u.dropped.iter() {
            g.dropped_bytes
                .with_label_values(&[sig, r.as_str()])
                .set(w.units as f64);
        }
        let p = pacing.signal(s);
        g.forwarded_rate
            .with_label_values(&[sig])
            .set(p.forwarded_rate);
        for (c, d) in p.demand.iter() {
            g.demand_rate
                .with_label_values(&[sig, c.as_str(), "short"])
                .set(d.short);
            g.demand_rate
                .with_label_values(&[sig, c.as_str(), "long"])
                .set(d.long);
        }
        let Some(b) = policy.budgets.bytes(s) else {
            continue;
        };
        let limit = b.effective_limit() as f64;
        g.limit_bytes.with_label_values(&[sig]).set(limit);
        g.target_bytes
            .with_label_values(&[sig])
            .set(b.target_bytes() as f64);
        g.usage_ratio
            .with_label_values(&[sig])
            .set(u.used as f64 / limit);
        g.projected_usage_bytes
            .with_label_values(&[sig])
            .set(p.projected_used);
        g.projected_usage_ratio
            .with_label_values(&[sig])
            .set(p.projected_used / limit);
        g.exhaustion.with_label_values(&[sig]).set(run_out_at(
            limit - u.used as f64,
            p.forwarded_rate,
            now_s,
            end,
        ));
        for (c, prob) in p.probabilities.iter() {
            g.keep_probability
                .with_label_values(&[sig, c.as_str()])
                .set(*prob);
        }
        for st in PacingState::ALL {
            g.pacing_state
                .with_label_values(&[sig, st.as_str()])
                .set(f64::from(u8::from(p.state == st)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relabel_rules_quote_what_alloy_needs_and_skip_pseudo_names() {
        let r = relabel_rule("node_cpu_seconds_total").unwrap();
        assert!(
            r.contains(r#"regex         = "node_cpu_seconds_total""#),
            "{r}"
        );
        assert!(r.contains(r#"action        = "drop""#));
        let odd = relabel_rule("a.b\"c").unwrap();
        assert!(odd.contains(r#"regex         = "a\\.b\"c""#), "{odd}");
        assert_eq!(relabel_rule("other"), None);
        assert_eq!(relabel_rule("unknown"), None);
    }
    use crate::clock::ManualClock;
    use crate::ingest::IngestError;
    use crate::testkit::{self, request, span, traces};

    /// The README's metric table: each family's name and type.
    fn readme_metrics() -> Vec<(String, String)> {
        readme_table("metrics table")
    }

    /// A metric table of the README, between `<!-- {marker}: start -->` and its end.
    fn readme_table(marker: &str) -> Vec<(String, String)> {
        let readme = include_str!("../README.md");
        let table = readme
            .split(&format!("<!-- {marker}: start -->"))
            .nth(1)
            .and_then(|t| t.split(&format!("<!-- {marker}: end -->")).next())
            .expect("the README has the table");
        table
            .lines()
            .filter_map(|l| {
                let cells: Vec<&str> = l.split('|').map(str::trim).collect();
                let name = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
                Some((name.to_string(), cells.get(2)?.to_string()))
            })
            .collect()
    }

    /// Every series frugal can export: every fixed label set, every destination, every
    /// status code it answers with, every gauge refreshed.
    fn every_series() -> (Arc<Core>, String) {
        let clock = Arc::new(ManualClock::new("2026-11-16T00:00:00Z".parse().unwrap()));
        let policy = testkit::policy(
            "upstream: {otlp: {endpoint: 'http://127.0.0.1:9'}, \
             remote_write: {endpoint: 'http://127.0.0.1:9/api/prom/push'}, \
             loki: {endpoint: 'http://127.0.0.1:9/loki/api/v1/push'}}\n\
             budgets: {traces: {limit: 50GB}, logs: {limit: 50GB}, \
             metrics: {active_series: 10000}}",
        );
        let (core, _) = testkit::core(policy.clone(), clock.clone());
        let shared: crate::clock::SharedClock = clock;
        let _forwarder = crate::forwarder::Forwarder::from_policy(&policy, &shared, &core.stats);
        for s in Signal::ALL {
            for code in ["200", "400", "401", "408", "413", "415", "422", "503"] {
                core.stats
                    .requests
                    .with_label_values(&[s.as_str(), "http", code]);
            }
            for e in [
                IngestError::BadRequest(String::new()),
                IngestError::TimedOut(String::new()),
                IngestError::Unauthorized,
                IngestError::Unavailable {
                    retry_after: std::time::Duration::ZERO,
                    message: String::new(),
                },
            ] {
                let code = format!("{:?}", crate::receivers::status::grpc_code(&e));
                core.stats
                    .requests
                    .with_label_values(&[s.as_str(), "grpc", &code]);
            }
            core.stats
                .requests
                .with_label_values(&[s.as_str(), "grpc", "OK"]);
        }
        refresh_gauges(&core);
        let text = core.stats.render();
        // Half of November has passed.
        assert!(
            text.contains("\nfrugal_period_elapsed_ratio 0.5\n"),
            "{text}"
        );
        (core, text)
    }

    #[test]
    fn the_readme_metric_table_and_the_scrape_agree_both_ways() {
        let (core, _) = every_series();
        let readme = readme_metrics();
        let scraped = families(&core);
        for m in &scraped {
            assert!(
                readme.contains(m),
                "{m:?} is exported but not in the README's table"
            );
        }
        for m in &readme {
            assert!(
                scraped.contains(m),
                "{m:?} is in the README's table but not exported"
            );
        }
        assert_eq!(readme.len(), scraped.len(), "each family once");
    }

    /// Each metric family of a scrape, with its type.
    fn families(core: &Core) -> Vec<(String, String)> {
        core.stats
            .registry
            .gather()
            .iter()
            .map(|f| {
                let t = match f.get_field_type() {
                    prometheus::proto::MetricType::COUNTER => "counter",
                    prometheus::proto::MetricType::GAUGE => "gauge",
                    prometheus::proto::MetricType::HISTOGRAM => "histogram",
                    other => panic!("{other:?}"),
                };
                (f.name().to_string(), t.to_string())
            })
            .collect()
    }

    #[test]
    fn the_readme_tail_table_and_a_tail_sampling_scrape_agree_and_it_says_how_many() {
        let clock = Arc::new(ManualClock::new("2026-11-16T00:00:00Z".parse().unwrap()));
        let (core, _) = testkit::core(testkit::policy("traces: {tail: {}}"), clock);
        let tail: Vec<(String, String)> = families(&core)
            .into_iter()
            .filter(|(n, _)| n.starts_with("frugal_tail_"))
            .collect();
        let mut readme = readme_table("tail metrics table");
        let mut scraped = tail.clone();
        // Decisions are counted per policy as they happen: none at start.
        scraped.push(("frugal_tail_decisions_total".into(), "counter".into()));
        readme.sort();
        scraped.sort();
        assert_eq!(readme, scraped);
        let series = core
            .stats
            .render()
            .lines()
            .filter(|l| l.starts_with("frugal_tail_"))
            .count();
        let said = format!("**{series} more series**");
        assert!(
            include_str!("../README.md").contains(&said),
            "the README should say {said}"
        );
    }

    #[test]
    fn frugal_exports_fewer_than_450_series_and_the_readme_says_how_many() {
        let (_, text) = every_series();
        let series = text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .count();
        assert!(series < 450, "{series} series");
        let said = format!("**{series} series**");
        assert!(
            include_str!("../README.md").contains(&said),
            "the README should say {said}"
        );
    }

    #[test]
    fn the_run_out_time_is_now_when_spent_zero_when_it_lasts_the_period() {
        assert_eq!(run_out_at(0.0, 10.0, 1000.0, 5000.0), 1000.0);
        assert_eq!(run_out_at(-5.0, 0.0, 1000.0, 5000.0), 1000.0);
        assert_eq!(run_out_at(100.0, 0.0, 1000.0, 5000.0), 0.0);
        assert_eq!(run_out_at(100.0, 1.0, 1000.0, 5000.0), 1100.0);
        assert_eq!(run_out_at(100_000.0, 1.0, 1000.0, 5000.0), 0.0);
    }

    async fn start(policy: &str) -> (std::net::SocketAddr, Arc<Admin>) {
        let clock = Arc::new(ManualClock::new("2026-11-16T00:00:00Z".parse().unwrap()));
        let (core, _) = testkit::core(testkit::policy(policy), clock);
        let admin = Arc::new(Admin {
            core,
            ready: Arc::new(AtomicBool::new(true)),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let listener = Listener::new(
            listener,
            crate::model::Port::Admin,
            64,
            crate::policy::defaults::DEFAULT_CONNECTIONS,
            &admin.core.stats,
        );
        tokio::spawn(serve(listener, admin.clone(), CancellationToken::new()));
        (addr, admin)
    }

    #[tokio::test]
    async fn usage_is_reported_as_the_ledger_counts_it() {
        let (addr, admin) = start("budgets: {traces: {limit: 1MB}}").await;
        let core = &admin.core;
        crate::pipeline::handle(
            core,
            traces("web", vec![span(1, 1, false)]),
            crate::ingest::RequestMeta::new(crate::ingest::Transport::Http),
        )
        .await
        .unwrap();
        let (status, body) = request(addr, "GET", "/api/v1/usage", &[], b"").await;
        assert_eq!(status, 200);
        let v: Value = serde_json::from_str(&body).unwrap();
        let t = &v["signals"]["traces"];
        let used = core.ledger.used(Signal::Traces);
        assert!(used > 0);
        assert_eq!(t["used"], json!(used));
        assert_eq!(t["limit"], json!(1_000_000));
        assert_eq!(t["sent"]["items"], json!(1));
        assert_eq!(t["pacing"]["keep_probability"]["normal"], json!(1.0));
        assert_eq!(v["period"]["start"], json!("2026-11-01T00:00:00Z"));
        let (status, metrics) = request(addr, "GET", "/metrics", &[], b"").await;
        assert_eq!(status, 200);
        assert!(metrics.contains(&format!(
            "frugal_period_usage_bytes{{signal=\"traces\"}} {used}"
        )));
    }

    #[tokio::test]
    async fn the_history_has_a_point_an_hour_and_one_now() {
        let (addr, admin) = start("budgets: {traces: {limit: 1GB}}").await;
        let (status, _) = request(
            addr,
            "PUT",
            "/api/v1/usage/traces",
            &[],
            br#"{"used": "12MB"}"#,
        )
        .await;
        assert_eq!(status, 200);
        admin
            .core
            .ledger
            .charge(Signal::Traces, Weight { items: 1, units: 5 }); // not flushed yet
        let (status, body) = request(addr, "GET", "/api/v1/usage/history", &[], b"").await;
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        let p = &v["period"];
        assert_eq!(p["start"], json!("2026-11-01T00:00:00Z"));
        assert_eq!(p["end"], json!("2026-12-01T00:00:00Z"));
        assert_eq!(p["step_seconds"], json!(3600));
        let (start, now) = (
            p["start_seconds"].as_i64().unwrap(),
            v["now"].as_i64().unwrap(),
        );
        assert_eq!(now - start, 15 * 86400, "the 16th, midnight");
        let t = &v["signals"]["traces"];
        assert_eq!(t["unit"], json!("bytes"));
        assert_eq!(t["limit"], json!(1_000_000_000));
        assert_eq!(t["target"], json!(950_000_000));
        assert_eq!(t["pace"], json!(950_000_000.0 * 0.5));
        let points = t["points"].as_array().unwrap();
        assert_eq!(
            points.len(),
            1 + 360 + 1,
            "the start, every hour passed, now"
        );
        assert_eq!(points[0], json!({"t": start, "used": 0}));
        assert_eq!(points[1], json!({"t": start + 3600, "used": 0}));
        assert_eq!(points[361], json!({"t": now, "used": 12_000_005}));
        let logs = &v["signals"]["logs"];
        assert_eq!(
            (&logs["limit"], &logs["state"]),
            (&Value::Null, &Value::Null)
        );
        assert_eq!(logs["points"].as_array().unwrap().len(), 362);
    }

    #[test]
    fn the_status_page_allows_only_its_own_script_and_style() {
        let r = status_page();
        let h = r.headers();
        assert_eq!(h[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(h[header::X_FRAME_OPTIONS], "DENY");
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        let csp = h[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        let nonce = csp
            .split("'nonce-")
            .nth(1)
            .and_then(|n| n.split('\'').next())
            .unwrap()
            .to_string();
        assert!(csp.contains("connect-src 'self'"), "{csp}");
        let body = r.into_body();
        let html = futures_util::FutureExt::now_or_never(body.collect())
            .unwrap()
            .unwrap()
            .to_bytes();
        let html = String::from_utf8_lossy(&html);
        assert!(html.contains(&format!("<script nonce=\"{nonce}\">")));
        assert!(html.contains("api/v1/usage/history"));
    }

    #[tokio::test]
    async fn readiness_follows_the_flag() {
        let (addr, admin) = start("").await;
        assert_eq!(request(addr, "GET", "/readyz", &[], b"").await.0, 200);
        admin.ready.store(false, Ordering::SeqCst);
        assert_eq!(request(addr, "GET", "/readyz", &[], b"").await.0, 503);
        assert_eq!(request(addr, "GET", "/healthz", &[], b"").await.0, 200);
    }

    #[tokio::test]
    async fn usage_can_be_set_with_the_ingest_credential_only() {
        let (addr, admin) = start(
            "ingest: {auth: {bearer_token: s3cret-ingest-token}}\nbudgets: {traces: {limit: 1GB}}",
        )
        .await;
        let body = br#"{"used": "12MB"}"#;
        let (status, _) = request(addr, "PUT", "/api/v1/usage/traces", &[], body).await;
        assert_eq!(status, 401);
        let wrong = [("Authorization", "Bearer s3cret-ingest-tokem")];
        assert_eq!(
            request(addr, "PUT", "/api/v1/usage/traces", &wrong, body)
                .await
                .0,
            401
        );
        assert_eq!(admin.core.ledger.used(Signal::Traces), 0);
        let right = [("Authorization", "Bearer s3cret-ingest-token")];
        let (status, reply) = request(addr, "PUT", "/api/v1/usage/traces", &right, body).await;
        assert_eq!(status, 200, "{reply}");
        assert_eq!(admin.core.ledger.used(Signal::Traces), 12_000_000);
        let (status, _) = request(addr, "PUT", "/api/v1/usage/spans", &right, body).await;
        assert_eq!(status, 404);
        let (status, _) = request(addr, "PUT", "/api/v1/usage/traces", &right, b"12MB").await;
        assert_eq!(status, 400);
    }

    #[tokio::test]
    async fn absurd_usage_is_refused_with_the_reason() {
        let (addr, admin) = start("budgets: {traces: {limit: 50GB}}").await;
        let put = |signal: &'static str, body: &'static str| async move {
            request(
                addr,
                "PUT",
                &format!("/api/v1/usage/{signal}"),
                &[],
                body.as_bytes(),
            )
            .await
        };
        // 1000 times the limit is accepted (usage past the limit is a real state)...
        assert_eq!(put("traces", r#"{"used": "50TB"}"#).await.0, 200);
        assert_eq!(admin.core.ledger.used(Signal::Traces), 50_000_000_000_000);
        // ...more is a slip of the unit.
        let (status, body) = put("traces", r#"{"used": "50.1TB"}"#).await;
        assert_eq!(status, 400, "{body}");
        assert!(
            body.contains("more than 1000 times the traces limit of 50GB"),
            "{body}"
        );
        assert_eq!(admin.core.ledger.used(Signal::Traces), 50_000_000_000_000);
        // Without a budget, 1 PB (or 10^15 data points) is the most.
        assert_eq!(put("logs", r#"{"used": "1000TB"}"#).await.0, 200);
        let (status, body) = put("logs", r#"{"used": 18446744073709551615}"#).await;
        assert_eq!(status, 400, "{body}");
        assert!(body.contains("check the unit"), "{body}");
        let (status, body) = put("metrics", r#"{"used": 1000000000000001}"#).await;
        assert_eq!(status, 400, "{body}");
        assert!(body.contains("1000000000000001 data points"), "{body}");
        // Beyond what a counter holds is not a number frugal reads at all.
        let (status, _) = put("logs", r#"{"used": 1e30}"#).await;
        assert_eq!(status, 400);
        assert_eq!(admin.core.ledger.used(Signal::Logs), 1_000_000_000_000_000);
    }

    #[tokio::test]
    async fn without_a_credential_only_the_same_host_may_set_usage() {
        let (addr, admin) = start("").await;
        let (status, _) = request(addr, "PUT", "/api/v1/usage/logs", &[], br#"{"used": 5}"#).await;
        assert_eq!(status, 200);
        assert_eq!(admin.core.ledger.used(Signal::Logs), 5);
        let policy = admin.core.policy();
        for (ip, ok) in [
            ("127.0.0.1", true),
            ("::1", true),
            ("::ffff:127.0.0.1", true),
            ("10.0.0.7", false),
            ("::ffff:10.0.0.7", false),
            ("fd00::2", false),
        ] {
            let got = may_set_usage(&policy, ip.parse().unwrap(), None);
            assert_eq!(got.is_ok(), ok, "{ip}");
            if !ok {
                assert_eq!(got.unwrap_err().0, StatusCode::FORBIDDEN);
            }
        }
    }
}
