//! Loading a policy: YAML text -> plain tree -> CLI overrides -> `${ENV}` substitution ->
//! validation into [`Policy`], with every problem reported at once with its YAML path.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::Timestamp;
use jiff::civil::Weekday;
use jiff::tz::TimeZone;
use regex::Regex;
use serde_json::Value;

use super::tree::{Node, Obj, Problems, with};
use super::*;
use crate::period::PeriodSpec;
use crate::units::{parse_duration, parse_rate, parse_ratio, parse_size};

/// The free-tier policy compiled into the binary: what `frugal serve` runs without
/// `--policy`.
pub const EMBEDDED_FREE_TIER: &str = include_str!("../../policies/grafana-cloud-free.yaml");

/// One thing wrong with a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted YAML path, with list indexes: `traces.priority[1].latency_over`.
    pub path: String,
    pub message: String,
}

/// A policy that could not be loaded: every problem found, in file order.
#[derive(Debug, thiserror::Error)]
pub struct PolicyError {
    pub source_name: String,
    pub problems: Vec<Problem>,
}

impl std::fmt::Display for PolicyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.problems.len();
        write!(
            f,
            "{}: {n} problem{}",
            self.source_name,
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            if p.path.is_empty() {
                write!(f, "\n  {}", p.message)?;
            } else {
                write!(f, "\n  {}: {}", p.path, p.message)?;
            }
        }
        Ok(())
    }
}

/// Values given on the command line, which win over the file (Kubernetes args).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen_http: Option<String>,
    pub listen_grpc: Option<String>,
    pub listen_admin: Option<String>,
    pub upstream_otlp: Option<String>,
    pub data_dir: Option<PathBuf>,
}

/// Reads and validates a policy file.
pub fn load_file(path: &Path, overrides: &Overrides) -> Result<Policy, PolicyError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| PolicyError {
        source_name: name.clone(),
        problems: vec![Problem {
            path: String::new(),
            message: format!("cannot read the file: {e}"),
        }],
    })?;
    load_str(&text, &name, overrides, &|k| std::env::var(k).ok())
}

/// Validates policy text. `env` looks up `${VAR}` substitutions.
pub fn load_str(
    text: &str,
    source_name: &str,
    overrides: &Overrides,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Policy, PolicyError> {
    let fail = |problems| PolicyError {
        source_name: source_name.to_string(),
        problems,
    };
    let mut tree: Value = match serde_saphyr::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            return Err(fail(vec![Problem {
                path: String::new(),
                message: format!("not valid YAML: {e}"),
            }]));
        }
    };
    if tree.is_null() {
        tree = Value::Object(Default::default());
    }
    apply_overrides(&mut tree, overrides);
    let problems = Problems::default();
    substitute_env(&mut tree, "", env, &problems);
    let root = Node {
        value: &tree,
        path: "",
        problems: &problems,
    };
    let policy = build(root, source_name);
    let problems = problems.into_vec();
    match policy {
        Some(p) if problems.is_empty() => Ok(p),
        _ if problems.is_empty() => Err(fail(vec![Problem {
            path: String::new(),
            message: "the policy is incomplete".into(),
        }])),
        _ => Err(fail(problems)),
    }
}

fn apply_overrides(tree: &mut Value, o: &Overrides) {
    let mut set = |path: &[&str], v: Option<String>| {
        let Some(v) = v else { return };
        let mut cur = &mut *tree;
        for (i, key) in path.iter().enumerate() {
            if !cur.is_object() {
                *cur = Value::Object(Default::default());
            }
            let Value::Object(m) = cur else { return };
            if i + 1 == path.len() {
                m.insert((*key).to_string(), Value::String(v));
                return;
            }
            cur = m
                .entry((*key).to_string())
                .or_insert_with(|| Value::Object(Default::default()));
        }
    };
    set(&["listen", "http"], o.listen_http.clone());
    set(&["listen", "grpc"], o.listen_grpc.clone());
    set(&["listen", "admin"], o.listen_admin.clone());
    set(&["upstream", "otlp", "endpoint"], o.upstream_otlp.clone());
    set(
        &["store", "data_dir"],
        o.data_dir.as_ref().map(|d| d.display().to_string()),
    );
}

/// Replaces `${VAR}` and `${VAR:-default}` in every string; `$$` is a literal `$`.
fn substitute_env(
    v: &mut Value,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &Problems,
) {
    match v {
        Value::String(s) if s.contains('$') => match expand(s, env) {
            Ok(out) => *s = out,
            Err(msg) => problems.push(path, msg),
        },
        Value::Array(a) => {
            for (i, x) in a.iter_mut().enumerate() {
                substitute_env(x, &format!("{path}[{i}]"), env, problems);
            }
        }
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                substitute_env(x, &p, env, problems);
            }
        }
        _ => {}
    }
}

fn expand(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(r) = after.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(r) = after.strip_prefix('{') {
            let end = r
                .find('}')
                .ok_or_else(|| format!("{s:?} has an unclosed ${{"))?;
            let inner = &r[..end];
            let (name, default) = match inner.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (inner, None),
            };
            let valid =
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(format!("${{{inner}}} is not a valid variable reference"));
            }
            match (env(name).filter(|v| !v.is_empty()), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => return Err(format!("${{{name}}} is not set in the environment")),
            }
            rest = &r[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn build(root: Node<'_>, source_name: &str) -> Option<Policy> {
    let mut top = root.map()?;
    let listen = build_listen(&mut top);
    let ingest = build_ingest(&mut top);
    let upstream = build_upstream(&mut top);
    let period = with(&mut top, "period", build_period).or(Some(PeriodSpec::utc_month()));
    let store = build_store(&mut top);
    let budgets = build_budgets(&mut top);
    let pacing = build_pacing(&mut top);
    let traces = build_traces(&mut top);
    let logs = build_logs(&mut top);
    let metrics = with(&mut top, "metrics", |n| {
        let o = n.map()?;
        o.finish();
        Some(MetricPolicy {})
    })
    .or(Some(MetricPolicy {}));
    let shadow = with(&mut top, "shadow", |n| n.bool()).unwrap_or(false);
    let problems = top.problems();
    top.finish();
    let (mut pacing, recompute_given) = pacing?;
    let (period, store, ingest, upstream) = (period?, store?, ingest?, upstream?);
    // Checks across sections.
    let length = period.shortest_length();
    if recompute_given {
        if pacing.recompute_every.as_secs_f64() * 100.0 > length.as_secs_f64() {
            problems.push(
                "pacing.recompute_every",
                format!(
                    "a period of {} needs a recompute at least every {}",
                    crate::units::format_duration(length),
                    crate::units::format_duration(length / 100)
                ),
            );
        }
    } else {
        // A short period recomputes proportionally more often.
        pacing.recompute_every =
            (length / 1000).clamp(Duration::from_millis(100), Duration::from_secs(10));
    }
    if store.flush_interval.as_secs_f64() * 10.0 > length.as_secs_f64() {
        problems.push(
            "store.flush_interval",
            format!(
                "a period of {} needs a flush at least every {}",
                crate::units::format_duration(length),
                crate::units::format_duration(length / 10)
            ),
        );
    }
    if ingest.auth.is_some() && matches!(upstream.otlp.auth, UpstreamAuth::PassThrough) {
        problems.push(
            "upstream.otlp.pass_through_auth",
            "cannot be combined with ingest.auth: the client's Authorization header is frugal's ingest credential, not one for upstream",
        );
    }
    Some(Policy {
        source: source_name.to_string(),
        listen: listen?,
        ingest,
        upstream,
        period,
        store,
        budgets: budgets?,
        pacing,
        traces: traces?,
        logs: logs?,
        metrics: metrics?,
        shadow,
    })
}

fn addr(n: Node<'_>) -> Option<SocketAddr> {
    n.parse(|s| {
        s.parse::<SocketAddr>()
            .map_err(|_| format!("{s:?} is not an address (try 0.0.0.0:4318 or 127.0.0.1:4318)"))
    })
}

fn build_listen(top: &mut Obj<'_>) -> Option<Listen> {
    let default = || Listen {
        http: SocketAddr::from(([0, 0, 0, 0], 4318)),
        grpc: Some(SocketAddr::from(([0, 0, 0, 0], 4317))),
        admin: SocketAddr::from(([0, 0, 0, 0], 4319)),
    };
    let Some((v, path)) = top.get("listen") else {
        return Some(default());
    };
    let node = Node {
        value: v,
        path: &path,
        problems: top.problems(),
    };
    let mut o = node.map()?;
    let d = default();
    let http = with(&mut o, "http", addr).or(o.has("http").then_some(d.http).filter(|_| false));
    let http = if o.has("http") { http } else { Some(d.http) };
    let grpc = match o.get("grpc") {
        None => Some(d.grpc),
        Some((Value::String(s), _)) if s == "off" || s == "disabled" => Some(None),
        Some((Value::Bool(false), _)) => Some(None),
        Some((v, p)) => addr(Node {
            value: v,
            path: &p,
            problems: o.problems(),
        })
        .map(Some),
    };
    let admin = if o.has("admin") {
        with(&mut o, "admin", addr)
    } else {
        o.get("admin");
        Some(d.admin)
    };
    o.finish();
    Some(Listen {
        http: http?,
        grpc: grpc?,
        admin: admin?,
    })
}

fn build_ingest(top: &mut Obj<'_>) -> Option<Ingest> {
    let default_max = 16 * 1024 * 1024;
    let Some((v, path)) = top.get("ingest") else {
        return Some(Ingest {
            max_request_bytes: default_max,
            auth: None,
        });
    };
    let node = Node {
        value: v,
        path: &path,
        problems: top.problems(),
    };
    let mut o = node.map()?;
    let max = with(&mut o, "max_request_size", |n| n.parse(parse_size)).unwrap_or(default_max);
    let auth = with(&mut o, "auth", |n| {
        let mut a = n.map()?;
        let bearer = with(&mut a, "bearer_token", |n| n.text());
        let basic = with(&mut a, "basic_auth", basic_auth);
        let path = a.path.clone();
        a.finish();
        match (bearer, basic) {
            (Some(t), None) => Some(IngestAuth::Bearer(t)),
            (None, Some((username, password))) => Some(IngestAuth::Basic { username, password }),
            (Some(_), Some(_)) => {
                n.problems
                    .push(&path, "give either bearer_token or basic_auth, not both");
                None
            }
            (None, None) => {
                n.problems.push(
                    &path,
                    "needs bearer_token or basic_auth: {username, password}",
                );
                None
            }
        }
    });
    if max == 0 {
        o.problems()
            .push(&o.child_path("max_request_size"), "must be more than 0");
    }
    o.finish();
    Some(Ingest {
        max_request_bytes: max,
        auth,
    })
}

fn basic_auth(n: Node<'_>) -> Option<(String, String)> {
    let mut b = n.map()?;
    let user = with(&mut b, "username", |n| n.text());
    let pass = with(&mut b, "password", |n| n.text());
    let path = b.path.clone();
    b.finish();
    match (user, pass) {
        (Some(u), Some(p)) => Some((u, p)),
        _ => {
            n.problems.push(&path, "needs both username and password");
            None
        }
    }
}

fn build_upstream(top: &mut Obj<'_>) -> Option<Upstreams> {
    let Some((v, path)) = top.get("upstream") else {
        top.problems().push(
            "upstream",
            "is required: where to send data (upstream.otlp.endpoint)",
        );
        return None;
    };
    let node = Node {
        value: v,
        path: &path,
        problems: top.problems(),
    };
    let mut o = node.map()?;
    let otlp = match o.get("otlp") {
        Some((v, p)) => build_otlp(Node {
            value: v,
            path: &p,
            problems: o.problems(),
        }),
        None => {
            o.problems().push(
                &o.child_path("otlp"),
                "is required (the OTLP endpoint to send to)",
            );
            None
        }
    };
    o.finish();
    Some(Upstreams { otlp: otlp? })
}

fn build_otlp(n: Node<'_>) -> Option<OtlpUpstream> {
    let mut o = n.map()?;
    let endpoint = match o.get("endpoint") {
        Some((v, p)) => Node {
            value: v,
            path: &p,
            problems: o.problems(),
        }
        .parse(|s| {
            let s = s.trim().trim_end_matches('/');
            let ok = (s.starts_with("http://") || s.starts_with("https://"))
                && s.parse::<http::Uri>().is_ok_and(|u| u.host().is_some());
            if ok {
                Ok(s.to_string())
            } else {
                Err(format!(
                    "{s:?} is not an http:// or https:// URL (try https://otlp-gateway-prod-eu-west-2.grafana.net/otlp)"
                ))
            }
        }),
        None => {
            o.problems()
                .push(&o.child_path("endpoint"), "is required");
            None
        }
    };
    let basic = with(&mut o, "basic_auth", basic_auth);
    let bearer = with(&mut o, "bearer_token", |n| n.text());
    let pass = with(&mut o, "pass_through_auth", |n| n.bool()).unwrap_or(false);
    let auth = match (basic, bearer, pass) {
        (None, None, false) => UpstreamAuth::None,
        (Some((username, password)), None, false) => UpstreamAuth::Basic { username, password },
        (None, Some(t), false) => UpstreamAuth::Bearer(t),
        (None, None, true) => UpstreamAuth::PassThrough,
        _ => {
            o.problems().push(
                &o.path,
                "give one of basic_auth, bearer_token or pass_through_auth: true",
            );
            UpstreamAuth::None
        }
    };
    let headers = with(&mut o, "headers", |n| {
        let h = n.map()?;
        let Value::Object(m) = n.value else {
            return Some(Vec::new());
        };
        let mut out = Vec::new();
        for (k, v) in m {
            let path = h.child_path(k);
            let value = match v {
                Value::String(s) => s.clone(),
                Value::Number(x) => x.to_string(),
                _ => {
                    n.problems.push(&path, "a header value must be a string");
                    continue;
                }
            };
            if http::HeaderName::from_bytes(k.as_bytes()).is_err() {
                n.problems.push(&path, "is not a valid header name");
            } else if http::HeaderValue::from_str(&value).is_err() {
                n.problems.push(&path, "is not a valid header value");
            } else if k.eq_ignore_ascii_case("authorization") {
                n.problems
                    .push(&path, "use basic_auth or bearer_token for Authorization");
            } else {
                out.push((k.clone(), value));
            }
        }
        Some(out)
    })
    .unwrap_or_default();
    let compression = with(&mut o, "compression", |n| n.one_of(&["gzip", "none"]))
        .map(|c| {
            if c == "gzip" {
                Compression::Gzip
            } else {
                Compression::None
            }
        })
        .unwrap_or(Compression::Gzip);
    let timeout =
        with(&mut o, "timeout", |n| n.parse(parse_duration)).unwrap_or(Duration::from_secs(5));
    let retry = with(&mut o, "retry", |n| {
        let mut r = n.map()?;
        let initial = with(&mut r, "initial_backoff", |n| n.parse(parse_duration));
        let max = with(&mut r, "max_backoff", |n| n.parse(parse_duration));
        let elapsed = with(&mut r, "max_elapsed", |n| n.parse(parse_duration));
        r.finish();
        Some((initial, max, elapsed))
    });
    let (initial, max, elapsed) = retry.unwrap_or((None, None, None));
    let retry = Retry {
        initial_backoff: initial.unwrap_or(Duration::from_millis(250)),
        max_backoff: max.unwrap_or(Duration::from_secs(2)),
        max_elapsed: elapsed.unwrap_or(Duration::from_secs(8)),
    };
    let at = |k: &str| format!("{}.{k}", o.child_path("retry"));
    if retry.initial_backoff < Duration::from_millis(10) {
        o.problems()
            .push(&at("initial_backoff"), "must be at least 10ms");
    }
    if retry.max_backoff < retry.initial_backoff {
        o.problems()
            .push(&at("max_backoff"), "must be at least initial_backoff");
    }
    if retry.max_elapsed < Duration::from_millis(500) || retry.max_elapsed > Duration::from_secs(20)
    {
        o.problems().push(
            &at("max_elapsed"),
            "must be between 500ms and 20s: keep it under your clients' timeout (10s for the SDKs, 30s for Alloy), or they resend what frugal is still delivering",
        );
    }
    if timeout.is_zero() || timeout > Duration::from_secs(60) {
        o.problems()
            .push(&o.child_path("timeout"), "must be between 1ms and 60s");
    }
    o.finish();
    Some(OtlpUpstream {
        endpoint: endpoint?,
        auth,
        headers,
        compression,
        timeout,
        retry,
    })
}

fn timezone(n: Node<'_>) -> Option<TimeZone> {
    n.parse(|s| {
        TimeZone::get(s).map_err(|_| format!("{s:?} is not a time zone (try UTC or Asia/Tokyo)"))
    })
}

fn build_period(n: Node<'_>) -> Option<PeriodSpec> {
    let mut o = n.map()?;
    let every = with(&mut o, "every", |n| n.text());
    let reset_day = with(&mut o, "reset_day", |n| {
        let d = n.u64()?;
        if (1..=31).contains(&d) {
            Some(d as i8)
        } else {
            n.problem(format!("{d} is not a day of the month (1 to 31)"));
            None
        }
    });
    let tz = with(&mut o, "timezone", timezone);
    let weekday = with(&mut o, "weekday", |n| {
        let w = n.one_of(&[
            "monday",
            "tuesday",
            "wednesday",
            "thursday",
            "friday",
            "saturday",
            "sunday",
        ])?;
        Some(match w.as_str() {
            "monday" => Weekday::Monday,
            "tuesday" => Weekday::Tuesday,
            "wednesday" => Weekday::Wednesday,
            "thursday" => Weekday::Thursday,
            "friday" => Weekday::Friday,
            "saturday" => Weekday::Saturday,
            _ => Weekday::Sunday,
        })
    });
    let start = with(&mut o, "start", |n| {
        n.parse(|s| {
            s.parse::<Timestamp>()
                .map_err(|_| format!("{s:?} is not a time (try 2026-11-01T00:00:00Z)"))
        })
    });
    let path = o.path.clone();
    let problems = o.problems();
    let given = [
        ("reset_day", reset_day.is_some()),
        ("timezone", tz.is_some()),
        ("weekday", weekday.is_some()),
        ("start", start.is_some()),
    ];
    // Reports the keys given that a kind of period does not take.
    let takes_only = |kind: &str, takes: &[&str]| {
        for (key, _) in given.iter().filter(|(k, g)| *g && !takes.contains(k)) {
            problems.push(
                &format!("{path}.{key}"),
                format!("does not apply to a {kind} period"),
            );
        }
    };
    let tz_or_utc = tz.clone().unwrap_or(TimeZone::UTC);
    let spec = match every.as_deref().map(str::trim) {
        None | Some("month") => {
            takes_only("monthly", &["reset_day", "timezone"]);
            Some(PeriodSpec::Monthly {
                reset_day: reset_day.unwrap_or(1),
                tz: tz_or_utc,
            })
        }
        Some("day") => {
            takes_only("daily", &["timezone"]);
            Some(PeriodSpec::Daily { tz: tz_or_utc })
        }
        Some("week") => {
            takes_only("weekly", &["weekday", "timezone"]);
            Some(PeriodSpec::Weekly {
                weekday: weekday.unwrap_or(Weekday::Monday),
                tz: tz_or_utc,
            })
        }
        Some(d) => match parse_duration(d) {
            Ok(every) if every >= Duration::from_secs(1) => {
                takes_only("fixed-length", &["start"]);
                Some(PeriodSpec::Every {
                    every,
                    anchor: start.unwrap_or(Timestamp::UNIX_EPOCH),
                })
            }
            Ok(_) => {
                problems.push(&format!("{path}.every"), "must be at least 1s");
                None
            }
            Err(_) => {
                problems.push(
                    &format!("{path}.every"),
                    format!("{d:?} is not a period (try month, week, day or a duration like 10m)"),
                );
                None
            }
        },
    };
    o.finish();
    spec
}

fn build_store(top: &mut Obj<'_>) -> Option<Store> {
    let mut store = Store {
        data_dir: PathBuf::from("frugal-data"),
        flush_interval: Duration::from_secs(1),
        cache_bytes: 16 * 1024 * 1024,
    };
    let Some((v, path)) = top.get("store") else {
        return Some(store);
    };
    let node = Node {
        value: v,
        path: &path,
        problems: top.problems(),
    };
    let mut o = node.map()?;
    if let Some(d) = with(&mut o, "data_dir", |n| n.text()) {
        store.data_dir = PathBuf::from(d);
    }
    if let Some(f) = with(&mut o, "flush_interval", |n| n.parse(parse_duration)) {
        if f < Duration::from_millis(10) || f > Duration::from_secs(60) {
            o.problems().push(
                &o.child_path("flush_interval"),
                "must be between 10ms and 60s",
            );
        }
        store.flush_interval = f;
    }
    if let Some(c) = with(&mut o, "cache_size", |n| n.parse(parse_size)) {
        store.cache_bytes = c;
    }
    o.finish();
    Some(store)
}

fn build_budgets(top: &mut Obj<'_>) -> Option<Budgets> {
    let Some((v, path)) = top.get("budgets") else {
        return Some(Budgets {
            traces: None,
            logs: None,
            metrics: None,
        });
    };
    let node = Node {
        value: v,
        path: &path,
        problems: top.problems(),
    };
    let mut o = node.map()?;
    let traces = with(&mut o, "traces", byte_budget);
    let logs = with(&mut o, "logs", byte_budget);
    let metrics = with(&mut o, "metrics", |n| {
        let mut m = n.map()?;
        let active_series = with(&mut m, "active_series", |n| n.u64());
        let target = with(&mut m, "target", |n| n.parse(parse_ratio)).unwrap_or(0.95);
        m.finish();
        Some(MetricsBudget {
            active_series,
            target,
        })
    });
    o.finish();
    Some(Budgets {
        traces,
        logs,
        metrics,
    })
}

fn byte_budget(n: Node<'_>) -> Option<ByteBudget> {
    let mut o = n.map()?;
    let limit = match o.get("limit") {
        Some((v, p)) => Node {
            value: v,
            path: &p,
            problems: o.problems(),
        }
        .parse(parse_size),
        None => {
            o.problems()
                .push(&o.child_path("limit"), "is required (e.g. 50GB)");
            None
        }
    };
    let reserved = with(&mut o, "reserved", |n| n.parse(parse_size)).unwrap_or(0);
    let target = with(&mut o, "target", |n| n.parse(parse_ratio)).unwrap_or(0.95);
    let max_rate = with(&mut o, "max_rate", |n| n.parse(parse_rate));
    let at_limit = with(&mut o, "at_limit", |n| {
        n.one_of(&["keep_priority", "drop_all"]).map(|s| {
            if s == "drop_all" {
                AtLimit::DropAll
            } else {
                AtLimit::KeepPriority
            }
        })
    })
    .unwrap_or(AtLimit::KeepPriority);
    if let Some(l) = limit {
        if l == 0 {
            o.problems()
                .push(&o.child_path("limit"), "must be more than 0");
        } else if reserved >= l {
            o.problems()
                .push(&o.child_path("reserved"), "must be less than the limit");
        }
    }
    if target == 0.0 {
        o.problems()
            .push(&o.child_path("target"), "must be more than 0%");
    }
    if max_rate == Some(0) {
        o.problems()
            .push(&o.child_path("max_rate"), "must be more than 0");
    }
    o.finish();
    Some(ByteBudget {
        limit: limit?,
        reserved,
        target,
        max_rate,
        at_limit,
    })
}

/// The pacing section, and whether `recompute_every` was given.
fn build_pacing(top: &mut Obj<'_>) -> Option<(Pacing, bool)> {
    let mut pacing = Pacing {
        enabled: true,
        recompute_every: Duration::from_secs(10),
    };
    let Some((v, path)) = top.get("pacing") else {
        return Some((pacing, false));
    };
    let node = Node {
        value: v,
        path: &path,
        problems: top.problems(),
    };
    let mut o = node.map()?;
    if let Some(e) = with(&mut o, "enabled", |n| n.bool()) {
        pacing.enabled = e;
    }
    let given = if let Some(r) = with(&mut o, "recompute_every", |n| n.parse(parse_duration)) {
        if r < Duration::from_millis(100) {
            o.problems()
                .push(&o.child_path("recompute_every"), "must be at least 100ms");
        }
        pacing.recompute_every = r;
        true
    } else {
        false
    };
    o.finish();
    Some((pacing, given))
}

/// Which rule conditions a signal's rules may use.
#[derive(Clone, Copy, PartialEq, Eq)]
enum RuleKind {
    Span,
    Log,
}

fn rules_of(o: &mut Obj<'_>, kind: RuleKind) -> Rules {
    let list = |o: &mut Obj<'_>, key: &'static str| -> Vec<Rule> {
        with(o, key, |n| {
            let Value::Array(items) = n.value else {
                n.problem("expected a list of rules");
                return None;
            };
            let mut rules = Vec::new();
            for (i, item) in items.iter().enumerate() {
                let path = format!("{}[{i}]", n.path);
                let node = Node {
                    value: item,
                    path: &path,
                    problems: n.problems,
                };
                if let Some(r) = rule(node, kind, &format!("{key}-{i}")) {
                    rules.push(r);
                }
            }
            Some(rules)
        })
        .unwrap_or_default()
    };
    Rules {
        drop: list(o, "drop"),
        priority: list(o, "priority"),
        drop_first: list(o, "drop_first"),
    }
}

fn strings(n: Node<'_>) -> Option<Vec<String>> {
    let items = n.list()?;
    let mut out = Vec::new();
    for v in items {
        match v {
            Value::String(s) => out.push(s.clone()),
            Value::Number(x) => out.push(x.to_string()),
            Value::Bool(b) => out.push(b.to_string()),
            _ => {
                n.problem("expected a string or a list of strings");
                return None;
            }
        }
    }
    Some(out)
}

fn regex(n: Node<'_>) -> Option<Regex> {
    n.parse(|s| Regex::new(s).map_err(|e| format!("{s:?} is not a regular expression: {e}")))
}

fn rule(n: Node<'_>, kind: RuleKind, default_name: &str) -> Option<Rule> {
    let mut o = n.map()?;
    let name = with(&mut o, "name", |n| n.text()).unwrap_or_else(|| default_name.to_string());
    let mut conditions = Vec::new();
    if let Some(v) = with(&mut o, "service", strings) {
        conditions.push(Condition::Service(v));
    }
    if let Some(r) = with(&mut o, "service_matches", regex) {
        conditions.push(Condition::ServiceMatches(r));
    }
    let attr_map = |n: Node<'_>, as_regex: bool| -> Option<Vec<Condition>> {
        let m = n.map()?;
        let Value::Object(map) = n.value else {
            return Some(Vec::new());
        };
        let mut out = Vec::new();
        for (k, v) in map {
            let path = m.child_path(k);
            let node = Node {
                value: v,
                path: &path,
                problems: n.problems,
            };
            if as_regex {
                if let Some(regex) = regex(node) {
                    out.push(Condition::AttributeMatches {
                        key: k.clone(),
                        regex,
                    });
                }
            } else if let Some(values) = strings(node) {
                out.push(Condition::Attribute {
                    key: k.clone(),
                    values,
                });
            }
        }
        Some(out)
    };
    if let Some(c) = with(&mut o, "attributes", |n| attr_map(n, false)) {
        conditions.extend(c);
    }
    if let Some(c) = with(&mut o, "attributes_match", |n| attr_map(n, true)) {
        conditions.extend(c);
    }
    match kind {
        RuleKind::Span => {
            if let Some(v) = with(&mut o, "span_name", strings) {
                conditions.push(Condition::SpanName(v));
            }
            if let Some(r) = with(&mut o, "span_name_matches", regex) {
                conditions.push(Condition::SpanNameMatches(r));
            }
            if let Some(kinds) = with(&mut o, "span_kind", |n| {
                let words = strings(n)?;
                let mut out = Vec::new();
                for w in words {
                    let k = match w.to_ascii_uppercase().trim_start_matches("SPAN_KIND_") {
                        "INTERNAL" => 1,
                        "SERVER" => 2,
                        "CLIENT" => 3,
                        "PRODUCER" => 4,
                        "CONSUMER" => 5,
                        _ => {
                            n.problem(format!(
                                "{w:?} is not a span kind (allowed: SERVER, CLIENT, INTERNAL, PRODUCER, CONSUMER)"
                            ));
                            return None;
                        }
                    };
                    out.push(k);
                }
                Some(out)
            }) {
                conditions.push(Condition::SpanKind(kinds));
            }
            if let Some(code) = with(&mut o, "status_code", |n| {
                n.one_of(&["ERROR", "OK", "UNSET"])
                    .map(|s| match s.as_str() {
                        "error" => 2,
                        "ok" => 1,
                        _ => 0,
                    })
            }) {
                conditions.push(Condition::StatusCode(code));
            }
            if let Some(d) = with(&mut o, "latency_over", |n| n.parse(parse_duration)) {
                conditions.push(Condition::LatencyOver(d));
            }
        }
        RuleKind::Log => {
            if let Some(s) = with(&mut o, "severity_at_least", |n| {
                n.one_of(&["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"])
                    .map(|s| match s.as_str() {
                        "trace" => 1,
                        "debug" => 5,
                        "info" => 9,
                        "warn" => 13,
                        "error" => 17,
                        _ => 21,
                    })
            }) {
                conditions.push(Condition::SeverityAtLeast(s));
            }
            if let Some(r) = with(&mut o, "body_matches", regex) {
                conditions.push(Condition::BodyMatches(r));
            }
        }
    }
    let path = o.path.clone();
    let problems = o.problems();
    let unknown = o.finish();
    // A rule whose only key was misspelt has already been reported.
    if conditions.is_empty() {
        if unknown == 0 {
            problems.push(
                &path,
                "a rule needs at least one condition (it would match everything)",
            );
        }
        return None;
    }
    Some(Rule { name, conditions })
}

fn build_traces(top: &mut Obj<'_>) -> Option<TracePolicy> {
    let default_sampling = TraceSampling {
        mode: SamplingMode::Proportional,
        precision: 4,
        min_probability: 0.0,
        fail_closed: true,
        multiplier_attribute: None,
    };
    let Some((v, path)) = top.get("traces") else {
        return Some(TracePolicy {
            sampling: default_sampling,
            rules: Rules::default(),
        });
    };
    let node = Node {
        value: v,
        path: &path,
        problems: top.problems(),
    };
    let mut o = node.map()?;
    let sampling = with(&mut o, "sampling", |n| {
        let mut s = n.map()?;
        let mode = with(&mut s, "mode", |n| n.one_of(&["proportional", "hash_seed"]));
        let seed = with(&mut s, "hash_seed", |n| {
            let v = n.u64()?;
            u32::try_from(v).ok().or_else(|| {
                n.problem("must fit in 32 bits (0 to 4294967295)");
                None
            })
        });
        let precision = with(&mut s, "precision", |n| {
            let p = n.u64()?;
            if (1..=14).contains(&p) {
                Some(p as u8)
            } else {
                n.problem(format!("{p} is not between 1 and 14 hex digits"));
                None
            }
        });
        let min_probability = with(&mut s, "min_probability", |n| n.parse(parse_ratio));
        let fail_closed = with(&mut s, "fail_closed", |n| n.bool());
        let multiplier_attribute = with(&mut s, "multiplier_attribute", |n| n.text());
        let path = s.path.clone();
        let problems = s.problems();
        s.finish();
        // As in the collector: hash_seed alone chooses hash_seed mode.
        let mode = match (mode.as_deref(), seed) {
            (Some("hash_seed") | None, Some(seed)) => SamplingMode::HashSeed(seed),
            (Some("hash_seed"), None) => {
                problems.push(
                    &format!("{path}.hash_seed"),
                    "is required in hash_seed mode",
                );
                SamplingMode::HashSeed(0)
            }
            (Some(_), Some(_)) => {
                problems.push(
                    &format!("{path}.hash_seed"),
                    "only applies to mode: hash_seed",
                );
                SamplingMode::Proportional
            }
            _ => SamplingMode::Proportional,
        };
        Some(TraceSampling {
            mode,
            precision: precision.unwrap_or(4),
            min_probability: min_probability.unwrap_or(0.0),
            fail_closed: fail_closed.unwrap_or(true),
            multiplier_attribute,
        })
    })
    .unwrap_or(default_sampling);
    let rules = rules_of(&mut o, RuleKind::Span);
    o.finish();
    Some(TracePolicy { sampling, rules })
}

fn build_logs(top: &mut Obj<'_>) -> Option<LogPolicy> {
    let Some((v, path)) = top.get("logs") else {
        return Some(LogPolicy {
            follow_traces: true,
            hash_attribute: None,
            rules: Rules::default(),
        });
    };
    let node = Node {
        value: v,
        path: &path,
        problems: top.problems(),
    };
    let mut o = node.map()?;
    let follow_traces = with(&mut o, "follow_traces", |n| n.bool()).unwrap_or(true);
    let hash_attribute = with(&mut o, "sampling", |n| {
        let mut s = n.map()?;
        let a = with(&mut s, "hash_attribute", |n| n.text());
        s.finish();
        a
    });
    let rules = rules_of(&mut o, RuleKind::Log);
    o.finish();
    Some(LogPolicy {
        follow_traces,
        hash_attribute,
        rules,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(k: &str) -> Option<String> {
        match k {
            "ENDPOINT" => Some("https://otlp-gateway-prod-eu-west-2.grafana.net/otlp".into()),
            "USER" => Some("123456".into()),
            "TOKEN" => Some("glc_secret".into()),
            _ => None,
        }
    }

    fn load(text: &str) -> Result<Policy, PolicyError> {
        load_str(text, "test.yaml", &Overrides::default(), &env)
    }

    const MINIMAL: &str = "upstream: {otlp: {endpoint: 'http://127.0.0.1:4318'}}\n";

    #[test]
    fn defaults_fill_what_is_not_said() {
        let p = load(MINIMAL).unwrap();
        assert_eq!(p.listen.http.port(), 4318);
        assert_eq!(p.listen.grpc.map(|a| a.port()), Some(4317));
        assert_eq!(p.listen.admin.port(), 4319);
        assert_eq!(p.store.flush_interval, Duration::from_secs(1));
        assert_eq!(p.upstream.otlp.endpoint, "http://127.0.0.1:4318");
        assert!(matches!(p.period, PeriodSpec::Monthly { reset_day: 1, .. }));
        assert!(p.budgets.traces.is_none());
    }

    #[test]
    fn three_mistakes_are_all_reported_with_paths() {
        let text = r#"
upstream:
  otlp:
    endpoint: ${GRAFANA_CLOUD_OTLP_ENDPOINT}
budgets:
  traces: {limit: 50 GiBs}
traces:
  priority:
    - {name: errors, status_code: ERROR}
    - {name: slow, latncy_over: 2s}
"#;
        let err = load(text).unwrap_err();
        let got: Vec<(&str, &str)> = err
            .problems
            .iter()
            .map(|p| (p.path.as_str(), p.message.as_str()))
            .collect();
        assert_eq!(got.len(), 3, "{err}");
        assert!(got.contains(&(
            "upstream.otlp.endpoint",
            "${GRAFANA_CLOUD_OTLP_ENDPOINT} is not set in the environment"
        )));
        assert!(got.contains(&(
            "budgets.traces.limit",
            "\"50 GiBs\" is not a size (try 50GB, 50GiB, 500MB or a number of bytes)"
        )));
        assert!(got.contains(&(
            "traces.priority[1].latncy_over",
            "unknown key (did you mean latency_over?)"
        )));
        assert!(err.to_string().starts_with("test.yaml: 3 problems"));
    }

    #[test]
    fn env_substitution_and_secrets() {
        let text = r#"
upstream:
  otlp:
    endpoint: ${ENDPOINT}
    basic_auth: {username: "${USER}", password: "${TOKEN}"}
    headers: {X-Scope-OrgID: "${TENANT:-anonymous}"}
"#;
        let p = load(text).unwrap();
        assert!(matches!(
            &p.upstream.otlp.auth,
            UpstreamAuth::Basic { username, password } if username == "123456" && password == "glc_secret"
        ));
        assert_eq!(
            p.upstream.otlp.headers,
            vec![("X-Scope-OrgID".to_string(), "anonymous".to_string())]
        );
        assert!(!format!("{:?}", p.upstream.otlp.auth).contains("glc_secret"));
        assert_eq!(expand("a$$b", &env).unwrap(), "a$b");
    }

    #[test]
    fn overrides_win_over_the_file() {
        let o = Overrides {
            listen_http: Some("127.0.0.1:0".into()),
            upstream_otlp: Some("http://127.0.0.1:9999".into()),
            data_dir: Some(PathBuf::from("/tmp/x")),
            ..Default::default()
        };
        let text = "upstream: {otlp: {endpoint: '${NOPE}'}}\n";
        let p = load_str(text, "t", &o, &env).unwrap();
        assert_eq!(p.listen.http.port(), 0);
        assert_eq!(p.upstream.otlp.endpoint, "http://127.0.0.1:9999");
        assert_eq!(p.store.data_dir, PathBuf::from("/tmp/x"));
    }

    #[test]
    fn budgets_periods_and_rules() {
        let text = format!(
            "{MINIMAL}{}",
            r#"
period: {every: 3m, start: "2026-11-25T00:00:00Z"}
budgets:
  traces: {limit: 50GB, reserved: 5GB, target: 95%, max_rate: 500kB/s, at_limit: drop_all}
  metrics: {active_series: 10000}
traces:
  sampling: {hash_seed: 22}
  drop: [{name: health, attributes: {url.path: [/health, /healthz]}}]
  priority: [{name: errors, status_code: ERROR}, {name: slow, latency_over: 2s}]
logs:
  priority: [{name: warnings, severity_at_least: WARN}]
"#
        );
        let p = load(&text).unwrap();
        let t = p.budgets.traces.unwrap();
        assert_eq!(t.effective_limit(), 45_000_000_000);
        assert_eq!(t.target_bytes(), 42_750_000_000);
        assert_eq!(t.max_rate, Some(500_000));
        assert_eq!(t.at_limit, AtLimit::DropAll);
        assert!(
            matches!(p.period, PeriodSpec::Every { every, .. } if every == Duration::from_secs(180))
        );
        assert_eq!(p.traces.sampling.mode, SamplingMode::HashSeed(22));
        assert_eq!(p.traces.rules.priority.len(), 2);
        assert_eq!(p.traces.rules.drop.len(), 1);
        assert_eq!(p.logs.rules.priority.len(), 1);
    }

    #[test]
    fn settings_that_cannot_work_together_are_refused() {
        let text = format!(
            "{}{}",
            "upstream: {otlp: {endpoint: 'http://x:1', pass_through_auth: true, retry: {max_elapsed: 40s, initial_backoff: 1ms}}}\n",
            r#"
ingest: {auth: {bearer_token: abc}}
period: {every: 1m, start: "2026-11-25T00:00:00Z", weekday: monday}
pacing: {recompute_every: 10s}
store: {flush_interval: 10s}
"#
        );
        let err = load(&text).unwrap_err();
        let paths: Vec<&str> = err.problems.iter().map(|p| p.path.as_str()).collect();
        for want in [
            "upstream.otlp.pass_through_auth",
            "upstream.otlp.retry.max_elapsed",
            "upstream.otlp.retry.initial_backoff",
            "period.weekday",
            "pacing.recompute_every",
            "store.flush_interval",
        ] {
            assert!(paths.contains(&want), "{want} missing from {err}");
        }
    }

    #[test]
    fn short_periods_recompute_more_often_by_default() {
        let text = format!("{MINIMAL}period: {{every: 3m}}\n");
        let p = load(&text).unwrap();
        assert_eq!(p.pacing.recompute_every, Duration::from_millis(180));
        let p = load(MINIMAL).unwrap();
        assert_eq!(p.pacing.recompute_every, Duration::from_secs(10));
    }

    #[test]
    fn misplaced_rule_keys_are_unknown() {
        let text = format!("{MINIMAL}logs: {{priority: [{{status_code: ERROR}}]}}\n");
        let err = load(&text).unwrap_err();
        assert_eq!(err.problems[0].path, "logs.priority[0].status_code");
    }

    #[test]
    fn shipped_policies_are_valid() {
        let all = |_: &str| Some("https://example.grafana.net/otlp".to_string());
        for (name, text) in [
            ("grafana-cloud-free.yaml", EMBEDDED_FREE_TIER),
            ("local.yaml", include_str!("../../policies/local.yaml")),
            (
                "mastodon.yaml",
                include_str!("../../policies/mastodon.yaml"),
            ),
        ] {
            if let Err(e) = load_str(text, name, &Overrides::default(), &all) {
                panic!("{e}");
            }
        }
    }
}
