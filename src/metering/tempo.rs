//! Trace bytes as Tempo counts them: `ptrace.ProtoMarshaler{}.TracesSize` of the whole
//! request, computed on the canonical pdata form. Two quirks of that form matter:
//! absent `resource`, `scope`, `status` and attribute `value` messages are always encoded
//! (2 bytes each), and so are empty trace/span IDs (gogo-generated pdata writes the tag and
//! a zero length). [`canonicalize`] makes the messages present, so what frugal forwards has
//! exactly the size Tempo computes; [`billable_bytes`] adds the 2 bytes of each empty ID,
//! which protobuf cannot put on the wire. Over-counting by those bytes, if a newer pdata
//! drops them, errs on the safe side.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Status;
use prost::Message;

use super::Weight;

/// Fills in the messages pdata always encodes. Returns whether anything changed (and so
/// whether the request must be re-encoded rather than forwarded as received).
pub fn canonicalize(req: &mut ExportTraceServiceRequest) -> bool {
    let mut changed = false;
    for rs in &mut req.resource_spans {
        let resource = rs.resource.get_or_insert_with(|| {
            changed = true;
            Default::default()
        });
        changed |= fill_values(&mut resource.attributes);
        for ss in &mut rs.scope_spans {
            let scope = ss.scope.get_or_insert_with(|| {
                changed = true;
                Default::default()
            });
            changed |= fill_values(&mut scope.attributes);
            for span in &mut ss.spans {
                if span.status.is_none() {
                    span.status = Some(Status::default());
                    changed = true;
                }
                changed |= fill_values(&mut span.attributes);
                for e in &mut span.events {
                    changed |= fill_values(&mut e.attributes);
                }
                for l in &mut span.links {
                    changed |= fill_values(&mut l.attributes);
                }
            }
        }
    }
    changed
}

/// Makes every attribute carry a value message, recursively.
pub(crate) fn fill_values(attrs: &mut [KeyValue]) -> bool {
    let mut changed = false;
    for kv in attrs {
        match &mut kv.value {
            None => {
                kv.value = Some(AnyValue::default());
                changed = true;
            }
            Some(v) => changed |= fill_any(v),
        }
    }
    changed
}

fn fill_any(v: &mut AnyValue) -> bool {
    match &mut v.value {
        Some(any_value::Value::KvlistValue(kv)) => fill_values(&mut kv.values),
        Some(any_value::Value::ArrayValue(a)) => {
            let mut changed = false;
            for x in &mut a.values {
                changed |= fill_any(x);
            }
            changed
        }
        _ => false,
    }
}

/// Billable bytes and span count of a (canonical) trace request.
pub fn weigh(req: &ExportTraceServiceRequest) -> Weight {
    weigh_encoded(req).0
}

/// [`weigh`] and the request's encoded length, with one walk of its encoding.
pub fn weigh_encoded(req: &ExportTraceServiceRequest) -> (Weight, usize) {
    let len = req.encoded_len();
    let w = Weight {
        items: span_count(req),
        units: len as u64 + 2 * empty_ids(req),
    };
    (w, len)
}

/// The request's encoded length plus 2 bytes for every empty ID pdata would encode.
pub fn billable_bytes(req: &ExportTraceServiceRequest) -> u64 {
    weigh(req).units
}

/// The number of spans in a request (its items).
pub fn span_count(req: &ExportTraceServiceRequest) -> u64 {
    req.resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .map(|ss| ss.spans.len() as u64)
        .sum()
}

fn empty_ids(req: &ExportTraceServiceRequest) -> u64 {
    let mut n = 0;
    for span in req
        .resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
    {
        n += u64::from(span.trace_id.is_empty())
            + u64::from(span.span_id.is_empty())
            + u64::from(span.parent_span_id.is_empty());
        for l in &span.links {
            n += u64::from(l.trace_id.is_empty()) + u64::from(l.span_id.is_empty());
        }
    }
    n
}

/// The bytes one span adds to a request inside its scope: its own encoding plus the tag
/// and length prefix. Used to split a request's weight between priority classes.
pub fn span_share(span: &opentelemetry_proto::tonic::trace::v1::Span) -> u64 {
    let len = span.encoded_len() as u64;
    1 + super::varint_len(len) + len + 2 * u64::from(span.parent_span_id.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    fn one_span(span: Span) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: None,
                scope_spans: vec![ScopeSpans {
                    scope: None,
                    spans: vec![span],
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        }
    }

    #[test]
    fn absent_messages_cost_two_bytes_each() {
        let span = Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            name: "GET /".into(),
            attributes: vec![KeyValue {
                key: "k".into(),
                value: None,
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut req = one_span(span);
        let before = req.encoded_len();
        assert!(canonicalize(&mut req));
        // resource (2) + scope (2) + status (2) + attribute value (2) = 8 bytes, and
        // the length prefixes of the enclosing messages stay one byte here.
        assert_eq!(req.encoded_len(), before + 8);
        assert!(!canonicalize(&mut req), "canonical form is stable");
        // The root span's empty parent_span_id costs 2 more.
        assert_eq!(billable_bytes(&req), req.encoded_len() as u64 + 2);
        assert_eq!(span_count(&req), 1);
    }
}
