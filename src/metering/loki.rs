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
    if name == "detected_level" {
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
    let name = normalize_label(&kv.key);
    value_pairs_bytes(&name, kv.value.as_ref())
}

fn value_pairs_bytes(name: &str, value: Option<&AnyValue>) -> u64 {
    match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::KvlistValue(kv)) => kv
            .values
            .iter()
            .map(|child| {
                let child_name = normalize_label(&format!("{name}_{}", child.key));
                value_pairs_bytes(&child_name, child.value.as_ref())
            })
            .sum(),
        _ => pair(name, &as_string(value)),
    }
}

/// Loki's label-name normalisation: every character outside `[a-zA-Z0-9_]` becomes `_`;
/// a leading digit gets `key_`, a single leading underscore gets `key`.
pub fn normalize_label(name: &str) -> String {
    let mut out: String = name
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
    } else if out.starts_with('_') && !out.starts_with("__") {
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

    fn s(v: &str) -> AnyValue {
        AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }
    }

    fn kv(k: &str, v: AnyValue) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(v),
            ..Default::default()
        }
    }

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
}
