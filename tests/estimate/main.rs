//! The decoded-size estimate of `receivers::scan` held against what decoding really
//! allocates: a counting allocator (this test binary's own) records the peak of live heap
//! bytes while `codec::decode` runs. The in-flight budget (`ingest.max_in_flight`) is only
//! a bound on memory if the estimate is never below that peak; it should not be far above
//! it either, or the budget turns requests away for memory they would not take.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use frugal::model::Signal;
use frugal::policy::MaxPerRequest;
use frugal::receivers::codec::{Format, decode};
use frugal::receivers::scan;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span};
use prost::Message;

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let now = LIVE.fetch_add(by, Relaxed) + by;
    PEAK.fetch_max(now, Relaxed);
}

// SAFETY: every call is passed on to the system allocator unchanged; only sizes are counted.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        grew(l.size());
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        if new > l.size() {
            grew(new - l.size());
        } else {
            LIVE.fetch_sub(l.size() - new, Relaxed);
        }
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// One test at a time: the counters are global, and a test building its requests while
/// another measures would count in its peak.
static ONE: Mutex<()> = Mutex::new(());

const NO_LIMITS: MaxPerRequest = MaxPerRequest {
    resources: u64::MAX,
    scopes: u64::MAX,
    items: u64::MAX,
    attributes: u64::MAX,
    depth: 30,
};

/// The estimate and the measured peak of decoding `body`.
fn measure<T>(signal: Signal, format: Format, body: &[u8]) -> (u64, u64)
where
    T: Message + Default + serde::de::DeserializeOwned,
{
    let census = match format {
        Format::Protobuf => scan::protobuf(signal, body, &NO_LIMITS).unwrap(),
        Format::Json => scan::json(signal, body, &NO_LIMITS).unwrap(),
    };
    let base = LIVE.load(Relaxed);
    PEAK.store(base, Relaxed);
    let decoded: T = decode(format, body).unwrap();
    let peak = (PEAK.load(Relaxed) - base) as u64;
    drop(decoded);
    (census.decoded_bytes, peak)
}

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

/// A collector's batch: 8,192 HTTP server spans with six attributes and an event.
fn traces() -> ExportTraceServiceRequest {
    let spans = (0..8192)
        .map(|i| Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            parent_span_id: vec![3; 8],
            name: format!("GET /api/v1/items/{i}"),
            kind: 2,
            start_time_unix_nano: 1,
            end_time_unix_nano: 2,
            attributes: vec![
                kv("http.method", "GET"),
                kv("http.route", "/api/v1/items/:id"),
                kv("http.status_code", "200"),
                kv("net.peer.name", "10.0.0.1"),
                kv("user_agent.original", "Mozilla/5.0 (X11; Linux x86_64)"),
                kv("http.url", "https://example.com/api/v1/items/12345?x=y"),
            ],
            events: vec![span::Event {
                name: "log".into(),
                attributes: vec![kv("message", "something happened here")],
                ..Default::default()
            }],
            status: Some(Status::default()),
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", "web"), kv("k8s.pod.name", "web-1")],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: None,
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

/// A scrape's worth of a gauge: 20,000 points of eight labels.
fn metrics() -> ExportMetricsServiceRequest {
    let points = (0..20_000)
        .map(|i| NumberDataPoint {
            attributes: (0..8)
                .map(|k| kv(&format!("label{k}"), &format!("value{i}")))
                .collect(),
            time_unix_nano: 5,
            value: Some(number_data_point::Value::AsDouble(1.0)),
            ..Default::default()
        })
        .collect();
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: None,
            scope_metrics: vec![ScopeMetrics {
                scope: None,
                metrics: vec![Metric {
                    name: "up".into(),
                    data: Some(metric::Data::Gauge(Gauge {
                        data_points: points,
                    })),
                    ..Default::default()
                }],
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

/// 8,192 log lines with two attributes.
fn logs() -> ExportLogsServiceRequest {
    let records = (0..8192)
        .map(|i| LogRecord {
            time_unix_nano: 1,
            body: Some(AnyValue {
                value: Some(any_value::Value::StringValue(format!(
                    "{i} GET /api/v1/items 200 12ms user=alice and the rest of a log line"
                ))),
            }),
            attributes: vec![kv("level", "info"), kv("logger", "app.web")],
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            ..Default::default()
        })
        .collect();
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: None,
            scope_logs: vec![ScopeLogs {
                scope: None,
                log_records: records,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

fn within(what: &str, body: usize, (estimate, peak): (u64, u64)) {
    println!(
        "{what}: body {body}, estimate {estimate}, peak {peak} ({:.2}x)",
        estimate as f64 / peak as f64
    );
    assert!(
        estimate >= peak,
        "{what}: estimate {estimate} < peak {peak}"
    );
    assert!(
        estimate <= peak * 5 / 2,
        "{what}: estimate {estimate} > 2.5 x peak {peak}"
    );
}

#[test]
fn real_batches_in_protobuf_and_json() {
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let t = traces();
    let (pb, js) = (t.encode_to_vec(), serde_json::to_vec(&t).unwrap());
    within(
        "traces pb",
        pb.len(),
        measure::<ExportTraceServiceRequest>(Signal::Traces, Format::Protobuf, &pb),
    );
    within(
        "traces json",
        js.len(),
        measure::<ExportTraceServiceRequest>(Signal::Traces, Format::Json, &js),
    );
    let m = metrics();
    let (pb, js) = (m.encode_to_vec(), serde_json::to_vec(&m).unwrap());
    within(
        "metrics pb",
        pb.len(),
        measure::<ExportMetricsServiceRequest>(Signal::Metrics, Format::Protobuf, &pb),
    );
    within(
        "metrics json",
        js.len(),
        measure::<ExportMetricsServiceRequest>(Signal::Metrics, Format::Json, &js),
    );
    let l = logs();
    let (pb, js) = (l.encode_to_vec(), serde_json::to_vec(&l).unwrap());
    within(
        "logs pb",
        pb.len(),
        measure::<ExportLogsServiceRequest>(Signal::Logs, Format::Protobuf, &pb),
    );
    within(
        "logs json",
        js.len(),
        measure::<ExportLogsServiceRequest>(Signal::Logs, Format::Json, &js),
    );
}

#[test]
fn empty_message_bombs() {
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let resources = [0x0a, 0x00].repeat(1_000_000);
    within(
        "1M empty resources",
        resources.len(),
        measure::<ExportTraceServiceRequest>(Signal::Traces, Format::Protobuf, &resources),
    );
    let spans = [0x12, 0x00].repeat(500_000);
    let mut scope = vec![0x12];
    prost::encoding::encode_varint(spans.len() as u64, &mut scope);
    scope.extend(&spans);
    let mut req = vec![0x0a];
    prost::encoding::encode_varint(scope.len() as u64, &mut req);
    req.extend(&scope);
    within(
        "500k empty spans",
        req.len(),
        measure::<ExportTraceServiceRequest>(Signal::Traces, Format::Protobuf, &req),
    );
    let json = [
        &b"{\"resourceSpans\":["[..],
        &b"{},".repeat(999_999),
        b"{}]}",
    ]
    .concat();
    within(
        "1M empty resources, JSON",
        json.len(),
        measure::<ExportTraceServiceRequest>(Signal::Traces, Format::Json, &json),
    );
}
