//! The OTLP/HTTP receiver: `POST /v1/{traces,metrics,logs}` and the same under `/otlp`
//! (so a user can swap Grafana's OTLP gateway host for frugal's and keep the path), in
//! protobuf or JSON, plain, gzip, deflate or zstd. Responses follow the OTLP
//! specification: the request's content type, `google.rpc.Status` error bodies, and
//! `Retry-After` on 503.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::codec::{self, Format};
use crate::ingest::{Accepted, Ingest, IngestError, Payload, RequestMeta, Transport};
use crate::model::Signal;
use crate::policy::IngestAuth;

type Body = Full<Bytes>;

/// Serves OTLP/HTTP on `listener` until `shutdown` is cancelled, then lets requests in
/// flight finish.
pub async fn serve(listener: TcpListener, ingest: Arc<Ingest>, shutdown: CancellationToken) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let ingest = ingest.clone();
        let service = hyper::service::service_fn(move |req| {
            let ingest = ingest.clone();
            async move { Ok::<_, Infallible>(route(&ingest, req).await) }
        });
        let builder = auto::Builder::new(TokioExecutor::new());
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
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

async fn route(ingest: &Ingest, req: Request<Incoming>) -> Response<Body> {
    let Some(signal) = signal_of(req.uri().path()) else {
        return plain(
            StatusCode::NOT_FOUND,
            "not found: frugal receives OTLP at /v1/traces, /v1/metrics and /v1/logs (also under /otlp)\n",
        );
    };
    if req.method() != Method::POST {
        let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "use POST\n");
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return r;
    }
    let started = ingest.clock().now();
    let stats = ingest.stats();
    let (format, result) = match signal {
        Signal::Traces => handle::<ExportTraceServiceRequest>(ingest, req).await,
        Signal::Metrics => handle::<ExportMetricsServiceRequest>(ingest, req).await,
        Signal::Logs => handle::<ExportLogsServiceRequest>(ingest, req).await,
    };
    let resp = match result {
        Ok(accepted) => success(signal, format, &accepted),
        Err(e) => failure(format, &e),
    };
    let code = resp.status().as_u16().to_string();
    crate::stats::inc(&stats.requests, &[signal.as_str(), "http", &code], 1);
    stats
        .request_duration
        .with_label_values(&[signal.as_str(), "http"])
        .observe(crate::clock::seconds_between(started, ingest.clock().now()).max(0.0));
    resp
}

/// Checks the ingest credential, if the policy sets one.
pub fn authorized(expected: Option<&IngestAuth>, given: Option<&HeaderValue>) -> bool {
    let Some(expected) = expected else {
        return true;
    };
    let Some(given) = given.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let want = match expected {
        IngestAuth::Bearer(t) => format!("Bearer {t}"),
        IngestAuth::Basic { username, password } => {
            use base64::Engine as _;
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
            )
        }
    };
    constant_time_eq(want.as_bytes(), given.trim().as_bytes())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn header_str(h: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

async fn handle<P>(
    ingest: &Ingest,
    req: Request<Incoming>,
) -> (Format, Result<Accepted, IngestError>)
where
    P: Payload + serde::de::DeserializeOwned + super::Validate,
{
    let policy = ingest.policy();
    let headers = req.headers().clone();
    let format = header_str(&headers, header::CONTENT_TYPE).and_then(Format::from_content_type);
    let reply_format = format.unwrap_or(Format::Protobuf);
    if !authorized(
        policy.ingest.auth.as_ref(),
        headers.get(header::AUTHORIZATION),
    ) {
        return (reply_format, Err(IngestError::Unauthorized));
    }
    let Some(format) = format else {
        let ct = header_str(&headers, header::CONTENT_TYPE).unwrap_or("none");
        return (
            reply_format,
            Err(IngestError::UnsupportedMediaType(format!(
                "Content-Type {ct:?} is not OTLP (use application/x-protobuf or application/json)"
            ))),
        );
    };
    let limit = policy.ingest.max_request_bytes;
    let body = match Limited::new(req.into_body(), limit as usize)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            let err = if e.is::<http_body_util::LengthLimitError>() {
                IngestError::TooLarge(format!(
                    "the request body is larger than {}",
                    crate::units::format_size(limit)
                ))
            } else {
                IngestError::BadRequest(format!("cannot read the request body: {e}"))
            };
            return (format, Err(err));
        }
    };
    let body = match codec::decompress(header_str(&headers, header::CONTENT_ENCODING), body, limit)
    {
        Ok(b) => b,
        Err(e) => return (format, Err(e)),
    };
    let decoded: P = match codec::decode(format, &body) {
        Ok(m) => m,
        Err(e) => return (format, Err(e)),
    };
    if let Err(e) = super::check_request_ids(&decoded) {
        return (format, Err(e));
    }
    let mut meta = RequestMeta::new(Transport::Http);
    meta.raw = (format == Format::Protobuf).then_some(body);
    meta.client_auth = headers.get(header::AUTHORIZATION).cloned();
    (format, ingest.handle(decoded, meta).await)
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

fn success(signal: Signal, format: Format, a: &Accepted) -> Response<Body> {
    if a.rejected == 0 && format == Format::Json {
        return response(
            StatusCode::OK,
            format.content_type(),
            Bytes::from_static(b"{}"),
        );
    }
    let rejected = i64::try_from(a.rejected).unwrap_or(i64::MAX);
    let message = a.message.clone();
    let body = match signal {
        Signal::Traces => codec::encode(
            format,
            &ExportTraceServiceResponse {
                partial_success: (a.rejected > 0).then_some(ExportTracePartialSuccess {
                    rejected_spans: rejected,
                    error_message: message,
                }),
            },
        ),
        Signal::Logs => codec::encode(
            format,
            &ExportLogsServiceResponse {
                partial_success: (a.rejected > 0).then_some(ExportLogsPartialSuccess {
                    rejected_log_records: rejected,
                    error_message: message,
                }),
            },
        ),
        Signal::Metrics => codec::encode(
            format,
            &ExportMetricsServiceResponse {
                partial_success: (a.rejected > 0).then_some(ExportMetricsPartialSuccess {
                    rejected_data_points: rejected,
                    error_message: message,
                }),
            },
        ),
    };
    response(StatusCode::OK, format.content_type(), body)
}

/// gRPC status codes for the `google.rpc.Status` body.
fn grpc_code(e: &IngestError) -> i32 {
    match e {
        IngestError::BadRequest(_) => 3,           // INVALID_ARGUMENT
        IngestError::UnsupportedMediaType(_) => 3, // INVALID_ARGUMENT
        IngestError::TooLarge(_) => 3,
        IngestError::Unauthorized => 16,       // UNAUTHENTICATED
        IngestError::Unavailable { .. } => 14, // UNAVAILABLE
        IngestError::UpstreamRejected { status, .. } => match status {
            401 => 16,
            403 => 7, // PERMISSION_DENIED
            _ => 3,
        },
    }
}

fn failure(format: Format, e: &IngestError) -> Response<Body> {
    let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut r = response(
        status,
        format.content_type(),
        codec::error_body(format, grpc_code(e), &e.to_string()),
    );
    match e {
        IngestError::Unavailable { retry_after, .. } => {
            let secs = retry_after.as_secs().max(1).to_string();
            if let Ok(v) = HeaderValue::from_str(&secs) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        IngestError::Unauthorized => {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"frugal\""),
            );
        }
        _ => {}
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

    #[test]
    fn ingest_credentials() {
        let bearer = IngestAuth::Bearer("s3cret".into());
        assert!(authorized(None, None));
        assert!(!authorized(Some(&bearer), None));
        assert!(authorized(
            Some(&bearer),
            Some(&HeaderValue::from_static("Bearer s3cret"))
        ));
        assert!(!authorized(
            Some(&bearer),
            Some(&HeaderValue::from_static("Bearer s3cre7"))
        ));
        let basic = IngestAuth::Basic {
            username: "alloy".into(),
            password: "pw".into(),
        };
        assert!(authorized(
            Some(&basic),
            Some(&HeaderValue::from_static("Basic YWxsb3k6cHc="))
        ));
    }
}
