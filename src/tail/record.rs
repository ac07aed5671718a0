//! One accepted request's spans as the spool stores them and the buffer holds them.
//!
//! A request's resources and scopes are written once (envelopes), and each trace's spans
//! as parts that name their envelope, so a trace held in memory costs its spans' encoded
//! bytes and a share of the envelopes, not a copy of every resource per trace.
//!
//! Layout (integers little-endian):
//! `accepted_at_ms: i64 | envelopes: u32 | envelopes × (len: u32, ResourceSpans with one
//! empty ScopeSpans) | until the end: trace_id: [u8; 16], parts: u32, parts × (envelope:
//! u32, len: u32, ScopeSpans holding only spans)`.

use bytes::{Buf, BufMut, Bytes};
use jiff::Timestamp;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;

/// A trace's spans of one resource and scope, and their envelope.
#[derive(Debug, Clone)]
pub struct Part {
    /// The resource and scope (a `ResourceSpans` with one `ScopeSpans` without spans).
    pub envelope: Bytes,
    /// The spans (a `ScopeSpans` with only its spans).
    pub spans: Bytes,
    /// What the part is counted as in the buffer: its spans and its share of the envelope.
    pub bytes: u64,
}

/// One trace's parts of a record.
#[derive(Debug, Clone)]
pub struct TraceParts {
    /// The trace.
    pub id: [u8; 16],
    /// Its spans, by envelope.
    pub parts: Vec<Part>,
}

/// A decoded record.
#[derive(Debug, Clone)]
pub struct Record {
    /// When frugal accepted the request.
    pub accepted_at: Timestamp,
    /// Its traces.
    pub traces: Vec<TraceParts>,
}

/// A trace's spans of one request, by envelope number.
type Split = Vec<(u32, Vec<Span>)>;

/// A request being split by trace: envelopes in request order, and each trace's spans
/// by envelope.
#[derive(Default)]
pub struct Builder {
    envelopes: Vec<ResourceSpans>,
    traces: Vec<([u8; 16], Split)>,
    index: std::collections::HashMap<[u8; 16], usize>,
}

impl Builder {
    /// Starts an envelope (a resource and scope of the request); returns its number.
    pub fn envelope(&mut self, rs: &ResourceSpans, ss: &ScopeSpans) -> u32 {
        self.envelopes.push(ResourceSpans {
            resource: rs.resource.clone(),
            schema_url: rs.schema_url.clone(),
            scope_spans: vec![ScopeSpans {
                scope: ss.scope.clone(),
                schema_url: ss.schema_url.clone(),
                spans: Vec::new(),
            }],
        });
        (self.envelopes.len() - 1) as u32
    }

    /// Adds a span of trace `id` under envelope `env`.
    pub fn span(&mut self, id: [u8; 16], env: u32, span: Span) {
        let at = *self.index.entry(id).or_insert_with(|| {
            self.traces.push((id, Vec::new()));
            self.traces.len() - 1
        });
        let parts = &mut self.traces[at].1;
        match parts.last_mut() {
            Some((e, spans)) if *e == env => spans.push(span),
            _ => parts.push((env, vec![span])),
        }
    }

    /// Whether no span was added.
    pub fn is_empty(&self) -> bool {
        self.traces.is_empty()
    }

    /// The record's bytes; `size_hint` is about how many (the request's encoded size: its
    /// resources, scopes and spans appear once each here too), so the buffer is allocated
    /// once.
    pub fn encode(self, accepted_at: Timestamp, size_hint: usize) -> Bytes {
        let framing = 16 + 16 * self.envelopes.len() + 32 * self.traces.len();
        let mut buf = Vec::with_capacity(size_hint + framing);
        buf.put_i64_le(accepted_at.as_millisecond());
        buf.put_u32_le(self.envelopes.len() as u32);
        for e in &self.envelopes {
            buf.put_u32_le(e.encoded_len() as u32);
            e.encode_raw(&mut buf);
        }
        for (id, parts) in self.traces {
            buf.put_slice(&id);
            buf.put_u32_le(parts.len() as u32);
            for (env, spans) in parts {
                let ss = ScopeSpans {
                    spans,
                    ..Default::default()
                };
                buf.put_u32_le(env);
                buf.put_u32_le(ss.encoded_len() as u32);
                ss.encode_raw(&mut buf);
            }
        }
        Bytes::from(buf)
    }
}

fn take(b: &mut Bytes, n: usize) -> Option<Bytes> {
    (b.remaining() >= n).then(|| b.split_to(n))
}

fn u32_of(b: &mut Bytes) -> Option<u32> {
    (b.remaining() >= 4).then(|| b.get_u32_le())
}

/// Reads a record into parts of their own. `None` if it is malformed.
pub fn decode(mut record: Bytes) -> Option<Record> {
    if record.remaining() < 12 {
        return None;
    }
    let accepted_at = Timestamp::from_millisecond(record.get_i64_le()).ok()?;
    let n = u32_of(&mut record)? as usize;
    // Parts are copied out of the record: a slice would keep the whole record in memory
    // as long as any one of its traces waits, and the buffer could not count what it
    // holds. An envelope is copied once and shared by the parts that name it.
    let mut envelopes = Vec::with_capacity(n.min(record.remaining() / 4));
    for _ in 0..n {
        let len = u32_of(&mut record)? as usize;
        envelopes.push(Bytes::copy_from_slice(&take(&mut record, len)?));
    }
    let mut traces = Vec::new();
    let mut uses = vec![0u64; envelopes.len()];
    while record.has_remaining() {
        let id = <[u8; 16]>::try_from(&take(&mut record, 16)?[..]).ok()?;
        let n = u32_of(&mut record)? as usize;
        let mut parts = Vec::with_capacity(n.min(record.remaining() / 8));
        for _ in 0..n {
            let env = u32_of(&mut record)? as usize;
            let len = u32_of(&mut record)? as usize;
            let spans = Bytes::copy_from_slice(&take(&mut record, len)?);
            *uses.get_mut(env)? += 1;
            parts.push(Part {
                envelope: envelopes[env].clone(),
                spans,
                bytes: env as u64,
            });
        }
        traces.push(TraceParts { id, parts });
    }
    // Each part counts its spans and its share of its envelope.
    for t in &mut traces {
        for p in &mut t.parts {
            let env = p.bytes as usize;
            p.bytes = p.spans.len() as u64 + envelopes[env].len() as u64 / uses[env].max(1);
        }
    }
    Some(Record {
        accepted_at,
        traces,
    })
}

/// A trace's parts as one request (decoding them).
pub fn expand<'a>(parts: impl IntoIterator<Item = &'a Part>) -> ExportTraceServiceRequest {
    let mut req = ExportTraceServiceRequest::default();
    for p in parts {
        let (Ok(mut rs), Ok(ss)) = (
            ResourceSpans::decode(p.envelope.clone()),
            ScopeSpans::decode(p.spans.clone()),
        ) else {
            tracing::error!("unreadable buffered spans skipped");
            continue;
        };
        if let Some(scope) = rs.scope_spans.first_mut() {
            scope.spans = ss.spans;
        }
        req.resource_spans.push(rs);
    }
    req
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{span, traces};

    #[test]
    fn a_request_split_by_trace_comes_back_whole_per_trace() {
        let req = traces(
            "web",
            vec![span(1, 1, false), span(2, 1, true), span(1, 2, false)],
        );
        let mut b = Builder::default();
        let rs = &req.resource_spans[0];
        let env = b.envelope(rs, &rs.scope_spans[0]);
        for s in rs.scope_spans[0].spans.clone() {
            let id = <[u8; 16]>::try_from(&s.trace_id[..]).unwrap();
            b.span(id, env, s);
        }
        let at: Timestamp = "2026-12-01T00:00:01.5Z".parse().unwrap();
        let bytes = b.encode(at, 0);
        let r = decode(bytes.clone()).unwrap();
        assert_eq!(r.accepted_at, at);
        assert_eq!(r.traces.len(), 2);
        let one = expand(&r.traces[0].parts);
        let want = traces("web", vec![span(1, 1, false), span(1, 2, false)]);
        assert_eq!(one, want);
        assert_eq!(
            expand(&r.traces[1].parts),
            traces("web", vec![span(2, 1, true)])
        );
        // Parts count the envelope once between them.
        let counted: u64 = r
            .traces
            .iter()
            .flat_map(|t| &t.parts)
            .map(|p| p.bytes)
            .sum();
        assert!(counted < bytes.len() as u64, "{counted} {}", bytes.len());
        assert!(decode(bytes.slice(..bytes.len() - 1)).is_none(), "torn");
    }
}
