//! Prometheus remote write 1.0, as a request arrives: which protocol version the content
//! type names, and the body's snappy block decompressed with its announced length checked
//! against the request limit **before** anything is allocated (a snappy block states its
//! decompressed length up front: a few bytes can announce gigabytes).
//!
//! Served on the OTLP/HTTP port at `/api/prom/push` and `/api/v1/push` (Grafana Cloud's
//! and Mimir's paths): the ingest credential and the upstream's presence are checked
//! before the body is read; the body is read under the in-flight budget, decompressed,
//! counted ([`crate::receivers::scan::remote_write`], held to `ingest.max_per_request`)
//! and decoded. Answers as Mimir gives them: 200 with an empty body, errors as text.

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;

use super::connections::Deadline;
use super::header_str;
use super::status;
use crate::core::Core;
use crate::ingest::{self, IngestError, RequestMeta, Transport};
use crate::model::{Destination, Signal};
use crate::proto::remote_write::WriteRequest;

/// Whether `path` is a remote-write push path.
pub fn is_push_path(path: &str) -> bool {
    matches!(
        path.trim_end_matches('/'),
        "/api/prom/push" | "/api/v1/push"
    )
}

/// Answers one remote-write request.
pub async fn handle(core: &Core, req: Request<Incoming>) -> Response<Full<Bytes>> {
    match receive(core, req).await {
        Ok(_) => {
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = StatusCode::OK;
            r
        }
        Err(e) => status::text_failure(&e),
    }
}

async fn receive(core: &Core, req: Request<Incoming>) -> Result<ingest::Accepted, IngestError> {
    let policy = core.policy();
    let (parts, body) = req.into_parts();
    let headers = parts.headers;
    super::authorize(&policy, &headers)?;
    if policy.upstream.remote_write.is_none() {
        return Err(IngestError::NotConfigured(
            crate::forwarder::not_configured(Destination::RemoteWrite),
        ));
    }
    check_headers(
        header_str(&headers, header::CONTENT_TYPE),
        header_str(&headers, header::CONTENT_ENCODING),
    )?;
    let ticket = core.in_flight.ticket(Signal::Metrics, Transport::Http);
    let length = header_str(&headers, header::CONTENT_LENGTH).and_then(|v| v.parse().ok());
    let body = Deadline::new(body, policy.listen.connections.request_timeout);
    let max = policy.ingest.max_request_bytes;
    let body = super::read_body(body, max, length, &ticket).await?;
    let limit = usize::try_from(max).unwrap_or(usize::MAX);
    let unpack = || -> Result<WriteRequest, IngestError> {
        // What the block announces is held before it is allocated (over the limit, it is
        // refused by `decompress` instead, before either).
        let len = snap::raw::decompress_len(&body).unwrap_or(0);
        if len <= limit {
            ticket.take(len as u64, "decompressed")?;
        }
        let plain = decompress(&body, limit)?;
        let census = super::scan::remote_write(&plain)?;
        census.check(&policy.ingest.max_per_request, Signal::Metrics)?;
        ticket.take(census.decoded_bytes, "decoded")?;
        decode(&plain)
    };
    // By what it decompresses to: a small block may announce megabytes.
    let announced = snap::raw::decompress_len(&body).unwrap_or(usize::MAX);
    let req = if body.len().max(announced) > 256 * 1024 {
        let _turn = ticket.heavy_turn().await;
        ingest::off_the_workers(unpack)?
    } else {
        unpack()?
    };
    let mut meta = RequestMeta::new(Transport::Http);
    meta.client_auth = headers.get(header::AUTHORIZATION).cloned();
    meta.ticket = Some(ticket);
    crate::pipeline::handle(core, req, meta).await
}

/// The content type remote write 2.0 names (`io.prometheus.write.v2.Request`).
const V2_PROTO: &str = "io.prometheus.write.v2.request";

/// Checks the headers name remote write 1.0: protobuf (`application/x-protobuf`, or its
/// `proto=prometheus.WriteRequest` parameter), snappy-compressed. A 2.0 request, another
/// content type or another encoding gets 415 with what frugal takes.
pub fn check_headers(
    content_type: Option<&str>,
    content_encoding: Option<&str>,
) -> Result<(), IngestError> {
    let ct = content_type
        .unwrap_or("application/x-protobuf")
        .to_ascii_lowercase();
    let mut parts = ct.split(';').map(str::trim);
    let media = parts.next().unwrap_or_default();
    let proto = parts.find_map(|p| p.strip_prefix("proto="));
    if media != "application/x-protobuf" {
        return Err(IngestError::UnsupportedMediaType(format!(
            "remote write takes Content-Type application/x-protobuf, not {media:?}"
        )));
    }
    match proto {
        None | Some("prometheus.writerequest") => {}
        Some(V2_PROTO) => {
            return Err(IngestError::UnsupportedMediaType(
                "remote write 2.0 (io.prometheus.write.v2.Request) is not supported: frugal \
                 takes remote write 1.0 (prometheus.WriteRequest); in Prometheus set \
                 `protobuf_message: prometheus.WriteRequest` on the remote_write"
                    .into(),
            ));
        }
        Some(other) => {
            return Err(IngestError::UnsupportedMediaType(format!(
                "unknown remote-write message {other:?}: frugal takes prometheus.WriteRequest"
            )));
        }
    }
    match content_encoding.map(|e| e.trim().to_ascii_lowercase()) {
        Some(e) if e == "snappy" => Ok(()),
        None => Err(IngestError::UnsupportedMediaType(
            "remote write needs Content-Encoding: snappy (the block format)".into(),
        )),
        Some(e) => Err(IngestError::UnsupportedMediaType(format!(
            "remote write takes Content-Encoding snappy, not {e:?}"
        ))),
    }
}

/// Decompresses a snappy block of at most `limit` bytes decompressed, refusing a larger
/// one (413) by the length it announces, before allocating.
pub fn decompress(body: &[u8], limit: usize) -> Result<Vec<u8>, IngestError> {
    let len = snap::raw::decompress_len(body)
        .map_err(|e| IngestError::BadRequest(format!("the body is not a snappy block: {e}")))?;
    if len > limit {
        return Err(IngestError::TooLarge(format!(
            "the request decompresses to {len} bytes; frugal accepts at most {limit} \
             (ingest.max_request_size)"
        )));
    }
    let mut out = vec![0; len];
    let n = snap::raw::Decoder::new()
        .decompress(body, &mut out)
        .map_err(|e| IngestError::BadRequest(format!("the body is not a snappy block: {e}")))?;
    out.truncate(n);
    Ok(out)
}

/// Decodes a decompressed body.
pub fn decode(body: &[u8]) -> Result<WriteRequest, IngestError> {
    prost::Message::decode(body).map_err(|e| {
        IngestError::BadRequest(format!("the body is not a remote-write WriteRequest: {e}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::remote_write::{Label, Sample, TimeSeries};
    use prost::Message as _;

    #[test]
    fn version_1_0_is_taken_and_2_0_is_refused_with_what_to_set() {
        let snappy = Some("snappy");
        assert!(check_headers(Some("application/x-protobuf"), snappy).is_ok());
        assert!(check_headers(None, snappy).is_ok());
        assert!(
            check_headers(
                Some("application/x-protobuf;proto=prometheus.WriteRequest"),
                snappy
            )
            .is_ok()
        );
        let v2 = "application/x-protobuf;proto=io.prometheus.write.v2.Request";
        match check_headers(Some(v2), snappy) {
            Err(IngestError::UnsupportedMediaType(m)) => {
                assert!(m.contains("2.0") && m.contains("1.0") && m.contains("protobuf_message"))
            }
            other => panic!("{other:?}"),
        }
        for (ct, ce) in [
            (Some("application/json"), snappy),
            (Some("application/x-protobuf"), Some("gzip")),
            (Some("application/x-protobuf"), None),
        ] {
            assert!(
                matches!(
                    check_headers(ct, ce),
                    Err(IngestError::UnsupportedMediaType(_))
                ),
                "{ct:?} {ce:?}"
            );
        }
    }

    #[test]
    fn a_block_announcing_more_than_the_limit_is_refused_before_allocating() {
        // A snappy block starts with its decompressed length as a varint: 1 GiB here,
        // followed by nothing.
        let bomb = [0x80, 0x80, 0x80, 0x80, 0x04];
        match decompress(&bomb, 16 << 20) {
            Err(IngestError::TooLarge(m)) => assert!(m.contains("1073741824")),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            decompress(b"\xff\xff\xff", 1 << 20),
            Err(IngestError::BadRequest(_))
        ));
    }

    #[test]
    fn a_request_survives_snappy_and_decoding() {
        let req = WriteRequest {
            timeseries: vec![TimeSeries {
                labels: vec![Label {
                    name: "__name__".into(),
                    value: "up".into(),
                }],
                samples: vec![Sample {
                    value: 1.0,
                    timestamp: 1_764_633_600_000,
                }],
                ..Default::default()
            }],
            metadata: vec![],
        };
        let raw = req.encode_to_vec();
        let block = snap::raw::Encoder::new().compress_vec(&raw).unwrap();
        let out = decompress(&block, raw.len()).unwrap();
        assert_eq!(decode(&out).unwrap(), req);
        assert!(matches!(
            decompress(&block, raw.len() - 1),
            Err(IngestError::TooLarge(_))
        ));
        assert!(matches!(
            decode(b"\x0a\xff"),
            Err(IngestError::BadRequest(_))
        ));
    }
}
