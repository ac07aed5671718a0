//! The whole app started as `frugal serve` starts it, on 127.0.0.1:0, with a manual clock:
//! a request from socket to upstream, and a period rolling over while it runs.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use frugal::clock::{Clock as _, ManualClock};
use frugal::policy::{Overrides, Policy, load_str};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message as _;
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// An upstream stand-in: decodes what arrives with the official OTLP types and answers 200.
#[derive(Default)]
struct Upstream {
    traces: Mutex<Vec<ExportTraceServiceRequest>>,
    /// The trace bodies as they arrived.
    bodies: Mutex<Vec<Bytes>>,
}

async fn upstream() -> (String, Arc<Upstream>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let state = Arc::new(Upstream::default());
    let s = state.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let s = s.clone();
            let svc =
                hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let s = s.clone();
                    async move {
                        let path = req.uri().path().to_string();
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        if path == "/otlp/v1/traces" {
                            let r = ExportTraceServiceRequest::decode(&body[..]).unwrap();
                            s.traces.lock().unwrap().push(r);
                            s.bodies.lock().unwrap().push(body);
                        }
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                            Bytes::new(),
                        )))
                    }
                });
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (url, state)
}

async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    ct: &str,
    body: &[u8],
) -> (u16, Vec<u8>) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Type: {ct}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let split = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let status = std::str::from_utf8(&out[9..12]).unwrap().parse().unwrap();
    (status, out[split + 4..].to_vec())
}

async fn usage(addr: SocketAddr) -> Value {
    let (status, body) = request(addr, "GET", "/api/v1/usage", "text/plain", b"").await;
    assert_eq!(status, 200);
    serde_json::from_slice(&body).unwrap()
}

fn policy(upstream: &str, data_dir: &std::path::Path) -> Policy {
    let text = format!(
        r#"
listen: {{http: "127.0.0.1:0", grpc: "127.0.0.1:0", admin: "127.0.0.1:0"}}
upstream: {{otlp: {{endpoint: "{upstream}/otlp", compression: none}}}}
store: {{data_dir: "{}", flush_interval: 20ms}}
period: {{reset_day: 25, timezone: Europe/Berlin}}
budgets: {{traces: {{limit: 50GB}}}}
pacing: {{recompute_every: 1s}}
"#,
        data_dir.display()
    );
    load_str(&text, "server.yaml", &Overrides::default(), &|_| None).unwrap()
}

fn spans(n: u8) -> ExportTraceServiceRequest {
    let kv = |k: &str, v: &str| KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", "web")],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(Default::default()),
                spans: (0..n)
                    .map(|i| Span {
                        trace_id: vec![i + 1; 16],
                        span_id: vec![i + 1; 8],
                        parent_span_id: vec![7; 8],
                        name: "GET /".into(),
                        status: Some(Status::default()),
                        ..Default::default()
                    })
                    .collect(),
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

/// Polls `f` every 10 ms until it holds, for at most 10 s.
async fn until<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..1000 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_goes_from_socket_to_upstream_and_the_month_rolls_over_in_local_time() {
    let dir = tempfile::tempdir().unwrap();
    let (url, up) = upstream().await;
    // The Berlin month starting 25 October began at 2026-10-24T22:00Z (summer time); the
    // next begins at 2026-11-24T23:00Z (winter time): an hour later in UTC.
    let clock = Arc::new(ManualClock::new("2026-11-24T21:00:00Z".parse().unwrap()));
    let running = frugal::app::start(policy(&url, dir.path()), clock.clone())
        .await
        .unwrap();
    let a = running.addresses;

    let req = spans(3);
    let body = req.encode_to_vec();
    let (status, _) = request(
        a.http,
        "POST",
        "/v1/traces",
        "application/x-protobuf",
        &body,
    )
    .await;
    assert_eq!(status, 200);
    let got = up.traces.lock().unwrap().clone();
    assert_eq!(got, vec![req], "upstream got the request as sent");
    let u = usage(a.admin).await;
    let used = u["signals"]["traces"]["used"].as_u64().unwrap();
    assert_eq!(used, body.len() as u64, "billed as Tempo counts it");
    assert_eq!(u["period"]["start"], "2026-10-24T22:00:00Z");

    // 22:30Z: midnight in Berlin under summer time, but no longer: no new period.
    clock.set("2026-11-24T22:30:00Z".parse().unwrap());
    let flushes = |v: &str| {
        v.lines()
            .find(|l| l.starts_with("frugal_store_flushes_total{result=\"ok\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let metrics = || async {
        let (_, b) = request(a.admin, "GET", "/metrics", "text/plain", b"").await;
        String::from_utf8(b).unwrap()
    };
    let before = flushes(&metrics().await);
    until("three more flushes", || async {
        flushes(&metrics().await) >= before + 3
    })
    .await;
    assert_eq!(
        usage(a.admin).await["period"]["start"],
        "2026-10-24T22:00:00Z"
    );

    // 23:00Z is midnight in Berlin: the new period starts fresh, the old one stays readable.
    clock.set("2026-11-24T23:00:01Z".parse().unwrap());
    until("the new period", || async {
        usage(a.admin).await["period"]["start"] == "2026-11-24T23:00:00Z"
    })
    .await;
    let u = usage(a.admin).await;
    assert_eq!(u["signals"]["traces"]["used"], 0);
    assert_eq!(u["signals"]["traces"]["offered"]["items"], 0);
    assert_eq!(u["previous_period"]["start"], "2026-10-24T22:00:00Z");
    assert_eq!(u["previous_period"]["signals"]["traces"]["used"], used);
    assert_eq!(u["signals"]["traces"]["pacing"]["state"], "unconstrained");
    assert_eq!(
        u["signals"]["traces"]["pacing"]["demand_per_second"]["normal"]["long"], 0.0,
        "the forecasts start again"
    );
    let (status, _) = request(a.admin, "GET", "/readyz", "text/plain", b"").await;
    assert_eq!(status, 200);
    assert!(clock.now() > "2026-11-24T23:00:00Z".parse().unwrap());
    running.stop().await.unwrap();
}

/// A body with a field frugal does not know and an enum in a short (5-byte) varint has the
/// length of the canonical encoding: what is forwarded, and billed, is the canonical one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_is_forwarded_is_exactly_what_was_metered() {
    let dir = tempfile::tempdir().unwrap();
    let (url, up) = upstream().await;
    let clock = Arc::new(ManualClock::new("2026-11-20T12:00:00Z".parse().unwrap()));
    let running = frugal::app::start(policy(&url, dir.path()), clock)
        .await
        .unwrap();
    let a = running.addresses;

    let mut req = spans(1);
    req.resource_spans[0].scope_spans[0].spans[0].kind = -1; // canonically 10 bytes
    let canonical = req.encode_to_vec();
    let kind_canonical = [
        0x30, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
    ];
    let kind_short_and_unknown = [
        0x30, 0xff, 0xff, 0xff, 0xff, 0x0f, // kind = -1 in 5 bytes, read as the same -1
        0x98, 0x06, 0x80, 0x80, 0x01, // field 99 (unknown), varint 16384
    ];
    let at = canonical
        .windows(kind_canonical.len())
        .position(|w| w == kind_canonical)
        .unwrap();
    let mut raw = canonical.clone();
    raw.splice(at..at + kind_canonical.len(), kind_short_and_unknown);
    assert_eq!(raw.len(), canonical.len());
    assert_eq!(ExportTraceServiceRequest::decode(&raw[..]).unwrap(), req);

    let (status, _) = request(a.http, "POST", "/v1/traces", "application/x-protobuf", &raw).await;
    assert_eq!(status, 200);
    let bodies = up.bodies.lock().unwrap().clone();
    assert_eq!(bodies.len(), 1);
    assert_eq!(
        bodies[0], canonical,
        "the canonical encoding, byte for byte"
    );
    let used = usage(a.admin).await["signals"]["traces"]["used"].as_u64();
    assert_eq!(used, Some(canonical.len() as u64));
    running.stop().await.unwrap();
}
