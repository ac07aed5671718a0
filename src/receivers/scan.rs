//! What an OTLP request holds, counted on its encoding before anything is decoded: a walk
//! over the protobuf wire format (or, for OTLP/JSON, over the JSON text) that allocates
//! nothing, counts resources, scopes, items (spans, log records, data points), key-value
//! pairs and how deep values nest, and estimates the memory the decoded request would
//! take. A request over `ingest.max_per_request` is refused before it costs anything: a
//! 16 KB gzip of 8.3 million empty `ResourceSpans` would otherwise decode to 1.5 GB.
//!
//! The field numbers are OTLP's (`opentelemetry/proto/**/*.proto`, the same the
//! `opentelemetry-proto` crate's generated types carry). Fields frugal does not know are
//! skipped as protobuf skips them; only what the decoder would allocate is counted.

use std::mem::size_of;

use opentelemetry_proto::tonic::common::v1::{AnyValue, EntityRef, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::exponential_histogram_data_point::Buckets;
use opentelemetry_proto::tonic::metrics::v1::summary_data_point::ValueAtQuantile;
use opentelemetry_proto::tonic::metrics::v1::{
    Exemplar, ExponentialHistogramDataPoint, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, SummaryDataPoint,
};
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

use crate::ingest::IngestError;
use crate::model::Signal;
use crate::policy::MaxPerRequest;

/// What a request holds, and the memory its decoded form is estimated to take.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Census {
    /// `ResourceSpans`, `ResourceLogs` or `ResourceMetrics`.
    pub resources: u64,
    /// `ScopeSpans`, `ScopeLogs` or `ScopeMetrics`.
    pub scopes: u64,
    /// Spans, log records or data points.
    pub items: u64,
    /// Key-value pairs anywhere (attributes, nested maps, metadata).
    pub attributes: u64,
    /// The deepest value: 1 for a plain attribute value, one more per enclosing list or map.
    pub depth: u32,
    /// Estimated bytes of memory the decoded request takes (for OTLP/JSON, with the JSON
    /// tree it is decoded through).
    pub decoded_bytes: u64,
}

impl Census {
    /// Refuses a request holding more than `limits` allow (413, naming the policy key).
    pub fn check(&self, limits: &MaxPerRequest, signal: Signal) -> Result<(), IngestError> {
        let over = [
            (self.resources, limits.resources, "resources", "resources"),
            (self.scopes, limits.scopes, "scopes", "scopes"),
            (self.items, limits.items, item_noun(signal), "items"),
            (
                self.attributes,
                limits.attributes,
                "attributes",
                "attributes",
            ),
        ]
        .into_iter()
        .find(|(n, max, _, _)| n > max);
        match over {
            Some((n, max, noun, key)) => Err(IngestError::TooLarge(format!(
                "the request holds {n} {noun}; frugal accepts at most {max} per request \
                 (ingest.max_per_request.{key}): send smaller batches"
            ))),
            None => Ok(()),
        }
    }
}

/// What a signal's items are called in messages.
pub fn item_noun(signal: Signal) -> &'static str {
    match signal {
        Signal::Traces => "spans",
        Signal::Logs => "log records",
        Signal::Metrics => "data points",
    }
}

/// Counts what an OTLP protobuf export request of `signal` holds, refusing malformed
/// encodings (400) and values nested deeper than `limits.depth` (400) as soon as it meets
/// them. The other limits are checked with [`Census::check`], so the error can say how
/// much the request holds.
pub fn protobuf(
    signal: Signal,
    body: &[u8],
    limits: &MaxPerRequest,
) -> Result<Census, IngestError> {
    let top = match signal {
        Signal::Traces => Msg::TraceRequest,
        Signal::Logs => Msg::LogsRequest,
        Signal::Metrics => Msg::MetricsRequest,
    };
    let mut w = Walker {
        census: Census::default(),
        in_vectors: 0,
        on_heap: 0,
        max_depth: limits.depth,
    };
    w.walk(top, body, 0).map_err(|e| match e {
        Refusal::Malformed(m) => IngestError::BadRequest(format!("malformed OTLP protobuf: {m}")),
        Refusal::TooDeep => too_deep(limits.depth),
    })?;
    let mut census = w.census;
    // Vectors grow by doubling as the decoder pushes: up to twice their elements.
    census.decoded_bytes = w.in_vectors.saturating_mul(2).saturating_add(w.on_heap);
    Ok(census)
}

fn too_deep(max: u32) -> IngestError {
    IngestError::BadRequest(format!(
        "the request nests attribute or body values more than {max} deep; frugal accepts at \
         most {max} (ingest.max_per_request.depth)"
    ))
}

/// The OTLP messages the walk knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Msg {
    TraceRequest,
    ResourceSpans,
    ScopeSpans,
    Span,
    Event,
    Link,
    Status,
    LogsRequest,
    ResourceLogs,
    ScopeLogs,
    LogRecord,
    MetricsRequest,
    ResourceMetrics,
    ScopeMetrics,
    Metric,
    Gauge,
    Sum,
    Histogram,
    ExponentialHistogram,
    Summary,
    NumberDataPoint,
    HistogramDataPoint,
    ExponentialHistogramDataPoint,
    Buckets,
    SummaryDataPoint,
    ValueAtQuantile,
    Exemplar,
    Resource,
    Scope,
    EntityRef,
    KeyValue,
    AnyValue,
    ArrayValue,
    KeyValueList,
}

/// What the decoder does with a field.
#[derive(Debug, Clone, Copy)]
enum Field {
    /// A submessage held inline in its parent (optional or one of a oneof).
    One(Msg),
    /// An element of a repeated message field (a vector's element).
    Many(Msg),
    /// A string or bytes field: its length on the heap.
    Heap,
    /// An element of a repeated string: a `String` in a vector, and its length.
    ManyHeap,
    /// A repeated fixed64 or double (packed or not).
    ManyFixed64,
    /// A repeated varint (packed or not).
    ManyVarint,
    /// A scalar, or a field frugal does not know: skipped.
    Skip,
}

/// The schema: what field `tag` of message `m` is.
#[inline(always)]
fn field(m: Msg, tag: u32) -> Field {
    use Field::{Heap, Many, ManyFixed64, ManyHeap, ManyVarint, One, Skip};
    use Msg as M;
    match (m, tag) {
        (M::TraceRequest, 1) => Many(M::ResourceSpans),
        (M::ResourceSpans, 1) => One(M::Resource),
        (M::ResourceSpans, 2) => Many(M::ScopeSpans),
        (M::ScopeSpans, 1) => One(M::Scope),
        (M::ScopeSpans, 2) => Many(M::Span),
        (M::Span, 1..=5) | (M::Event, 2) | (M::Link, 1..=3) | (M::Status, 2) => Heap,
        (M::Span, 9) | (M::Event, 3) | (M::Link, 4) => Many(M::KeyValue),
        (M::Span, 11) => Many(M::Event),
        (M::Span, 13) => Many(M::Link),
        (M::Span, 15) => One(M::Status),
        (M::LogsRequest, 1) => Many(M::ResourceLogs),
        (M::ResourceLogs, 1) => One(M::Resource),
        (M::ResourceLogs, 2) => Many(M::ScopeLogs),
        (M::ScopeLogs, 1) => One(M::Scope),
        (M::ScopeLogs, 2) => Many(M::LogRecord),
        (M::LogRecord, 3 | 9 | 10 | 12) => Heap,
        (M::LogRecord, 5) => One(M::AnyValue),
        (M::LogRecord, 6) => Many(M::KeyValue),
        (M::MetricsRequest, 1) => Many(M::ResourceMetrics),
        (M::ResourceMetrics, 1) => One(M::Resource),
        (M::ResourceMetrics, 2) => Many(M::ScopeMetrics),
        (M::ScopeMetrics, 1) => One(M::Scope),
        (M::ScopeMetrics, 2) => Many(M::Metric),
        (M::Metric, 1..=3) => Heap,
        (M::Metric, 5) => One(M::Gauge),
        (M::Metric, 7) => One(M::Sum),
        (M::Metric, 9) => One(M::Histogram),
        (M::Metric, 10) => One(M::ExponentialHistogram),
        (M::Metric, 11) => One(M::Summary),
        (M::Metric, 12) => Many(M::KeyValue),
        (M::Gauge | M::Sum, 1) => Many(M::NumberDataPoint),
        (M::Histogram, 1) => Many(M::HistogramDataPoint),
        (M::ExponentialHistogram, 1) => Many(M::ExponentialHistogramDataPoint),
        (M::Summary, 1) => Many(M::SummaryDataPoint),
        (M::NumberDataPoint, 7)
        | (M::HistogramDataPoint, 9)
        | (M::ExponentialHistogramDataPoint, 1)
        | (M::SummaryDataPoint, 7)
        | (M::Exemplar, 7) => Many(M::KeyValue),
        (M::NumberDataPoint, 5)
        | (M::HistogramDataPoint, 8)
        | (M::ExponentialHistogramDataPoint, 11) => Many(M::Exemplar),
        (M::HistogramDataPoint, 6 | 7) => ManyFixed64,
        (M::ExponentialHistogramDataPoint, 8 | 9) => One(M::Buckets),
        (M::Buckets, 2) => ManyVarint,
        (M::SummaryDataPoint, 6) => Many(M::ValueAtQuantile),
        (M::Exemplar, 4 | 5) => Heap,
        (M::ResourceSpans | M::ScopeSpans, 3)
        | (M::ResourceLogs | M::ScopeLogs, 3)
        | (M::ResourceMetrics | M::ScopeMetrics, 3) => Heap,
        (M::Resource, 1) | (M::Scope, 3) | (M::KeyValueList, 1) => Many(M::KeyValue),
        (M::Resource, 3) => Many(M::EntityRef),
        (M::Scope, 1 | 2) | (M::EntityRef, 1 | 2) | (M::KeyValue, 1) | (M::AnyValue, 1 | 7) => Heap,
        (M::EntityRef, 3 | 4) => ManyHeap,
        (M::KeyValue, 2) => One(M::AnyValue),
        (M::AnyValue, 5) => One(M::ArrayValue),
        (M::AnyValue, 6) => One(M::KeyValueList),
        (M::ArrayValue, 1) => Many(M::AnyValue),
        _ => Skip,
    }
}

/// The size of an element of a vector of `m` (the struct the decoder pushes).
fn element_size(m: Msg) -> u64 {
    let s = match m {
        Msg::ResourceSpans => size_of::<ResourceSpans>(),
        Msg::ScopeSpans => size_of::<ScopeSpans>(),
        Msg::Span => size_of::<Span>(),
        Msg::Event => size_of::<Event>(),
        Msg::Link => size_of::<Link>(),
        Msg::ResourceLogs => size_of::<ResourceLogs>(),
        Msg::ScopeLogs => size_of::<ScopeLogs>(),
        Msg::LogRecord => size_of::<LogRecord>(),
        Msg::ResourceMetrics => size_of::<ResourceMetrics>(),
        Msg::ScopeMetrics => size_of::<ScopeMetrics>(),
        Msg::Metric => size_of::<Metric>(),
        Msg::NumberDataPoint => size_of::<NumberDataPoint>(),
        Msg::HistogramDataPoint => size_of::<HistogramDataPoint>(),
        Msg::ExponentialHistogramDataPoint => size_of::<ExponentialHistogramDataPoint>(),
        Msg::Buckets => size_of::<Buckets>(),
        Msg::SummaryDataPoint => size_of::<SummaryDataPoint>(),
        Msg::ValueAtQuantile => size_of::<ValueAtQuantile>(),
        Msg::Exemplar => size_of::<Exemplar>(),
        Msg::EntityRef => size_of::<EntityRef>(),
        Msg::KeyValue => size_of::<KeyValue>(),
        Msg::AnyValue => size_of::<AnyValue>(),
        // Held inline in their parents, never in vectors.
        Msg::TraceRequest
        | Msg::LogsRequest
        | Msg::MetricsRequest
        | Msg::Status
        | Msg::Gauge
        | Msg::Sum
        | Msg::Histogram
        | Msg::ExponentialHistogram
        | Msg::Summary
        | Msg::Resource
        | Msg::Scope
        | Msg::ArrayValue
        | Msg::KeyValueList => 0,
    };
    s as u64
}

/// What a message counts as in the census.
fn count(census: &mut Census, m: Msg) {
    match m {
        Msg::ResourceSpans | Msg::ResourceLogs | Msg::ResourceMetrics => census.resources += 1,
        Msg::ScopeSpans | Msg::ScopeLogs | Msg::ScopeMetrics => census.scopes += 1,
        Msg::Span
        | Msg::LogRecord
        | Msg::NumberDataPoint
        | Msg::HistogramDataPoint
        | Msg::ExponentialHistogramDataPoint
        | Msg::SummaryDataPoint => census.items += 1,
        Msg::KeyValue => census.attributes += 1,
        _ => {}
    }
}

/// Heap bytes of a string or byte vector of `len` bytes (allocations come in words).
fn heap(len: usize) -> u64 {
    (len as u64).next_multiple_of(8)
}

/// Why a walk stopped.
enum Refusal {
    Malformed(String),
    TooDeep,
}

/// The most groups (a deprecated protobuf encoding, skipped in unknown fields) nested in
/// each other, as the decoder allows.
const MAX_GROUP_NESTING: u32 = 100;

struct Walker {
    census: Census,
    /// Bytes of structs pushed on vectors.
    in_vectors: u64,
    /// Bytes of strings and byte vectors.
    on_heap: u64,
    max_depth: u32,
}

impl Walker {
    /// Walks the fields of one `m` encoded in `buf`; `depth` is how deep values nest here.
    fn walk(&mut self, m: Msg, mut buf: &[u8], depth: u32) -> Result<(), Refusal> {
        while !buf.is_empty() {
            let (tag, wire) = key(&mut buf)?;
            match (field(m, tag), wire) {
                (f @ (Field::One(sub) | Field::Many(sub)), 2) => {
                    let inner = length_delimited(&mut buf)?;
                    if matches!(f, Field::Many(_)) {
                        self.in_vectors += element_size(sub);
                    }
                    count(&mut self.census, sub);
                    let d = depth + u32::from(sub == Msg::AnyValue);
                    if d > self.max_depth {
                        return Err(Refusal::TooDeep);
                    }
                    self.census.depth = self.census.depth.max(d);
                    self.walk(sub, inner, d)?;
                }
                (Field::One(_) | Field::Many(_), w) => {
                    return Err(Refusal::Malformed(format!(
                        "field {tag} of {m:?} is a message but has wire type {w}"
                    )));
                }
                (Field::Heap, 2) => self.on_heap += heap(length_delimited(&mut buf)?.len()),
                (Field::ManyHeap, 2) => {
                    self.in_vectors += size_of::<String>() as u64;
                    self.on_heap += heap(length_delimited(&mut buf)?.len());
                }
                (Field::ManyFixed64, 2) => {
                    self.in_vectors += length_delimited(&mut buf)?.len() as u64;
                }
                (Field::ManyVarint, 2) => {
                    // One u64 per varint: one per byte without the continuation bit.
                    let packed = length_delimited(&mut buf)?;
                    let n = packed.iter().filter(|b| **b < 0x80).count() as u64;
                    self.in_vectors += 8 * n;
                }
                (Field::ManyFixed64 | Field::ManyVarint, w) => {
                    self.in_vectors += 8;
                    skip(w, tag, &mut buf, 0)?;
                }
                (_, w) => skip(w, tag, &mut buf, 0)?,
            }
        }
        Ok(())
    }
}

#[cold]
fn truncated() -> Refusal {
    Refusal::Malformed("the message ends in the middle of a field".into())
}

#[inline(always)]
fn varint(buf: &mut &[u8]) -> Result<u64, Refusal> {
    // Most varints in OTLP (keys, lengths) are one byte.
    if let Some((&b, rest)) = buf.split_first()
        && b < 0x80
    {
        *buf = rest;
        return Ok(u64::from(b));
    }
    varint_slow(buf)
}

#[inline(never)]
fn varint_slow(buf: &mut &[u8]) -> Result<u64, Refusal> {
    let mut v: u64 = 0;
    for i in 0..10 {
        let (&b, rest) = buf.split_first().ok_or_else(truncated)?;
        *buf = rest;
        v |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            return Ok(v);
        }
    }
    Err(Refusal::Malformed("a varint longer than 10 bytes".into()))
}

#[inline(always)]
fn key(buf: &mut &[u8]) -> Result<(u32, u8), Refusal> {
    let k = varint(buf)?;
    let tag = u32::try_from(k >> 3)
        .ok()
        .filter(|t| *t > 0)
        .ok_or_else(|| Refusal::Malformed(format!("invalid field key {k}")))?;
    Ok((tag, (k & 7) as u8))
}

#[inline(always)]
fn advance<'a>(buf: &mut &'a [u8], n: u64) -> Result<&'a [u8], Refusal> {
    let n = usize::try_from(n).map_err(|_| truncated())?;
    if n > buf.len() {
        return Err(truncated());
    }
    let (head, rest) = buf.split_at(n);
    *buf = rest;
    Ok(head)
}

#[inline(always)]
fn length_delimited<'a>(buf: &mut &'a [u8]) -> Result<&'a [u8], Refusal> {
    let n = varint(buf)?;
    advance(buf, n)
}

/// Skips a field of wire type `wire` as the decoder skips fields it does not know.
fn skip(wire: u8, tag: u32, buf: &mut &[u8], nesting: u32) -> Result<(), Refusal> {
    match wire {
        0 => varint(buf).map(drop),
        1 => advance(buf, 8).map(drop),
        2 => length_delimited(buf).map(drop),
        5 => advance(buf, 4).map(drop),
        3 => {
            if nesting >= MAX_GROUP_NESTING {
                return Err(Refusal::Malformed("groups nested too deep".into()));
            }
            loop {
                let (t, w) = key(buf)?;
                if w == 4 {
                    return if t == tag {
                        Ok(())
                    } else {
                        Err(Refusal::Malformed("a group ends with the wrong tag".into()))
                    };
                }
                skip(w, t, buf, nesting + 1)?;
            }
        }
        w => Err(Refusal::Malformed(format!("invalid wire type {w}"))),
    }
}

// ---- OTLP/JSON --------------------------------------------------------------------------

/// The deepest JSON the decoder reads (serde_json's own recursion limit).
const MAX_JSON_NESTING: usize = 128;

/// Memory of one element of a JSON array as serde_json holds it (a `Value` in a vector
/// that grows by doubling).
const JSON_ARRAY_ELEMENT: u64 = 2 * size_of::<serde_json::Value>() as u64;

/// Memory of one node of the B-tree a JSON object's members are held in: eleven keys and
/// values, and a few words. Even an object of one member takes a whole node, which makes
/// OTLP/JSON's many small objects (every attribute is two) cost 10 to 20 times their text.
const JSON_NODE: u64 = (11 * (size_of::<String>() + size_of::<serde_json::Value>()) + 16) as u64;

/// Memory of the B-tree nodes of an object of `members` (none when it is empty; nodes are
/// split half-full past eleven).
fn json_object(members: u64) -> u64 {
    let nodes = match members {
        0 => 0,
        1..=11 => 1,
        n => n.div_ceil(6) + 1,
    };
    nodes * JSON_NODE
}

/// What the members under a JSON key are, as far as counting goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Under {
    Other,
    /// The list of resources.
    Resources,
    /// A list of scopes.
    Scopes,
    /// A list of items (spans, log records, data points).
    Items,
    /// A list of key-value pairs.
    KeyValues,
    /// A list of values (an `arrayValue`'s `values`).
    Values,
    /// A value (`value`, `body`).
    Value,
    /// An `arrayValue` (false) or `kvlistValue` (true): one level deeper.
    Nested(bool),
    /// A list of other messages, each a struct of this size.
    Messages(u64),
    /// A list of numbers held as 8-byte values.
    Numbers,
    /// A list of strings.
    Strings,
}

fn json_key(name: &str, signal: Signal, container: Under) -> Under {
    let of = |traces: usize, logs: usize, metrics: usize| match signal {
        Signal::Traces => traces as u64,
        Signal::Logs => logs as u64,
        Signal::Metrics => metrics as u64,
    };
    match name {
        "resourceSpans" | "resourceLogs" | "resourceMetrics" => Under::Resources,
        "scopeSpans" | "scopeLogs" | "scopeMetrics" => Under::Scopes,
        "spans" | "logRecords" | "dataPoints" => Under::Items,
        "attributes" | "filteredAttributes" | "metadata" => Under::KeyValues,
        "values" => match container {
            Under::Nested(false) => Under::Values,
            Under::Nested(true) => Under::KeyValues,
            _ => Under::Other,
        },
        "value" | "body" => Under::Value,
        "arrayValue" => Under::Nested(false),
        "kvlistValue" => Under::Nested(true),
        "events" => Under::Messages(of(size_of::<Event>(), 0, 0)),
        "links" => Under::Messages(of(size_of::<Link>(), 0, 0)),
        "metrics" => Under::Messages(size_of::<Metric>() as u64),
        "exemplars" => Under::Messages(size_of::<Exemplar>() as u64),
        "quantileValues" => Under::Messages(size_of::<ValueAtQuantile>() as u64),
        "entityRefs" => Under::Messages(size_of::<EntityRef>() as u64),
        "bucketCounts" | "explicitBounds" => Under::Numbers,
        "idKeys" | "descriptionKeys" => Under::Strings,
        _ => Under::Other,
    }
}

/// The struct one element of a list under `key` decodes to.
fn json_element_size(key: Under, signal: Signal) -> u64 {
    let s = match (key, signal) {
        (Under::Resources, Signal::Traces) => size_of::<ResourceSpans>(),
        (Under::Resources, Signal::Logs) => size_of::<ResourceLogs>(),
        (Under::Resources, Signal::Metrics) => size_of::<ResourceMetrics>(),
        (Under::Scopes, Signal::Traces) => size_of::<ScopeSpans>(),
        (Under::Scopes, Signal::Logs) => size_of::<ScopeLogs>(),
        (Under::Scopes, Signal::Metrics) => size_of::<ScopeMetrics>(),
        (Under::Items, Signal::Traces) => size_of::<Span>(),
        (Under::Items, Signal::Logs) => size_of::<LogRecord>(),
        // The largest of the data points: the list's type is its metric's.
        (Under::Items, Signal::Metrics) => size_of::<ExponentialHistogramDataPoint>()
            .max(size_of::<HistogramDataPoint>())
            .max(size_of::<NumberDataPoint>())
            .max(size_of::<SummaryDataPoint>()),
        (Under::KeyValues, _) => size_of::<KeyValue>(),
        (Under::Values, _) => size_of::<AnyValue>(),
        (Under::Messages(s), _) => return s,
        (Under::Numbers, _) => 8,
        (Under::Strings, _) => size_of::<String>(),
        _ => 0,
    };
    s as u64
}

struct Frame {
    /// An object (else an array).
    object: bool,
    /// The key this container is the value of (for arrays, what their elements are).
    key: Under,
    /// How many `arrayValue`/`kvlistValue` objects enclose it (itself included).
    nested: u32,
    /// Members so far (objects).
    members: u64,
}

/// Counts what an OTLP/JSON export request of `signal` holds, with a scan of its text
/// (keys as the OTLP JSON mapping spells them), refusing JSON nested deeper than the
/// decoder reads and values nested deeper than `limits.depth` as soon as it meets them.
/// The scan is not a validator: what it lets through, the decoder still checks.
pub fn json(signal: Signal, body: &[u8], limits: &MaxPerRequest) -> Result<Census, IngestError> {
    let malformed = |m: &str| IngestError::BadRequest(format!("malformed OTLP JSON: {m}"));
    let mut census = Census::default();
    let mut stack: Vec<Frame> = Vec::new();
    // Memory of the JSON tree, of structs in vectors, of strings in the decoded messages.
    let (mut tree, mut in_vectors, mut on_heap) = (0u64, 0u64, 0u64);
    // In an object: whether the next string is a key, and the key of the value to come.
    let mut expect_key = false;
    let mut pending = Under::Other;
    let mut i = 0;
    while i < body.len() {
        let b = body[i];
        match b {
            b' ' | b'\t' | b'\n' | b'\r' | b':' => {
                i += 1;
                continue;
            }
            b',' => {
                expect_key = stack.last().is_some_and(|f| f.object);
                i += 1;
                continue;
            }
            b'}' | b']' => {
                match stack.pop() {
                    Some(f) if f.object == (b == b'}') => tree += json_object(f.members),
                    _ => return Err(malformed("unbalanced brackets")),
                }
                expect_key = false;
                i += 1;
                continue;
            }
            _ => {}
        }
        // A string that is a key.
        if b == b'"' && expect_key {
            let end = string_end(body, i).ok_or_else(|| malformed("an unterminated string"))?;
            let raw = &body[i + 1..end - 1];
            let container = stack.last().map_or(Under::Other, |f| f.key);
            pending = if raw.contains(&b'\\') {
                let name: String =
                    serde_json::from_slice(&body[i..end]).map_err(|e| malformed(&e.to_string()))?;
                json_key(&name, signal, container)
            } else {
                std::str::from_utf8(raw).map_or(Under::Other, |n| json_key(n, signal, container))
            };
            tree += heap(raw.len());
            if let Some(f) = stack.last_mut() {
                f.members += 1;
            }
            expect_key = false;
            i = end;
            continue;
        }
        // A value: what it is follows from the key it is under, or the array it is in.
        let (key, in_array) = match stack.last() {
            Some(f) if f.object => (std::mem::replace(&mut pending, Under::Other), false),
            Some(f) => (f.key, true),
            None => (Under::Other, false),
        };
        if in_array {
            tree += JSON_ARRAY_ELEMENT;
            let size = json_element_size(key, signal);
            match key {
                Under::Numbers | Under::Strings => in_vectors += size,
                _ if b == b'{' => {
                    in_vectors += size;
                    match key {
                        Under::Resources => census.resources += 1,
                        Under::Scopes => census.scopes += 1,
                        Under::Items => census.items += 1,
                        Under::KeyValues => census.attributes += 1,
                        _ => {}
                    }
                }
                _ => {}
            }
        }
        match b {
            b'{' | b'[' => {
                let parent_nested = stack.last().map_or(0, |f| f.nested);
                let object = b == b'{';
                if object && (key == Under::Value || (in_array && key == Under::Values)) {
                    let depth = parent_nested + 1;
                    if depth > limits.depth {
                        return Err(too_deep(limits.depth));
                    }
                    census.depth = census.depth.max(depth);
                }
                // A list's key says what its elements are; an object's, what it is.
                let (key, nested) = match key {
                    Under::Nested(kv) if object => (Under::Nested(kv), parent_nested + 1),
                    k if !object || !in_array => (k, parent_nested),
                    _ => (Under::Other, parent_nested),
                };
                if stack.len() >= MAX_JSON_NESTING {
                    return Err(malformed(&format!(
                        "nested more than {MAX_JSON_NESTING} levels deep"
                    )));
                }
                stack.push(Frame {
                    object,
                    key,
                    nested,
                    members: 0,
                });
                expect_key = object;
                i += 1;
            }
            b'"' => {
                let end = string_end(body, i).ok_or_else(|| malformed("an unterminated string"))?;
                // In the tree, and again in the decoded message.
                let h = heap(end - i - 2);
                tree += h;
                on_heap += h;
                i = end;
            }
            _ => {
                // A number, true, false or null: up to the next delimiter.
                let start = i;
                while i < body.len()
                    && !matches!(
                        body[i],
                        b',' | b'}' | b']' | b':' | b' ' | b'\t' | b'\n' | b'\r'
                    )
                {
                    i += 1;
                }
                if i == start {
                    return Err(malformed(&format!("unexpected byte {:?}", char::from(b))));
                }
            }
        }
    }
    census.decoded_bytes = tree
        .saturating_add(in_vectors.saturating_mul(2))
        .saturating_add(on_heap);
    Ok(census)
}

/// The index just past the string that starts at `start` (a `"`), escapes skipped.
fn string_end(body: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    while i < body.len() {
        match body[i] {
            b'"' => return Some(i + 1),
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
    None
}

/// Counts what a Prometheus remote-write 1.0 `WriteRequest` holds without decoding it:
/// series as resources, samples and native histogram samples as items, labels (exemplars'
/// too) and metadata entries as attributes; and the memory its decoded form takes.
/// Malformed encodings are refused (400) as soon as they are met.
pub fn remote_write(body: &[u8]) -> Result<Census, IngestError> {
    use crate::proto::remote_write as rw;
    use std::mem::size_of;
    let malformed =
        |m: String| IngestError::BadRequest(format!("malformed remote-write protobuf: {m}"));
    let mut c = Census {
        depth: 1,
        ..Census::default()
    };
    // Elements of repeated fields, by their in-memory size.
    let mut in_vectors: u64 = 0;
    let walk = |c: &mut Census, in_vectors: &mut u64| -> Result<(), Refusal> {
        let mut buf = body;
        while !buf.is_empty() {
            let (tag, wire) = key(&mut buf)?;
            match (tag, wire) {
                (1, 2) => {
                    let mut ts = length_delimited(&mut buf)?;
                    c.resources += 1;
                    *in_vectors += size_of::<rw::TimeSeries>() as u64;
                    while !ts.is_empty() {
                        let (tag, wire) = key(&mut ts)?;
                        match (tag, wire) {
                            (1, 2) => {
                                length_delimited(&mut ts)?;
                                c.attributes += 1;
                                *in_vectors += size_of::<rw::Label>() as u64;
                            }
                            (2, 2) => {
                                length_delimited(&mut ts)?;
                                c.items += 1;
                                *in_vectors += size_of::<rw::Sample>() as u64;
                            }
                            (3, 2) => {
                                let mut ex = length_delimited(&mut ts)?;
                                *in_vectors += size_of::<rw::Exemplar>() as u64;
                                while !ex.is_empty() {
                                    let (tag, wire) = key(&mut ex)?;
                                    if (tag, wire) == (1, 2) {
                                        c.attributes += 1;
                                        *in_vectors += size_of::<rw::Label>() as u64;
                                    }
                                    skip(wire, tag, &mut ex, 0)?;
                                }
                            }
                            (4, 2) => {
                                let h = length_delimited(&mut ts)?;
                                c.items += 1;
                                // Spans and buckets decode to at most 8 bytes per byte.
                                *in_vectors +=
                                    size_of::<rw::Histogram>() as u64 + 8 * h.len() as u64;
                            }
                            _ => skip(wire, tag, &mut ts, 0)?,
                        }
                    }
                }
                (3, 2) => {
                    length_delimited(&mut buf)?;
                    c.attributes += 1;
                    *in_vectors += size_of::<rw::MetricMetadata>() as u64;
                }
                _ => skip(wire, tag, &mut buf, 0)?,
            }
        }
        Ok(())
    };
    walk(&mut c, &mut in_vectors).map_err(|e| match e {
        Refusal::Malformed(m) => malformed(m),
        Refusal::TooDeep => malformed("nested too deep".into()),
    })?;
    // Vectors grow by doubling as the decoder pushes; strings are copied out of the body.
    c.decoded_bytes = in_vectors
        .saturating_mul(2)
        .saturating_add(body.len() as u64);
    Ok(c)
}

/// Counts what a Loki `PushRequest` holds without decoding it: streams as resources,
/// entries as items, structured-metadata pairs as attributes; and the memory its decoded
/// form takes. Malformed encodings are refused (400) as soon as they are met.
pub fn loki(body: &[u8]) -> Result<Census, IngestError> {
    use crate::proto::loki as lp;
    use std::mem::size_of;
    let mut c = Census {
        depth: 1,
        ..Census::default()
    };
    let mut in_vectors: u64 = 0;
    let mut walk = || -> Result<(), Refusal> {
        let mut buf = body;
        while !buf.is_empty() {
            let (tag, wire) = key(&mut buf)?;
            if (tag, wire) != (1, 2) {
                skip(wire, tag, &mut buf, 0)?;
                continue;
            }
            let mut stream = length_delimited(&mut buf)?;
            c.resources += 1;
            in_vectors += size_of::<lp::Stream>() as u64;
            while !stream.is_empty() {
                let (tag, wire) = key(&mut stream)?;
                if (tag, wire) != (2, 2) {
                    skip(wire, tag, &mut stream, 0)?;
                    continue;
                }
                let mut entry = length_delimited(&mut stream)?;
                c.items += 1;
                in_vectors += size_of::<lp::Entry>() as u64;
                while !entry.is_empty() {
                    let (tag, wire) = key(&mut entry)?;
                    if (tag, wire) == (3, 2) {
                        c.attributes += 1;
                        in_vectors += size_of::<lp::LabelPair>() as u64;
                    }
                    skip(wire, tag, &mut entry, 0)?;
                }
            }
        }
        Ok(())
    };
    walk().map_err(|e| match e {
        Refusal::Malformed(m) => {
            IngestError::BadRequest(format!("malformed Loki push protobuf: {m}"))
        }
        Refusal::TooDeep => IngestError::BadRequest("malformed Loki push protobuf".into()),
    })?;
    c.decoded_bytes = in_vectors
        .saturating_mul(2)
        .saturating_add(body.len() as u64);
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::defaults::DEFAULT_MAX_PER_REQUEST;
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{
        ArrayValue, InstrumentationScope, KeyValueList, any_value,
    };
    use opentelemetry_proto::tonic::metrics::v1::{
        ExponentialHistogram, Gauge, Histogram, Summary, metric,
    };
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use prost::Message;

    const LIMITS: MaxPerRequest = DEFAULT_MAX_PER_REQUEST;

    use crate::testkit::{kv, string as s};

    /// `depth` levels of values: a list holding a map holding a list ... of a string.
    fn nested(depth: u32) -> AnyValue {
        let mut v = s("leaf");
        for i in 1..depth {
            v = if i % 2 == 1 {
                AnyValue {
                    value: Some(any_value::Value::ArrayValue(ArrayValue { values: vec![v] })),
                }
            } else {
                AnyValue {
                    value: Some(any_value::Value::KvlistValue(KeyValueList {
                        values: vec![kv("k", v)],
                    })),
                }
            };
        }
        v
    }

    fn resource(service: &str) -> Option<Resource> {
        Some(Resource {
            attributes: vec![kv("service.name", s(service))],
            ..Default::default()
        })
    }

    fn span(i: u8, attrs: Vec<KeyValue>) -> Span {
        Span {
            trace_id: vec![i; 16],
            span_id: vec![i; 8],
            name: format!("span {i}"),
            attributes: attrs,
            events: vec![Event {
                name: "e".into(),
                attributes: vec![kv("x", s("y"))],
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    /// 2 resources, 3 scopes, 4 spans; 12 key-values (resources 2, scope 1, spans 5, one
    /// more inside a value nested 4 deep, events 4), depth 4.
    fn traces() -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![
                ResourceSpans {
                    resource: resource("web"),
                    scope_spans: vec![
                        ScopeSpans {
                            scope: Some(InstrumentationScope {
                                name: "a".into(),
                                attributes: vec![kv("scope.attr", s("1"))],
                                ..Default::default()
                            }),
                            spans: vec![span(1, vec![kv("deep", nested(4))]), span(2, vec![])],
                            schema_url: String::new(),
                        },
                        ScopeSpans {
                            scope: None,
                            spans: vec![span(3, vec![kv("a", s("b")), kv("c", s("d"))])],
                            schema_url: String::new(),
                        },
                    ],
                    schema_url: String::new(),
                },
                ResourceSpans {
                    resource: resource("db"),
                    scope_spans: vec![ScopeSpans {
                        scope: None,
                        spans: vec![span(4, vec![kv("e", s("f"))])],
                        schema_url: String::new(),
                    }],
                    schema_url: String::new(),
                },
            ],
        }
    }

    /// The same counts, taken from a decoded request.
    fn counted(req: &ExportTraceServiceRequest) -> (u64, u64, u64, u64) {
        fn kvs(a: &[KeyValue]) -> u64 {
            a.iter()
                .map(|kv| 1 + kv.value.as_ref().map_or(0, any))
                .sum()
        }
        fn any(v: &AnyValue) -> u64 {
            match &v.value {
                Some(any_value::Value::ArrayValue(a)) => a.values.iter().map(any).sum(),
                Some(any_value::Value::KvlistValue(l)) => kvs(&l.values),
                _ => 0,
            }
        }
        let mut c = (req.resource_spans.len() as u64, 0, 0, 0);
        for rs in &req.resource_spans {
            c.3 += rs.resource.as_ref().map_or(0, |r| kvs(&r.attributes));
            for ss in &rs.scope_spans {
                c.1 += 1;
                c.3 += ss.scope.as_ref().map_or(0, |s| kvs(&s.attributes));
                for sp in &ss.spans {
                    c.2 += 1;
                    c.3 += kvs(&sp.attributes);
                    c.3 += sp.events.iter().map(|e| kvs(&e.attributes)).sum::<u64>();
                    c.3 += sp.links.iter().map(|l| kvs(&l.attributes)).sum::<u64>();
                }
            }
        }
        c
    }

    #[test]
    fn counts_a_real_trace_request_in_protobuf_and_json_alike() {
        let req = traces();
        assert_eq!(counted(&req), (2, 3, 4, 12));
        let body = req.encode_to_vec();
        let c = protobuf(Signal::Traces, &body, &LIMITS).unwrap();
        assert_eq!(
            (c.resources, c.scopes, c.items, c.attributes, c.depth),
            (2, 3, 4, 12, 4)
        );
        assert!(c.check(&LIMITS, Signal::Traces).is_ok());
        // The decoded form is larger than the encoding, but not absurdly.
        assert!(
            c.decoded_bytes > body.len() as u64 * 2,
            "{c:?} {}",
            body.len()
        );
        assert!(
            c.decoded_bytes < body.len() as u64 * 40,
            "{c:?} {}",
            body.len()
        );

        let text = serde_json::to_vec(&req).unwrap();
        let j = json(Signal::Traces, &text, &LIMITS).unwrap();
        assert_eq!(
            (j.resources, j.scopes, j.items, j.attributes, j.depth),
            (2, 3, 4, 12, 4),
            "{}",
            String::from_utf8_lossy(&text)
        );
        // JSON is decoded through a tree as large as the messages, or larger.
        assert!(j.decoded_bytes > c.decoded_bytes, "{j:?} {c:?}");
    }

    #[test]
    fn counts_logs_and_metrics() {
        let logs = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: resource("web"),
                scope_logs: vec![ScopeLogs {
                    scope: None,
                    log_records: vec![
                        LogRecord {
                            body: Some(nested(3)),
                            attributes: vec![kv("a", s("b"))],
                            ..Default::default()
                        },
                        LogRecord::default(),
                    ],
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        };
        let c = protobuf(Signal::Logs, &logs.encode_to_vec(), &LIMITS).unwrap();
        // service.name, the body's one pair, the record's attribute.
        assert_eq!(
            (c.resources, c.scopes, c.items, c.attributes, c.depth),
            (1, 1, 2, 3, 3)
        );
        let j = json(Signal::Logs, &serde_json::to_vec(&logs).unwrap(), &LIMITS).unwrap();
        assert_eq!(
            (j.resources, j.scopes, j.items, j.attributes, j.depth),
            (1, 1, 2, 3, 3)
        );

        let point = NumberDataPoint {
            attributes: vec![kv("host", s("a"))],
            ..Default::default()
        };
        let metrics = ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: resource("web"),
                scope_metrics: vec![ScopeMetrics {
                    scope: None,
                    metrics: vec![
                        Metric {
                            name: "g".into(),
                            data: Some(metric::Data::Gauge(Gauge {
                                data_points: vec![point.clone(), point],
                            })),
                            ..Default::default()
                        },
                        Metric {
                            name: "h".into(),
                            data: Some(metric::Data::Histogram(Histogram {
                                data_points: vec![HistogramDataPoint {
                                    bucket_counts: vec![1, 2, 3],
                                    explicit_bounds: vec![1.0, 2.0],
                                    ..Default::default()
                                }],
                                aggregation_temporality: 2,
                            })),
                            ..Default::default()
                        },
                        Metric {
                            name: "e".into(),
                            data: Some(metric::Data::ExponentialHistogram(ExponentialHistogram {
                                data_points: vec![ExponentialHistogramDataPoint {
                                    positive: Some(Buckets {
                                        offset: 1,
                                        bucket_counts: vec![300, 1],
                                    }),
                                    ..Default::default()
                                }],
                                aggregation_temporality: 1,
                            })),
                            ..Default::default()
                        },
                        Metric {
                            name: "s".into(),
                            data: Some(metric::Data::Summary(Summary {
                                data_points: vec![SummaryDataPoint {
                                    quantile_values: vec![ValueAtQuantile {
                                        quantile: 0.5,
                                        value: 1.0,
                                    }],
                                    ..Default::default()
                                }],
                            })),
                            ..Default::default()
                        },
                    ],
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        };
        let c = protobuf(Signal::Metrics, &metrics.encode_to_vec(), &LIMITS).unwrap();
        assert_eq!((c.resources, c.scopes, c.items, c.attributes), (1, 1, 5, 3));
        let j = json(
            Signal::Metrics,
            &serde_json::to_vec(&metrics).unwrap(),
            &LIMITS,
        )
        .unwrap();
        assert_eq!((j.resources, j.scopes, j.items, j.attributes), (1, 1, 5, 3));
    }

    /// The issue's request: `0a 00` 8.3 million times, 16.6 MB of empty `ResourceSpans`.
    fn bomb(n: usize) -> Vec<u8> {
        [0x0a, 0x00].repeat(n)
    }

    #[test]
    fn empty_message_bombs_are_counted_and_refused() {
        let body = bomb(8_300_000);
        let c = protobuf(Signal::Traces, &body, &LIMITS).unwrap();
        assert_eq!(c.resources, 8_300_000);
        // Decoded, each empty `ResourceSpans` is a struct of dozens of bytes.
        assert!(c.decoded_bytes > 50 * body.len() as u64, "{c:?}");
        let err = c.check(&LIMITS, Signal::Traces).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the request holds 8300000 resources; frugal accepts at most 50000 per request \
             (ingest.max_per_request.resources): send smaller batches"
        );
        assert_eq!(crate::receivers::status::http_status(&err).as_u16(), 413);

        // Empty spans in one scope, empty attributes on one span.
        let mut spans = vec![0x12];
        let inner = [0x12, 0x00].repeat(300_000);
        put_len(&mut spans, &inner);
        let mut req = vec![0x0a];
        put_len(&mut req, &spans);
        let c = protobuf(Signal::Traces, &req, &LIMITS).unwrap();
        assert_eq!((c.resources, c.scopes, c.items), (1, 1, 300_000));
        let err = c.check(&LIMITS, Signal::Traces).unwrap_err().to_string();
        assert!(
            err.contains("300000 spans") && err.contains("max_per_request.items"),
            "{err}"
        );

        // JSON: 5.5 million `{}`.
        let mut text = b"{\"resourceSpans\":[".to_vec();
        text.extend([b"{}".as_slice(), b","].concat().repeat(5_500_000));
        text.pop();
        text.extend(b"]}");
        let j = json(Signal::Traces, &text, &LIMITS).unwrap();
        assert_eq!(j.resources, 5_500_000);
        assert!(j.decoded_bytes > 50 * text.len() as u64, "{j:?}");
        let err = j.check(&LIMITS, Signal::Traces).unwrap_err().to_string();
        assert!(
            err.starts_with("the request holds 5500000 resources"),
            "{err}"
        );
    }

    fn put_len(out: &mut Vec<u8>, inner: &[u8]) {
        prost::encoding::encode_varint(inner.len() as u64, out);
        out.extend_from_slice(inner);
    }

    #[test]
    fn deep_values_are_refused_as_soon_as_met() {
        let limits = MaxPerRequest { depth: 6, ..LIMITS };
        let mut req = traces();
        req.resource_spans[0].scope_spans[0].spans[0].attributes = vec![kv("deep", nested(6))];
        assert_eq!(
            protobuf(Signal::Traces, &req.encode_to_vec(), &limits)
                .unwrap()
                .depth,
            6
        );
        let text = serde_json::to_vec(&req).unwrap();
        assert_eq!(json(Signal::Traces, &text, &limits).unwrap().depth, 6);
        req.resource_spans[0].scope_spans[0].spans[0].attributes = vec![kv("deep", nested(7))];
        let err = protobuf(Signal::Traces, &req.encode_to_vec(), &limits).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the request nests attribute or body values more than 6 deep; frugal accepts at \
             most 6 (ingest.max_per_request.depth)"
        );
        assert_eq!(crate::receivers::status::http_status(&err).as_u16(), 400);
        let text = serde_json::to_vec(&req).unwrap();
        assert_eq!(json(Signal::Traces, &text, &limits).unwrap_err(), err);
    }

    #[test]
    fn malformed_encodings_are_refused_and_unknown_fields_skipped() {
        for bad in [
            &b"\x0a\xff\xff"[..],                                // a length past the end
            b"\x0a\x02\x0a",                                     // a submessage cut short
            b"\x00\x00",                                         // field number 0
            b"\x0f",                                             // wire type 7
            b"\x0b\x0a\x00",                                     // a group that never ends
            b"\x10\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01", // an 11-byte varint
            b"\x09\x01", // a request's resources given as fixed64
        ] {
            let err = protobuf(Signal::Traces, bad, &LIMITS).unwrap_err();
            assert!(
                err.to_string().starts_with("malformed OTLP protobuf"),
                "{bad:?}: {err}"
            );
        }
        // Unknown fields of every wire type, a group among them, are skipped as the
        // decoder skips them; the known fields around them still count.
        let body = b"\xa0\x06\x05\xa9\x06\x01\x02\x03\x04\x05\x06\x07\x08\xb5\x06\x01\x02\x03\x04\
                     \xbb\x06\x08\x01\xbc\x06\x0a\x00\xa2\x06\x01\x00";
        let c = protobuf(Signal::Traces, body, &LIMITS).unwrap();
        assert_eq!(c.resources, 1);
        assert!(ExportTraceServiceRequest::decode(&body[..]).is_ok());
    }

    #[test]
    fn json_that_is_not_otlp_is_left_to_the_decoder_but_brackets_must_balance() {
        for bad in [&b"{\"a\": [}"[..], b"{\"a\": \"x", b"}", b"[[]]]"] {
            assert!(json(Signal::Traces, bad, &LIMITS).is_err(), "{bad:?}");
        }
        let deep = [b"[".repeat(200), b"]".repeat(200)].concat();
        let err = json(Signal::Traces, &deep, &LIMITS)
            .unwrap_err()
            .to_string();
        assert!(err.contains("nested more than 128 levels"), "{err}");
        // Escaped keys are the keys they spell.
        let text = br#"{"resource\u0053pans": [{}, {}], "x": "a\"b", "n": [1, 2.5e3, null]}"#;
        assert_eq!(json(Signal::Traces, text, &LIMITS).unwrap().resources, 2);
    }

    #[test]
    fn a_remote_write_body_is_counted_before_decoding_and_bad_bytes_refused() {
        use crate::proto::remote_write::{Label, MetricMetadata, Sample, TimeSeries, WriteRequest};
        let ts = |n: usize| TimeSeries {
            labels: (0..3)
                .map(|i| Label {
                    name: format!("l{i}"),
                    value: "v".into(),
                })
                .collect(),
            samples: (0..n)
                .map(|i| Sample {
                    value: i as f64,
                    timestamp: i as i64,
                })
                .collect(),
            ..Default::default()
        };
        let req = WriteRequest {
            timeseries: vec![ts(2), ts(5)],
            metadata: vec![MetricMetadata::default()],
        };
        let body = prost::Message::encode_to_vec(&req);
        let c = remote_write(&body).unwrap();
        assert_eq!((c.resources, c.items, c.attributes), (2, 7, 7));
        assert!(c.decoded_bytes >= body.len() as u64);
        assert!(matches!(
            remote_write(b"\x0a\xff\xff"),
            Err(IngestError::BadRequest(_))
        ));
    }
}
