//! Log bytes as Loki's distributor bills them for OTLP (`push.Stats.LogLinesBytes +
//! StructuredMetadataBytes`, which feed `loki_distributor_bytes_received_total`):
//!
//! - the line is the body as pdata's `AsString` renders it (strings as they are, numbers
//!   and booleans as text, maps and lists as Go-style JSON with sorted keys, bytes as
//!   base64);
//! - structured metadata is `len(name) + len(value)` of every pair, names normalised to
//!   `[a-zA-Z0-9_]` and nested maps flattened, `detected_level` excluded;
//! - each record's own metadata (attributes, `observed_timestamp`, `severity_number`,
//!   `severity_text`, `dropped_attributes_count`, `flags`, `trace_id`, `span_id`,
//!   `event_name`) counts per record; scope metadata once per ScopeLogs; resource
//!   attributes that are not stream labels once per ResourceLogs. Stream labels (Loki's
//!   default index attributes: `service.name`, `k8s.pod.name`, ...) are not billed.

use base64::Engine as _;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::resource::v1::Resource;

use super::Weight;

/// Resource attributes Loki promotes to stream labels by default (not billed as bytes).
pub const DEFAULT_INDEX_LABELS: [&str; 18] = [
    "service.name",
    "service.namespace",
    "service.instance.id",
    "deployment.environment",
    "deployment.environment.name",
    "cloud.region",
    "cloud.availability_zone",
    "k8s.cluster.name",
    "k8s.namespace.name",
    "k8s.pod.name",
    "k8s.container.name",
    "container.name",
    "k8s.replicaset.name",
    "k8s.deployment.name",
    "k8s.statefulset.name",
    "k8s.daemonset.name",
    "k8s.cronjob.name",
    "k8s.job.name",
];

/// Billable bytes and record count of a log request.
pub fn weigh(req: &ExportLogsServiceRequest) -> Weight {
    let mut w = Weight::default();
    for rl in &req.resource_logs {
        w.units += resource_bytes(rl.resource.as_ref());
        for sl in &rl.scope_logs {
            w.units += scope_bytes(sl.scope.as_ref());
            for r in &sl.log_records {
                w.items += 1;
                w.units += record_bytes(r);
            }
        }
    }
    w
}

/// Structured-metadata bytes of a resource: its attributes that are not stream labels.
pub fn resource_bytes(resource: Option<&Resource>) -> u64 {
    let Some(r) = resource else { return 0 };
    r.attributes
        .iter()
        .filter(|kv| !DEFAULT_INDEX_LABELS.contains(&kv.key.as_str()))
        .map(attribute_bytes)
        .sum()
}

/// Structured-metadata bytes of a scope: attributes, name, version, dropped count.
pub fn scope_bytes(scope: Option<&InstrumentationScope>) -> u64 {
    let Some(s) = scope else { return 0 };
    let mut n: u64 = s.attributes.iter().map(attribute_bytes).sum();
    n += pair_if("scope_name", &s.name);
    n += pair_if("scope_version", &s.version);
    if s.dropped_attributes_count != 0 {
        n += pair(
            "scope_dropped_attributes_count",
            &s.dropped_attributes_count.to_string(),
        );
    }
    n
}

/// A record's line plus its own structured metadata.
pub fn record_bytes(r: &LogRecord) -> u64 {
    let mut n = line(r.body.as_ref()).len() as u64;
    n += r.attributes.iter().map(attribute_bytes).sum::<u64>();
    if r.time_unix_nano != 0 && r.observed_time_unix_nano != 0 {
        n += pair("observed_timestamp", &r.observed_time_unix_nano.to_string());
    }
    if r.severity_number != 0 {
        n += pair("severity_number", &r.severity_number.to_string());
    }
    n += pair_if("severity_text", &r.severity_text);
    if r.dropped_attributes_count != 0 {
        n += pair(
            "dropped_attributes_count",
            &r.dropped_attributes_count.to_string(),
        );
    }
    if r.flags != 0 {
        n += pair("flags", &r.flags.to_string());
    }
    if !r.trace_id.is_empty() {
        n += "trace_id".len() as u64 + 2 * r.trace_id.len() as u64;
    }
    if !r.span_id.is_empty() {
        n += "span_id".len() as u64 + 2 * r.span_id.len() as u64;
    }
    n += pair_if("event_name", &r.event_name);
    n
}

fn pair(name: &str, value: &str) -> u64 {
    if name == UNBILLED {
        return 0;
    }
    (name.len() + value.len()) as u64
}

fn pair_if(name: &str, value: &str) -> u64 {
    if value.is_empty() {
        0
    } else {
        pair(name, value)
    }
}

/// Bytes of one attribute as structured metadata; maps are flattened into one pair per
/// leaf, named `parent_child`.
pub fn attribute_bytes(kv: &KeyValue) -> u64 {
    value_pairs_bytes(&FlatName::new(&kv.key), kv.value.as_ref())
}

fn value_pairs_bytes(name: &FlatName, value: Option<&AnyValue>) -> u64 {
    match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::KvlistValue(kv)) => kv
            .values
            .iter()
            .map(|child| value_pairs_bytes(&name.child(&child.key), child.value.as_ref()))
            .sum(),
        _ => name.pair_bytes(as_string(value).len() as u64),
    }
}

/// The one structured-metadata name Loki does not bill.
const UNBILLED: &str = "detected_level";

/// A flattened name (`parent_child`, normalised) by its length, and its text only while
/// it is short enough to be [`UNBILLED`]: writing out every nested name would copy a long
/// parent's name once per child, a cost quadratic in the request's size.
struct FlatName {
    len: u64,
    text: Option<String>,
}

impl FlatName {
    fn new(key: &str) -> FlatName {
        let text = normalize_label(key);
        FlatName {
            len: text.len() as u64,
            text: (text.len() <= UNBILLED.len()).then_some(text),
        }
    }

    /// `normalize_label("{parent}_{key}")`, by length when it is long.
    fn child(&self, key: &str) -> FlatName {
        let chars = key.chars().count();
        if let Some(parent) = &self.text
            && chars <= UNBILLED.len()
        {
            return FlatName::new(&format!("{parent}_{key}"));
        }
        // Each character becomes one byte. A normalised parent starts with a letter or
        // `__`, so only under an empty one does the name start with a single `_` (when
        // the key starts with a letter or digit) and take the `key` prefix.
        let mut len = self.len + 1 + chars as u64;
        if self.len == 0 && key.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            len += "key".len() as u64;
        }
        FlatName { len, text: None }
    }

    fn pair_bytes(&self, value_len: u64) -> u64 {
        if self.text.as_deref() == Some(UNBILLED) {
            0
        } else {
            self.len + value_len
        }
    }
}

/// Loki's label-name normalisation: every character outside `[a-zA-Z0-9_]` becomes `_`;
/// a leading digit gets `key_`, a single leading underscore gets `key`.
pub fn normalize_label(name: &str) -> String {
    // Prometheus's label-name rule, and Loki's own for a single leading underscore.
    let mut out = super::series::label_name(name);
    if out.starts_with('_') && !out.starts_with("__") {
        out.insert_str(0, "key");
    }
    out
}

/// The log line Loki makes of a body.
pub fn line(body: Option<&AnyValue>) -> String {
    as_string(body)
}

/// pdata's `Value.AsString`.
pub fn as_string(v: Option<&AnyValue>) -> String {
    match v.and_then(|v| v.value.as_ref()) {
        // A string-table index only means something inside profiles.
        None | Some(any_value::Value::StringValueStrindex(_)) => String::new(),
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => float_string(*d),
        Some(any_value::Value::BytesValue(b)) => {
            base64::engine::general_purpose::STANDARD.encode(b)
        }
        Some(other @ (any_value::Value::ArrayValue(_) | any_value::Value::KvlistValue(_))) => {
            let mut out = String::new();
            if json(&mut out, Some(other)).is_err() {
                return String::new();
            }
            out
        }
    }
}

/// Go's float formatting as pdata and encoding/json use it: shortest round-trip digits,
/// exponent form below 1e-6 and from 1e21 (`1e+21`, `1e-7`).
pub fn float_string(f: f64) -> String {
    if f.is_nan() {
        return "json: unsupported value: NaN".into();
    }
    if f.is_infinite() {
        let sign = if f > 0.0 { "+" } else { "-" };
        return format!("json: unsupported value: {sign}Inf");
    }
    let abs = f.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        let s = format!("{f:e}");
        match s.split_once('e') {
            Some((mant, exp)) if exp.starts_with('-') => format!("{mant}e{exp}"),
            Some((mant, exp)) => format!("{mant}e+{exp:0>2}"),
            None => s,
        }
    } else {
        format!("{f}")
    }
}

struct Unsupported;

/// Go `encoding/json` of pdata's `AsRaw`: sorted keys, compact, HTML-escaped.
fn json(out: &mut String, v: Option<&any_value::Value>) -> Result<(), Unsupported> {
    match v {
        None | Some(any_value::Value::StringValueStrindex(_)) => out.push_str("null"),
        Some(any_value::Value::StringValue(s)) => json_string(out, s),
        Some(any_value::Value::BoolValue(b)) => out.push_str(if *b { "true" } else { "false" }),
        Some(any_value::Value::IntValue(i)) => out.push_str(&i.to_string()),
        Some(any_value::Value::DoubleValue(d)) => {
            if !d.is_finite() {
                return Err(Unsupported);
            }
            out.push_str(&float_string(*d));
        }
        Some(any_value::Value::BytesValue(b)) => {
            json_string(out, &base64::engine::general_purpose::STANDARD.encode(b));
        }
        Some(any_value::Value::ArrayValue(a)) => {
            out.push('[');
            for (i, x) in a.values.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json(out, x.value.as_ref())?;
            }
            out.push(']');
        }
        Some(any_value::Value::KvlistValue(kv)) => {
            // A Go map: the last of duplicate keys wins, keys come out sorted.
            let mut entries: std::collections::BTreeMap<&str, Option<&any_value::Value>> =
                Default::default();
            for e in &kv.values {
                entries.insert(&e.key, e.value.as_ref().and_then(|v| v.value.as_ref()));
            }
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json_string(out, k);
                out.push(':');
                json(out, v)?;
            }
            out.push('}');
        }
    }
    Ok(())
}

fn json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValueList};
    use opentelemetry_proto::tonic::logs::v1::{ResourceLogs, ScopeLogs};

    use crate::testkit::{kv, string as s};

    #[test]
    fn bodies_render_as_pdata_as_string() {
        let d = |f: f64| AnyValue {
            value: Some(any_value::Value::DoubleValue(f)),
        };
        assert_eq!(as_string(Some(&d(3.0))), "3");
        assert_eq!(as_string(Some(&d(1.5))), "1.5");
        assert_eq!(as_string(Some(&d(1e21))), "1e+21");
        assert_eq!(as_string(Some(&d(1e-7))), "1e-7");
        assert_eq!(as_string(Some(&d(1.5e-7))), "1.5e-7");
        assert_eq!(as_string(Some(&d(123456.789))), "123456.789");
        assert_eq!(as_string(None), "");
        let map = AnyValue {
            value: Some(any_value::Value::KvlistValue(KeyValueList {
                values: vec![
                    kv("z", s("<a&b>")),
                    kv(
                        "a",
                        AnyValue {
                            value: Some(any_value::Value::ArrayValue(ArrayValue {
                                values: vec![
                                    AnyValue {
                                        value: Some(any_value::Value::IntValue(1)),
                                    },
                                    AnyValue { value: None },
                                    AnyValue {
                                        value: Some(any_value::Value::BytesValue(vec![1, 2, 3])),
                                    },
                                ],
                            })),
                        },
                    ),
                ],
            })),
        };
        assert_eq!(
            as_string(Some(&map)),
            r#"{"a":[1,null,"AQID"],"z":"\u003ca\u0026b\u003e"}"#
        );
    }

    #[test]
    fn worked_example_from_loki() {
        // Resource {service.name=api, k8s.pod.name=p1, host.name=h1}, scope lib/1.0, two
        // records "hello" with http.method=GET, severity 9/INFO, trace and span IDs, both
        // timestamps: 344 bytes received.
        let record = LogRecord {
            time_unix_nano: 1_700_000_000_000_000_000,
            observed_time_unix_nano: 1_700_000_000_000_000_001,
            severity_number: 9,
            severity_text: "INFO".into(),
            body: Some(s("hello")),
            attributes: vec![kv("http.method", s("GET"))],
            trace_id: vec![0xab; 16],
            span_id: vec![0xcd; 8],
            ..Default::default()
        };
        let req = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(Resource {
                    attributes: vec![
                        kv("service.name", s("api")),
                        kv("k8s.pod.name", s("p1")),
                        kv("host.name", s("h1")),
                    ],
                    ..Default::default()
                }),
                scope_logs: vec![ScopeLogs {
                    scope: Some(InstrumentationScope {
                        name: "lib".into(),
                        version: "1.0".into(),
                        ..Default::default()
                    }),
                    log_records: vec![record.clone(), record],
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        };
        assert_eq!(
            weigh(&req),
            Weight {
                items: 2,
                units: 344
            }
        );
    }

    #[test]
    fn names_are_normalised_and_maps_flattened() {
        assert_eq!(
            normalize_label("http.request.method"),
            "http_request_method"
        );
        assert_eq!(normalize_label("1abc"), "key_1abc");
        assert_eq!(normalize_label("_x"), "key_x");
        assert_eq!(normalize_label("__x"), "__x");
        assert_eq!(normalize_label("é"), "key_");
        let nested = kv(
            "http",
            AnyValue {
                value: Some(any_value::Value::KvlistValue(KeyValueList {
                    values: vec![kv("req.method", s("GET"))],
                })),
            },
        );
        // http_req_method=GET
        assert_eq!(attribute_bytes(&nested), 15 + 3);
        assert_eq!(attribute_bytes(&kv("detected_level", s("warn"))), 0);
    }

    fn map(values: Vec<KeyValue>) -> AnyValue {
        AnyValue {
            value: Some(any_value::Value::KvlistValue(KeyValueList { values })),
        }
    }

    /// Flattening as Loki does it, writing every name out.
    fn written_out(name: &str, value: Option<&AnyValue>) -> u64 {
        match value.and_then(|v| v.value.as_ref()) {
            Some(any_value::Value::KvlistValue(kv)) => kv
                .values
                .iter()
                .map(|c| {
                    let child = normalize_label(&format!("{name}_{}", c.key));
                    written_out(&child, c.value.as_ref())
                })
                .sum(),
            _ => pair(name, &as_string(value)),
        }
    }

    #[test]
    fn flattened_names_are_measured_without_writing_them_out() {
        let keys = [
            "",
            "a",
            "_",
            "__",
            "1",
            "é",
            "level",
            "_level",
            "detected",
            "x.y",
            "a-very-long-key-name",
            "_a-very-long-key-name",
            "1-very-long-key-name",
            "__a-very-long-key-name",
            "éééééééééééééééé",
        ];
        for outer in keys {
            for inner in keys {
                for leaf in keys {
                    let attr = kv(
                        outer,
                        map(vec![
                            kv(inner, map(vec![kv(leaf, s("v")), KeyValue::default()])),
                            kv(leaf, s("w")),
                        ]),
                    );
                    assert_eq!(
                        attribute_bytes(&attr),
                        written_out(&normalize_label(outer), attr.value.as_ref()),
                        "{outer:?} {inner:?} {leaf:?}"
                    );
                }
            }
        }
        assert_eq!(
            attribute_bytes(&kv("detected", map(vec![kv("level", s("warn"))]))),
            0
        );
    }

    /// A 1 MiB name over 200,000 children: writing each child's name out copied 200 GB.
    #[test]
    fn a_long_name_over_many_children_costs_no_copy_per_child() {
        let long = "k".repeat(1 << 20);
        let attr = kv(&long, map(vec![KeyValue::default(); 200_000]));
        #[allow(clippy::disallowed_methods)] // the test measures wall time itself
        let started = std::time::Instant::now();
        assert_eq!(attribute_bytes(&attr), 200_000 * ((1 << 20) + 1));
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }
}
