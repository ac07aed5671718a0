//! The `metrics` section: which series may exist (`drop`, `priority`, `drop_first` rules
//! of series selectors), at most one point per series per `min_sample_interval`, and the
//! active-series windows.

use std::time::Duration;

use crate::policy::defaults::{
    DEFAULT_SERIES_ADMISSION_WINDOW, DEFAULT_SERIES_BILLING_WINDOW, MAX_SERIES_WINDOW,
    MIN_SERIES_WINDOW,
};
use crate::policy::tree::{Node, Obj, with};
use crate::policy::{MetricPolicy, SeriesRule, SeriesRules};
use crate::sampling::selector::{self, Matcher, Op, Selector};
use crate::units::parse_duration;

/// Reads `metrics`; absent, every default (no rules, no minimum interval).
pub(in crate::policy) fn build(n: Node<'_>) -> MetricPolicy {
    let mut policy = MetricPolicy::default();
    let Some(mut o) = n.map() else {
        return policy;
    };
    policy.min_sample_interval = with(&mut o, "min_sample_interval", |n| {
        let d = n.parse(parse_duration)?;
        if d < Duration::from_secs(1) {
            n.problem("must be at least 1s (or leave it out: every point is sent)");
            return None;
        }
        Some(d)
    });
    let window = |o: &mut Obj<'_>, key: &'static str, default: Duration| {
        with(o, key, |n| {
            let d = n.parse(parse_duration)?;
            if d < MIN_SERIES_WINDOW || d > MAX_SERIES_WINDOW {
                n.problem(format!(
                    "must be between {} and {} (Mimir holds a series about 3h)",
                    crate::units::format_duration(MIN_SERIES_WINDOW),
                    crate::units::format_duration(MAX_SERIES_WINDOW)
                ));
                return None;
            }
            Some(d)
        })
        .unwrap_or(default)
    };
    policy.billing_window = window(&mut o, "billing_window", DEFAULT_SERIES_BILLING_WINDOW);
    policy.admission_window = window(&mut o, "admission_window", DEFAULT_SERIES_ADMISSION_WINDOW);
    if policy.admission_window < policy.billing_window {
        o.problems().push(
            &o.child_path("admission_window"),
            "must be at least billing_window: a series billed must still be counted",
        );
    }
    let list = |o: &mut Obj<'_>, key: &'static str| -> Vec<SeriesRule> {
        with(o, key, |n| {
            let mut rules = Vec::new();
            let listed = n.each_item("a list of rules", |i, node| {
                if let Some(r) = rule(node, &format!("{key}-{i}")) {
                    rules.push(r);
                }
            });
            listed.then_some(rules)
        })
        .unwrap_or_default()
    };
    policy.rules = SeriesRules {
        drop: list(&mut o, "drop"),
        priority: list(&mut o, "priority"),
        drop_first: list(&mut o, "drop_first"),
    };
    o.finish();
    policy
}

/// One rule: a `name` and conditions, all of which must hold: `selector` (a PromQL series
/// selector), `metric` (the exact name), `metric_matches` (a regular expression over the
/// name) and `labels` (exact label values).
fn rule(n: Node<'_>, default_name: &str) -> Option<SeriesRule> {
    let mut o = n.map()?;
    let name = with(&mut o, "name", |n| n.text()).unwrap_or_else(|| default_name.to_string());
    let mut matchers: Vec<Matcher> = Vec::new();
    let mut ok = true;
    if let Some(s) = with(&mut o, "selector", |n| n.parse(selector::parse)) {
        matchers.extend(s.matchers);
    }
    let mut add = |o: &mut Obj<'_>, key: &'static str, label: Option<String>, op: Op| {
        let path = o.child_path(key);
        if let Some(v) = with(o, key, |n| n.text()) {
            let label = label.unwrap_or_else(|| "__name__".into());
            match Matcher::new(label, op, v) {
                Ok(m) => matchers.push(m),
                Err(e) => {
                    o.problems().push(&path, e);
                    ok = false;
                }
            }
        }
    };
    add(&mut o, "metric", None, Op::Equal);
    add(&mut o, "metric_matches", None, Op::Matches);
    let labels = with(&mut o, "labels", |n| {
        let entries = n.entries()?;
        let mut out = Vec::new();
        for (k, v, path) in entries {
            match v.as_str() {
                Some(v) => out.push(Matcher::equal(k, v)),
                None => n.problems.push(&path, "expected a string"),
            }
        }
        Some(out)
    });
    matchers.extend(labels.unwrap_or_default());
    if matchers.is_empty() && ok {
        o.problems().push(
            &o.path,
            "needs a condition: selector ('{__name__=~\"node_.*\"}'), metric, metric_matches or labels",
        );
        ok = false;
    }
    o.finish();
    ok.then_some(SeriesRule {
        name,
        selector: Selector { matchers },
    })
}

#[cfg(test)]
mod tests {
    use crate::policy::load::{Overrides, load_str};

    fn load(yaml: &str) -> Result<crate::policy::Policy, String> {
        let text = format!("upstream: {{otlp: {{endpoint: 'http://127.0.0.1:9'}}}}\n{yaml}");
        load_str(&text, "t.yaml", &Overrides::default(), &|_| None).map_err(|e| e.to_string())
    }

    #[test]
    fn rules_intervals_and_windows_are_read_with_their_defaults() {
        let p = load(
            "metrics:
  min_sample_interval: 60s
  billing_window: 10m
  priority: [{name: up, selector: '{__name__=\"up\"}'}]
  drop_first: [{name: buckets, metric_matches: '.*_bucket', labels: {job: node}}]
  drop: [{metric: noisy_total}]
",
        )
        .unwrap();
        let m = &p.metrics;
        assert_eq!(
            m.min_sample_interval,
            Some(std::time::Duration::from_secs(60))
        );
        assert_eq!(m.billing_window, std::time::Duration::from_secs(600));
        assert_eq!(m.admission_window.as_secs(), 3 * 3600);
        assert_eq!(m.rules.priority[0].name, "up");
        let bucket = &m.rules.drop_first[0].selector;
        let get = |job: &'static str| {
            move |k: &str| match k {
                "__name__" => Some("x_bucket"),
                "job" => Some(job),
                _ => None,
            }
        };
        assert!(bucket.matches_with(get("node")));
        assert!(!bucket.matches_with(get("api")));
        assert_eq!(m.rules.drop[0].name, "drop-0");
        let none = load("").unwrap().metrics;
        assert!(none.min_sample_interval.is_none() && none.rules.drop.is_empty());
    }

    #[test]
    fn mistakes_are_reported_with_their_paths() {
        for (yaml, path) in [
            (
                "metrics: {min_sample_interval: 10ms}",
                "metrics.min_sample_interval",
            ),
            ("metrics: {priority: [{name: x}]}", "metrics.priority[0]"),
            (
                "metrics: {drop: [{selector: '{job=~\"(\"}'}]}",
                "metrics.drop[0].selector",
            ),
            (
                "metrics: {drop: [{metric_matches: '('}]}",
                "metrics.drop[0].metric_matches",
            ),
            (
                "metrics: {billing_window: 3h, admission_window: 1h}",
                "metrics.admission_window",
            ),
            ("metrics: {nope: 1}", "metrics.nope"),
            (
                "upstream: {remote_write: {endpoint: 'http://h/api/prom/push', compression: gzip}}",
                "compression",
            ),
        ] {
            let text = if yaml.starts_with("upstream") {
                "upstream: {otlp: {endpoint: 'http://127.0.0.1:9'}, remote_write: {endpoint: 'http://h/api/prom/push', compression: gzip}}".to_string()
            } else {
                format!("upstream: {{otlp: {{endpoint: 'http://127.0.0.1:9'}}}}\n{yaml}")
            };
            let e = load_str(&text, "t.yaml", &Overrides::default(), &|_| None)
                .map(|_| ())
                .unwrap_err()
                .to_string();
            assert!(e.contains(path), "{yaml}: {e}");
        }
    }

    #[test]
    fn remote_write_is_optional_and_an_empty_endpoint_means_off() {
        let base = "otlp: {endpoint: 'http://127.0.0.1:9'}";
        let text = format!(
            "upstream: {{{base}, remote_write: {{endpoint: 'https://prom.example/api/prom/push', basic_auth: {{username: '123', password: p}}}}}}"
        );
        let p = load_str(&text, "t", &Overrides::default(), &|_| None).unwrap();
        let rw = p.upstream.remote_write.unwrap();
        assert_eq!(rw.endpoint, "https://prom.example/api/prom/push");
        let text = format!("upstream: {{{base}, remote_write: {{endpoint: '${{PROM:-}}'}}}}");
        let p = load_str(&text, "t", &Overrides::default(), &|_| None).unwrap();
        assert!(p.upstream.remote_write.is_none());
        let o = Overrides {
            upstream_remote_write: Some("http://127.0.0.1:9090/api/v1/write".into()),
            ..Default::default()
        };
        let p = load_str(&format!("upstream: {{{base}}}"), "t", &o, &|_| None).unwrap();
        assert_eq!(
            p.upstream.remote_write.unwrap().endpoint,
            "http://127.0.0.1:9090/api/v1/write"
        );
    }
}
