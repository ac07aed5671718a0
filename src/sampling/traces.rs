//! Sampling spans: classify by the policy's rules, then keep by trace randomness at the
//! class's probability, in the policy's mode.
//!
//! - `proportional` (default): OpenTelemetry consistent probability sampling. The arriving
//!   `th` and frugal's probability multiply (`th:8` sampled at 50% leaves as `th:c`); a
//!   `th` that contradicts the randomness is erased, as the specification asks.
//! - `hash_seed`: the collector's mode, bit for bit. Spans already carrying `rv` or `th`
//!   are dropped when `fail_closed` (the collector's default) and passed untouched
//!   otherwise, since their earlier decision cannot be re-made with a hash.
//!
//! While a class's probability is 1, its spans pass untouched (no `th:0` is written: the
//! specification says a sampler at probability 1 must not set `th`). A tracestate that
//! does not parse is left as it came and the span treated as not sampled before.
//! The `sampling.priority` span attribute (int, double or numeric string) is honoured as
//! the collector does: 0 drops, more than 0 puts the span in the priority class.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;

use super::memory::Session;
use super::rules::{self, Item};
use super::threshold::{self, Randomness, Threshold};
use super::tracestate::TraceState;
use super::{Account, ClassProbabilities, Fate, hash_seed};
use crate::metering::{Weight, tempo};
use crate::model::{Class, DropReason};
use crate::policy::{SamplingMode, TracePolicy};

/// The decision for one span.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanDecision {
    /// `None` when a drop rule matched or `sampling.priority` was 0.
    pub class: Option<Class>,
    /// Kept, or dropped and why.
    pub fate: Fate,
    /// The rewritten tracestate of a kept span, when it changed.
    pub tracestate: Option<String>,
    /// The adjusted count (1/p) of a kept, sampled span.
    pub adjusted_count: Option<f64>,
}

impl SpanDecision {
    fn keep(class: Class) -> Self {
        SpanDecision {
            class: Some(class),
            fate: Fate::Keep,
            tracestate: None,
            adjusted_count: None,
        }
    }

    fn drop(class: Option<Class>, reason: DropReason) -> Self {
        SpanDecision {
            class,
            fate: Fate::Drop(reason),
            tracestate: None,
            adjusted_count: None,
        }
    }
}

/// The collector's reading of `sampling.priority`: Some(true) must sample, Some(false)
/// must not, None defers.
pub fn sampling_priority(span: &Span) -> Option<bool> {
    let v = rules::find(&span.attributes, "sampling.priority")?;
    let f = match v.value.as_ref()? {
        any_value::Value::IntValue(i) => *i as f64,
        any_value::Value::DoubleValue(d) => *d,
        any_value::Value::StringValue(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    if f == 0.0 {
        Some(false)
    } else if f > 0.0 {
        Some(true)
    } else {
        None
    }
}

/// The class of a span, or `None` when it must be dropped (and why).
pub fn classify(
    policy: &TracePolicy,
    resource: Option<&Resource>,
    service: &str,
    span: &Span,
) -> Result<Class, DropReason> {
    match sampling_priority(span) {
        Some(false) => return Err(DropReason::Upstream),
        Some(true) => return Ok(Class::Priority),
        None => {}
    }
    if policy.rules.is_empty() {
        return Ok(Class::Normal);
    }
    let item = Item::Span(span);
    policy
        .rules
        .classify(|r| rules::matches(r, resource, service, &item))
        .ok_or(DropReason::Rule)
}

/// Decides one span at the keep probabilities `probs`; with `memory`, a non-priority span
/// of a trace judged before is judged at that trace's first probability.
pub fn decide(
    policy: &TracePolicy,
    probs: &ClassProbabilities,
    memory: Option<&mut Session<'_>>,
    resource: Option<&Resource>,
    service: &str,
    span: &Span,
) -> SpanDecision {
    let class = match classify(policy, resource, service, span) {
        Ok(c) => c,
        Err(reason) => return SpanDecision::drop(None, reason),
    };
    let p = match (class, memory) {
        (Class::Priority, _) | (_, None) => probs[class],
        (_, Some(m)) => m.judge(&span.trace_id, probs, false)[class],
    };
    decide_at(policy, class, p, span)
}

/// Decides one span of `class` at keep probability `p`, by its trace's randomness: the
/// tail sampler's whole-trace decision, and a late span following it, come here too.
pub fn decide_at(policy: &TracePolicy, class: Class, p: f64, span: &Span) -> SpanDecision {
    if p >= 1.0 {
        return SpanDecision::keep(class);
    }
    let parsed = TraceState::parse(&span.trace_state);
    match policy.sampling.mode {
        SamplingMode::Proportional => {
            proportional(class, p, policy.sampling.precision, parsed.ok(), span)
        }
        SamplingMode::HashSeed(seed) => hash_seeded(
            class,
            p,
            seed,
            policy.sampling.fail_closed,
            parsed.ok(),
            span,
        ),
    }
}

fn proportional(
    class: Class,
    p: f64,
    precision: u8,
    ts: Option<TraceState>,
    span: &Span,
) -> SpanDecision {
    let from_id = Randomness::from_trace_id(&span.trace_id).unwrap_or(Randomness::from_unsigned(0));
    let Some(mut ts) = ts else {
        // Unparsable tracestate: decide on the trace ID alone and leave it untouched.
        return match Threshold::from_probability(p, precision) {
            Ok(t) if t.should_sample(from_id) => SpanDecision {
                adjusted_count: Some(t.adjusted_count()),
                ..SpanDecision::keep(class)
            },
            _ => SpanDecision::drop(Some(class), DropReason::Sampled),
        };
    };
    let r = ts.rv.unwrap_or(from_id);
    if let Some(t_in) = ts.th
        && !t_in.should_sample(r)
    {
        ts.clear_threshold();
    }
    let t_in = ts.th.unwrap_or(Threshold::ALWAYS);
    let Some(t_out) = threshold::proportional(t_in, p, precision) else {
        return SpanDecision::drop(Some(class), DropReason::Sampled);
    };
    if !t_out.should_sample(r) {
        return SpanDecision::drop(Some(class), DropReason::Sampled);
    }
    ts.set_threshold(t_out);
    let written = ts.th.unwrap_or(t_out);
    SpanDecision {
        class: Some(class),
        fate: Fate::Keep,
        tracestate: Some(ts.serialize()),
        adjusted_count: Some(written.adjusted_count()),
    }
}

fn hash_seeded(
    class: Class,
    p: f64,
    seed: u32,
    fail_closed: bool,
    ts: Option<TraceState>,
    span: &Span,
) -> SpanDecision {
    let mut ts = ts.unwrap_or_default();
    if ts.rv.is_some() || ts.th.is_some() {
        // Sampled before by a consistent sampler: hash_seed cannot re-decide it.
        return if fail_closed {
            // An earlier sampler's decision, not frugal's: it never competes for the budget.
            SpanDecision::drop(None, DropReason::Upstream)
        } else {
            SpanDecision::keep(class)
        };
    }
    let d = hash_seed::decide(&span.trace_id, seed, p);
    if !d.keep {
        return SpanDecision::drop(Some(class), DropReason::Sampled);
    }
    ts.set_randomness(d.randomness);
    ts.set_threshold(d.threshold);
    SpanDecision {
        class: Some(class),
        fate: Fate::Keep,
        tracestate: Some(ts.serialize()),
        adjusted_count: Some(d.threshold.adjusted_count()),
    }
}

/// Decides every span of a request and accounts for them. Byte figures are the spans'
/// shares of the request's billable size. The request is not changed.
pub fn decide_all(
    policy: &TracePolicy,
    probs: &ClassProbabilities,
    mut memory: Option<&mut Session<'_>>,
    req: &ExportTraceServiceRequest,
) -> (Vec<SpanDecision>, Account) {
    let mut decisions = Vec::with_capacity(tempo::span_count(req) as usize);
    let mut account = Account::default();
    for rs in &req.resource_spans {
        let resource = rs.resource.as_ref();
        let service = rules::service_name(resource);
        for span in rs.scope_spans.iter().flat_map(|ss| &ss.spans) {
            let d = decide(
                policy,
                probs,
                memory.as_deref_mut(),
                resource,
                service,
                span,
            );
            let w = Weight {
                items: 1,
                units: tempo::span_share(span),
            };
            account.record(d.class, &d.fate, w, d.tracestate.is_some());
            decisions.push(d);
        }
    }
    (decisions, account)
}

/// Applies decisions made by [`decide_all`] on the same request: removes dropped spans
/// (and scopes and resources left empty), writes tracestates and the multiplier attribute.
pub fn apply(
    req: &mut ExportTraceServiceRequest,
    decisions: &[SpanDecision],
    multiplier_attribute: Option<&str>,
) {
    let mut it = decisions.iter();
    for rs in &mut req.resource_spans {
        for ss in &mut rs.scope_spans {
            ss.spans.retain_mut(|span| {
                let Some(d) = it.next() else { return true };
                if d.fate != Fate::Keep {
                    return false;
                }
                if let Some(ts) = &d.tracestate {
                    span.trace_state.clone_from(ts);
                }
                if let (Some(key), Some(count)) = (multiplier_attribute, d.adjusted_count) {
                    set_double(&mut span.attributes, key, count);
                }
                true
            });
        }
        rs.scope_spans.retain(|ss| !ss.spans.is_empty());
    }
    req.resource_spans.retain(|rs| !rs.scope_spans.is_empty());
}

/// Kept spans of one class only (the rest dropped `at_limit` or `rate_limit`).
pub fn retain_class(req: &mut ExportTraceServiceRequest, decisions: &[SpanDecision], keep: Class) {
    let mut it = decisions.iter().filter(|d| d.fate == Fate::Keep);
    for rs in &mut req.resource_spans {
        for ss in &mut rs.scope_spans {
            ss.spans
                .retain(|_| it.next().is_some_and(|d| d.class == Some(keep)));
        }
        rs.scope_spans.retain(|ss| !ss.spans.is_empty());
    }
    req.resource_spans.retain(|rs| !rs.scope_spans.is_empty());
}

pub(crate) fn set_double(attrs: &mut Vec<KeyValue>, key: &str, v: f64) {
    super::set_attribute(attrs, key, any_value::Value::DoubleValue(v));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::PerClass;
    use crate::policy::{Rules, TraceSampling};
    use opentelemetry_proto::tonic::common::v1::AnyValue;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Status};

    fn policy(mode: SamplingMode) -> TracePolicy {
        TracePolicy {
            sampling: TraceSampling {
                mode,
                precision: 4,
                min_probability: 0.0,
                fail_closed: true,
                multiplier_attribute: Some("sampling.multiplier".into()),
            },
            rules: Rules::default(),
            tail: None,
        }
    }

    fn span(trace_id: &str, tracestate: &str) -> Span {
        Span {
            trace_id: hex::decode(trace_id).unwrap(),
            span_id: vec![1; 8],
            trace_state: tracestate.into(),
            name: "GET /".into(),
            ..Default::default()
        }
    }

    fn one(policy: &TracePolicy, p: f64, s: &Span) -> SpanDecision {
        decide(policy, &PerClass::new([p, p, p]), None, None, "", s)
    }

    const DEFAULT_TID: &str = "fefefefefefefefefe80000000000000";

    /// Rows of the collector's Test_tracesamplerprocessor_TraceState, proportional mode
    /// (precision as in each row).
    #[test]
    fn collector_trace_state_table() {
        let check = |p: f64, prec: u8, tid: &str, ts_in: &str, want: Option<&str>| {
            let mut pol = policy(SamplingMode::Proportional);
            pol.sampling.precision = prec;
            let d = one(&pol, p, &span(tid, ts_in));
            match want {
                None => assert!(d.fate != Fate::Keep, "{p} {tid} {ts_in}: {d:?}"),
                Some(w) => {
                    assert_eq!(d.fate, Fate::Keep, "{p} {tid} {ts_in}");
                    assert_eq!(d.tracestate.as_deref(), Some(w), "{p} {tid} {ts_in}");
                }
            }
        };
        check(0.5, 14, DEFAULT_TID, "", Some("ot=th:8"));
        check(
            0.25,
            14,
            "ddddddddddddddddddc0000000000000",
            "",
            Some("ot=th:c"),
        );
        check(0.25, 14, "ddddddddddddddddddb0000000000000", "", None);
        check(
            0.01,
            14,
            DEFAULT_TID,
            "ot=rv:FD70A3D70A3D71",
            Some("ot=rv:FD70A3D70A3D71;th:fd70a3d70a3d71"),
        );
        check(
            0.01,
            4,
            DEFAULT_TID,
            "ot=rv:FD70A3D70A3D71",
            Some("ot=rv:FD70A3D70A3D71;th:fd70a"),
        );
        check(0.01, 3, DEFAULT_TID, "ot=rv:FD70A3D70A3D71", None);
        check(0.01, 14, DEFAULT_TID, "ot=rv:FD70A3D70A3D70", None);
        check(0.49, 14, DEFAULT_TID, "", None);
        check(
            0.01,
            14,
            DEFAULT_TID,
            "ot=rv:fd70B000000000",
            Some("ot=rv:fd70B000000000;th:fd70a3d70a3d71"),
        );
        check(
            0.01,
            4,
            "a0a0a0a0a0a0a0a0a0fe000000000000",
            "",
            Some("ot=th:fd70a"),
        );
        check(
            0.5,
            14,
            DEFAULT_TID,
            "ot=rv:90000000000000;th:80000000000000",
            None,
        );
        check(0.25, 14, DEFAULT_TID, "ot=th:8", None);
        check(
            0.25,
            14,
            "ffffffffffffffffffffffffffffffff",
            "ot=th:8",
            Some("ot=th:e"),
        );
        check(
            0.5,
            14,
            DEFAULT_TID,
            "ot=rv:c0000000000000;th:8",
            Some("ot=rv:c0000000000000;th:c"),
        );
        check(
            0.4,
            3,
            DEFAULT_TID,
            "ot=rv:a0000000000000",
            Some("ot=rv:a0000000000000;th:99a"),
        );
        check(
            0.4,
            6,
            "a0a0a0a0a0a0a0a0a0d0000000000000",
            "ot=th:8",
            Some("ot=th:cccccd"),
        );
        check(0.4, 3, "a0a0a0a0a0a0a0a0a0b0000000000000", "ot=th:8", None);
        check(
            2f64.powi(-14),
            4,
            "111111111111111111ffffffffffffff",
            "ot=th:fffc",
            Some("ot=th:fffffff"),
        );
        check(
            2f64.powi(-4) / 100.0,
            4,
            "111111111111111111ffffffffffffff",
            "ot=th:fffffffffffff8",
            None,
        );
    }

    #[test]
    fn probability_one_leaves_spans_untouched() {
        let pol = policy(SamplingMode::Proportional);
        let d = one(&pol, 1.0, &span(DEFAULT_TID, "ot=th:8"));
        assert_eq!(d, SpanDecision::keep(Class::Normal));
    }

    #[test]
    fn inconsistent_arriving_threshold_is_erased() {
        // rv 4 < th 8: the arriving th is erased; at 100% the span passes, untouched.
        let pol = policy(SamplingMode::Proportional);
        let d = one(&pol, 0.9, &span(DEFAULT_TID, "ot=rv:40000000000000;th:8"));
        // p = 0.9 -> th 1999..., R = 0x40.. >= it: kept with the new threshold only.
        assert_eq!(
            d.tracestate.as_deref(),
            Some("ot=rv:40000000000000;th:199a")
        );
    }

    #[test]
    fn hash_seed_mode_edge_cases() {
        let pol = policy(SamplingMode::HashSeed(653));
        let d = one(&pol, 0.5, &span("474a03c76d75951a4b4c537ced8f1122", ""));
        assert_eq!(d.fate, Fate::Keep);
        assert_eq!(d.tracestate.as_deref(), Some("ot=rv:fa402373dec16f;th:8"));
        // Already sampled upstream: dropped when fail_closed, untouched otherwise.
        let d = one(&pol, 0.5, &span(DEFAULT_TID, "ot=th:8"));
        assert_eq!(d.fate, Fate::Drop(DropReason::Upstream));
        let mut open = pol.clone();
        open.sampling.fail_closed = false;
        let d = one(&open, 0.5, &span(DEFAULT_TID, "ot=rv:c0000000000000"));
        assert_eq!(d, SpanDecision::keep(Class::Normal));
    }

    #[test]
    fn sampling_priority_attribute() {
        let pol = policy(SamplingMode::Proportional);
        let with = |v: any_value::Value| {
            let mut s = span(DEFAULT_TID, "");
            s.attributes.push(KeyValue {
                key: "sampling.priority".into(),
                value: Some(AnyValue { value: Some(v) }),
                ..Default::default()
            });
            s
        };
        use any_value::Value::*;
        for (v, want) in [
            (IntValue(0), Some(false)),
            (IntValue(2), Some(true)),
            (IntValue(-1), None),
            (DoubleValue(0.0), Some(false)),
            (DoubleValue(1.0), Some(true)),
            (StringValue("0.0".into()), Some(false)),
            (StringValue("0.5".into()), Some(true)),
            (StringValue("-0.5".into()), None),
            (StringValue("NaN".into()), None),
            (BoolValue(true), None),
        ] {
            assert_eq!(sampling_priority(&with(v.clone())), want, "{v:?}");
        }
        let d = decide(
            &pol,
            &PerClass::new([1.0, 0.0001, 0.0001]),
            None,
            None,
            "",
            &with(IntValue(2)),
        );
        assert_eq!(d.class, Some(Class::Priority));
        assert_eq!(d.fate, Fate::Keep);
        let d = one(&pol, 1.0, &with(IntValue(0)));
        assert_eq!(d.fate, Fate::Drop(DropReason::Upstream));
    }

    #[test]
    fn batches_are_accounted_and_filtered() {
        let text = r#"
upstream: {otlp: {endpoint: "http://x:1"}}
traces:
  drop: [{name: health, attributes: {url.path: /health}}]
  priority: [{name: errors, status_code: ERROR}]
"#;
        let p = crate::policy::load_str(text, "t", &Default::default(), &|_| None).unwrap();
        let mut spans = Vec::new();
        for i in 0..100u8 {
            let mut s = span(&format!("{:02x}{}", i, "00".repeat(15)), "");
            s.trace_id = (0..16)
                .map(|j| i.wrapping_mul(37).wrapping_add(j * 11))
                .collect();
            if i % 10 == 0 {
                s.status = Some(Status {
                    code: 2,
                    ..Default::default()
                });
            }
            if i % 25 == 1 {
                s.attributes.push(KeyValue {
                    key: "url.path".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue("/health".into())),
                    }),
                    ..Default::default()
                });
            }
            spans.push(s);
        }
        let mut req = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: None,
                scope_spans: vec![ScopeSpans {
                    scope: None,
                    spans,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        };
        let (decisions, account) =
            decide_all(&p.traces, &PerClass::new([1.0, 0.0, 0.0]), None, &req);
        assert_eq!(account.offered[Class::Priority].items, 10);
        assert_eq!(account.offered[Class::Normal].items, 86);
        assert_eq!(account.dropped[DropReason::Rule].items, 4);
        assert_eq!(account.kept[Class::Priority].items, 10);
        apply(&mut req, &decisions, None);
        assert_eq!(tempo::span_count(&req), 10);
        assert!(
            req.resource_spans[0].scope_spans[0].spans.iter().all(|s| s
                .status
                .as_ref()
                .unwrap()
                .code
                == 2)
        );
    }
}
