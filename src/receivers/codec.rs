//! OTLP/HTTP bodies: content types, decompression under a size limit, protobuf and the
//! OTLP JSON mapping, and the responses in the request's own content type.
//!
//! Only the receivers know wire formats. JSON is decoded with the official
//! `opentelemetry-proto` serde mapping after a light normalisation for what the OTLP
//! specification allows and that mapping does not take: integers given as strings,
//! enum names instead of numbers, and explicit nulls.

use std::io::Read as _;

use bytes::Bytes;
use prost::Message;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::ingest::IngestError;

/// How a request body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Binary protobuf (`application/x-protobuf` or `application/protobuf`).
    Protobuf,
    /// OTLP's JSON mapping (`application/json`).
    Json,
}

impl Format {
    /// From a `Content-Type` header; `None` for anything OTLP/HTTP does not define.
    pub fn from_content_type(ct: &str) -> Option<Format> {
        let mime = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match mime.as_str() {
            "application/x-protobuf" | "application/protobuf" => Some(Format::Protobuf),
            "application/json" => Some(Format::Json),
            _ => None,
        }
    }

    /// The `Content-Type` of a response body in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Protobuf => "application/x-protobuf",
            Format::Json => "application/json",
        }
    }
}

/// Whether `encoding` (a `Content-Encoding` or `grpc-encoding`) leaves the body as it is.
pub fn is_identity(encoding: Option<&str>) -> bool {
    encoding.is_none_or(|e| {
        let e = e.trim();
        e.is_empty() || e.eq_ignore_ascii_case("identity") || e.eq_ignore_ascii_case("none")
    })
}

/// The size `body` will have once decompressed, as its encoding announces it: its own for
/// identity, gzip's trailer (ISIZE, the last member's size modulo 2^32), zstd's frame
/// header when the sender wrote it. A hint only: a sender may lie, and
/// [`decompress`] holds to its limit whatever was announced.
pub fn announced_size(encoding: Option<&str>, body: &[u8]) -> Option<u64> {
    if is_identity(encoding) {
        return Some(body.len() as u64);
    }
    match encoding?.trim().to_ascii_lowercase().as_str() {
        "gzip" | "x-gzip" => (body.len() >= 18 && body.starts_with(&[0x1f, 0x8b]))
            .then(|| body[body.len() - 4..].try_into().ok())
            .flatten()
            .map(|b| u64::from(u32::from_le_bytes(b))),
        "zstd" => zstd::zstd_safe::get_frame_content_size(body).ok().flatten(),
        _ => None,
    }
}

/// Undoes `Content-Encoding`, refusing to inflate past `limit` bytes (a gzip bomb costs
/// at most `limit` bytes of memory). `take` is asked for each step of the buffer's growth
/// before it is allocated (the in-flight budget): the buffer starts at the size the
/// encoding announces (gzip's trailer, zstd's frame header), if any, and doubles when that
/// was too little.
pub fn decompress(
    encoding: Option<&str>,
    body: Bytes,
    limit: u64,
    mut take: impl FnMut(u64) -> Result<(), IngestError>,
) -> Result<Bytes, IngestError> {
    let too_large = || {
        IngestError::TooLarge(format!(
            "the request is larger than {} after decompression (ingest.max_request_size)",
            crate::units::format_size(limit)
        ))
    };
    let enc = encoding.unwrap_or("").trim().to_ascii_lowercase();
    let cannot = |e: std::io::Error| {
        IngestError::BadRequest(format!("cannot decompress the body ({enc}): {e}"))
    };
    // One byte past the limit tells a body at the limit from one over it.
    let most = usize::try_from(limit.saturating_add(1)).unwrap_or(usize::MAX);
    let read_limited = |mut r: Box<dyn std::io::Read + '_>,
                        announced: Option<u64>,
                        take: &mut dyn FnMut(u64) -> Result<(), IngestError>|
     -> Result<Bytes, IngestError> {
        // An announced size is a hint (a sender may lie); one byte more finds the end
        // without growing.
        let first = announced
            .and_then(|n| usize::try_from(n.saturating_add(1)).ok())
            .unwrap_or(body.len().saturating_mul(4))
            .max(MIN_INFLATE_STEP)
            .min(most);
        take(first as u64)?;
        let mut out: Vec<u8> = Vec::with_capacity(first);
        loop {
            let spare = out.capacity() - out.len();
            let n = (&mut r)
                .take(spare as u64)
                .read_to_end(&mut out)
                .map_err(cannot)?;
            if out.len() > limit as usize {
                return Err(too_large());
            }
            if n < spare {
                break;
            }
            let grown = out.capacity().saturating_mul(2).min(most);
            take((grown - out.capacity()) as u64)?;
            out.reserve_exact(grown - out.len());
        }
        Ok(Bytes::from(out))
    };
    match enc.as_str() {
        "" | "identity" | "none" => {
            if body.len() as u64 > limit {
                return Err(too_large());
            }
            Ok(body)
        }
        "gzip" | "x-gzip" => read_limited(
            Box::new(flate2::read::MultiGzDecoder::new(&body[..])),
            announced_size(encoding, &body),
            &mut take,
        ),
        "deflate" => read_limited(
            Box::new(flate2::read::ZlibDecoder::new(&body[..])),
            None,
            &mut take,
        ),
        "zstd" => {
            let d = zstd::stream::read::Decoder::new(&body[..]).map_err(|e| {
                IngestError::BadRequest(format!("cannot decompress the body (zstd): {e}"))
            })?;
            read_limited(Box::new(d), announced_size(encoding, &body), &mut take)
        }
        other => Err(IngestError::UnsupportedMediaType(format!(
            "Content-Encoding {other:?} is not supported (use gzip, zstd, deflate or none)"
        ))),
    }
}

/// The least a decompression buffer starts with.
const MIN_INFLATE_STEP: usize = 64 * 1024;

/// Decodes an OTLP export request of type `T`.
pub fn decode<T>(format: Format, body: &[u8]) -> Result<T, IngestError>
where
    T: Message + Default + DeserializeOwned,
{
    match format {
        Format::Protobuf => T::decode(body)
            .map_err(|e| IngestError::BadRequest(format!("malformed OTLP protobuf: {e}"))),
        Format::Json => {
            let mut v: Value = serde_json::from_slice(body)
                .map_err(|e| IngestError::BadRequest(format!("malformed OTLP JSON: {e}")))?;
            if !v.is_object() {
                return Err(IngestError::BadRequest(
                    "malformed OTLP JSON: the body must be a JSON object".into(),
                ));
            }
            normalize_json(&mut v);
            serde_json::from_value(v)
                .map_err(|e| IngestError::BadRequest(format!("malformed OTLP JSON: {e}")))
        }
    }
}

/// Integer fields of OTLP messages (lowerCamelCase), which OTLP/JSON may send as strings.
const INTEGER_KEYS: &[&str] = &[
    "kind",
    "flags",
    "droppedAttributesCount",
    "droppedEventsCount",
    "droppedLinksCount",
    "droppedEntitiesCount",
    "code",
    "severityNumber",
    "aggregationTemporality",
    "scale",
    "offset",
    "count",
    "zeroCount",
    "bucketCounts",
    "timeUnixNano",
    "startTimeUnixNano",
    "endTimeUnixNano",
    "observedTimeUnixNano",
    "asInt",
    "intValue",
];

/// Floating-point fields that may arrive as numeric strings.
const DOUBLE_KEYS: &[&str] = &[
    "asDouble",
    "doubleValue",
    "sum",
    "min",
    "max",
    "value",
    "quantile",
    "explicitBounds",
    "zeroThreshold",
];

fn enum_value(key: &str, name: &str) -> Option<i64> {
    let (prefix, names): (&str, &[&str]) = match key {
        "kind" => (
            "SPAN_KIND_",
            &[
                "UNSPECIFIED",
                "INTERNAL",
                "SERVER",
                "CLIENT",
                "PRODUCER",
                "CONSUMER",
            ],
        ),
        "code" => ("STATUS_CODE_", &["UNSET", "OK", "ERROR"]),
        "aggregationTemporality" => (
            "AGGREGATION_TEMPORALITY_",
            &["UNSPECIFIED", "DELTA", "CUMULATIVE"],
        ),
        "severityNumber" => {
            let n = name.strip_prefix("SEVERITY_NUMBER_")?;
            let levels = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"];
            if n == "UNSPECIFIED" {
                return Some(0);
            }
            let (level, digit) =
                n.split_at(n.find(|c: char| c.is_ascii_digit()).unwrap_or(n.len()));
            let base = levels.iter().position(|l| *l == level)? as i64 * 4 + 1;
            let offset = if digit.is_empty() {
                0
            } else {
                digit.parse::<i64>().ok()? - 1
            };
            return (0..4).contains(&offset).then_some(base + offset);
        }
        _ => return None,
    };
    let n = name.strip_prefix(prefix)?;
    names.iter().position(|x| *x == n).map(|i| i as i64)
}

fn numeric(key: &str, v: &mut Value) {
    match v {
        Value::String(s) => {
            if INTEGER_KEYS.contains(&key) {
                if let Ok(i) = s.trim().parse::<i64>() {
                    *v = Value::from(i);
                } else if let Ok(u) = s.trim().parse::<u64>() {
                    *v = Value::from(u);
                } else if let Some(e) = enum_value(key, s) {
                    *v = Value::from(e);
                }
            } else if DOUBLE_KEYS.contains(&key)
                && let Ok(f) = s.trim().parse::<f64>()
                && f.is_finite()
                && let Some(n) = serde_json::Number::from_f64(f)
            {
                *v = Value::Number(n);
            }
        }
        Value::Array(items) => {
            for x in items {
                numeric(key, x);
            }
        }
        _ => {}
    }
}

/// Brings OTLP JSON into the form the serde mapping reads.
pub fn normalize_json(v: &mut Value) {
    normalize_in(v, "");
}

/// Arrays whose elements are `KeyValue`s (attribute lists and key-value lists).
const KEY_VALUE_LISTS: &[&str] = &["attributes", "values"];

fn normalize_in(v: &mut Value, parent: &str) {
    match v {
        Value::Object(map) => {
            map.retain(|_, x| !x.is_null());
            for (k, x) in map.iter_mut() {
                let numeric_key =
                    INTEGER_KEYS.contains(&k.as_str()) || DOUBLE_KEYS.contains(&k.as_str());
                if x.is_string() || (x.is_array() && numeric_key) {
                    numeric(k, x);
                } else {
                    normalize_in(x, k);
                }
                // An empty list or map may come without its (empty) `values`.
                if (k == "arrayValue" || k == "kvlistValue")
                    && let Value::Object(inner) = x
                {
                    inner
                        .entry("values")
                        .or_insert_with(|| Value::Array(Vec::new()));
                }
            }
        }
        Value::Array(items) => {
            for x in items.iter_mut() {
                normalize_in(x, parent);
                // A KeyValue whose key is the empty string may omit it.
                if KEY_VALUE_LISTS.contains(&parent)
                    && let Value::Object(m) = x
                    && m.contains_key("value")
                {
                    m.entry("key")
                        .or_insert_with(|| Value::String(String::new()));
                }
            }
        }
        _ => {}
    }
}

/// A response body in the request's format.
pub fn encode<T>(format: Format, msg: &T) -> Bytes
where
    T: Message + serde::Serialize,
{
    match format {
        Format::Protobuf => Bytes::from(msg.encode_to_vec()),
        Format::Json => Bytes::from(serde_json::to_vec(msg).unwrap_or_else(|_| b"{}".to_vec())),
    }
}

/// OTLP requires IDs of exactly 16 (trace) or 8 (span) bytes, or none: a request with
/// others would be refused upstream as a whole, so it is refused here with a clear error.
pub fn check_ids(trace_id: &[u8], span_id: &[u8], what: &str) -> Result<(), IngestError> {
    if !(trace_id.is_empty() || trace_id.len() == 16) {
        return Err(IngestError::BadRequest(format!(
            "{what} has a trace ID of {} bytes (OTLP trace IDs are 16 bytes)",
            trace_id.len()
        )));
    }
    if !(span_id.is_empty() || span_id.len() == 8) {
        return Err(IngestError::BadRequest(format!(
            "{what} has a span ID of {} bytes (OTLP span IDs are 8 bytes)",
            span_id.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value;

    #[test]
    fn content_types() {
        assert_eq!(
            Format::from_content_type("application/x-protobuf"),
            Some(Format::Protobuf)
        );
        assert_eq!(
            Format::from_content_type("application/json; charset=utf-8"),
            Some(Format::Json)
        );
        assert_eq!(Format::from_content_type("text/plain"), None);
    }

    #[test]
    fn gzip_bombs_stop_at_the_limit() {
        use std::io::Write as _;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(&vec![0u8; 50 * 1024 * 1024]).unwrap();
        let bomb = Bytes::from(enc.finish().unwrap());
        assert!(bomb.len() < 100 * 1024);
        let err = decompress(Some("gzip"), bomb.clone(), 1024 * 1024, |_| Ok(())).unwrap_err();
        assert_eq!(crate::receivers::status::http_status(&err).as_u16(), 413);
        assert_eq!(
            decompress(Some("gzip"), bomb, 64 * 1024 * 1024, |_| Ok(()))
                .unwrap()
                .len(),
            50 * 1024 * 1024
        );
        // The buffer is asked for before it is allocated: the size gzip announces, once.
        let mut asked = Vec::new();
        let plain = [0x0a, 0x00].repeat(1_000_000);
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(&plain).unwrap();
        let gz = Bytes::from(enc.finish().unwrap());
        let out = decompress(Some("gzip"), gz.clone(), 16 << 20, |n| {
            asked.push(n);
            Ok(())
        })
        .unwrap();
        assert_eq!(
            (out.len(), asked),
            (plain.len(), vec![plain.len() as u64 + 1])
        );
        // Without an announced size it grows by doubling, each step asked for first; a
        // refusal stops it.
        let z = Bytes::from(zstd::stream::encode_all(&plain[..], 3).unwrap());
        let mut asked = 0;
        let err = decompress(Some("zstd"), z, 16 << 20, |n| {
            asked += n;
            if asked > 1 << 20 {
                return Err(IngestError::Unavailable {
                    retry_after: std::time::Duration::from_secs(1),
                    message: "spent".into(),
                });
            }
            Ok(())
        });
        let mut deflated = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        deflated.write_all(&plain).unwrap();
        let mut steps = Vec::new();
        let out = decompress(
            Some("deflate"),
            Bytes::from(deflated.finish().unwrap()),
            16 << 20,
            |n| {
                steps.push(n);
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(out.len(), plain.len());
        assert!(
            steps.len() > 3 && steps.iter().sum::<u64>() < 2 * plain.len() as u64,
            "{steps:?}"
        );
        // A streamed zstd frame announces no size: it grew until the budget refused.
        assert!(
            matches!(err, Err(IngestError::Unavailable { .. })),
            "{err:?}"
        );
        // One compressed at once does (in its frame header): one step.
        let z = Bytes::from(zstd::bulk::compress(&plain, 3).unwrap());
        let mut asked = Vec::new();
        decompress(Some("zstd"), z, 16 << 20, |n| {
            asked.push(n);
            Ok(())
        })
        .unwrap();
        assert_eq!(asked, vec![plain.len() as u64 + 1]);
        assert_eq!(
            decompress(Some("br"), Bytes::new(), 10, |_| Ok(()))
                .map_err(|e| crate::receivers::status::http_status(&e).as_u16())
                .unwrap_err(),
            415
        );
        assert_eq!(
            decompress(Some("gzip"), Bytes::from_static(b"nope"), 10, |_| Ok(()))
                .map_err(|e| crate::receivers::status::http_status(&e).as_u16())
                .unwrap_err(),
            400
        );
    }

    /// OTLP/JSON as the specification allows it: integers as numbers or strings, hex IDs in
    /// either case (links too), enums as integers (or names), unknown fields ignored.
    #[test]
    fn otlp_json_conformance() {
        let body = r#"{
          "resourceSpans": [{
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "web"}}],
                         "droppedAttributesCount": "0", "futureField": 1},
            "scopeSpans": [{
              "scope": {"name": "s", "version": "1"},
              "spans": [{
                "traceId": "5B8EFFF798038103D269B633813FC60C",
                "spanId": "eee19b7ec3c1b174",
                "parentSpanId": "EEE19B7EC3C1B173",
                "traceState": "ot=th:8",
                "flags": "257",
                "name": "GET /",
                "kind": 2,
                "startTimeUnixNano": "1544712660000000000",
                "endTimeUnixNano": 1544712661000000000,
                "attributes": [
                  {"key": "i", "value": {"intValue": "42"}},
                  {"key": "j", "value": {"intValue": 43}},
                  {"key": "d", "value": {"doubleValue": 1.5}},
                  {"key": "b", "value": {"boolValue": true}},
                  {"key": "a", "value": {"arrayValue": {"values": [{"stringValue": "x"}]}}},
                  {"key": "k", "value": {"kvlistValue": {"values": [{"key": "n", "value": {"intValue": "1"}}]}}},
                  {"key": "y", "value": {"bytesValue": "AQID"}}
                ],
                "droppedAttributesCount": "1",
                "events": [{"timeUnixNano": "1544712660500000000", "name": "e", "droppedAttributesCount": 2}],
                "links": [{"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "EEE19B7EC3C1B175",
                           "flags": 1, "unknownLinkField": {"x": [1, 2]}}],
                "status": {"code": "STATUS_CODE_ERROR", "message": "boom"},
                "unknownSpanField": null,
                "anotherUnknown": "x"
              }, {
                "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b175",
                "name": "child", "kind": "SPAN_KIND_CLIENT", "status": {"code": 1}
              }]
            }]
          }]
        }"#;
        let req: ExportTraceServiceRequest = decode(Format::Json, body.as_bytes()).unwrap();
        let rs = &req.resource_spans[0];
        let span = &rs.scope_spans[0].spans[0];
        assert_eq!(
            hex::encode(&span.trace_id),
            "5b8efff798038103d269b633813fc60c"
        );
        assert_eq!(hex::encode(&span.parent_span_id), "eee19b7ec3c1b173");
        assert_eq!(span.flags, 257);
        assert_eq!(span.kind, 2);
        assert_eq!(span.start_time_unix_nano, 1_544_712_660_000_000_000);
        assert_eq!(span.end_time_unix_nano, 1_544_712_661_000_000_000);
        assert_eq!(span.dropped_attributes_count, 1);
        assert_eq!(span.events[0].dropped_attributes_count, 2);
        assert_eq!(hex::encode(&span.links[0].span_id), "eee19b7ec3c1b175");
        assert_eq!(span.status.as_ref().unwrap().code, 2);
        let attr = |k: &str| {
            span.attributes
                .iter()
                .find(|kv| kv.key == k)
                .unwrap()
                .value
                .clone()
                .unwrap()
                .value
                .unwrap()
        };
        assert_eq!(attr("i"), any_value::Value::IntValue(42));
        assert_eq!(attr("j"), any_value::Value::IntValue(43));
        assert_eq!(attr("y"), any_value::Value::BytesValue(vec![1, 2, 3]));
        assert_eq!(rs.scope_spans[0].spans[1].kind, 3);
        assert_eq!(rs.scope_spans[0].spans[1].status.as_ref().unwrap().code, 1);

        let logs = r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[
            {"timeUnixNano":"1","observedTimeUnixNano":2,"severityNumber":"13","severityText":"WARN",
             "body":{"kvlistValue":{"values":[{"key":"msg","value":{"stringValue":"hi"}}]}},
             "traceId":"5B8EFFF798038103D269B633813FC60C","spanId":"eee19b7ec3c1b174","flags":1},
            {"severityNumber":"SEVERITY_NUMBER_ERROR2","body":{"intValue":"7"}}]}]}]}"#;
        let req: ExportLogsServiceRequest = decode(Format::Json, logs.as_bytes()).unwrap();
        let recs = &req.resource_logs[0].scope_logs[0].log_records;
        assert_eq!(recs[0].severity_number, 13);
        assert_eq!(recs[0].observed_time_unix_nano, 2);
        assert_eq!(recs[1].severity_number, 18);

        let metrics = r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[
            {"name":"h","histogram":{"aggregationTemporality":"2","dataPoints":[
                {"startTimeUnixNano":"1","timeUnixNano":"2","count":"3","sum":"6.5",
                 "bucketCounts":["1","2"],"explicitBounds":[1.0],"min":1,"max":"4"}]}},
            {"name":"g","gauge":{"dataPoints":[{"asInt":"5","timeUnixNano":3},{"asDouble":"2.5"}]}},
            {"name":"s","sum":{"aggregationTemporality":"AGGREGATION_TEMPORALITY_CUMULATIVE","isMonotonic":true,
                "dataPoints":[{"asDouble":1}]}}]}]}]}"#;
        let req: ExportMetricsServiceRequest = decode(Format::Json, metrics.as_bytes()).unwrap();
        assert_eq!(crate::metering::mimir::weigh(&req).items, 4);
        // Empty lists and maps, and keys left out because they are empty.
        let edge = r#"{"resourceSpans":[{"resource":{"attributes":[
            {"key":"x","value":{"arrayValue":{}}},{"key":"y","value":{"kvlistValue":{}}},
            {"value":{"stringValue":"no key"}},{"key":"z"}]}}]}"#;
        let req: ExportTraceServiceRequest = decode(Format::Json, edge.as_bytes()).unwrap();
        assert_eq!(
            req.resource_spans[0]
                .resource
                .as_ref()
                .unwrap()
                .attributes
                .len(),
            4
        );
        // The empty request is valid.
        let _: ExportTraceServiceRequest = decode(Format::Json, b"{}").unwrap();
        // Broken input says what is wrong.
        let err = decode::<ExportTraceServiceRequest>(Format::Json, b"{\"resourceSpans\": [")
            .unwrap_err();
        assert!(err.to_string().starts_with("malformed OTLP JSON"), "{err}");
        let err = decode::<ExportTraceServiceRequest>(
            Format::Json,
            br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"xyz"}]}]}]}"#,
        )
        .unwrap_err();
        assert_eq!(crate::receivers::status::http_status(&err).as_u16(), 400);
        let err =
            decode::<ExportTraceServiceRequest>(Format::Protobuf, b"\x0a\xff\xff").unwrap_err();
        assert!(
            err.to_string().starts_with("malformed OTLP protobuf"),
            "{err}"
        );
    }
}
