//! One accepted request's spans as the spool stores them, and where the buffer finds a
//! trace's spans in it.
//!
//! A request's resources and scopes are written once (envelopes), and each trace's spans
//! as parts that name their envelope, one trace after the other. The buffer holds a
//! [`Chunk`] per trace and record: where that trace's parts are in the record, and the
//! record's envelopes (small, shared by its chunks). The spans themselves stay in the
//! spool, which has them on disk anyway, and are read back at the trace's decision: a
//! waiting span costs memory only for its share of the chunk.
//!
//! Layout (integers little-endian):
//! `accepted_at_ms: i64 | envelopes: u32 | envelopes × (len: u32, ResourceSpans with one
//! empty ScopeSpans) | until the end: trace_id: [u8; 16], parts: u32, parts × (envelope:
//! u32, len: u32, ScopeSpans holding only spans)`.

use std::sync::Arc;

use bytes::{BufMut, Bytes};
use jiff::Timestamp;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;

use crate::store::{RecordId, SpoolError};

/// One trace's spans in one spool record.
#[derive(Debug, Clone)]
pub struct Chunk {
    /// The record.
    pub record: RecordId,
    /// Where the trace's parts begin in the record.
    pub offset: u32,
    /// How many bytes they take.
    pub len: u32,
    /// The record's envelopes, shared by its chunks.
    pub envelopes: Arc<[Bytes]>,
    /// What the chunk is counted as in the buffer: its spans' encoded bytes and its share
    /// of the envelopes it names.
    pub bytes: u64,
}

/// A decoded record: when it was accepted, and its traces' chunks in record order.
#[derive(Debug, Clone)]
pub struct Record {
    /// When frugal accepted the request.
    pub accepted_at: Timestamp,
    /// Each trace and where its spans are.
    pub traces: Vec<([u8; 16], Chunk)>,
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

/// Reads a record's framing with a position, never past its end.
struct Cursor<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let out = self.data.get(self.at..end)?;
        self.at = end;
        Some(out)
    }

    fn u32(&mut self) -> Option<u32> {
        let b = self.take(4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn done(&self) -> bool {
        self.at >= self.data.len()
    }
}

/// Each part in `parts` (a chunk's bytes): its envelope number and its spans.
fn parts_of(parts: &[u8]) -> impl Iterator<Item = Option<(usize, &[u8])>> {
    let mut c = Cursor { data: parts, at: 0 };
    std::iter::from_fn(move || {
        if c.done() {
            return None;
        }
        let part = (|| {
            let env = c.u32()? as usize;
            let len = c.u32()? as usize;
            Some((env, c.take(len)?))
        })();
        if part.is_none() {
            c.at = c.data.len();
        }
        Some(part)
    })
}

/// Reads spool record `id` into its traces' chunks (the envelopes are copied out, the
/// spans stay where they are). `None` if it is malformed.
pub fn decode(record: &[u8], id: RecordId) -> Option<Record> {
    let mut c = Cursor {
        data: record,
        at: 0,
    };
    let ms = i64::from_le_bytes(c.take(8)?.try_into().ok()?);
    let accepted_at = Timestamp::from_millisecond(ms).ok()?;
    let n = c.u32()? as usize;
    let mut envelopes = Vec::with_capacity(n.min(record.len() / 4));
    for _ in 0..n {
        let len = c.u32()? as usize;
        envelopes.push(Bytes::copy_from_slice(c.take(len)?));
    }
    // Where each trace's parts are; then how many parts name each envelope.
    let mut spans = Vec::new();
    let mut uses = vec![0u64; envelopes.len()];
    while !c.done() {
        let trace = <[u8; 16]>::try_from(c.take(16)?).ok()?;
        let n = c.u32()?;
        let offset = c.at;
        for _ in 0..n {
            *uses.get_mut(c.u32()? as usize)? += 1;
            let len = c.u32()? as usize;
            c.take(len)?;
        }
        spans.push((trace, offset, c.at - offset));
    }
    let envelopes: Arc<[Bytes]> = envelopes.into();
    let mut traces = Vec::with_capacity(spans.len());
    for (trace, offset, len) in spans {
        let parts = &record[offset..offset + len];
        // Each part counts its spans and its share of its envelope.
        let bytes = parts_of(parts)
            .flatten()
            .map(|(env, s)| s.len() as u64 + envelopes[env].len() as u64 / uses[env].max(1))
            .sum();
        traces.push((
            trace,
            Chunk {
                record: id,
                offset: u32::try_from(offset).ok()?,
                len: u32::try_from(len).ok()?,
                envelopes: envelopes.clone(),
                bytes,
            },
        ));
    }
    Some(Record {
        accepted_at,
        traces,
    })
}

/// A trace's chunks as one request, their spans read with `read` (from the spool, or
/// from the record in hand). What cannot be read or decoded is logged and skipped.
pub fn expand<'a>(
    chunks: impl IntoIterator<Item = &'a Chunk>,
    read: impl Fn(&Chunk) -> Result<Bytes, SpoolError>,
) -> ExportTraceServiceRequest {
    let mut req = ExportTraceServiceRequest::default();
    for c in chunks {
        let parts = match read(c) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "buffered spans could not be read from the spool; skipped");
                continue;
            }
        };
        for part in parts_of(&parts) {
            let decoded = part.and_then(|(env, spans)| {
                let mut rs = ResourceSpans::decode(c.envelopes.get(env)?.clone()).ok()?;
                let ss = ScopeSpans::decode(spans).ok()?;
                if let Some(scope) = rs.scope_spans.first_mut() {
                    scope.spans = ss.spans;
                }
                Some(rs)
            });
            match decoded {
                Some(rs) => req.resource_spans.push(rs),
                None => tracing::error!(record = c.record, "unreadable buffered spans skipped"),
            }
        }
    }
    req
}

/// Reads a chunk from its record's bytes in hand.
pub fn from_record(record: &Bytes) -> impl Fn(&Chunk) -> Result<Bytes, SpoolError> + '_ {
    move |c| {
        let from = c.offset as usize;
        let to = from + c.len as usize;
        if to > record.len() {
            return Err(SpoolError::not_held(c.record, c.offset, c.len));
        }
        Ok(record.slice(from..to))
    }
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
        let r = decode(&bytes, 7).unwrap();
        assert_eq!(r.accepted_at, at);
        assert_eq!(r.traces.len(), 2);
        assert!(r.traces.iter().all(|(_, c)| c.record == 7));
        let read = from_record(&bytes);
        let one = expand([&r.traces[0].1], &read);
        let want = traces("web", vec![span(1, 1, false), span(1, 2, false)]);
        assert_eq!(one, want);
        assert_eq!(
            expand([&r.traces[1].1], &read),
            traces("web", vec![span(2, 1, true)])
        );
        // Chunks count the envelope once between them.
        let counted: u64 = r.traces.iter().map(|(_, c)| c.bytes).sum();
        assert!(counted < bytes.len() as u64, "{counted} {}", bytes.len());
        let spans: usize = [span(1, 1, false), span(2, 1, true), span(1, 2, false)]
            .iter()
            .map(|s| s.encoded_len())
            .sum();
        assert!(counted > spans as u64, "{counted} {spans}");
        assert!(decode(&bytes[..bytes.len() - 1], 7).is_none(), "torn");
    }
}
