//! Loki's push API, `POST /loki/api/v1/push` on the OTLP/HTTP port: protobuf
//! (`logproto.PushRequest` in a snappy block, as Alloy's `loki.write` and Promtail send
//! it) or JSON (`{"streams":[{"stream":{...},"values":[["<ns>","line",{...}]]}]}`, gzip
//! allowed). The credential and the upstream's presence are checked before the body is
//! read; the body is read under the in-flight budget and counted before it is decoded.
//!
//! As Loki answers: 204 on success; a stream whose labels are not a label set, or that has
//! more than [`MAX_LABELS`] labels, is refused by name (400) while the valid streams of the
//! same push go on; a line over [`MAX_LINE_BYTES`] is truncated to it, as Grafana Cloud
//! does, and counted (`frugal_loki_truncated_lines_total`).

use std::collections::BTreeMap;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use serde::Deserialize;

use super::connections::Deadline;
use super::{header_str, status};
use crate::core::Core;
use crate::ingest::{self, IngestError, RequestMeta, Transport};
use crate::model::{Destination, Signal};
use crate::proto::loki::{Entry, LabelPair, PushRequest, Stream, Timestamp};
use crate::sampling::loki_push::parse_labels;

/// The push path.
pub const PUSH_PATH: &str = "/loki/api/v1/push";

/// Grafana Cloud's `max_line_size`: longer lines are truncated to it.
pub const MAX_LINE_BYTES: usize = 256 * 1024;

/// Grafana Cloud's `max_label_names_per_series`.
pub const MAX_LABELS: usize = 15;

/// Answers one push.
pub async fn handle(core: &Core, req: Request<Incoming>) -> Response<Full<Bytes>> {
    match receive(core, req).await {
        Ok(()) => {
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = StatusCode::NO_CONTENT;
            r
        }
        Err(e) => status::text_failure(&e),
    }
}

async fn receive(core: &Core, req: Request<Incoming>) -> Result<(), IngestError> {
    let policy = core.policy();
    let (parts, body) = req.into_parts();
    let headers = parts.headers;
    super::authorize(&policy, &headers)?;
    if policy.upstream.loki.is_none() {
        return Err(IngestError::NotConfigured(
            crate::forwarder::not_configured(Destination::Loki),
        ));
    }
    let ct = header_str(&headers, header::CONTENT_TYPE)
        .unwrap_or("application/x-protobuf")
        .to_ascii_lowercase();
    let json = ct.starts_with("application/json");
    if !json && !ct.starts_with("application/x-protobuf") {
        return Err(IngestError::UnsupportedMediaType(format!(
            "a Loki push is application/x-protobuf (snappy) or application/json, not {ct:?}"
        )));
    }
    let encoding = header_str(&headers, header::CONTENT_ENCODING).map(str::to_owned);
    let ticket = core.in_flight.ticket(Signal::Logs, Transport::Http);
    let length = header_str(&headers, header::CONTENT_LENGTH).and_then(|v| v.parse().ok());
    let body = Deadline::new(body, policy.listen.connections.request_timeout);
    let max = policy.ingest.max_request_bytes;
    let body = super::read_body(body, max, length, &ticket).await?;
    let limit = usize::try_from(max).unwrap_or(usize::MAX);
    let ingest_limits = &policy.ingest.max_per_request;
    let unpack = || -> Result<PushRequest, IngestError> {
        if json {
            let take = |n| ticket.take(n, "decompressed");
            let plain = super::codec::decompress(encoding.as_deref(), body.clone(), max, take)?;
            let census = json_census(&plain);
            census.check(ingest_limits, Signal::Logs)?;
            ticket.take(census.decoded_bytes, "decoded")?;
            from_json(&plain)
        } else {
            let len = snap::raw::decompress_len(&body).unwrap_or(0);
            if len <= limit {
                ticket.take(len as u64, "decompressed")?;
            }
            let plain = super::remote_write::decompress(&body, limit)?;
            let census = super::scan::loki(&plain)?;
            census.check(ingest_limits, Signal::Logs)?;
            ticket.take(census.decoded_bytes, "decoded")?;
            prost::Message::decode(plain.as_slice()).map_err(|e| {
                IngestError::BadRequest(format!("the body is not a Loki PushRequest: {e}"))
            })
        }
    };
    // By what the body inflates to, as its compression announces it (unknown: large).
    let announced = if json {
        super::codec::announced_size(encoding.as_deref(), &body).unwrap_or(u64::MAX)
    } else {
        snap::raw::decompress_len(&body).map_or(u64::MAX, |n| n as u64)
    };
    let mut push = if (body.len() as u64).max(announced) > 256 * 1024 {
        let _turn = ticket.heavy_turn().await;
        ingest::off_the_workers(unpack)?
    } else {
        unpack()?
    };
    let (bad, truncated) = check_streams(&mut push);
    if truncated > 0 {
        crate::stats::inc(&core.stats.loki_truncated_lines, &[], truncated);
    }
    let mut meta = RequestMeta::new(Transport::Http);
    meta.client_auth = headers.get(header::AUTHORIZATION).cloned();
    meta.ticket = Some(ticket);
    if !push.streams.is_empty() {
        crate::pipeline::handle(core, push, meta).await?;
    }
    if bad.is_empty() {
        Ok(())
    } else {
        Err(IngestError::BadRequest(bad.join("; ")))
    }
}

/// Removes the streams Loki would refuse, saying why for each (at most ten named), and
/// truncates over-long lines. Returns the refusals and how many lines were truncated.
fn check_streams(push: &mut PushRequest) -> (Vec<String>, u64) {
    let mut bad = Vec::new();
    let mut refused = 0usize;
    let mut truncated = 0;
    push.streams.retain_mut(|s| {
        let why = match parse_labels(&s.labels) {
            Err(e) => Some(e),
            Ok(l) if l.len() > MAX_LABELS => Some(format!(
                "stream {} has {} labels, more than {MAX_LABELS} (Grafana Cloud's max_label_names_per_series)",
                s.labels.chars().take(300).collect::<String>(),
                l.len()
            )),
            Ok(_) => None,
        };
        if let Some(why) = why {
            refused += 1;
            if bad.len() < 10 {
                bad.push(why);
            }
            return false;
        }
        for e in &mut s.entries {
            if e.line.len() > MAX_LINE_BYTES {
                let mut cut = MAX_LINE_BYTES;
                while !e.line.is_char_boundary(cut) {
                    cut -= 1;
                }
                e.line.truncate(cut);
                truncated += 1;
            }
        }
        true
    });
    if refused > bad.len() {
        bad.push(format!("and {} more streams", refused - bad.len()));
    }
    (bad, truncated)
}

/// What a JSON push holds, counted on its text without parsing it (an upper bound: every
/// `[` an entry, every `{` a metadata map, every `:` a pair), and the memory decoding it
/// takes: the text, and per entry, map and pair what serde's structures and frugal's
/// hold (a metadata map is a B-tree node).
fn json_census(text: &[u8]) -> super::scan::Census {
    let count = |b: u8| text.iter().filter(|&&c| c == b).count() as u64;
    let (arrays, objects, pairs) = (count(b'['), count(b'{'), count(b':'));
    let per_entry = 2 * (std::mem::size_of::<JsonEntry>() + std::mem::size_of::<Entry>()) as u64;
    let per_pair = 2 * std::mem::size_of::<LabelPair>() as u64 + 64;
    super::scan::Census {
        resources: objects,
        items: arrays,
        attributes: pairs,
        depth: 1,
        decoded_bytes: (text.len() as u64)
            .saturating_mul(2)
            .saturating_add(arrays * per_entry)
            .saturating_add(objects * 540)
            .saturating_add(pairs * per_pair),
        ..Default::default()
    }
}

#[derive(Deserialize)]
struct JsonPush {
    streams: Vec<JsonStream>,
}

#[derive(Deserialize)]
struct JsonStream {
    #[serde(default)]
    stream: BTreeMap<String, String>,
    values: Vec<JsonEntry>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum JsonEntry {
    Plain(String, String),
    WithMetadata(String, String, BTreeMap<String, String>),
}

/// A JSON push as the protobuf one it stands for.
fn from_json(body: &[u8]) -> Result<PushRequest, IngestError> {
    let push: JsonPush = serde_json::from_slice(body)
        .map_err(|e| IngestError::BadRequest(format!("the body is not a Loki JSON push: {e}")))?;
    let mut streams = Vec::with_capacity(push.streams.len());
    for s in push.streams {
        let labels = s
            .stream
            .iter()
            .map(|(k, v)| format!("{k}={}", quote(v)))
            .collect::<Vec<_>>()
            .join(", ");
        let mut entries = Vec::with_capacity(s.values.len());
        for v in s.values {
            let (ts, line, sm) = match v {
                JsonEntry::Plain(ts, line) => (ts, line, BTreeMap::new()),
                JsonEntry::WithMetadata(ts, line, sm) => (ts, line, sm),
            };
            let nanos: u64 = ts.parse().map_err(|_| {
                IngestError::BadRequest(format!(
                    "timestamp {ts:?} is not nanoseconds since the epoch"
                ))
            })?;
            entries.push(Entry {
                timestamp: Some(Timestamp::from_unix_nanos(nanos)),
                line,
                structured_metadata: sm
                    .into_iter()
                    .map(|(name, value)| LabelPair { name, value })
                    .collect(),
            });
        }
        streams.push(Stream {
            labels: format!("{{{labels}}}"),
            entries,
            hash: 0,
        });
    }
    Ok(PushRequest { streams })
}

/// A label value as a double-quoted string with Go's escapes.
fn quote(v: &str) -> String {
    let mut out = String::with_capacity(v.len() + 2);
    out.push('"');
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_pushes_become_protobuf_ones_and_bad_streams_are_named() {
        let body = br#"{"streams":[
            {"stream":{"app":"web","quote":"a\"b"},"values":[["1764633600000000000","hello"],["1764633600000000001","x",{"trace_id":"abc"}]]}
        ]}"#;
        let p = from_json(body).unwrap();
        assert_eq!(p.streams[0].labels, r#"{app="web", quote="a\"b"}"#);
        assert_eq!(
            parse_labels(&p.streams[0].labels).unwrap()[1],
            ("quote".to_string(), "a\"b".to_string())
        );
        assert_eq!(
            p.streams[0].entries[1].structured_metadata[0].name,
            "trace_id"
        );
        assert_eq!(
            p.streams[0].entries[0].timestamp.unwrap().unix_nanos(),
            1_764_633_600_000_000_000
        );
        assert!(matches!(from_json(b"{"), Err(IngestError::BadRequest(_))));
        let c = json_census(body);
        assert!(
            c.items >= 2 && c.decoded_bytes > body.len() as u64 * 2,
            "{c:?}"
        );
        assert!(matches!(
            from_json(br#"{"streams":[{"stream":{},"values":[["soon","x"]]}]}"#),
            Err(IngestError::BadRequest(_))
        ));

        let many: String = (0..16)
            .map(|i| format!("l{i}=\"v\""))
            .collect::<Vec<_>>()
            .join(",");
        let mut push = PushRequest {
            streams: vec![
                Stream {
                    labels: format!("{{{many}}}"),
                    entries: vec![Entry::default()],
                    hash: 0,
                },
                Stream {
                    labels: r#"{app="ok"}"#.into(),
                    entries: vec![Entry {
                        line: "é".repeat(MAX_LINE_BYTES),
                        ..Default::default()
                    }],
                    hash: 0,
                },
            ],
        };
        let (bad, truncated) = check_streams(&mut push);
        assert_eq!(bad.len(), 1);
        assert!(bad[0].contains("16 labels"), "{bad:?}");
        assert_eq!(truncated, 1);
        assert_eq!(push.streams.len(), 1);
        assert_eq!(push.streams[0].entries[0].line.len(), MAX_LINE_BYTES);
    }
}
