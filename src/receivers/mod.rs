//! Where data comes in: OTLP/HTTP ([`otlp_http`]) and OTLP/gRPC ([`otlp_grpc`]), both
//! handing decoded requests to [`crate::pipeline::handle`]. The client-facing wire formats
//! live here: bodies and content types ([`codec`]), what a body holds before it is decoded
//! ([`scan`]), and how outcomes are answered ([`status`], the one place an `IngestError`
//! becomes an HTTP or gRPC status). Every port's connections, the admin port's too, are
//! capped and held to deadlines by [`connections`]. [`remote_write`] reads Prometheus
//! remote write 1.0 bodies (its route arrives with "frugal 6").
//!
//! Both receivers take a body apart the same way ([`unpack`]): the ingest credential first,
//! then, holding the in-flight budget ([`crate::ingest::Ticket`]) for each step, the body
//! as it arrives, decompressed, counted ([`scan`], refused over
//! `ingest.max_per_request`), and decoded, off the async workers.

pub mod codec;
pub mod connections;
pub mod loki;
pub mod otlp_grpc;
pub mod otlp_http;
pub mod remote_write;
pub mod scan;
pub mod status;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt as _;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

use crate::ingest::{IngestError, Ticket};
use crate::policy::{Ingest, Policy};
use codec::{Format, check_ids};
use status::Export;

/// Bodies up to this size, decompressed (as their compression announces it), are taken
/// apart on the async worker: counting them takes about a millisecond at most. Larger
/// ones, and those whose compression does not say, go off the workers.
const INLINE_BODY_MAX: u64 = 1024 * 1024;

/// Requests whose decoded form is estimated at up to this are decoded on the worker (a few
/// milliseconds); larger ones off it.
const INLINE_DECODED_MAX: u64 = 16 * 1024 * 1024;

/// Decompresses `body` (per `encoding`), counts what it holds and decodes it, each step
/// held in `ticket` first: the decompressed body, then the decoded request's estimated
/// size. Small requests (most of a collector's batches) are handled where they are, as
/// cheaply as before; large ones, or those that turn out larger than their compression
/// announced, off the async workers ([`crate::ingest::off_the_workers`]) and one per core
/// at a time ([`Ticket::heavy_turn`]), so costly requests never hold up `/readyz` or the
/// others.
pub(crate) async fn unpack<P: Export>(
    policy: &Policy,
    ticket: &Ticket,
    format: Format,
    encoding: Option<&str>,
    body: Bytes,
) -> Result<P, IngestError> {
    let ingest = &policy.ingest;
    let take = |n| ticket.take(n, "decompressed");
    let announced = codec::announced_size(encoding, &body);
    if body.len() as u64 <= INLINE_BODY_MAX && announced.is_some_and(|n| n <= INLINE_BODY_MAX) {
        // Held to that size here: one that inflates past it is redone off the workers.
        let cap = ingest.max_request_bytes.min(INLINE_BODY_MAX);
        let held = ticket.bytes();
        match codec::decompress(encoding, body.clone(), cap, take) {
            Ok(plain) => return unpack_plain(ingest, ticket, format, plain, true),
            // The partial buffer is gone: its share of the budget goes back before the redo.
            Err(IngestError::TooLarge(_)) if cap < ingest.max_request_bytes => {
                ticket.shrink_to(held);
            }
            Err(e) => return Err(e),
        }
    }
    let _turn = ticket.heavy_turn().await;
    crate::ingest::off_the_workers(|| {
        let plain = codec::decompress(encoding, body, ingest.max_request_bytes, take)?;
        unpack_plain(ingest, ticket, format, plain, false)
    })
}

/// A header's value as text, if it is present and text.
pub(crate) fn header_str(h: &http::HeaderMap, name: http::header::HeaderName) -> Option<&str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// Checks the ingest credential of an HTTP request's headers (before its body is read).
pub(crate) fn authorize(policy: &Policy, h: &http::HeaderMap) -> Result<(), IngestError> {
    if crate::auth::authorized(
        policy.ingest.auth.as_ref(),
        h.get(http::header::AUTHORIZATION),
    ) {
        Ok(())
    } else {
        Err(IngestError::Unauthorized)
    }
}

/// At most this much is set aside up front for a body whose `Content-Length` is known.
const RESERVE_MAX: u64 = 1024 * 1024;

/// Reads a body of at most `limit` bytes, each frame taken from the in-flight budget as it
/// arrives.
pub(crate) async fn read_body<B>(
    mut body: B,
    limit: u64,
    length: Option<u64>,
    ticket: &Ticket,
) -> Result<Bytes, IngestError>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: Into<connections::BoxError>,
{
    let too_large = || {
        IngestError::TooLarge(format!(
            "the request body is larger than {} (ingest.max_request_size)",
            crate::units::format_size(limit)
        ))
    };
    if length.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    // One frame is kept as it is; more are gathered into one buffer.
    let mut first: Option<Bytes> = None;
    let mut gathered: Option<BytesMut> = None;
    let mut total: u64 = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| body_error(e.into()))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        total += data.len() as u64;
        if total > limit {
            return Err(too_large());
        }
        ticket.take(data.len() as u64, "received")?;
        match (&mut gathered, first.take()) {
            (Some(buf), _) => buf.extend_from_slice(&data),
            (None, None) => first = Some(data),
            (None, Some(head)) => {
                let reserve = length.unwrap_or(0).min(RESERVE_MAX).max(total);
                let mut buf = BytesMut::with_capacity(usize::try_from(reserve).unwrap_or(0));
                buf.extend_from_slice(&head);
                buf.extend_from_slice(&data);
                gathered = Some(buf);
            }
        }
    }
    Ok(match gathered {
        Some(buf) => buf.freeze(),
        None => first.unwrap_or_default(),
    })
}

/// Why a body could not be read: it did not arrive in time (408, `DEADLINE_EXCEEDED`), or
/// the connection failed.
fn body_error(e: connections::BoxError) -> IngestError {
    if e.is::<connections::BodyTimedOut>() {
        return IngestError::TimedOut(e.to_string());
    }
    if let Some(s) = e.downcast_ref::<tonic::Status>()
        && s.code() == tonic::Code::DeadlineExceeded
    {
        return IngestError::TimedOut(s.message().to_owned());
    }
    IngestError::BadRequest(format!("cannot read the request body: {e}"))
}

/// Counts and decodes a decompressed body (`on_worker`: decoding a large one moves off it).
fn unpack_plain<P: Export>(
    ingest: &Ingest,
    ticket: &Ticket,
    format: Format,
    body: Bytes,
    on_worker: bool,
) -> Result<P, IngestError> {
    let census = match format {
        Format::Protobuf => scan::protobuf(P::SIGNAL, &body, &ingest.max_per_request)?,
        Format::Json => scan::json(P::SIGNAL, &body, &ingest.max_per_request)?,
    };
    census.check(&ingest.max_per_request, P::SIGNAL)?;
    ticket.take(census.decoded_bytes, "decoded")?;
    let decode = || codec::decode::<P>(format, &body);
    let req = if on_worker && census.decoded_bytes > INLINE_DECODED_MAX {
        crate::ingest::off_the_workers(decode)?
    } else {
        decode()?
    };
    // The body is not kept while the request is handled: what goes upstream is the
    // encoding of what was metered.
    drop(body);
    req.check_ids()?;
    Ok(req)
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    fn gzip(b: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(b).unwrap();
        e.finish().unwrap()
    }

    #[tokio::test]
    async fn bodies_are_counted_before_decoding_and_whatever_their_compression_announces() {
        let policy = crate::testkit::policy("");
        let stats = std::sync::Arc::new(crate::stats::Stats::new().unwrap());
        let budget = crate::ingest::InFlight::new(policy.ingest.max_in_flight_bytes, stats);
        let ticket = || budget.ticket(crate::model::Signal::Traces, crate::ingest::Transport::Http);

        // The request: refused on its count, having held its body and no more.
        let t = ticket();
        let bomb = Bytes::from(gzip(&[0x0a, 0x00].repeat(8_300_000)));
        let err =
            unpack::<ExportTraceServiceRequest>(&policy, &t, Format::Protobuf, Some("gzip"), bomb)
                .await
                .err()
                .unwrap();
        assert!(
            err.to_string()
                .starts_with("the request holds 8300000 resources"),
            "{err}"
        );
        assert!(t.bytes() < 17_000_000, "{}", t.bytes());

        // A body whose gzip trailer understates its size is still read whole.
        let req = crate::testkit::traces("web", vec![crate::testkit::span(1, 1, false)]);
        let mut big = req.clone();
        big.resource_spans[0].scope_spans[0].spans = (0..20_000)
            .map(|i| crate::testkit::span(1, (i % 250) as u8, false))
            .collect();
        let plain = prost::Message::encode_to_vec(&big);
        assert!(plain.len() as u64 > INLINE_BODY_MAX);
        let mut lying = gzip(&plain);
        let n = lying.len();
        lying[n - 4..].copy_from_slice(&100u32.to_le_bytes());
        let got = unpack::<ExportTraceServiceRequest>(
            &policy,
            &ticket(),
            Format::Protobuf,
            Some("gzip"),
            Bytes::from(lying),
        )
        .await;
        // flate2 checks the trailer at the end: the lie is refused as a corrupt stream, not
        // read into a buffer it announced too small.
        assert!(
            matches!(got, Err(IngestError::BadRequest(_))),
            "{:?}",
            got.err()
        );
        let got = unpack::<ExportTraceServiceRequest>(
            &policy,
            &ticket(),
            Format::Protobuf,
            Some("gzip"),
            Bytes::from(gzip(&plain)),
        )
        .await
        .ok()
        .unwrap();
        assert_eq!(got, big);
    }
}
