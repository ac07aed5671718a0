//! Throughput, added latency and memory of frugal forwarding OTLP/HTTP traces to a local
//! sink: `cargo bench --bench throughput` (add `-- --seconds 20` for longer runs).
//!
//! The load generator and the sink run in this process; frugal runs as its own process,
//! so its CPU time (from /proc) is frugal's alone. Requests carry 1,000 spans of 358
//! encoded bytes each; the remote-write case, 2,000 series of one sample and six labels
//! (as a Prometheus scrape sends them, snappy). Reported: items (spans or samples)/s and
//! MB/s of wall time, items per CPU-second of
//! frugal's own CPU, latency p50/p99 through frugal and directly to the sink at a fixed
//! moderate rate, and frugal's peak resident memory. Any request not answered 2xx fails
//! the run; `-- --smoke` runs each case for a second (the test suite does, to keep the
//! benchmark working).
//!
//! The policy meters against a budget (every request is weighed, classified by the
//! priority rules and reserved in the ledger) with pacing off: the load offers hundreds of
//! MB/s, thousands of times any monthly budget's pace, and sampling would change what is
//! measured. The third case measures the path where items are dropped and the request
//! encoded anew.

use std::io::Write as _;
use std::net::SocketAddr;

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message as _;

#[path = "common.rs"]
#[allow(dead_code)]
mod common;
use common::{Frugal, kv, latencies, pct, saturate, sink};

const SPANS_PER_REQUEST: usize = 1000;

/// A span of exactly 358 encoded bytes (with its tag and length inside ScopeSpans).
fn span(i: usize, pad: usize, marked: bool) -> Span {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&(i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes());
    id[8..].copy_from_slice(
        &((i as u64) ^ 0xDEAD_BEEF)
            .wrapping_mul(0xC2B2_AE3D_27D4_EB4F)
            .to_be_bytes(),
    );
    Span {
        trace_id: id.to_vec(),
        span_id: id[4..12].to_vec(),
        parent_span_id: id[2..10].to_vec(),
        name: "GET /api/v1/timelines/home".into(),
        kind: 2,
        start_time_unix_nano: 1_764_000_000_000_000_000 + i as u64,
        end_time_unix_nano: 1_764_000_000_050_000_000 + i as u64,
        attributes: vec![
            kv("http.request.method", "GET"),
            kv("http.route", "/api/v1/timelines/home"),
            kv("url.path", "/api/v1/timelines/home"),
            kv(
                "server.address",
                if marked {
                    "mastodon.dropme."
                } else {
                    "mastodon.example"
                },
            ),
            kv("user_agent.original", &"x".repeat(pad)),
        ],
        status: Some(Status::default()),
        ..Default::default()
    }
}

fn request(pad: usize, mark_half: bool) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", "mastodon-prod/web"),
                    kv("k8s.pod.name", "web-0"),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "OpenTelemetry::Instrumentation::Rack".into(),
                    version: "0.24.6".into(),
                    ..Default::default()
                }),
                spans: (0..SPANS_PER_REQUEST)
                    .map(|i| span(i, pad, mark_half && i % 2 == 0))
                    .collect(),
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

/// The request body, with spans padded to 358 bytes each; with `mark_half`, every other
/// span matches the benchmark policy's drop rule.
fn body(mark_half: bool) -> (Bytes, usize) {
    let one = |pad: usize| {
        let s = span(1, pad, false);
        let len = s.encoded_len();
        len + 1 + prost::encoding::encoded_len_varint(len as u64)
    };
    let pad = (0..400).find(|&p| one(p) >= 358).unwrap_or(100);
    assert_eq!(one(pad), 358, "span size");
    let req = request(pad, mark_half);
    (Bytes::from(req.encode_to_vec()), req.encoded_len())
}

const SERIES_PER_REQUEST: usize = 2000;

const ENTRIES_PER_PUSH: usize = 1000;

/// A Loki push of 1,000 entries in 10 streams, Rails-like lines of about 130 bytes (an
/// error every 50th), snappy-compressed; and its billable bytes.
fn loki_body() -> (Bytes, usize) {
    use frugal::proto::loki::{Entry, LabelPair, PushRequest, Stream, Timestamp};
    let streams = (0..10)
        .map(|s| Stream {
            labels: format!(r#"{{namespace="mastodon", app="web", pod="web-{s}"}}"#),
            entries: (0..ENTRIES_PER_PUSH / 10)
                .map(|i| Entry {
                    timestamp: Some(Timestamp::from_unix_nanos(
                        1_764_633_600_000_000_000 + i as u64,
                    )),
                    line: format!(
                        "{}, [2026-12-01T00:00:00.{i:06} #1] {} -- : [req-{s}-{i}] Completed 200 OK in 12ms (Views: 3.1ms | ActiveRecord: 4.2ms)",
                        if i % 50 == 0 { 'E' } else { 'I' },
                        if i % 50 == 0 { "ERROR" } else { " INFO" }
                    ),
                    structured_metadata: vec![LabelPair {
                        name: "pod_uid".into(),
                        value: format!("0b1f-{s}"),
                    }],
                })
                .collect(),
            hash: 0,
        })
        .collect();
    let req = PushRequest { streams };
    let billed: usize = req
        .streams
        .iter()
        .flat_map(|s| &s.entries)
        .map(|e| {
            e.line.len()
                + e.structured_metadata
                    .iter()
                    .map(|p| p.name.len() + p.value.len())
                    .sum::<usize>()
        })
        .sum();
    let raw = req.encode_to_vec();
    let block = snap::raw::Encoder::new().compress_vec(&raw).unwrap();
    (Bytes::from(block), billed)
}

/// A remote-write request of 2,000 series of a node-exporter-like shape, one sample each,
/// snappy-compressed; and its uncompressed length.
fn remote_write_body() -> (Bytes, usize) {
    use frugal::proto::remote_write::{Label, Sample, TimeSeries, WriteRequest};
    let label = |n: &str, v: String| Label {
        name: n.into(),
        value: v,
    };
    let req = WriteRequest {
        timeseries: (0..SERIES_PER_REQUEST)
            .map(|i| TimeSeries {
                labels: vec![
                    label("__name__", format!("node_cpu_seconds_total_{}", i % 20)),
                    label("cpu", (i % 64).to_string()),
                    label("instance", format!("node-{}:9100", i / 64)),
                    label("job", "node".into()),
                    label("mode", ["idle", "user", "system", "iowait"][i % 4].into()),
                    label("namespace", "monitoring".into()),
                ],
                samples: vec![Sample {
                    value: i as f64 * 1.5,
                    timestamp: 1_764_633_600_000,
                }],
                ..Default::default()
            })
            .collect(),
        metadata: vec![],
    };
    let raw = req.encode_to_vec();
    let block = snap::raw::Encoder::new().compress_vec(&raw).unwrap();
    (Bytes::from(block), raw.len())
}

fn gzip(b: &[u8]) -> Bytes {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b).unwrap();
    Bytes::from(e.finish().unwrap())
}

/// frugal with the benchmark's policy, forwarding to `upstream` with `compression`.
fn start(bin: &str, upstream: SocketAddr, compression: &str, dir: &std::path::Path) -> Frugal {
    let policy = format!(
        "upstream: {{otlp: {{endpoint: 'http://{upstream}', compression: {compression}}},\n\
                 remote_write: {{endpoint: 'http://{upstream}/api/v1/write'}},\n\
                 loki: {{endpoint: 'http://{upstream}/loki/api/v1/push'}}}}\n\
                 budgets: {{traces: {{limit: 50000TB, target: 95%}}, logs: {{limit: 50000TB, target: 95%}},\n\
                 metrics: {{active_series: 10000000}}}}\n\
                 logs: {{priority: [{{name: warnings, severity_at_least: WARN}}]}}\n\
                 pacing: {{enabled: false}}\n\
                 traces: {{priority: [{{name: errors, status_code: ERROR}}, {{name: slow, latency_over: 2s}}],\n\
                 drop: [{{name: bench, attributes: {{server.address: mastodon.dropme.}}}}]}}\n"
    );
    Frugal::start(bin, &policy, dir)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    run(args.iter().any(|a| a == "--smoke"), &args);
}

/// Runs every case. `smoke`: a one-second run each, as the test suite runs it (the
/// `bench_smoke` test): proves the benchmark works — every request answered 200 — and
/// measures nothing worth reading.
pub fn run(smoke: bool, args: &[String]) {
    let seconds: f64 = args
        .iter()
        .position(|a| a == "--seconds")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(if smoke { 1.0 } else { 10.0 });
    let samples = if smoke { 20 } else { 300 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (raw, encoded) = body(false);
    let (half, _) = body(true);
    let zipped = gzip(&raw);
    let (rw, rw_len) = remote_write_body();
    let (loki, loki_billed) = loki_body();
    println!(
        "frugal throughput: {SPANS_PER_REQUEST} spans of 358 bytes a request ({encoded} bytes; {} gzipped), {seconds}s a run",
        zipped.len()
    );
    println!(
        "remote write: {SERIES_PER_REQUEST} series of one sample a request ({rw_len} bytes; {} snappy)",
        rw.len()
    );
    println!(
        "{:<40} {:>10} {:>9} {:>14} {:>9} {:>9} {:>9} {:>9} {:>8}",
        "case", "items/s", "MB/s", "items/cpu-s", "cpu", "p50 ms", "p99 ms", "direct", "rss MB"
    );
    // `--compare <binary>`: each case runs this build and the other one alternately,
    // `--rounds` times each, so both see the same machine (a before/after measurement).
    let other = args
        .iter()
        .position(|a| a == "--compare")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let rounds: usize = args
        .iter()
        .position(|a| a == "--rounds")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(if other.is_some() { 3 } else { 1 });
    let mut bins = vec![("this build", env!("CARGO_BIN_EXE_frugal").to_string())];
    if let Some(o) = other {
        bins.push(("compared", o));
    }
    for (name, compression, gz, half_dropped) in [
        ("uncompressed in/out", "none", false, false),
        ("gzip in/out", "gzip", true, false),
        ("half dropped, re-encoded", "none", false, true),
        ("remote write, 2,000 known series", "none", false, false),
        ("Loki push, 1,000 entries", "none", false, false),
    ] {
        let remote_write = name.starts_with("remote write");
        let loki_push = name.starts_with("Loki");
        for round in 0..rounds {
            for (which, bin) in &bins {
                let label = if bins.len() > 1 {
                    format!("{name} [{which} {}]", round + 1)
                } else {
                    name.to_string()
                };
                rt.block_on(async {
                    let dir = tempfile::tempdir().unwrap();
                    let upstream = sink().await;
                    let f = start(bin, upstream, compression, dir.path());
                    let (path, direct_path) = if remote_write {
                        ("/api/v1/push", "/api/v1/write")
                    } else if loki_push {
                        ("/loki/api/v1/push", "/loki/api/v1/push")
                    } else {
                        ("/v1/traces", "/v1/traces")
                    };
                    let url = format!("http://{}{path}", f.http);
                    let body = match (gz, half_dropped) {
                        _ if remote_write => rw.clone(),
                        _ if loki_push => loki.clone(),
                        (true, _) => zipped.clone(),
                        (false, true) => half.clone(),
                        (false, false) => raw.clone(),
                    };
                    let (items, item_bytes) = if remote_write {
                        (
                            SERIES_PER_REQUEST,
                            rw_len as f64 / SERIES_PER_REQUEST as f64,
                        )
                    } else if loki_push {
                        (
                            ENTRIES_PER_PUSH,
                            loki_billed as f64 / ENTRIES_PER_PUSH as f64,
                        )
                    } else {
                        (SPANS_PER_REQUEST, 358.0)
                    };
                    // Warm up connections and the allocator.
                    saturate(&url, body.clone(), gz, 4, seconds.min(1.0)).await;
                    let cpu0 = f.cpu_seconds();
                    let done = saturate(&url, body.clone(), gz, 8, seconds).await;
                    let cpu = f.cpu_seconds() - cpu0;
                    let spans = done as f64 * items as f64;
                    let through = latencies(&url, body.clone(), gz, samples, 50.0).await;
                    let direct_url = format!("http://{upstream}{direct_path}");
                    let direct = latencies(&direct_url, body.clone(), gz, samples, 50.0).await;
                    println!(
                        "{:<40} {:>10.0} {:>9.1} {:>14.0} {:>8.2}s {:>9.2} {:>9.2} {:>9.2} {:>8.1}",
                        label,
                        spans / seconds,
                        spans * item_bytes / seconds / 1e6,
                        spans / cpu.max(1e-9),
                        cpu,
                        pct(&through, 0.5),
                        pct(&through, 0.99),
                        pct(&direct, 0.5),
                        f.peak_rss_mb()
                    );
                });
            }
        }
    }
    println!("(direct = p50 latency straight to the sink, for the added latency: p50 - direct)");
}
