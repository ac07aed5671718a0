//! Loading a policy: YAML text -> plain tree -> CLI overrides -> `${ENV}` substitution ->
//! validation into [`Policy`], section by section (see `sections`), then the checks that
//! need several sections at once. Every problem is reported at once with its YAML path.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

use super::defaults::{MIN_FLUSHES_PER_PERIOD, MIN_RECOMPUTES_PER_PERIOD};
use super::problem::{PolicyError, Problem, Problems};
use super::sections::pacing::PacingAsWritten;
use super::sections::{
    alerts, budgets, ingest, listen, logs, metrics, pacing, period, store, traces, upstream,
};
use super::tree::{Node, required, section, with};
use super::{Ingest, Policy, Store, UpstreamAuth, Upstreams};
use crate::period::PeriodSpec;
use crate::units::format_duration;

/// The free-tier policy compiled into the binary: what `frugal serve` runs without
/// `--policy`.
pub const EMBEDDED_FREE_TIER: &str = include_str!("../../policies/grafana-cloud-free.yaml");

/// Values given on the command line, which win over the file (Kubernetes args).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `listen.http`.
    pub listen_http: Option<String>,
    /// `listen.grpc` (`off` turns OTLP/gRPC off).
    pub listen_grpc: Option<String>,
    /// `listen.admin`.
    pub listen_admin: Option<String>,
    /// `upstream.otlp.endpoint`.
    pub upstream_otlp: Option<String>,
    /// `upstream.remote_write.endpoint`.
    pub upstream_remote_write: Option<String>,
    /// `upstream.loki.endpoint`.
    pub upstream_loki: Option<String>,
    /// `store.data_dir`.
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
        // Every section reports why it gave up; this is only a safety net.
        _ if problems.is_empty() => Err(fail(vec![Problem {
            path: String::new(),
            message: "the policy is incomplete".into(),
        }])),
        _ => Err(fail(problems)),
    }
}

/// Writes the command line's values into the tree; a section in their way that is not a
/// mapping becomes one.
fn apply_overrides(tree: &mut Value, o: &Overrides) {
    let data_dir = o.data_dir.as_ref().map(|d| d.display().to_string());
    let given: [(&[&str], &Option<String>); 7] = [
        (&["listen", "http"], &o.listen_http),
        (&["listen", "grpc"], &o.listen_grpc),
        (&["listen", "admin"], &o.listen_admin),
        (&["upstream", "otlp", "endpoint"], &o.upstream_otlp),
        (
            &["upstream", "remote_write", "endpoint"],
            &o.upstream_remote_write,
        ),
        (&["upstream", "loki", "endpoint"], &o.upstream_loki),
        (&["store", "data_dir"], &data_dir),
    ];
    for (path, value) in given {
        if let Some(v) = value {
            set(tree, path, v.clone());
        }
    }
}

/// Sets the string at `path`, making mappings on the way.
fn set(tree: &mut Value, path: &[&str], v: String) {
    match path.split_first() {
        None => *tree = Value::String(v),
        Some((key, rest)) => {
            let mut map = match std::mem::take(tree) {
                Value::Object(m) => m,
                _ => Map::new(),
            };
            set(map.entry(*key).or_insert(Value::Null), rest, v);
            *tree = Value::Object(map);
        }
    }
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

/// Walks every section (each reports its own problems), then checks across sections.
fn build(root: Node<'_>, source_name: &str) -> Option<Policy> {
    let mut top = root.map()?;
    let listen = section(&mut top, "listen", listen::build);
    let ingest = section(&mut top, "ingest", ingest::build);
    let upstream = required(
        &mut top,
        "upstream",
        "is required: where to send data (upstream.otlp.endpoint)",
        upstream::build,
    );
    // A wrong period has been reported; the checks below still run, against the default.
    let period = section(&mut top, "period", period::build).unwrap_or_else(PeriodSpec::utc_month);
    let store = section(&mut top, "store", store::build);
    let budgets = section(&mut top, "budgets", budgets::build);
    let pacing = section(&mut top, "pacing", pacing::build);
    let traces = section(&mut top, "traces", traces::build);
    let logs = section(&mut top, "logs", logs::build);
    let metrics = section(&mut top, "metrics", metrics::build);
    let shadow = with(&mut top, "shadow", |n| n.bool()).unwrap_or(false);
    // Absent: no notifications (unlike the other sections, whose absence means defaults).
    let alerts = with(&mut top, "alerts", alerts::build);
    let problems = top.problems();
    top.finish();
    let (pacing, store, ingest, upstream) = (pacing?, store?, ingest?, upstream?);
    let length = period.shortest_length();
    let tail = traces.as_ref().is_some_and(|t| t.tail.is_some());
    check_across_sections(length, &pacing, &store, &ingest, &upstream, tail, problems);
    Some(Policy {
        source: source_name.to_string(),
        listen: listen?,
        ingest,
        upstream,
        period,
        store,
        budgets: budgets?,
        pacing: pacing.for_period(length),
        traces: traces?,
        logs: logs?,
        metrics,
        shadow,
        alerts,
    })
}

/// What no single section can check: timings against the period's shortest `length`, and
/// credentials that would clash.
fn check_across_sections(
    length: Duration,
    pacing: &PacingAsWritten,
    store: &Store,
    ingest: &Ingest,
    upstream: &Upstreams,
    tail: bool,
    problems: &Problems,
) {
    if let Some(every) = pacing.recompute_every {
        if every.as_secs_f64() * f64::from(MIN_RECOMPUTES_PER_PERIOD) > length.as_secs_f64() {
            problems.push(
                "pacing.recompute_every",
                format!(
                    "a period of {} needs a recompute at least every {}",
                    format_duration(length),
                    format_duration(length / MIN_RECOMPUTES_PER_PERIOD)
                ),
            );
        }
    }
    if store.flush_interval.as_secs_f64() * f64::from(MIN_FLUSHES_PER_PERIOD) > length.as_secs_f64()
    {
        problems.push(
            "store.flush_interval",
            format!(
                "a period of {} needs a flush at least every {}",
                format_duration(length),
                format_duration(length / MIN_FLUSHES_PER_PERIOD)
            ),
        );
    }
    if ingest.auth.is_some() && matches!(upstream.otlp.auth, UpstreamAuth::PassThrough) {
        problems.push(
            "upstream.otlp.pass_through_auth",
            "cannot be combined with ingest.auth: the client's Authorization header is frugal's ingest credential, not one for upstream",
        );
    }
    if tail && matches!(upstream.otlp.auth, UpstreamAuth::PassThrough) {
        problems.push(
            "upstream.otlp.pass_through_auth",
            "cannot be combined with traces.tail: tail-sampled traces leave after their clients were answered, with no client credentials to pass on; give upstream.otlp its own basic_auth or bearer_token",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{AtLimit, SamplingMode};

    #[test]
    fn tail_sampling_refuses_passing_client_credentials_through() {
        let text = "upstream: {otlp: {endpoint: 'http://x:1', pass_through_auth: true}}\ntraces: {tail: {}}\n";
        let e = load_str(text, "p.yaml", &Overrides::default(), &|_| None).unwrap_err();
        assert!(
            e.to_string()
                .contains("upstream.otlp.pass_through_auth: cannot be combined with traces.tail"),
            "{e}"
        );
    }

    fn env(k: &str) -> Option<String> {
        match k {
            "ENDPOINT" => Some("https://otlp-gateway-prod-eu-west-2.grafana.net/otlp".into()),
            "USER" => Some("123456".into()),
            "TOKEN" => Some("glc_secret".into()),
            _ => None,
        }
    }

    /// Each problem's path and message.
    fn problems(err: &PolicyError) -> Vec<(&str, &str)> {
        err.problems
            .iter()
            .map(|p| (p.path.as_str(), p.message.as_str()))
            .collect()
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
    fn connection_limits_are_read_and_bounded() {
        use crate::policy::defaults::DEFAULT_CONNECTIONS;
        assert_eq!(
            load(MINIMAL).unwrap().listen.connections,
            DEFAULT_CONNECTIONS
        );
        let p = load(&format!(
            "{MINIMAL}listen: {{connections: {{max: 20, admin_max: 8, header_timeout: 1s, \
             request_timeout: 2s, idle_timeout: 1500ms, max_streams: 4}}}}\n"
        ))
        .unwrap();
        let c = p.listen.connections;
        assert_eq!((c.max, c.admin_max, c.max_streams), (20, 8, 4));
        assert_eq!(c.header_timeout, Duration::from_secs(1));
        assert_eq!(c.request_timeout, Duration::from_secs(2));
        assert_eq!(c.idle_timeout, Duration::from_millis(1500));
        let err = load(&format!(
            "{MINIMAL}listen: {{connections: {{max: 0, header_timeout: 0s, idle_timeout: forever, \
             max_streams: 5000, max_conns: 3}}}}\n"
        ))
        .unwrap_err();
        let got = problems(&err);
        assert_eq!(
            got,
            [
                ("listen.connections.max", "must be between 1 and 1000000"),
                (
                    "listen.connections.header_timeout",
                    "must be between 100ms and 3600s"
                ),
                (
                    "listen.connections.idle_timeout",
                    "\"forever\" is not a duration (try 500ms, 10s, 2m, 1h or 1d)"
                ),
                (
                    "listen.connections.max_streams",
                    "must be between 1 and 1000"
                ),
                (
                    "listen.connections.max_conns",
                    "unknown key (allowed: max, admin_max, header_timeout, request_timeout, idle_timeout, max_streams)"
                ),
            ],
            "{err}"
        );
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
        let got = problems(&err);
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
    fn a_problem_in_every_section_is_reported_in_one_error() {
        let text = r#"
listen: {http: nowhere}
ingest: {max_request_size: 0}
upstream: {otlp: {endpoint: 'http://127.0.0.1:4318', compression: brotli}}
period: {every: week, reset_day: 3}
store: {cache_size: lots}
budgets: {logs: {target: 95%}}
pacing: {enabled: maybe}
traces: {sampling: {precision: 15}}
logs: {priority: [{severity_at_least: LOUD, body_matches: x}]}
metrics: {min_sample_interval: 10ms}
shadow: sometimes
alerts: {thresholds: [150%]}
dashboards: {}
"#;
        let err = load(text).unwrap_err();
        let got = problems(&err);
        let want = [
            (
                "listen.http",
                "\"nowhere\" is not an address (try 0.0.0.0:4318 or 127.0.0.1:4318)",
            ),
            ("ingest.max_request_size", "must be more than 0"),
            (
                "upstream.otlp.compression",
                "\"brotli\" is not allowed (allowed: gzip, none)",
            ),
            ("period.reset_day", "does not apply to a weekly period"),
            (
                "store.cache_size",
                "\"lots\" is not a size (try 50GB, 50GiB, 500MB or a number of bytes)",
            ),
            ("budgets.logs.limit", "is required (e.g. 50GB)"),
            ("pacing.enabled", "expected true or false, found \"maybe\""),
            (
                "traces.sampling.precision",
                "15 is not between 1 and 14 hex digits",
            ),
            (
                "logs.priority[0].severity_at_least",
                "\"LOUD\" is not allowed (allowed: TRACE, DEBUG, INFO, WARN, ERROR, FATAL)",
            ),
            (
                "metrics.min_sample_interval",
                "must be at least 1s (or leave it out: every point is sent)",
            ),
            ("shadow", "expected true or false, found \"sometimes\""),
            (
                "alerts.thresholds[0]",
                "\"150%\" is not between 0% and 100%",
            ),
            (
                "dashboards",
                "unknown key (allowed: listen, ingest, upstream, period, store, budgets, pacing, traces, logs, metrics, shadow, alerts)",
            ),
        ];
        assert_eq!(got, want, "{err}");
        let shown = err.to_string();
        assert!(shown.starts_with("test.yaml: 13 problems"), "{shown}");
        for (path, message) in want {
            assert!(shown.contains(&format!("\n  {path}: {message}")), "{shown}");
        }
    }

    #[test]
    fn ingest_limits_and_their_problems() {
        let p = load(
            "upstream: {otlp: {endpoint: 'http://127.0.0.1:4318'}}\n\
             ingest: {max_request_size: 64MiB, max_per_request: {items: 500000, depth: 8}}\n",
        )
        .unwrap();
        let i = &p.ingest;
        // The in-flight budget grows with the request size: two bodies always fit.
        assert_eq!(i.max_in_flight_bytes, 256 * 1024 * 1024);
        let d = crate::policy::defaults::DEFAULT_MAX_PER_REQUEST;
        assert_eq!(i.max_per_request.items, 500_000);
        assert_eq!(i.max_per_request.depth, 8);
        assert_eq!(i.max_per_request.resources, d.resources);
        let p = load(
            "upstream: {otlp: {endpoint: 'http://127.0.0.1:4318'}}\n\
             ingest: {max_request_size: 200MiB}\n",
        )
        .unwrap();
        assert_eq!(p.ingest.max_in_flight_bytes, 400 * 1024 * 1024);
        let err = load(
            "upstream: {otlp: {endpoint: 'http://127.0.0.1:4318'}}\n\
             ingest: {max_in_flight: 20MiB, max_per_request: {resources: 0, depth: 31, spans: 3}}\n",
        )
        .unwrap_err();
        let got = problems(&err);
        assert_eq!(
            got,
            [
                ("ingest.max_per_request.resources", "must be more than 0"),
                (
                    "ingest.max_per_request.depth",
                    "must be at most 30 (deeper values pass the protobuf decoder's own nesting limit)"
                ),
                (
                    "ingest.max_per_request.spans",
                    "unknown key (allowed: resources, scopes, items, attributes, depth)"
                ),
                (
                    "ingest.max_in_flight",
                    "must be at least 33.55MB (twice max_request_size: a largest body and its decompressed form)"
                ),
            ],
            "{err}"
        );
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
    fn a_password_in_the_endpoint_is_refused_without_being_repeated() {
        for endpoint in [
            "https://123456:glc_hunter2@otlp.example/otlp",
            "https://glc_hunter2@otlp.example",
            "http://u:glc_hunter2@127.0.0.1:4318?x=1",
            "u:glc_hunter2@otlp.example/otlp",
        ] {
            let text = format!("upstream: {{otlp: {{endpoint: '{endpoint}'}}}}\n");
            let err = load(&text).unwrap_err().to_string();
            assert!(
                err.contains("upstream.otlp.endpoint: must not contain a user name or password"),
                "{err}"
            );
            assert!(err.contains("basic_auth"), "{err}");
            assert!(!err.contains("hunter2"), "{err}");
        }
        // An `@` in the path is not a user name.
        let p = load("upstream: {otlp: {endpoint: 'https://otlp.example/a@b'}}\n").unwrap();
        assert_eq!(p.upstream.otlp.endpoint, "https://otlp.example/a@b");
    }

    #[test]
    fn empty_blank_or_short_credentials_are_refused() {
        let upstream = "upstream: {otlp: {endpoint: 'http://127.0.0.1:4318'}}\n";
        let cases = [
            (
                r#"ingest: {auth: {bearer_token: ""}}"#,
                "ingest.auth.bearer_token",
                "is empty",
            ),
            (
                r#"ingest: {auth: {bearer_token: "   "}}"#,
                "ingest.auth.bearer_token",
                "is empty",
            ),
            (
                r#"ingest: {auth: {bearer_token: "hunter2hunter2hunter2\n"}}"#,
                "ingest.auth.bearer_token",
                "begins or ends with whitespace",
            ),
            (
                r#"ingest: {auth: {bearer_token: "hunter2hunt\u0007er2hunter2"}}"#,
                "ingest.auth.bearer_token",
                "contains a control character",
            ),
            (
                "ingest: {auth: {bearer_token: hunter2}}",
                "ingest.auth.bearer_token",
                "is too short (7 characters): use at least 16",
            ),
            (
                "ingest: {auth: {basic_auth: {username: alloy, password: hunter2}}}",
                "ingest.auth.basic_auth.password",
                "is too short",
            ),
            (
                "ingest: {auth: {basic_auth: {username: '', password: hunter2hunter2hunter2}}}",
                "ingest.auth.basic_auth.username",
                "is empty",
            ),
            (
                "ingest: {auth: {basic_auth: {password: hunter2hunter2hunter2}}}",
                "ingest.auth.basic_auth.username",
                "is required",
            ),
        ];
        for (ingest, path, message) in cases {
            let err = load(&format!("{upstream}{ingest}\n")).unwrap_err();
            let shown = err.to_string();
            assert!(shown.contains(&format!("{path}: {message}")), "{shown}");
            assert_eq!(
                err.problems.len(),
                1,
                "one problem, not a second one: {shown}"
            );
            assert!(!shown.contains("hunter2"), "{shown}");
        }
        for auth in [
            r#"bearer_token: """#,
            r#"bearer_token: " ""#,
            r#"basic_auth: {username: "", password: glc_hunter2}"#,
            r#"basic_auth: {username: "123456", password: ""}"#,
            r#"basic_auth: {username: "123456", password: " glc_hunter2"}"#,
        ] {
            let text =
                format!("upstream: {{otlp: {{endpoint: 'http://127.0.0.1:4318', {auth}}}}}\n");
            let shown = load(&text).unwrap_err().to_string();
            assert!(shown.contains("upstream.otlp."), "{shown}");
            assert!(!shown.contains("hunter2"), "{shown}");
        }
        // Upstream credentials have no minimum beyond not being empty: a Grafana Cloud
        // user name is a short instance ID.
        let text = "upstream: {otlp: {endpoint: 'http://127.0.0.1:4318', basic_auth: {username: 7, password: pw}}}\n";
        assert!(load(text).is_ok());
        let text = format!("{upstream}ingest: {{auth: {{bearer_token: 0123456789abcdef}}}}\n");
        assert!(load(&text).is_ok());
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
ingest: {auth: {bearer_token: abcdefghijklmnop}}
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
    fn alerts_are_off_unless_written_and_default_to_the_rules_thresholds() {
        use crate::policy::{Threshold, WebhookFormat};
        assert!(load(MINIMAL).unwrap().alerts.is_none());
        let a = load(&format!("{MINIMAL}alerts: {{}}\n"))
            .unwrap()
            .alerts
            .unwrap();
        let labels: Vec<String> = a.thresholds.iter().map(|t| t.label()).collect();
        assert_eq!(labels, ["50%", "80%", "95%"]);
        assert!(a.projected_overage && a.webhooks.is_empty());
        let text = format!(
            "{MINIMAL}{}",
            r#"
alerts:
  thresholds: [95%, 0.5, 99.5%, 12.25%]
  projected_overage: false
  webhooks:
    - {url: "${HOOK:-https://hooks.slack.com/services/T0/B0/glc_hunter2}", format: slack}
    - {url: "http://alertmanager:9093", format: alertmanager, headers: {Authorization: Bearer hunter2}}
"#
        );
        let a = load(&text).unwrap().alerts.unwrap();
        let labels: Vec<String> = a.thresholds.iter().map(|t| t.label()).collect();
        assert_eq!(labels, ["12.25%", "50%", "95%", "99.5%"]);
        assert_eq!(a.thresholds[1], Threshold(5000));
        assert!(!a.projected_overage);
        assert_eq!(a.webhooks[0].format, WebhookFormat::Slack);
        assert_eq!(a.webhooks[1].format, WebhookFormat::Alertmanager);
        assert_eq!(a.webhooks[1].headers[0].0, "Authorization");
        let shown = format!("{a:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("hooks.slack"),
            "{shown}"
        );
        assert_eq!(a.webhooks[0].describe(), "slack webhook at hooks.slack.com");
    }

    #[test]
    fn alert_mistakes_are_reported_with_paths_and_no_secret() {
        let text = format!(
            "{MINIMAL}{}",
            r#"
alerts:
  thresholds: [50%, 0%, 80%, 0.8, 101%, lots, 12.345%]
  projected_overage: sometimes
  webhooks:
    - {url: "https://hooks.example/glc_hunter2", format: teams}
    - {url: "https://user:glc_hunter2@am.example", format: alertmanager}
    - {url: "ftp://glc_hunter2.example", format: generic, header: {}}
    - {format: generic}
    - {url: "https://x.example/glc_hunter2", format: generic, headers: {"bad header": v}}
    - {url: "https://y.example/glc_hunter2", format: generic}
    - {url: "https://y.example/glc_hunter2", format: generic}
  webhook: []
"#
        );
        let err = load(&text).unwrap_err();
        let got = problems(&err);
        assert_eq!(
            got,
            [
                ("alerts.thresholds[1]", "must be more than 0%"),
                ("alerts.thresholds[3]", "80% is listed twice"),
                (
                    "alerts.thresholds[4]",
                    "\"101%\" is not between 0% and 100%"
                ),
                (
                    "alerts.thresholds[5]",
                    "\"lots\" is not a ratio (try 95% or 0.95)"
                ),
                (
                    "alerts.thresholds[6]",
                    "give at most two decimals of a percent (99.95%)"
                ),
                (
                    "alerts.projected_overage",
                    "expected true or false, found \"sometimes\""
                ),
                (
                    "alerts.webhooks[0].format",
                    "\"teams\" is not allowed (allowed: generic, slack, alertmanager)"
                ),
                (
                    "alerts.webhooks[1].url",
                    "must not contain a user name or password (user:password@host): put the credential in headers (Authorization: ...) instead"
                ),
                (
                    "alerts.webhooks[2].url",
                    "is not an http:// or https:// URL"
                ),
                (
                    "alerts.webhooks[2].header",
                    "unknown key (did you mean headers?)"
                ),
                (
                    "alerts.webhooks[3].url",
                    "is required (usually ${SOME_VARIABLE})"
                ),
                (
                    "alerts.webhooks[4].headers.bad header",
                    "is not a valid header name"
                ),
                (
                    "alerts.webhooks[6]",
                    "the same webhook (url and format) is listed twice"
                ),
                ("alerts.webhook", "unknown key (did you mean webhooks?)"),
            ],
            "{err}"
        );
        assert!(!err.to_string().contains("hunter2"), "{err}");
        let unset =
            format!("{MINIMAL}alerts: {{webhooks: [{{url: '${{SLACK_URL}}', format: slack}}]}}\n");
        let err = load(&unset).unwrap_err();
        assert_eq!(
            problems(&err),
            [(
                "alerts.webhooks[0].url",
                "${SLACK_URL} is not set in the environment"
            )]
        );
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
