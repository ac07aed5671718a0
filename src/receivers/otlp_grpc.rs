//! The OTLP/gRPC receiver: the trace, metrics and logs services (gzip, zstd and deflate
//! accepted), with the same ingest path as OTLP/HTTP. The client's `grpc-timeout` becomes
//! the request's deadline, so frugal answers before the client gives up.
//!
//! tonic serves the connections and routes by service name, but the services are frugal's
//! own rather than tonic's generated ones (which decode, and decompress outside any
//! budget, before the handler runs): the `authorization` metadata is checked before the
//! body is read (a request without the credential costs nothing), the body's frames are
//! taken from the in-flight budget as they arrive, and the one message of the unary call
//! goes through the same path as an OTLP/HTTP body ([`super::unpack`]: decompressed under
//! the budget, counted, decoded). The answer is framed here too: one message and
//! `grpc-status` in the trailers, or a trailers-only error.

use std::convert::Infallible;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{BufMut as _, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue};
use hyper::body::Frame;
use jiff::Timestamp;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tonic::codegen::BoxFuture;
use tonic::server::NamedService;

use super::codec::Format;
use super::connections::{self, Listener};
use super::status::{self, Export};
use crate::core::Core;
use crate::ingest::{self, IngestError, RequestMeta, Transport};

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

/// An OTLP export request served over gRPC: its service's name and method path.
pub trait GrpcExport: Export {
    /// The gRPC service (`package.Service`).
    const SERVICE: &'static str;
    /// The path of its `Export` method.
    const EXPORT_PATH: &'static str;
}

impl GrpcExport for ExportTraceServiceRequest {
    const SERVICE: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
    const EXPORT_PATH: &'static str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
}

impl GrpcExport for ExportMetricsServiceRequest {
    const SERVICE: &'static str = "opentelemetry.proto.collector.metrics.v1.MetricsService";
    const EXPORT_PATH: &'static str =
        "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";
}

impl GrpcExport for ExportLogsServiceRequest {
    const SERVICE: &'static str = "opentelemetry.proto.collector.logs.v1.LogsService";
    const EXPORT_PATH: &'static str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";
}

/// The message encodings frugal reads (and says so in `grpc-accept-encoding`).
const ACCEPT_ENCODING: &str = "gzip,zstd,deflate,identity";

/// The length of a gRPC message's prefix: a compressed flag and a 32-bit length.
const PREFIX: usize = 5;

/// One OTLP export service (`P`'s), answering its `Export` method.
pub struct ExportService<P> {
    core: Arc<Core>,
    _request: PhantomData<fn() -> P>,
}

impl<P> ExportService<P> {
    /// The service on `core`.
    pub fn new(core: Arc<Core>) -> Self {
        Self {
            core,
            _request: PhantomData,
        }
    }
}

impl<P> Clone for ExportService<P> {
    fn clone(&self) -> Self {
        Self::new(self.core.clone())
    }
}

impl<P: GrpcExport> NamedService for ExportService<P> {
    const NAME: &'static str = P::SERVICE;
}

impl<P: GrpcExport> tower::Service<http::Request<tonic::body::Body>> for ExportService<P> {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let core = self.core.clone();
        Box::pin(async move { Ok(serve_export::<P>(&core, req).await) })
    }
}

/// Answers one call and counts it by its gRPC code.
async fn serve_export<P: GrpcExport>(
    core: &Core,
    req: http::Request<tonic::body::Body>,
) -> http::Response<tonic::body::Body> {
    if req.uri().path() != P::EXPORT_PATH {
        return Status::unimplemented(format!("{} has only the Export method", P::SERVICE))
            .into_http();
    }
    let started = core.clock.now();
    let (code, response) = match export::<P>(core, req, started).await {
        Ok(a) => ("OK".to_string(), reply(&P::response(&a))),
        Err(e) => (
            format!("{:?}", status::grpc_code(&e)),
            status::grpc_status(&e).into_http(),
        ),
    };
    let signal = P::SIGNAL.as_str();
    let stats = &core.stats;
    crate::stats::inc(&stats.requests, &[signal, "grpc", &code], 1);
    stats
        .request_duration
        .with_label_values(&[signal, "grpc"])
        .observe(crate::clock::seconds_between(started, core.clock.now()).max(0.0));
    response
}

/// The credential before anything is read; then the message, held in the in-flight budget
/// until the call is answered, decoded and ingested.
async fn export<P: GrpcExport>(
    core: &Core,
    req: http::Request<tonic::body::Body>,
    started: Timestamp,
) -> Result<ingest::Accepted, IngestError> {
    let policy = core.policy();
    let (parts, body) = req.into_parts();
    let headers = parts.headers;
    let auth = headers.get(http::header::AUTHORIZATION);
    if !crate::auth::authorized(policy.ingest.auth.as_ref(), auth) {
        return Err(IngestError::Unauthorized);
    }
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let timeout = text("grpc-timeout").and_then(grpc_timeout);
    let ticket = core.in_flight.ticket(P::SIGNAL, Transport::Grpc);
    let limit = policy.ingest.max_request_bytes;
    let framed = super::read_body(body, limit + PREFIX as u64, None, &ticket).await?;
    let (compressed, message) = unframe(framed, limit)?;
    let encoding = if compressed {
        match text("grpc-encoding") {
            Some(e) if !super::codec::is_identity(Some(e)) => Some(e.to_owned()),
            _ => {
                return Err(IngestError::BadRequest(
                    "the message is marked compressed but the call names no grpc-encoding".into(),
                ));
            }
        }
    } else {
        None
    };
    let req = super::unpack::<P>(
        &policy,
        &ticket,
        Format::Protobuf,
        encoding.as_deref(),
        message,
    )
    .await?;
    let mut meta = RequestMeta::new(Transport::Grpc);
    meta.client_auth = auth.cloned();
    meta.deadline = timeout.map(|t| crate::clock::add(started, t));
    meta.ticket = Some(ticket);
    crate::pipeline::handle(core, req, meta).await
}

/// The one message of a unary call: whether it is compressed, and its bytes.
fn unframe(mut framed: Bytes, limit: u64) -> Result<(bool, Bytes), IngestError> {
    let malformed = |m: &str| IngestError::BadRequest(format!("malformed gRPC request: {m}"));
    if framed.len() < PREFIX {
        return Err(malformed("the body is shorter than a message's prefix"));
    }
    let prefix = framed.split_to(PREFIX);
    let compressed = match prefix[0] {
        0 => false,
        1 => true,
        f => return Err(malformed(&format!("compressed flag {f} (0 or 1)"))),
    };
    let len = u64::from(u32::from_be_bytes([
        prefix[1], prefix[2], prefix[3], prefix[4],
    ]));
    if len > limit {
        return Err(IngestError::TooLarge(format!(
            "the message is {} (larger than ingest.max_request_size, {})",
            crate::units::format_size(len),
            crate::units::format_size(limit)
        )));
    }
    if len != framed.len() as u64 {
        return Err(malformed(&format!(
            "a unary call carries one message of the length its prefix gives ({len} bytes), \
             not {} bytes",
            framed.len()
        )));
    }
    Ok((compressed, framed))
}

/// A successful answer: the response message (uncompressed), then `grpc-status: 0`.
fn reply<R: prost::Message>(msg: &R) -> http::Response<tonic::body::Body> {
    let len = msg.encoded_len();
    let mut data = BytesMut::with_capacity(PREFIX + len);
    data.put_u8(0);
    data.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
    msg.encode_raw(&mut data);
    let mut trailers = HeaderMap::new();
    trailers.insert(Status::GRPC_STATUS, HeaderValue::from_static("0"));
    let mut response = http::Response::new(tonic::body::Body::new(Reply {
        data: Some(data.freeze()),
        trailers: Some(trailers),
    }));
    let h = response.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        tonic::metadata::GRPC_CONTENT_TYPE,
    );
    h.insert(
        "grpc-accept-encoding",
        HeaderValue::from_static(ACCEPT_ENCODING),
    );
    response
}

/// A unary answer's body: one data frame, then the trailers.
struct Reply {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl hyper::body::Body for Reply {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        let frame = match this.data.take() {
            Some(d) => Some(Frame::data(d)),
            None => this.trailers.take().map(Frame::trailers),
        };
        Poll::Ready(frame.map(Ok))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
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
    let c = core.policy().listen.connections;
    let backstop = c.request_timeout + *crate::policy::defaults::MAX_ELAPSED_RANGE.end();
    tonic::transport::Server::builder()
        .max_concurrent_streams(c.max_streams)
        .http2_keepalive_interval(Some(connections::KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(connections::KEEPALIVE_TIMEOUT))
        .timeout(backstop)
        // (TCP_NODELAY: `Listener` sets it on each connection; tonic's own applies only to
        // its own listener.)
        .layer(connections::GrpcLayer::new(c.request_timeout))
        .add_service(ExportService::<ExportTraceServiceRequest>::new(
            core.clone(),
        ))
        .add_service(ExportService::<ExportMetricsServiceRequest>::new(
            core.clone(),
        ))
        .add_service(ExportService::<ExportLogsServiceRequest>::new(core))
        .serve_with_incoming_shutdown(listener.incoming(), shutdown.cancelled_owned())
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unary_messages_are_unframed_or_refused() {
        let framed = |flag: u8, len: u32, body: &[u8]| {
            let mut b = vec![flag];
            b.extend(len.to_be_bytes());
            b.extend(body);
            Bytes::from(b)
        };
        assert_eq!(
            unframe(framed(1, 3, b"abc"), 10).unwrap(),
            (true, Bytes::from_static(b"abc"))
        );
        assert_eq!(
            unframe(framed(0, 0, b""), 10).unwrap(),
            (false, Bytes::new())
        );
        for (bad, status) in [
            (Bytes::from_static(b"\0\0"), 400),
            (framed(2, 3, b"abc"), 400),
            (framed(0, 4, b"abc"), 400),
            (framed(0, 2, b"abc"), 400),
            (framed(0, 11, &[0; 11]), 413),
        ] {
            let err = unframe(bad, 10).unwrap_err();
            assert_eq!(status::http_status(&err).as_u16(), status, "{err}");
        }
    }

    #[test]
    fn grpc_timeouts() {
        assert_eq!(grpc_timeout("10S"), Some(Duration::from_secs(10)));
        assert_eq!(grpc_timeout("9999m"), Some(Duration::from_millis(9999)));
        assert_eq!(grpc_timeout("x"), None);
        assert_eq!(grpc_timeout(""), None);
    }
}
