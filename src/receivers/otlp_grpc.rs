//! The OTLP/gRPC receiver: the trace, metrics and logs services (gzip accepted and sent),
//! with the same ingest path as OTLP/HTTP. The client's `grpc-timeout` becomes the
//! request's deadline, so frugal answers before the client gives up.

use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tokio_util::sync::CancellationToken;
use tonic::codec::CompressionEncoding;
use tonic::{Request, Response, Status};

use super::connections::{self, Listener};
use super::status::{self, Export};
use crate::core::Core;
use crate::ingest::{self, IngestError, RequestMeta, Transport};

#[derive(Clone)]
struct Otlp {
    core: Arc<Core>,
}

/// Parses `grpc-timeout` (`<digits><unit>`, units H M S m u n).
fn grpc_timeout(v: &str) -> Option<Duration> {
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

impl Otlp {
    async fn export<P: Export>(&self, req: Request<P>) -> Result<Response<P::Response>, Status> {
        let core = &self.core;
        let signal = P::SIGNAL;
        let started = core.clock.now();
        let policy = core.policy();
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
        let result = if !crate::auth::authorized(policy.ingest.auth.as_ref(), auth.as_ref()) {
            Err(IngestError::Unauthorized)
        } else {
            let msg = req.into_inner();
            match msg.check_ids() {
                Err(e) => Err(e),
                Ok(()) => {
                    let mut meta = RequestMeta::new(Transport::Grpc);
                    meta.client_auth = auth;
                    meta.deadline = timeout.map(|t| crate::clock::add(started, t));
                    ingest::handle(core, msg, meta).await
                }
            }
        };
        let code = match &result {
            Ok(_) => "OK".to_string(),
            Err(e) => format!("{:?}", status::grpc_code(e)),
        };
        let stats = &core.stats;
        crate::stats::inc(&stats.requests, &[signal.as_str(), "grpc", &code], 1);
        stats
            .request_duration
            .with_label_values(&[signal.as_str(), "grpc"])
            .observe(crate::clock::seconds_between(started, core.clock.now()).max(0.0));
        match result {
            Ok(a) => Ok(Response::new(P::response(&a))),
            Err(e) => Err(status::grpc_status(&e)),
        }
    }
}

#[tonic::async_trait]
impl TraceService for Otlp {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        Otlp::export(self, request).await
    }
}

#[tonic::async_trait]
impl LogsService for Otlp {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        Otlp::export(self, request).await
    }
}

#[tonic::async_trait]
impl MetricsService for Otlp {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        Otlp::export(self, request).await
    }
}

/// Serves OTLP/gRPC on `listener` until `shutdown` is cancelled. Connections are capped
/// and held to deadlines by `listener`; each request body must arrive within
/// `listen.connections.request_timeout`, and each call ends within that plus the longest
/// upstream retry (`MAX_ELAPSED_RANGE`), a backstop the forwarder's own deadline keeps
/// clear of.
pub async fn serve(
    listener: Listener,
    core: Arc<Core>,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let policy = core.policy();
    let limit = usize::try_from(policy.ingest.max_request_bytes).unwrap_or(usize::MAX);
    let c = policy.listen.connections;
    let backstop = c.request_timeout + *crate::policy::defaults::MAX_ELAPSED_RANGE.end();
    let svc = Otlp { core };
    let gz = CompressionEncoding::Gzip;
    let zstd = CompressionEncoding::Zstd;
    tonic::transport::Server::builder()
        .max_concurrent_streams(c.max_streams)
        .http2_keepalive_interval(Some(connections::KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(connections::KEEPALIVE_TIMEOUT))
        .timeout(backstop)
        // (TCP_NODELAY: `Listener` sets it on each connection; tonic's own applies only to
        // its own listener.)
        .layer(connections::GrpcLayer::new(c.request_timeout))
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
        .serve_with_incoming_shutdown(listener.incoming(), shutdown.cancelled_owned())
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
