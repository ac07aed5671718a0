//! OTLP/gRPC connections under `listen.connections`: a request body that stalls is
//! answered DEADLINE_EXCEEDED at the request timeout, and a connection left idle after its
//! request is closed at the idle timeout (the raw-socket cases for HTTP are end-to-end
//! tests, tests/e2e/test_connections.py).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use frugal::clock::ManualClock;
use frugal::policy::{Overrides, load_str};
use futures_util::StreamExt as _;
use http_body_util::{BodyExt as _, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::disallowed_methods)] // times real sockets against real deadlines
async fn grpc_bodies_and_idle_connections_meet_their_deadlines() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        r#"
listen:
  http: "127.0.0.1:0"
  grpc: "127.0.0.1:0"
  admin: "127.0.0.1:0"
  connections: {{request_timeout: 1s, idle_timeout: 1500ms, header_timeout: 1s}}
upstream: {{otlp: {{endpoint: "http://127.0.0.1:9/otlp"}}}}
store: {{data_dir: "{}"}}
"#,
        dir.path().display()
    );
    let policy = load_str(&text, "c.yaml", &Overrides::default(), &|_| None).unwrap();
    let clock = Arc::new(ManualClock::new("2026-11-24T21:00:00Z".parse().unwrap()));
    let running = frugal::app::start(policy, clock).await.unwrap();

    let stream = tokio::net::TcpStream::connect(running.addresses.grpc.unwrap())
        .await
        .unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);

    // A gRPC message announced as 1000 bytes, of which 10 arrive.
    let mut part = vec![0u8, 0, 0, 0x03, 0xe8];
    part.extend_from_slice(&[0x0a; 10]);
    let body = StreamBody::new(
        futures_util::stream::iter([Ok::<_, Infallible>(Frame::data(Bytes::from(part)))])
            .chain(futures_util::stream::pending()),
    );
    let req = http::Request::post(
        "http://frugal/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    )
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .body(body)
    .unwrap();
    let started = Instant::now();
    let resp = send.send_request(req).await.unwrap();
    let headers = resp.headers().clone();
    let trailers = resp
        .into_body()
        .collect()
        .await
        .ok()
        .and_then(|c| c.trailers().cloned())
        .unwrap_or_default();
    let took = started.elapsed();
    let status = headers.get("grpc-status").or(trailers.get("grpc-status"));
    let message = headers.get("grpc-message").or(trailers.get("grpc-message"));
    assert_eq!(
        status.unwrap(),
        "4",
        "DEADLINE_EXCEEDED; {headers:?} {trailers:?}"
    );
    assert!(
        message
            .and_then(|m| m.to_str().ok())
            .is_some_and(|m| m.contains("request_timeout")),
        "{message:?}"
    );
    assert!(
        (Duration::from_millis(900)..Duration::from_millis(2500)).contains(&took),
        "answered after {took:?}"
    );

    // No request in flight now: the connection is closed at the idle timeout.
    let idle = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), conn)
        .await
        .expect("the idle connection is closed")
        .unwrap()
        .ok();
    let closed = idle.elapsed();
    assert!(
        (Duration::from_millis(1300)..Duration::from_millis(3000)).contains(&closed),
        "closed after {closed:?}"
    );
    running.stop().await.unwrap();
}
