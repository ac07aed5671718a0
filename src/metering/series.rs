//! OTLP metrics as the Prometheus series Grafana Cloud stores them: metric names, label
//! sets and how many series each data point becomes, following Prometheus's OTLP
//! translation with the `UnderscoreEscapingWithSuffixes` strategy (what Grafana's OTLP
//! gateway and Mimir's OTLP endpoint apply). Grafana bills metrics by active series, so
//! this is what frugal will count and admit ("frugal 6").
//!
//! The mapping, per resource and data point:
//! - **name**: split on every character outside `[a-zA-Z0-9:]`, joined with `_`; the
//!   unit's Prometheus word appended unless already a token (`s` → `seconds`, `By` →
//!   `bytes`, `1` → nothing, `X/Y` → `X_per_Y`, units in `{}` ignored); a monotonic sum
//!   ends in `_total`, a gauge with unit `1` in `_ratio`; a leading digit gets `_`.
//! - **labels**: the point's attributes, names sanitised (characters outside
//!   `[a-zA-Z0-9_]` → `_`, a leading digit → `key_`); two attributes that sanitise to one
//!   name have their values joined with `;` in key order; `job` (`service.namespace/
//!   service.name`, or `service.name`) and `instance` (`service.instance.id`) from the
//!   resource override them.
//! - **series per point**: gauge and sum 1; a histogram with N bounds N+1 `_bucket`
//!   series (`le`, `+Inf` included), `_count`, and `_sum` when it has a sum; a summary
//!   with Q quantiles Q (`quantile`) plus `_sum` and `_count`; an exponential histogram
//!   1 (native). Plus one `target_info` per distinct resource that has attributes other
//!   than `service.name`, `service.namespace` and `service.instance.id` (those others as
//!   labels).
//!
//! Uncertain, and said so in the README when counting starts: which resource attributes
//! Grafana Cloud promotes to labels by default (none here); whether it adds the scope's
//! name and version as labels (not here); whether runs of underscores in label names are
//! collapsed (kept here); delta sums, which Mimir refuses by default, are counted (never
//! under-count).

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::{Metric, metric};
use opentelemetry_proto::tonic::resource::v1::Resource;

use super::loki::as_string;

/// A series: its label set, `__name__` included, sorted by label name.
pub type LabelSet = Vec<(String, String)>;

/// How Prometheus types an OTLP metric, which decides its name's suffixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A gauge.
    Gauge,
    /// A monotonic sum (a counter): `_total`.
    MonotonicCounter,
    /// A non-monotonic sum.
    NonMonotonicCounter,
    /// An explicit-bucket histogram.
    Histogram,
    /// An exponential histogram (a native histogram).
    ExponentialHistogram,
    /// A summary.
    Summary,
    /// No data.
    Unknown,
}

impl Kind {
    /// The kind of an OTLP metric.
    pub fn of(m: &Metric) -> Kind {
        match &m.data {
            Some(metric::Data::Gauge(_)) => Kind::Gauge,
            Some(metric::Data::Sum(s)) if s.is_monotonic => Kind::MonotonicCounter,
            Some(metric::Data::Sum(_)) => Kind::NonMonotonicCounter,
            Some(metric::Data::Histogram(_)) => Kind::Histogram,
            Some(metric::Data::ExponentialHistogram(_)) => Kind::ExponentialHistogram,
            Some(metric::Data::Summary(_)) => Kind::Summary,
            None => Kind::Unknown,
        }
    }
}

fn metric_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == ':'
}

/// The Prometheus word for an OTLP unit (UCUM), or the unit itself.
fn unit_word(unit: &str) -> &str {
    match unit {
        "d" => "days",
        "h" => "hours",
        "min" => "minutes",
        "s" => "seconds",
        "ms" => "milliseconds",
        "us" => "microseconds",
        "ns" => "nanoseconds",
        "By" => "bytes",
        "KiBy" => "kibibytes",
        "MiBy" => "mebibytes",
        "GiBy" => "gibibytes",
        "TiBy" => "tibibytes",
        "KBy" => "kilobytes",
        "MBy" => "megabytes",
        "GBy" => "gigabytes",
        "TBy" => "terabytes",
        "m" => "meters",
        "V" => "volts",
        "A" => "amperes",
        "J" => "joules",
        "W" => "watts",
        "g" => "grams",
        "Cel" => "celsius",
        "Hz" => "hertz",
        "1" => "",
        "%" => "percent",
        other => other,
    }
}

/// The Prometheus word for the unit after a `/`.
fn per_unit_word(unit: &str) -> &str {
    match unit {
        "s" => "second",
        "m" => "minute",
        "h" => "hour",
        "d" => "day",
        "w" => "week",
        "mo" => "month",
        "y" => "year",
        other => other,
    }
}

/// A unit word made of metric-name characters: others become `_`, runs of `_` one,
/// without a leading `_`.
fn clean_unit(word: &str) -> String {
    let mut out = String::with_capacity(word.len());
    for c in word.chars() {
        let c = if metric_char(c) { c } else { '_' };
        if !(c == '_' && (out.is_empty() || out.ends_with('_'))) {
            out.push(c);
        }
    }
    out
}

/// The unit's main and per-unit suffixes (`By/s` → `bytes`, `per_second`).
fn unit_suffixes(unit: &str) -> (String, String) {
    let (main, per) = match unit.split_once('/') {
        Some((main, per)) => (main.trim(), per.trim()),
        None => (unit.trim(), ""),
    };
    let usable = |u: &str| !u.is_empty() && !u.contains(['{', '}']);
    let main = if usable(main) {
        clean_unit(unit_word(main))
    } else {
        String::new()
    };
    let per = if usable(per) {
        clean_unit(&format!("per_{}", per_unit_word(per)))
    } else {
        String::new()
    };
    (main, per.trim_end_matches('_').to_string())
}

/// The Prometheus metric name of an OTLP metric.
pub fn metric_name(name: &str, unit: &str, kind: Kind) -> String {
    let mut tokens: Vec<&str> = name
        .split(|c| !metric_char(c))
        .filter(|t| !t.is_empty())
        .collect();
    let (main, per) = unit_suffixes(unit);
    let main = if per.is_empty() {
        main.as_str()
    } else {
        main.trim_end_matches('_')
    };
    if !main.is_empty() && !tokens.contains(&main) {
        tokens.push(main);
    }
    if !per.is_empty() {
        tokens.push(&per);
    }
    if kind == Kind::MonotonicCounter {
        tokens.retain(|t| *t != "total");
        tokens.push("total");
    }
    if unit == "1" && kind == Kind::Gauge {
        tokens.retain(|t| *t != "ratio");
        tokens.push("ratio");
    }
    let mut out = tokens.join("_");
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// The Prometheus label name of an OTLP attribute key.
pub fn label_name(key: &str) -> String {
    let mut out: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert_str(0, "key_");
    }
    out
}

const SERVICE_NAME: &str = "service.name";
const SERVICE_NAMESPACE: &str = "service.namespace";
const SERVICE_INSTANCE_ID: &str = "service.instance.id";

fn attribute<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a KeyValue> {
    attrs.iter().find(|kv| kv.key == key)
}

/// Attributes as labels: sanitised names, colliding values joined with `;` in key order.
fn labels_of(attrs: &[KeyValue]) -> BTreeMap<String, String> {
    let mut sorted: Vec<&KeyValue> = attrs.iter().collect();
    sorted.sort_by(|a, b| a.key.cmp(&b.key));
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for kv in sorted {
        let value = as_string(kv.value.as_ref());
        out.entry(label_name(&kv.key))
            .and_modify(|v| {
                v.push(';');
                v.push_str(&value);
            })
            .or_insert(value);
    }
    out
}

/// `job` and `instance` from a resource.
fn resource_labels(resource: Option<&Resource>) -> Vec<(String, String)> {
    let attrs = resource.map(|r| r.attributes.as_slice()).unwrap_or(&[]);
    let mut out = Vec::new();
    if let Some(name) = attribute(attrs, SERVICE_NAME) {
        let mut job = as_string(name.value.as_ref());
        if let Some(ns) = attribute(attrs, SERVICE_NAMESPACE) {
            job = format!("{}/{job}", as_string(ns.value.as_ref()));
        }
        out.push(("job".to_string(), job));
    }
    if let Some(id) = attribute(attrs, SERVICE_INSTANCE_ID) {
        out.push(("instance".to_string(), as_string(id.value.as_ref())));
    }
    out
}

/// A label set from attributes, the resource's labels over them, and a name.
fn series(
    attrs: &[KeyValue],
    resource: &[(String, String)],
    name: String,
    extra: Option<(&str, String)>,
) -> LabelSet {
    let mut labels = labels_of(attrs);
    for (k, v) in resource {
        labels.insert(k.clone(), v.clone());
    }
    if let Some((k, v)) = extra {
        labels.insert(k.to_string(), v);
    }
    labels.insert("__name__".to_string(), name);
    labels.into_iter().collect()
}

/// A bucket bound or quantile as Prometheus writes it.
fn float_label(f: f64) -> String {
    if f == f64::INFINITY {
        "+Inf".into()
    } else if f == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{f}")
    }
}

/// Every series a metrics request writes, once per data point (a series written twice in
/// one request appears twice), `target_info` once per resource that has one.
pub fn series_of(req: &ExportMetricsServiceRequest) -> Vec<LabelSet> {
    let mut out = Vec::new();
    each_series(req, |s| out.push(s));
    out
}

/// [`series_of`] one at a time: each label set is handed to `f` as it is made, so a
/// request of many series never holds them all.
pub fn each_series(req: &ExportMetricsServiceRequest, mut f: impl FnMut(LabelSet)) {
    for rm in &req.resource_metrics {
        let resource = resource_labels(rm.resource.as_ref());
        let info: Vec<KeyValue> = rm
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .filter(|kv| {
                ![SERVICE_NAME, SERVICE_NAMESPACE, SERVICE_INSTANCE_ID].contains(&kv.key.as_str())
            })
            .cloned()
            .collect();
        if !info.is_empty() {
            f(series(&info, &resource, "target_info".into(), None));
        }
        for m in rm.scope_metrics.iter().flat_map(|sm| &sm.metrics) {
            let name = metric_name(&m.name, &m.unit, Kind::of(m));
            let with = |suffix: &str| format!("{name}{suffix}");
            match &m.data {
                Some(metric::Data::Gauge(g)) => {
                    for p in &g.data_points {
                        f(series(&p.attributes, &resource, name.clone(), None));
                    }
                }
                // Delta sums too: Mimir may refuse them, but frugal never under-counts.
                Some(metric::Data::Sum(s)) => {
                    for p in &s.data_points {
                        f(series(&p.attributes, &resource, name.clone(), None));
                    }
                }
                Some(metric::Data::Histogram(h)) => {
                    for p in &h.data_points {
                        let bounds = p.explicit_bounds.iter().copied().chain([f64::INFINITY]);
                        for b in bounds {
                            let le = Some(("le", float_label(b)));
                            f(series(&p.attributes, &resource, with("_bucket"), le));
                        }
                        f(series(&p.attributes, &resource, with("_count"), None));
                        if p.sum.is_some() {
                            f(series(&p.attributes, &resource, with("_sum"), None));
                        }
                    }
                }
                Some(metric::Data::ExponentialHistogram(h)) => {
                    for p in &h.data_points {
                        f(series(&p.attributes, &resource, name.clone(), None));
                    }
                }
                Some(metric::Data::Summary(s)) => {
                    for p in &s.data_points {
                        for q in &p.quantile_values {
                            let quantile = Some(("quantile", float_label(q.quantile)));
                            f(series(&p.attributes, &resource, name.clone(), quantile));
                        }
                        f(series(&p.attributes, &resource, with("_sum"), None));
                        f(series(&p.attributes, &resource, with("_count"), None));
                    }
                }
                None => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::metrics::v1::{
        ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Histogram, HistogramDataPoint,
        NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, Summary, SummaryDataPoint,
        summary_data_point::ValueAtQuantile,
    };

    /// (name, unit, kind, the name Prometheus's OTLP translation gives it): the cases of
    /// prometheus/otlptranslator's `metric_namer_test.go` for the
    /// `UnderscoreEscapingWithSuffixes` strategy without a namespace.
    const NAMES: &[(&str, &str, Kind, &str)] = &[
        ("requests", "", Kind::MonotonicCounter, "requests_total"),
        ("cpu_usage", "1", Kind::Gauge, "cpu_usage_ratio"),
        ("items", "1", Kind::MonotonicCounter, "items_total"),
        (
            "response_time",
            "ms",
            Kind::Gauge,
            "response_time_milliseconds",
        ),
        ("memory_usage", "By", Kind::Gauge, "memory_usage_bytes"),
        ("requests", "1/s", Kind::Gauge, "requests_per_second"),
        (
            "throughput",
            "By/s",
            Kind::Gauge,
            "throughput_bytes_per_second",
        ),
        (
            "custom_metric",
            "custom_unit",
            Kind::Gauge,
            "custom_metric_custom_unit",
        ),
        ("custom_metric", "{custom}", Kind::Gauge, "custom_metric"),
        (
            "custom_metric",
            "By/{custom}",
            Kind::Gauge,
            "custom_metric_bytes",
        ),
        (
            "requests_total",
            "",
            Kind::MonotonicCounter,
            "requests_total",
        ),
        ("cpu_usage_ratio", "1", Kind::Gauge, "cpu_usage_ratio"),
        (
            "response_time_seconds",
            "s",
            Kind::Gauge,
            "response_time_seconds",
        ),
        (
            "metric__with__multiple__underscores",
            "unit__multiple__underscores",
            Kind::Gauge,
            "metric_with_multiple_underscores_unit_multiple_underscores",
        ),
        (
            "custom_metric",
            "unit@with#special/chars",
            Kind::Gauge,
            "custom_metric_unit_with_special_per_chars",
        ),
        (
            "request_duration",
            "s",
            Kind::Histogram,
            "request_duration_seconds",
        ),
        (
            "request_size",
            "By",
            Kind::ExponentialHistogram,
            "request_size_bytes",
        ),
        (
            "response_time",
            "ms",
            Kind::Summary,
            "response_time_milliseconds",
        ),
        (
            "active_connections",
            "",
            Kind::NonMonotonicCounter,
            "active_connections",
        ),
        ("unknown_metric", "", Kind::Unknown, "unknown_metric"),
        ("uptime", "d", Kind::Gauge, "uptime_days"),
        ("duration", "h", Kind::Gauge, "duration_hours"),
        ("timeout", "min", Kind::Gauge, "timeout_minutes"),
        ("latency", "us", Kind::Gauge, "latency_microseconds"),
        (
            "precision_time",
            "ns",
            Kind::Gauge,
            "precision_time_nanoseconds",
        ),
        ("cache_size", "KiBy", Kind::Gauge, "cache_size_kibibytes"),
        ("memory", "MiBy", Kind::Gauge, "memory_mebibytes"),
        ("storage", "GiBy", Kind::Gauge, "storage_gibibytes"),
        ("capacity", "TiBy", Kind::Gauge, "capacity_tibibytes"),
        ("transfer", "KBy", Kind::Gauge, "transfer_kilobytes"),
        ("download", "MBy", Kind::Gauge, "download_megabytes"),
        ("backup", "GBy", Kind::Gauge, "backup_gigabytes"),
        ("archive", "TBy", Kind::Gauge, "archive_terabytes"),
        ("distance", "m", Kind::Gauge, "distance_meters"),
        ("voltage", "V", Kind::Gauge, "voltage_volts"),
        ("current", "A", Kind::Gauge, "current_amperes"),
        ("energy", "J", Kind::Gauge, "energy_joules"),
        ("power", "W", Kind::Gauge, "power_watts"),
        ("weight", "g", Kind::Gauge, "weight_grams"),
        ("temperature", "Cel", Kind::Gauge, "temperature_celsius"),
        ("frequency", "Hz", Kind::Gauge, "frequency_hertz"),
        ("cpu_usage", "%", Kind::Gauge, "cpu_usage_percent"),
        ("requests", "1/m", Kind::Gauge, "requests_per_minute"),
        ("events", "1/h", Kind::Gauge, "events_per_hour"),
        ("transactions", "1/d", Kind::Gauge, "transactions_per_day"),
        ("reports", "1/w", Kind::Gauge, "reports_per_week"),
        ("invoices", "1/mo", Kind::Gauge, "invoices_per_month"),
        ("renewals", "1/y", Kind::Gauge, "renewals_per_year"),
        (
            "custom",
            "1/custom_unit",
            Kind::Gauge,
            "custom_per_custom_unit",
        ),
        ("metric", "By/", Kind::Gauge, "metric_bytes"),
        ("metric", " By / s ", Kind::Gauge, "metric_bytes_per_second"),
        ("metric", "/", Kind::Gauge, "metric"),
        (
            "http.request.duration",
            "ms",
            Kind::Histogram,
            "http_request_duration_milliseconds",
        ),
        (
            "http.requests",
            "1",
            Kind::MonotonicCounter,
            "http_requests_total",
        ),
    ];

    #[test]
    fn metric_names_are_prometheus_s_otlp_translation() {
        for (name, unit, kind, want) in NAMES {
            assert_eq!(
                metric_name(name, unit, *kind),
                *want,
                "{name} [{unit}] {kind:?}"
            );
        }
        assert_eq!(metric_name("123metric", "", Kind::Gauge), "_123metric");
    }

    fn kv(k: &str, v: &str) -> KeyValue {
        crate::testkit::kv(k, crate::testkit::string(v))
    }

    fn request(resource: Vec<KeyValue>, metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(Resource {
                    attributes: resource,
                    ..Default::default()
                }),
                scope_metrics: vec![ScopeMetrics {
                    metrics,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    fn metric(name: &str, unit: &str, data: metric::Data) -> Metric {
        Metric {
            name: name.into(),
            unit: unit.into(),
            data: Some(data),
            ..Default::default()
        }
    }

    fn names(series: &[LabelSet]) -> Vec<String> {
        series
            .iter()
            .map(|s| s.iter().find(|(k, _)| k == "__name__").unwrap().1.clone())
            .collect()
    }

    #[test]
    fn a_point_is_one_series_with_job_and_instance_from_the_resource() {
        let point = NumberDataPoint {
            attributes: vec![kv("http.route", "/api"), kv("job", "overridden")],
            ..Default::default()
        };
        let req = request(
            vec![
                kv("service.name", "web"),
                kv("service.namespace", "mastodon"),
                kv("service.instance.id", "web-0"),
            ],
            vec![metric(
                "http.server.requests",
                "1",
                metric::Data::Sum(Sum {
                    data_points: vec![point],
                    is_monotonic: true,
                    aggregation_temporality: 2,
                }),
            )],
        );
        let s = series_of(&req);
        // No target_info: the resource has nothing besides service name, namespace, id.
        assert_eq!(
            s,
            vec![vec![
                (
                    "__name__".to_string(),
                    "http_server_requests_total".to_string()
                ),
                ("http_route".into(), "/api".into()),
                ("instance".into(), "web-0".into()),
                ("job".into(), "mastodon/web".into()),
            ]]
        );
    }

    #[test]
    fn a_histogram_is_its_buckets_count_and_sum_and_a_summary_its_quantiles_sum_and_count() {
        let h = HistogramDataPoint {
            explicit_bounds: vec![0.1, 0.5, 1.0],
            bucket_counts: vec![1, 2, 3, 4],
            sum: Some(3.5),
            count: 10,
            ..Default::default()
        };
        let no_sum = HistogramDataPoint {
            attributes: vec![kv("a", "b")],
            explicit_bounds: vec![1.0],
            bucket_counts: vec![1, 1],
            ..Default::default()
        };
        let q = |q: f64| ValueAtQuantile {
            quantile: q,
            value: 1.0,
        };
        let summary = SummaryDataPoint {
            quantile_values: vec![q(0.5), q(0.99)],
            ..Default::default()
        };
        let exp = ExponentialHistogramDataPoint::default();
        let req = request(
            vec![kv("service.name", "web"), kv("k8s.pod.name", "web-0")],
            vec![
                metric(
                    "rack.duration",
                    "s",
                    metric::Data::Histogram(Histogram {
                        data_points: vec![h, no_sum],
                        aggregation_temporality: 2,
                    }),
                ),
                metric(
                    "gc.pause",
                    "ms",
                    metric::Data::Summary(Summary {
                        data_points: vec![summary],
                    }),
                ),
                metric(
                    "payload",
                    "By",
                    metric::Data::ExponentialHistogram(ExponentialHistogram {
                        data_points: vec![exp],
                        aggregation_temporality: 2,
                    }),
                ),
            ],
        );
        let s = series_of(&req);
        assert_eq!(
            names(&s),
            [
                "target_info",
                // 3 bounds: 4 buckets, count, sum (N + 3)
                "rack_duration_seconds_bucket",
                "rack_duration_seconds_bucket",
                "rack_duration_seconds_bucket",
                "rack_duration_seconds_bucket",
                "rack_duration_seconds_count",
                "rack_duration_seconds_sum",
                // no sum: 1 bound, 2 buckets and the count
                "rack_duration_seconds_bucket",
                "rack_duration_seconds_bucket",
                "rack_duration_seconds_count",
                // 2 quantiles, sum, count (Q + 2)
                "gc_pause_milliseconds",
                "gc_pause_milliseconds",
                "gc_pause_milliseconds_sum",
                "gc_pause_milliseconds_count",
                // native: one series
                "payload_bytes",
            ]
        );
        let le: Vec<&str> = s[1..5]
            .iter()
            .map(|l| l.iter().find(|(k, _)| k == "le").unwrap().1.as_str())
            .collect();
        assert_eq!(le, ["0.1", "0.5", "1", "+Inf"]);
        assert_eq!(
            s[0],
            vec![
                ("__name__".to_string(), "target_info".to_string()),
                ("job".into(), "web".into()),
                ("k8s_pod_name".into(), "web-0".into()),
            ]
        );
    }

    #[test]
    fn attributes_that_sanitise_to_one_name_join_their_values_in_key_order() {
        let point = NumberDataPoint {
            attributes: vec![kv("a_b", "2"), kv("a.b", "1"), kv("0x", "z")],
            ..Default::default()
        };
        let req = request(
            vec![],
            vec![metric(
                "g",
                "",
                metric::Data::Gauge(Gauge {
                    data_points: vec![point],
                }),
            )],
        );
        let s = series_of(&req);
        assert_eq!(
            s[0],
            vec![
                ("__name__".to_string(), "g".to_string()),
                ("a_b".into(), "1;2".into()),
                ("key_0x".into(), "z".into()),
            ]
        );
    }
}
