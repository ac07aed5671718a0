//! The OTLP/HTTP receiver: `POST /v1/{traces,metrics,logs}` and the same under `/otlp`
//! (so a user can swap Grafana's OTLP gateway host for frugal's and keep the path), in
//! protobuf or JSON, plain, gzip, deflate or zstd. Responses follow the OTLP
//! specification: the request's content type, `google.rpc.Status` error bodies, and
//! `Retry-After` on 503.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use tokio_util::sync::CancellationToken;

use super::codec::{self, Format};
use super::connections::{self, Deadline, Listener};
use super::header_str;
use super::status::{self, Export};
use crate::core::Core;
use crate::ingest::{self, IngestError, RequestMeta, Transport};
use crate::model::Signal;

type Body = Full<Bytes>;

/// Serves OTLP/HTTP on `listener` until `shutdown` is cancelled, then lets requests in
/// flight finish. Connections are capped and held to deadlines by `listener`.
pub async fn serve(mut listener: Listener, core: Arc<Core>, shutdown: CancellationToken) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let builder = connections::http_builder(listener.limits());
    loop {
        let conn = tokio::select! {
            c = listener.accept() => c,
            () = shutdown.cancelled() => break,
        };
        let watch = conn.watch();
        let core = core.clone();
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let core = core.clone();
            let in_flight = watch.begin(req.version() == http::Version::HTTP_2);
            async move {
                let resp = route(&core, req).await;
                drop(in_flight);
                Ok::<_, Infallible>(resp)
            }
        });
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(conn), service);
        let conn = graceful.watch(conn.into_owned());
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

fn signal_of(path: &str) -> Option<Signal> {
    let p = path.strip_prefix("/otlp").unwrap_or(path);
    match p.trim_end_matches('/') {
        "/v1/traces" => Some(Signal::Traces),
        "/v1/metrics" => Some(Signal::Metrics),
        "/v1/logs" => Some(Signal::Logs),
        _ => None,
    }
}

async fn route(core: &Core, req: Request<Incoming>) -> Response<Body> {
    let remote_write = super::remote_write::is_push_path(req.uri().path());
    let loki = req.uri().path().trim_end_matches('/') == super::loki::PUSH_PATH;
    let signal = match signal_of(req.uri().path()) {
        Some(s) => s,
        None if remote_write => Signal::Metrics,
        None if loki => Signal::Logs,
        None => {
            return plain(
                StatusCode::NOT_FOUND,
                "not found: frugal receives OTLP at /v1/traces, /v1/metrics and /v1/logs (also under /otlp), Prometheus remote write at /api/v1/push and /api/prom/push, Loki pushes at /loki/api/v1/push\n",
            );
        }
    };
    if req.method() != Method::POST {
        let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "use POST\n");
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return r;
    }
    let started = core.clock.now();
    let (resp, transport) = match signal {
        _ if remote_write => (super::remote_write::handle(core, req).await, "remote_write"),
        _ if loki => (super::loki::handle(core, req).await, "loki"),
        Signal::Traces => (handle::<ExportTraceServiceRequest>(core, req).await, "http"),
        Signal::Metrics => (
            handle::<ExportMetricsServiceRequest>(core, req).await,
            "http",
        ),
        Signal::Logs => (handle::<ExportLogsServiceRequest>(core, req).await, "http"),
    };
    let code = resp.status().as_u16().to_string();
    let stats = &core.stats;
    crate::stats::inc(&stats.requests, &[signal.as_str(), transport, &code], 1);
    stats
        .request_duration
        .with_label_values(&[signal.as_str(), transport])
        .observe(crate::clock::seconds_between(started, core.clock.now()).max(0.0));
    resp
}

async fn handle<P: Export>(core: &Core, req: Request<Incoming>) -> Response<Body> {
    let format =
        header_str(req.headers(), header::CONTENT_TYPE).and_then(Format::from_content_type);
    let reply = format.unwrap_or(Format::Protobuf);
    match receive::<P>(core, req, format).await {
        Ok(accepted) => success(reply, &P::response(&accepted)),
        Err(e) => failure(reply, &e),
    }
}

/// Checks, reads, decodes and ingests one request. The credential is checked before the
/// body is read; the body, decompressed and decoded, is held in the in-flight budget until
/// the request is answered.
async fn receive<P: Export>(
    core: &Core,
    req: Request<Incoming>,
    format: Option<Format>,
) -> Result<ingest::Accepted, IngestError> {
    let policy = core.policy();
    let (parts, body) = req.into_parts();
    let headers = parts.headers;
    super::authorize(&policy, &headers)?;
    let Some(format) = format else {
        let ct = header_str(&headers, header::CONTENT_TYPE).unwrap_or("none");
        return Err(IngestError::UnsupportedMediaType(format!(
            "Content-Type {ct:?} is not OTLP (use application/x-protobuf or application/json)"
        )));
    };
    let ticket = core.in_flight.ticket(P::SIGNAL, Transport::Http);
    let length = header_str(&headers, header::CONTENT_LENGTH).and_then(|v| v.parse().ok());
    // The body arrives within the request timeout of its headers, or the client hears 408
    // and the connection closes.
    let body = Deadline::new(body, policy.listen.connections.request_timeout);
    let body = super::read_body(body, policy.ingest.max_request_bytes, length, &ticket).await?;
    let encoding = header_str(&headers, header::CONTENT_ENCODING).map(str::to_owned);
    let req = super::unpack::<P>(&policy, &ticket, format, encoding.as_deref(), body).await?;
    let mut meta = RequestMeta::new(Transport::Http);
    meta.client_auth = headers.get(header::AUTHORIZATION).cloned();
    meta.ticket = Some(ticket);
    crate::pipeline::handle(core, req, meta).await
}

fn response(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Body> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    response(
        status,
        "text/plain; charset=utf-8",
        Bytes::from_static(text.as_bytes()),
    )
}

fn success<R: prost::Message + serde::Serialize + Default + PartialEq>(
    format: Format,
    r: &R,
) -> Response<Body> {
    // An empty JSON response is `{}` (serde would spell out the absent partial success).
    if format == Format::Json && *r == R::default() {
        return response(
            StatusCode::OK,
            format.content_type(),
            Bytes::from_static(b"{}"),
        );
    }
    response(
        StatusCode::OK,
        format.content_type(),
        codec::encode(format, r),
    )
}

fn failure(format: Format, e: &IngestError) -> Response<Body> {
    let mut r = response(
        status::http_status(e),
        format.content_type(),
        status::http_error_body(format, e),
    );
    if let Some(wait) = status::retry_after(e)
        && let Ok(v) = HeaderValue::from_str(&wait.as_secs().to_string())
    {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    if matches!(e, IngestError::Unauthorized) {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"frugal\""),
        );
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_with_and_without_the_gateway_prefix() {
        assert_eq!(signal_of("/v1/traces"), Some(Signal::Traces));
        assert_eq!(signal_of("/otlp/v1/logs"), Some(Signal::Logs));
        assert_eq!(signal_of("/v1/metrics/"), Some(Signal::Metrics));
        assert_eq!(signal_of("/v1/profiles"), None);
        assert_eq!(signal_of("/api/v1/push"), None);
    }
}
