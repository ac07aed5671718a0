//! Shared pieces of the unit tests: policies from YAML, a scripted in-memory upstream, a
//! [`Core`] around them, and OTLP requests to send.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

use crate::clock::SharedClock;
use crate::core::Core;
use crate::forwarder::{Export, ExportContext, Outcome};
use crate::model::Destination;
use crate::policy::{Overrides, Policy, load_str};
use crate::stats::Stats;
use crate::store::MemoryStore;

/// A policy from YAML (its `upstream` section may be left out: a local one is added).
pub fn policy(yaml: &str) -> Policy {
    let text = if yaml.contains("upstream:") {
        yaml.to_string()
    } else {
        format!("upstream: {{otlp: {{endpoint: 'http://127.0.0.1:9'}}}}\n{yaml}")
    };
    load_str(&text, "test.yaml", &Overrides::default(), &|_| None).unwrap_or_else(|e| panic!("{e}"))
}

/// An upstream that records what it is sent and answers from a script (then accepts).
#[derive(Default)]
pub struct FakeUpstream {
    /// Every body received, with its destination.
    pub received: Mutex<Vec<(Destination, Bytes)>>,
    /// Answers to give, in order; once empty, everything is accepted.
    pub script: Mutex<VecDeque<Outcome>>,
}

impl FakeUpstream {
    /// Queues an answer.
    pub fn then(&self, o: Outcome) {
        self.script.lock().unwrap().push_back(o);
    }

    /// The trace requests received, decoded.
    pub fn traces(&self) -> Vec<ExportTraceServiceRequest> {
        use prost::Message as _;
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|(d, _)| *d == Destination::OtlpTraces)
            .map(|(_, b)| ExportTraceServiceRequest::decode(&b[..]).unwrap())
            .collect()
    }
}

impl Export for FakeUpstream {
    fn export(&self, to: Destination, body: Bytes, _ctx: ExportContext) -> BoxFuture<'_, Outcome> {
        self.received.lock().unwrap().push((to, body));
        let answer = self
            .script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(Outcome::Accepted {
                rejected: 0,
                message: String::new(),
            });
        Box::pin(async move { answer })
    }
}

/// A core with `policy`, an in-memory store and a fake upstream.
pub fn core(policy: Policy, clock: SharedClock) -> (Arc<Core>, Arc<FakeUpstream>) {
    let upstream = Arc::new(FakeUpstream::default());
    let core = Core::build(
        Arc::new(policy),
        Arc::new(MemoryStore::default()),
        upstream.clone(),
        clock,
        Arc::new(Stats::new().unwrap()),
    )
    .unwrap()
    .with_tail(Arc::new(crate::store::MemorySpool::default()))
    .unwrap();
    (Arc::new(core), upstream)
}

fn text(v: &str) -> Option<AnyValue> {
    Some(string(v))
}

/// A string value.
pub fn string(v: &str) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::StringValue(v.into())),
    }
}

/// An attribute `k` of value `v`.
pub fn kv(k: &str, v: AnyValue) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(v),
        ..Default::default()
    }
}

/// A span of trace `trace`, with an error status when `error`.
pub fn span(trace: u8, id: u8, error: bool) -> Span {
    Span {
        trace_id: vec![trace; 16],
        span_id: vec![id; 8],
        name: format!("GET /{trace}/{id}"),
        kind: 2,
        start_time_unix_nano: 1_764_000_000_000_000_000,
        end_time_unix_nano: 1_764_000_000_050_000_000,
        attributes: vec![KeyValue {
            key: "http.route".into(),
            value: text("/api/v1/timelines/home"),
            ..Default::default()
        }],
        status: Some(Status {
            code: if error { 2 } else { 0 },
            message: String::new(),
        }),
        ..Default::default()
    }
}

/// One resource of service `service` holding `spans`, in canonical form.
pub fn traces(service: &str, spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: text(service),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(Default::default()),
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

/// One HTTP/1.1 request over a fresh connection: the status and the body.
pub async fn request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text[9..12].parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|x| x.1)
        .unwrap_or("")
        .to_string();
    (status, body)
}

/// An HTTP server (HTTP/1 and h2c) on 127.0.0.1:0 answering every request with `handle`;
/// its URL.
pub async fn http_server<F, Fut>(handle: F) -> String
where
    F: Fn(http::Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = http::Response<http_body_util::Full<bytes::Bytes>>>
        + Send
        + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let handle = handle.clone();
            let svc = hyper::service::service_fn(move |req| {
                let answer = handle(req);
                async move { Ok::<_, std::convert::Infallible>(answer.await) }
            });
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await;
            });
        }
    });
    url
}
