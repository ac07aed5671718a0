//! The one boundary between the request path's outcomes and the wire: how an
//! [`IngestError`] is answered over HTTP and gRPC, and how an [`Accepted`] request becomes
//! an OTLP export response (with its partial success).
//!
//! "Not now" is always 503 with `Retry-After` (gRPC: UNAVAILABLE with a `RetryInfo`
//! detail), never 429: some OTLP SDKs treat 429 as final, and Prometheus drops
//! remote-write data on 429 by default.

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message as _;

use super::codec::Format;
use crate::ingest::{Accepted, IngestError};
use crate::proto::rpc;

/// The shortest `Retry-After` frugal sends (HTTP's unit is whole seconds).
const MIN_RETRY_AFTER: Duration = Duration::from_secs(1);

/// The HTTP status an error is answered with.
pub fn http_status(e: &IngestError) -> StatusCode {
    let code = match e {
        IngestError::BadRequest(_) => 400,
        IngestError::UnsupportedMediaType(_) => 415,
        IngestError::TooLarge(_) => 413,
        IngestError::TimedOut(_) => 408,
        IngestError::Unauthorized => 401,
        IngestError::NotConfigured(_) => 404,
        IngestError::Unavailable { .. } => 503,
        IngestError::UpstreamRejected { status, .. } => *status,
    };
    StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY)
}

/// The gRPC code an error is answered with.
pub fn grpc_code(e: &IngestError) -> tonic::Code {
    match e {
        IngestError::BadRequest(_)
        | IngestError::UnsupportedMediaType(_)
        | IngestError::TooLarge(_) => tonic::Code::InvalidArgument,
        IngestError::TimedOut(_) => tonic::Code::DeadlineExceeded,
        IngestError::Unauthorized => tonic::Code::Unauthenticated,
        IngestError::NotConfigured(_) => tonic::Code::Unimplemented,
        IngestError::Unavailable { .. } => tonic::Code::Unavailable,
        IngestError::UpstreamRejected { status, .. } => match status {
            401 => tonic::Code::Unauthenticated,
            403 => tonic::Code::PermissionDenied,
            _ => tonic::Code::InvalidArgument,
        },
    }
}

/// When the client should retry, for errors that ask it to (at least a second).
pub fn retry_after(e: &IngestError) -> Option<Duration> {
    match e {
        IngestError::Unavailable { retry_after, .. } => Some((*retry_after).max(MIN_RETRY_AFTER)),
        _ => None,
    }
}

/// The `google.rpc.Status` of an error, with a `RetryInfo` detail when it asks for a retry.
pub fn rpc_status(e: &IngestError) -> rpc::Status {
    let message = e.to_string();
    match retry_after(e) {
        Some(wait) => rpc::Status::unavailable(&message, wait),
        None => rpc::Status::new(grpc_code(e) as i32, &message),
    }
}

/// The gRPC status of an error (details carry the `RetryInfo`, as OTLP clients read it).
pub fn grpc_status(e: &IngestError) -> tonic::Status {
    let s = rpc_status(e);
    if s.details.is_empty() {
        tonic::Status::new(grpc_code(e), s.message)
    } else {
        let details = s.encode_to_vec();
        tonic::Status::with_details(grpc_code(e), s.message, details.into())
    }
}

/// An OTLP/HTTP error body: the `google.rpc.Status` in the request's format.
pub fn http_error_body(format: Format, e: &IngestError) -> Bytes {
    let s = rpc_status(e);
    match format {
        Format::Protobuf => Bytes::from(s.encode_to_vec()),
        Format::Json => Bytes::from(
            serde_json::to_vec(&serde_json::json!({"code": s.code, "message": s.message}))
                .unwrap_or_default(),
        ),
    }
}

/// An OTLP export request and its response type.
pub trait Export: crate::ingest::Payload + super::Validate + serde::de::DeserializeOwned {
    /// The service's export response.
    type Response: prost::Message + serde::Serialize + Default + PartialEq + Send + 'static;

    /// The response to an accepted request: empty, or a partial success.
    fn response(a: &Accepted) -> Self::Response;
}

fn rejected(a: &Accepted) -> i64 {
    i64::try_from(a.rejected).unwrap_or(i64::MAX)
}

impl Export for ExportTraceServiceRequest {
    type Response = ExportTraceServiceResponse;

    fn response(a: &Accepted) -> Self::Response {
        ExportTraceServiceResponse {
            partial_success: (a.rejected > 0).then(|| ExportTracePartialSuccess {
                rejected_spans: rejected(a),
                error_message: a.message.clone(),
            }),
        }
    }
}

impl Export for ExportLogsServiceRequest {
    type Response = ExportLogsServiceResponse;

    fn response(a: &Accepted) -> Self::Response {
        ExportLogsServiceResponse {
            partial_success: (a.rejected > 0).then(|| ExportLogsPartialSuccess {
                rejected_log_records: rejected(a),
                error_message: a.message.clone(),
            }),
        }
    }
}

impl Export for ExportMetricsServiceRequest {
    type Response = ExportMetricsServiceResponse;

    fn response(a: &Accepted) -> Self::Response {
        ExportMetricsServiceResponse {
            partial_success: (a.rejected > 0).then(|| ExportMetricsPartialSuccess {
                rejected_data_points: rejected(a),
                error_message: a.message.clone(),
            }),
        }
    }
}

/// An error as Mimir and Loki answer their push APIs: the status and a line of text;
/// `Retry-After` on 503.
pub fn text_failure(e: &IngestError) -> http::Response<http_body_util::Full<bytes::Bytes>> {
    use http::{HeaderValue, header};
    let mut r = http::Response::new(http_body_util::Full::new(bytes::Bytes::from(format!(
        "{e}\n"
    ))));
    *r.status_mut() = http_status(e);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Some(wait) = retry_after(e)
        && let Ok(v) = HeaderValue::from_str(&wait.as_secs().to_string())
    {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_now_is_503_and_unavailable_with_retry_info_never_429() {
        let e = IngestError::Unavailable {
            retry_after: Duration::from_millis(200),
            message: "upstream down".into(),
        };
        assert_eq!(http_status(&e), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(retry_after(&e), Some(Duration::from_secs(1)));
        let g = grpc_status(&e);
        assert_eq!(g.code(), tonic::Code::Unavailable);
        let details = rpc::Status::decode(g.details()).unwrap();
        assert_eq!(details.retry_delay(), Some(Duration::from_secs(1)));
        let bad = IngestError::BadRequest("x".into());
        assert_eq!(http_status(&bad), StatusCode::BAD_REQUEST);
        assert_eq!(grpc_status(&bad).code(), tonic::Code::InvalidArgument);
        assert!(grpc_status(&bad).details().is_empty());
        let refused = IngestError::UpstreamRejected {
            status: 413,
            message: "too big".into(),
        };
        assert_eq!(http_status(&refused), StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[test]
    fn partial_successes_only_when_something_was_rejected() {
        let none = ExportTraceServiceRequest::response(&Accepted::default());
        assert!(none.partial_success.is_none());
        let some = ExportLogsServiceRequest::response(&Accepted {
            rejected: 2,
            message: "old".into(),
        });
        assert_eq!(some.partial_success.unwrap().rejected_log_records, 2);
    }
}
