//! Where data comes in: OTLP/HTTP ([`otlp_http`]) and OTLP/gRPC ([`otlp_grpc`]), both
//! handing decoded requests to [`crate::ingest::handle`]. The client-facing wire formats
//! live here: bodies and content types ([`codec`]), and how outcomes are answered
//! ([`status`], the one place an `IngestError` becomes an HTTP or gRPC status). Every
//! port's connections, the admin port's too, are capped and held to deadlines by
//! [`connections`].

pub mod codec;
pub mod connections;
pub mod otlp_grpc;
pub mod otlp_http;
pub mod status;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

use crate::ingest::IngestError;
use codec::check_ids;

/// Checks what OTLP requires of IDs before a request goes further.
pub trait Validate {
    /// Refuses IDs of the wrong length.
    fn check_ids(&self) -> Result<(), IngestError>;
}

impl Validate for ExportTraceServiceRequest {
    fn check_ids(&self) -> Result<(), IngestError> {
        for span in self
            .resource_spans
            .iter()
            .flat_map(|rs| &rs.scope_spans)
            .flat_map(|ss| &ss.spans)
        {
            check_ids(&span.trace_id, &span.span_id, "a span")?;
            check_ids(&[], &span.parent_span_id, "a span's parent")?;
            for l in &span.links {
                check_ids(&l.trace_id, &l.span_id, "a span link")?;
            }
        }
        Ok(())
    }
}

impl Validate for ExportLogsServiceRequest {
    fn check_ids(&self) -> Result<(), IngestError> {
        for r in self
            .resource_logs
            .iter()
            .flat_map(|rl| &rl.scope_logs)
            .flat_map(|sl| &sl.log_records)
        {
            check_ids(&r.trace_id, &r.span_id, "a log record")?;
        }
        Ok(())
    }
}

impl Validate for ExportMetricsServiceRequest {
    fn check_ids(&self) -> Result<(), IngestError> {
        Ok(())
    }
}
