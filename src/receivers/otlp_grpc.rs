//! The OTLP/gRPC receiver: the trace, metrics and logs services (gzip accepted and sent),
//! with the same ingest path as OTLP/HTTP. The client's `grpc-timeout` becomes the
//! request's deadline, so frugal answers before the client gives up.

use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::codec::CompressionEncoding;
use tonic::{Request, Response, Status};

use crate::ingest::{Accepted, Ingest, IngestError, Payload, RequestMeta, Transport};

#[derive(Clone)]
struct Otlp {
    ingest: Arc<Ingest>,
}

fn to_status(e: IngestError) -> Status {
    let msg = e.to_string();
    match e {
        IngestError::BadRequest(_)
        | IngestError::UnsupportedMediaType(_)
        | IngestError::TooLarge(_) => Status::invalid_argument(msg),
        IngestError::Unauthorized => Status::unauthenticated(msg),
        IngestError::Unavailable { retry_after, .. } => {
            // OTLP/gRPC clients read the wait from a google.rpc.RetryInfo detail.
            let retry_after = retry_after.max(Duration::from_secs(1));
            let details = crate::forwarder::RpcStatus::unavailable(&msg, retry_after);
            Status::with_details(
                tonic::Code::Unavailable,
                msg,
                prost::Message::encode_to_vec(&details).into(),
            )
        }
        IngestError::UpstreamRejected { status, .. } => match status {
            401 => Status::unauthenticated(msg),
            403 => Status::permission_denied(msg),
            _ => Status::invalid_argument(msg),
        },
    }
}

/// Parses `grpc-timeout` (`<digits><unit>`, units H M S m u n).
fn grpc_timeout(v: &str) -> Option<Duration> {
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

impl Otlp {
    async fn export<P>(&self, req: Request<P>) -> Result<Accepted, Status>
    where
        P: Payload + super::Validate,
    {
        let signal = P::SIGNAL;
        let started = self.ingest.clock().now();
        let policy = self.ingest.policy();
        let auth = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| http::HeaderValue::from_str(v).ok());
        let timeout = req
            .metadata()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(grpc_timeout);
        let result = if !super::otlp_http::authorized(policy.ingest.auth.as_ref(), auth.as_ref()) {
            Err(IngestError::Unauthorized)
        } else {
            let msg = req.into_inner();
            match super::Validate::check_ids(&msg) {
                Err(e) => Err(e),
                Ok(()) => {
                    let mut meta = RequestMeta::new(Transport::Grpc);
                    meta.client_auth = auth;
                    meta.deadline = timeout.map(|t| crate::clock::add(started, t));
                    self.ingest.handle(msg, meta).await
                }
            }
        };
        let code = match &result {
            Ok(_) => "OK".to_string(),
            Err(e) => format!("{:?}", to_status(e.clone()).code()),
        };
        let stats = self.ingest.stats();
        crate::stats::inc(&stats.requests, &[signal.as_str(), "grpc", &code], 1);
        stats
            .request_duration
            .with_label_values(&[signal.as_str(), "grpc"])
            .observe(crate::clock::seconds_between(started, self.ingest.clock().now()).max(0.0));
        result.map_err(to_status)
    }
}

fn rejected(a: &Accepted) -> i64 {
    i64::try_from(a.rejected).unwrap_or(i64::MAX)
}

#[tonic::async_trait]
impl TraceService for Otlp {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let a = Otlp::export(self, request).await?;
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: (a.rejected > 0).then(|| ExportTracePartialSuccess {
                rejected_spans: rejected(&a),
                error_message: a.message.clone(),
            }),
        }))
    }
}

#[tonic::async_trait]
impl LogsService for Otlp {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        let a = Otlp::export(self, request).await?;
        Ok(Response::new(ExportLogsServiceResponse {
            partial_success: (a.rejected > 0).then(|| ExportLogsPartialSuccess {
                rejected_log_records: rejected(&a),
                error_message: a.message.clone(),
            }),
        }))
    }
}

#[tonic::async_trait]
impl MetricsService for Otlp {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        let a = Otlp::export(self, request).await?;
        Ok(Response::new(ExportMetricsServiceResponse {
            partial_success: (a.rejected > 0).then(|| ExportMetricsPartialSuccess {
                rejected_data_points: rejected(&a),
                error_message: a.message.clone(),
            }),
        }))
    }
}

/// Serves OTLP/gRPC on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    ingest: Arc<Ingest>,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let limit = usize::try_from(ingest.policy().ingest.max_request_bytes).unwrap_or(usize::MAX);
    let svc = Otlp { ingest };
    let gz = CompressionEncoding::Gzip;
    let zstd = CompressionEncoding::Zstd;
    tonic::transport::Server::builder()
        .add_service(
            TraceServiceServer::new(svc.clone())
                .accept_compressed(gz)
                .accept_compressed(zstd)
                .send_compressed(gz)
                .max_decoding_message_size(limit),
        )
        .add_service(
            MetricsServiceServer::new(svc.clone())
                .accept_compressed(gz)
                .accept_compressed(zstd)
                .send_compressed(gz)
                .max_decoding_message_size(limit),
        )
        .add_service(
            LogsServiceServer::new(svc)
                .accept_compressed(gz)
                .accept_compressed(zstd)
                .send_compressed(gz)
                .max_decoding_message_size(limit),
        )
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener),
            shutdown.cancelled_owned(),
        )
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts() {
        assert_eq!(grpc_timeout("10S"), Some(Duration::from_secs(10)));
        assert_eq!(grpc_timeout("9999m"), Some(Duration::from_millis(9999)));
        assert_eq!(grpc_timeout("x"), None);
        assert_eq!(grpc_timeout(""), None);
    }
}
