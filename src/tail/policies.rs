//! Judging a whole trace by the policy's `traces.tail.policies`: pure but for the
//! limiters' token buckets and counters ([`Limiters`]), with time only from `now`.
//!
//! Each top-level policy votes as the OpenTelemetry Collector's `tail_sampling` policy of
//! its type does: *sampled*, *not sampled*, or (a `drop` policy whose sub-policies all
//! sample) *dropped*. frugal then decides, in this order:
//!
//! 1. `drop` policies vote first; the first that votes dropped decides [`TailOutcome::Drop`],
//!    and nothing else is evaluated (no limiter spends tokens on a dropped trace).
//! 2. The other policies that are not *caps* vote; if any samples, [`TailOutcome::Keep`] in
//!    the highest class among those that sampled (priority > normal > bulk), `by` the
//!    first of them.
//! 3. Otherwise the caps (`rate_limiting`, `bytes_limiting`, `probabilistic`,
//!    `composite`) vote in order, and the first that samples decides `Keep` in its class;
//!    the caps after it are not asked, so they spend nothing. A cap limits what no other
//!    policy kept: `errors` plus `rate_limiting: 100 spans/s` keeps every error trace and
//!    at most 100 spans a second of the rest (the collector would count the errors
//!    against the 100 too).
//! 4. Otherwise, if a cap voted not sampled, `Drop` by the first such.
//! 5. Otherwise [`TailOutcome::NoMatch`]: the caller paces the trace like any other.
//!
//! `Verdict::cap` is multiplied by the caller with its pacing probability, and the trace
//! kept by OpenTelemetry consistent sampling (its randomness against the threshold), so
//! `probabilistic` votes sampled with the factor `sampling_percentage / 100` rather than
//! hashing the trace ID (its `hash_salt` is ignored: the decision must agree with the
//! `th` frugal writes). A factor travels through `and` (the smallest of its
//! sub-policies'), `composite` (the deciding sub-policy's) and, when several non-cap
//! policies keep a trace, the largest of theirs; without `probabilistic` it is 1.
//!
//! Per type, as the collector's evaluators (`processor/tailsamplingprocessor/internal/
//! sampling/*.go`) do:
//! - `latency`: running min start and max end over the spans in order, sampled as soon as
//!   the running duration in whole milliseconds is `>= threshold_ms` (with an upper bound:
//!   `> threshold_ms` and `<= upper_threshold_ms`);
//! - the attribute types look at each span's resource attributes, then its own; a value
//!   of another type reads as Go's zero value (`""`, `0`, `false`), and empty span values
//!   never match a `string_attribute`; regexes are not anchored;
//! - `status_code`, `trace_state`: any span; `span_count`: all spans of the trace;
//! - `rate_limiting` / `bytes_limiting`: a token bucket (rate per second, `burst_capacity`),
//!   full at first, that a trace passes only if it can take all its spans (or bytes, the
//!   trace's billable bytes) at once; tokens are taken only when it samples;
//! - `and`: sampled when every sub-policy samples (stops at the first that does not);
//!   `not`: the opposite; `drop`: dropped when every sub-policy samples;
//! - `composite`: sub-policies in `composite_sub_policy` order; the first that samples
//!   decides, sampled if its count of spans in the current second (of `now`) stays within
//!   both its share and `max_total_spans_per_second`, else not sampled.

use std::sync::{Mutex, PoisonError};

use jiff::Timestamp;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;
use regex::Regex;

use crate::model::Class;
use crate::policy::{TailKind, TailPolicy};

/// One span of a trace, with the resource it came with.
#[derive(Debug, Clone, Copy)]
pub struct SpanRef<'a> {
    /// The resource of the `ResourceSpans` the span arrived in.
    pub resource: Option<&'a Resource>,
    /// The span.
    pub span: &'a Span,
}

/// A whole trace, as the buffer holds it.
#[derive(Debug, Clone)]
pub struct TraceView<'a> {
    /// Every span, in the order they arrived.
    pub spans: Vec<SpanRef<'a>>,
    /// The trace's billable bytes (what `bytes_limiting` counts).
    pub bytes: u64,
}

/// What the tail policies decided for a trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TailOutcome {
    /// Keep it (still subject to pacing times `cap`).
    Keep,
    /// Drop it.
    Drop,
    /// No policy had an opinion: pace it like any other trace.
    NoMatch,
}

/// A trace's decision, and which policy made it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verdict {
    /// Keep, drop, or no opinion.
    pub outcome: TailOutcome,
    /// The class the trace is paced in (normal when no policy decided).
    pub class: Class,
    /// Index into `policies` of the deciding top-level policy.
    pub by: Option<usize>,
    /// Factor multiplied with the pacing probability: 1.0 unless a probabilistic policy
    /// decided.
    pub cap: f64,
}

impl Verdict {
    fn no_match() -> Verdict {
        Verdict {
            outcome: TailOutcome::NoMatch,
            class: Class::Normal,
            by: None,
            cap: 1.0,
        }
    }
}

/// A policy's vote, with the factor a sampled vote carries.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Vote {
    Sampled(f64),
    NotSampled,
    Dropped,
}

/// The state of the stateful policies (token buckets, composite counters), mirroring the
/// policy tree; build it with [`Limiters::new`] from the policy it is used with, and
/// anew when the policy changes.
#[derive(Debug)]
pub struct Limiters {
    top: Vec<State>,
}

#[derive(Debug)]
enum State {
    Stateless,
    Bucket(Mutex<Bucket>),
    Group(Vec<State>),
    Composite {
        window: Mutex<Window>,
        subs: Vec<State>,
    },
}

/// What a policy without state (or a state that does not fit the policy) reads.
static STATELESS: State = State::Stateless;

impl State {
    fn of(kind: &TailKind) -> State {
        match kind {
            TailKind::RateLimiting {
                spans_per_second,
                burst_capacity,
            } => State::Bucket(Mutex::new(Bucket::new(*spans_per_second, *burst_capacity))),
            TailKind::BytesLimiting {
                bytes_per_second,
                burst_capacity,
            } => State::Bucket(Mutex::new(Bucket::new(*bytes_per_second, *burst_capacity))),
            TailKind::And(subs) | TailKind::Drop(subs) => {
                State::Group(subs.iter().map(State::of).collect())
            }
            TailKind::Not(sub) => State::Group(vec![State::of(sub)]),
            TailKind::Composite { sub_policies, .. } => State::Composite {
                window: Mutex::new(Window {
                    second: None,
                    sampled: vec![0; sub_policies.len()],
                }),
                subs: sub_policies.iter().map(|s| State::of(&s.kind)).collect(),
            },
            _ => State::Stateless,
        }
    }

    fn child(&self, i: usize) -> &State {
        match self {
            State::Group(subs) | State::Composite { subs, .. } => subs.get(i).unwrap_or(&STATELESS),
            _ => &STATELESS,
        }
    }
}

impl Limiters {
    /// Fresh state for `p`'s policies: every bucket full, no counts.
    pub fn new(p: &TailPolicy) -> Limiters {
        Limiters {
            top: p.policies.iter().map(|r| State::of(&r.kind)).collect(),
        }
    }
}

/// A token bucket, full at first.
#[derive(Debug)]
struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Option<Timestamp>,
}

impl Bucket {
    fn new(rate: u64, burst: u64) -> Bucket {
        Bucket {
            rate: rate as f64,
            burst: burst as f64,
            tokens: burst as f64,
            last: None,
        }
    }

    /// Takes `n` tokens if there are that many at `now`; nothing otherwise.
    fn take(&mut self, now: Timestamp, n: u64) -> bool {
        let n = n as f64;
        if n > self.burst {
            return false;
        }
        let tokens = match self.last {
            None => self.burst,
            Some(last) => {
                let nanos = now
                    .as_nanosecond()
                    .saturating_sub(last.as_nanosecond())
                    .max(0);
                (self.tokens + nanos as f64 / 1e9 * self.rate).min(self.burst)
            }
        };
        if tokens < n {
            return false;
        }
        self.tokens = tokens - n;
        // A clock step back does not refill the bucket twice.
        self.last = Some(self.last.map_or(now, |last| last.max(now)));
        true
    }
}

/// A composite's spans sampled per sub-policy in the current second.
#[derive(Debug)]
struct Window {
    second: Option<i64>,
    sampled: Vec<u64>,
}

/// Decides `trace` by `p`'s policies (see the module documentation). `limiters` must
/// have been built from `p`; `now` is the only time read.
pub fn evaluate(
    p: &TailPolicy,
    limiters: &Limiters,
    trace: &TraceView<'_>,
    now: Timestamp,
) -> Verdict {
    let state = |i: usize| limiters.top.get(i).unwrap_or(&STATELESS);
    let dropped = |i: usize, class: Class| Verdict {
        outcome: TailOutcome::Drop,
        class,
        by: Some(i),
        cap: 1.0,
    };
    let is_drop = |k: &TailKind| matches!(k, TailKind::Drop(_));
    for (i, rule) in p.policies.iter().enumerate() {
        if is_drop(&rule.kind) && vote(&rule.kind, state(i), trace, now) == Vote::Dropped {
            return dropped(i, rule.class);
        }
    }
    let mut kept: Option<(usize, Class, f64)> = None;
    for (i, rule) in p.policies.iter().enumerate() {
        if is_drop(&rule.kind) || rule.kind.is_cap() {
            continue;
        }
        match vote(&rule.kind, state(i), trace, now) {
            Vote::Dropped => return dropped(i, rule.class),
            Vote::Sampled(f) => {
                kept = Some(match kept {
                    None => (i, rule.class, f),
                    Some((by, class, g)) => (by, class.min(rule.class), g.max(f)),
                });
            }
            Vote::NotSampled => {}
        }
    }
    if let Some((by, class, cap)) = kept {
        return Verdict {
            outcome: TailOutcome::Keep,
            class,
            by: Some(by),
            cap,
        };
    }
    let mut refused: Option<(usize, Class)> = None;
    for (i, rule) in p.policies.iter().enumerate() {
        if !rule.kind.is_cap() {
            continue;
        }
        match vote(&rule.kind, state(i), trace, now) {
            Vote::Sampled(cap) => {
                return Verdict {
                    outcome: TailOutcome::Keep,
                    class: rule.class,
                    by: Some(i),
                    cap,
                };
            }
            Vote::Dropped => return dropped(i, rule.class),
            Vote::NotSampled => {
                refused.get_or_insert((i, rule.class));
            }
        }
    }
    match refused {
        Some((i, class)) => dropped(i, class),
        None => Verdict::no_match(),
    }
}

fn sampled_if(b: bool) -> Vote {
    if b {
        Vote::Sampled(1.0)
    } else {
        Vote::NotSampled
    }
}

fn vote(kind: &TailKind, state: &State, trace: &TraceView<'_>, now: Timestamp) -> Vote {
    match kind {
        TailKind::AlwaysSample => Vote::Sampled(1.0),
        TailKind::Latency {
            threshold_ms,
            upper_threshold_ms,
        } => sampled_if(latency(trace, *threshold_ms, *upper_threshold_ms)),
        TailKind::StatusCode { status_codes } => sampled_if(trace.spans.iter().any(|s| {
            let code = s.span.status.as_ref().map_or(0, |st| st.code);
            status_codes.contains(&code)
        })),
        TailKind::StringAttribute {
            key,
            values,
            regexes,
        } => {
            let matches = |v: &str| match regexes {
                Some(res) => res.iter().any(|r: &Regex| r.is_match(v)),
                None => values.iter().any(|x| x == v),
            };
            sampled_if(any_attribute(trace, key, |v, on_span| {
                let s = as_str(v);
                // The collector skips empty span values, not resource ones.
                !(on_span && s.is_empty()) && matches(s)
            }))
        }
        TailKind::NumericAttribute {
            key,
            min_value,
            max_value,
        } => sampled_if(any_attribute(trace, key, |v, _| {
            let n = as_int(v);
            *min_value <= n && n <= *max_value
        })),
        TailKind::BooleanAttribute { key, value } => {
            sampled_if(any_attribute(trace, key, |v, _| as_bool(v) == *value))
        }
        TailKind::SpanCount {
            min_spans,
            max_spans,
        } => {
            let n = trace.spans.len() as u64;
            let (min, max) = (u64::from(*min_spans), u64::from(*max_spans));
            sampled_if(n >= min && (max == 0 || n <= max))
        }
        TailKind::TraceState { key, values } => sampled_if(trace.spans.iter().any(|s| {
            tracestate_get(&s.span.trace_state, key).is_some_and(|v| values.iter().any(|x| x == v))
        })),
        TailKind::RateLimiting { .. } => take(state, now, trace.spans.len() as u64),
        TailKind::BytesLimiting { .. } => take(state, now, trace.bytes),
        TailKind::Probabilistic {
            sampling_percentage,
            ..
        } => {
            let f = (sampling_percentage / 100.0).clamp(0.0, 1.0);
            if f > 0.0 {
                Vote::Sampled(f)
            } else {
                Vote::NotSampled
            }
        }
        TailKind::And(subs) => {
            let mut factor = 1.0_f64;
            for (i, sub) in subs.iter().enumerate() {
                match vote(sub, state.child(i), trace, now) {
                    Vote::Sampled(f) => factor = factor.min(f),
                    Vote::NotSampled | Vote::Dropped => return Vote::NotSampled,
                }
            }
            Vote::Sampled(factor)
        }
        TailKind::Not(sub) => match vote(sub, state.child(0), trace, now) {
            Vote::Sampled(_) => Vote::NotSampled,
            Vote::NotSampled => Vote::Sampled(1.0),
            Vote::Dropped => Vote::Dropped,
        },
        TailKind::Drop(subs) => {
            for (i, sub) in subs.iter().enumerate() {
                if !matches!(vote(sub, state.child(i), trace, now), Vote::Sampled(_)) {
                    return Vote::NotSampled;
                }
            }
            Vote::Dropped
        }
        TailKind::Composite {
            max_total_spans_per_second,
            sub_policies,
            ..
        } => {
            let State::Composite { window, .. } = state else {
                return Vote::NotSampled;
            };
            let mut w = window.lock().unwrap_or_else(PoisonError::into_inner);
            let second = now.as_second();
            if w.second != Some(second) {
                w.second = Some(second);
                w.sampled.iter_mut().for_each(|c| *c = 0);
            }
            let spans = trace.spans.len() as u64;
            for (i, sub) in sub_policies.iter().enumerate() {
                match vote(&sub.kind, state.child(i), trace, now) {
                    Vote::Sampled(f) => {
                        let Some(count) = w.sampled.get_mut(i) else {
                            return Vote::NotSampled;
                        };
                        let if_sampled = count.saturating_add(spans);
                        if if_sampled <= sub.spans_per_second
                            && if_sampled <= *max_total_spans_per_second
                        {
                            *count = if_sampled;
                            return Vote::Sampled(f);
                        }
                        // Not counted, so a smaller trace may still pass this second.
                        return Vote::NotSampled;
                    }
                    Vote::Dropped => return Vote::Dropped,
                    Vote::NotSampled => {}
                }
            }
            Vote::NotSampled
        }
    }
}

fn take(state: &State, now: Timestamp, n: u64) -> Vote {
    match state {
        State::Bucket(b) => sampled_if(
            b.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(now, n),
        ),
        _ => Vote::NotSampled,
    }
}

/// The collector's latency: running min start / max end, checked after every span.
fn latency(trace: &TraceView<'_>, threshold_ms: i64, upper_ms: i64) -> bool {
    let (mut min, mut max) = (0u64, 0u64);
    trace.spans.iter().any(|s| {
        let (start, end) = (s.span.start_time_unix_nano, s.span.end_time_unix_nano);
        if min == 0 || start < min {
            min = start;
        }
        if max == 0 || end > max {
            max = end;
        }
        let ms = (i128::from(max) - i128::from(min)) / 1_000_000;
        let ms = i64::try_from(ms).unwrap_or(if ms < 0 { i64::MIN } else { i64::MAX });
        if upper_ms == 0 {
            ms >= threshold_ms
        } else {
            threshold_ms < ms && ms <= upper_ms
        }
    })
}

/// Whether any span's resource (first) or the span itself has `key` with a value for
/// which `pred(value, on_span)` holds.
fn any_attribute(trace: &TraceView<'_>, key: &str, pred: impl Fn(&AnyValue, bool) -> bool) -> bool {
    let has = |attrs: &[KeyValue], on_span: bool| {
        attrs
            .iter()
            .filter(|kv| kv.key == key)
            .take(1)
            .any(|kv| match &kv.value {
                Some(v) => pred(v, on_span),
                None => pred(&AnyValue::default(), on_span),
            })
    };
    trace.spans.iter().any(|s| {
        s.resource.is_some_and(|r| has(&r.attributes, false)) || has(&s.span.attributes, true)
    })
}

/// Go's `Value.Str()`: the string, or "" for any other type.
fn as_str(v: &AnyValue) -> &str {
    match &v.value {
        Some(any_value::Value::StringValue(s)) => s,
        _ => "",
    }
}

/// Go's `Value.Int()`: the integer, or 0 for any other type.
fn as_int(v: &AnyValue) -> i64 {
    match &v.value {
        Some(any_value::Value::IntValue(i)) => *i,
        _ => 0,
    }
}

/// Go's `Value.Bool()`: the boolean, or false for any other type.
fn as_bool(v: &AnyValue) -> bool {
    matches!(&v.value, Some(any_value::Value::BoolValue(true)))
}

/// The value of `key` in a W3C tracestate; `None` when absent or when the tracestate
/// does not parse (as OpenTelemetry Go's `ParseTraceState` refuses it).
fn tracestate_get<'a>(ts: &'a str, key: &str) -> Option<&'a str> {
    const MAX_MEMBERS: usize = 32;
    let mut found = None;
    let mut seen: Vec<&str> = Vec::new();
    for raw in ts.split(',') {
        let member = raw.trim_matches(|c| c == ' ' || c == '\t');
        if member.is_empty() {
            continue;
        }
        let (k, v) = member.split_once('=')?;
        if !valid_key(k) || !valid_value(v) || seen.contains(&k) {
            return None;
        }
        seen.push(k);
        if seen.len() > MAX_MEMBERS {
            return None;
        }
        if k == key {
            found = Some(v);
        }
    }
    found
}

fn valid_key(k: &str) -> bool {
    let ok_char = |c: char| {
        c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-' | '*' | '/')
    };
    let simple = |s: &str, first_digit: bool| {
        s.chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || (first_digit && c.is_ascii_digit()))
            && s.chars().all(ok_char)
    };
    match k.split_once('@') {
        None => k.len() <= 256 && simple(k, false),
        Some((tenant, system)) => {
            tenant.len() <= 241
                && system.len() <= 14
                && simple(tenant, true)
                && simple(system, false)
        }
    }
}

fn valid_value(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 256
        && !v.ends_with(' ')
        && v.chars()
            .all(|c| (' '..='~').contains(&c) && c != ',' && c != '=')
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{Span, Status};

    use super::*;
    use crate::policy::{Overrides, load_str};

    const T0: i64 = 1_750_000_000;

    fn at(secs: f64) -> Timestamp {
        Timestamp::from_nanosecond(i128::from(T0) * 1_000_000_000 + (secs * 1e9) as i128).unwrap()
    }

    fn policy(policies: &str) -> TailPolicy {
        let text = format!(
            "upstream: {{otlp: {{endpoint: 'http://127.0.0.1:9'}}}}\ntraces:\n  tail:\n    policies:\n{}",
            policies
                .lines()
                .map(|l| format!("      {l}\n"))
                .collect::<String>()
        );
        match load_str(&text, "t.yaml", &Overrides::default(), &|_| None) {
            Ok(p) => p.traces.tail.unwrap(),
            Err(e) => panic!("{e}"),
        }
    }

    /// A trace as owned data; [`Trace::view`] lends it out as the buffer would.
    #[derive(Default, Clone)]
    struct Trace {
        spans: Vec<(Option<Resource>, Span)>,
        bytes: u64,
    }

    impl Trace {
        fn view(&self) -> TraceView<'_> {
            TraceView {
                spans: self
                    .spans
                    .iter()
                    .map(|(r, s)| SpanRef {
                        resource: r.as_ref(),
                        span: s,
                    })
                    .collect(),
                bytes: self.bytes,
            }
        }

        fn with(mut self, span: Span) -> Trace {
            self.spans.push((None, span));
            self
        }

        fn with_resource(mut self, resource: Vec<KeyValue>, span: Span) -> Trace {
            self.spans.push((
                Some(Resource {
                    attributes: resource,
                    ..Default::default()
                }),
                span,
            ));
            self
        }

        fn spans(n: usize) -> Trace {
            (0..n).fold(Trace::default(), |t, _| t.with(Span::default()))
        }
    }

    /// A span starting `start_ms` after a fixed instant, lasting `duration_ms`.
    fn timed(start_ms: u64, duration_ms: u64) -> Span {
        let base = 1_700_000_000_000_000_000u64;
        Span {
            start_time_unix_nano: base + start_ms * 1_000_000,
            end_time_unix_nano: base + (start_ms + duration_ms) * 1_000_000,
            ..Default::default()
        }
    }

    fn attrs(attributes: Vec<KeyValue>) -> Span {
        Span {
            attributes,
            ..Default::default()
        }
    }

    fn kv(key: &str, v: any_value::Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(v) }),
            ..Default::default()
        }
    }

    fn int(key: &str, v: i64) -> KeyValue {
        kv(key, any_value::Value::IntValue(v))
    }

    fn string(key: &str, v: &str) -> KeyValue {
        kv(key, any_value::Value::StringValue(v.into()))
    }

    fn boolean(key: &str, v: bool) -> KeyValue {
        kv(key, any_value::Value::BoolValue(v))
    }

    fn status(code: i32) -> Span {
        Span {
            status: Some(Status {
                code,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// One policy's vote on each trace, as evaluate reports a lone non-cap policy:
    /// `true` for Keep (sampled), `false` for NoMatch (not sampled).
    fn check(one_policy: &str, cases: &[(&str, Trace, bool)]) {
        let p = policy(one_policy);
        for (desc, trace, sampled) in cases {
            let l = Limiters::new(&p);
            let v = evaluate(&p, &l, &trace.view(), at(0.0));
            let want = if *sampled {
                TailOutcome::Keep
            } else {
                TailOutcome::NoMatch
            };
            assert_eq!(v.outcome, want, "{desc}");
        }
    }

    // From processor/tailsamplingprocessor/internal/sampling/latency_test.go
    // (TestEvaluate_Latency, TestEvaluate_Latency_UpperBound).
    #[test]
    fn latency() {
        check(
            "- {name: l, type: latency, latency: {threshold_ms: 5000}}",
            &[
                (
                    "trace duration shorter than threshold",
                    Trace::default().with(timed(0, 4500)),
                    false,
                ),
                (
                    "trace duration is equal to threshold",
                    Trace::default().with(timed(0, 5000)),
                    true,
                ),
                (
                    "total trace duration is longer than threshold but every single span is shorter",
                    Trace::default()
                        .with(timed(0, 3000))
                        .with(timed(2500, 3000)),
                    true,
                ),
            ],
        );
        check(
            "- {name: l, type: latency, latency: {threshold_ms: 5000, upper_threshold_ms: 10000}}",
            &[
                (
                    "shorter than lower bound",
                    Trace::default().with(timed(0, 4500)),
                    false,
                ),
                (
                    "equal to lower bound",
                    Trace::default().with(timed(0, 5000)),
                    false,
                ),
                ("within bounds", Trace::default().with(timed(0, 5001)), true),
                (
                    "above upper bound",
                    Trace::default().with(timed(0, 10001)),
                    false,
                ),
                (
                    "equals upper bound",
                    Trace::default().with(timed(0, 10000)),
                    true,
                ),
                (
                    "longer than threshold, every span shorter",
                    Trace::default()
                        .with(timed(0, 3000))
                        .with(timed(2500, 3000)),
                    true,
                ),
                // The collector checks the running duration after each span: in bounds
                // after the first span is enough, whatever comes after.
                (
                    "in bounds part way through",
                    Trace::default().with(timed(0, 6000)).with(timed(0, 20000)),
                    true,
                ),
            ],
        );
    }

    // From internal/sampling/numeric_tag_filter_test.go (TestNumericTagFilter).
    #[test]
    fn numeric_attribute() {
        let (min, max) = (i64::from(i32::MIN), i64::from(i32::MAX));
        check(
            "- {name: n, type: numeric_attribute, numeric_attribute: {key: example, min_value: -2147483648, max_value: 2147483647}}",
            &[
                (
                    "nonmatching span attribute",
                    Trace::default().with(attrs(vec![int("non_matching", min)])),
                    false,
                ),
                (
                    "span attribute at the lower limit",
                    Trace::default().with(attrs(vec![int("example", min)])),
                    true,
                ),
                (
                    "resource attribute at the lower limit",
                    Trace::default().with_resource(
                        vec![int("example", min)],
                        attrs(vec![int("non_matching", min)]),
                    ),
                    true,
                ),
                (
                    "span attribute at the upper limit",
                    Trace::default().with(attrs(vec![int("example", max)])),
                    true,
                ),
                (
                    "span attribute below min limit",
                    Trace::default().with(attrs(vec![int("example", min - 1)])),
                    false,
                ),
                (
                    "span attribute above max limit",
                    Trace::default().with(attrs(vec![int("example", max + 1)])),
                    false,
                ),
            ],
        );
        // Only min: no upper bound. A value of another type reads as Go's 0.
        check(
            "- {name: n, type: numeric_attribute, numeric_attribute: {key: k, min_value: 0}}",
            &[
                (
                    "large",
                    Trace::default().with(attrs(vec![int("k", i64::MAX)])),
                    true,
                ),
                (
                    "negative",
                    Trace::default().with(attrs(vec![int("k", -1)])),
                    false,
                ),
                (
                    "a string reads as 0",
                    Trace::default().with(attrs(vec![string("k", "-5")])),
                    true,
                ),
                ("absent", Trace::default().with(attrs(vec![])), false),
            ],
        );
    }

    // After internal/sampling/string_tag_filter_test.go: exact values, resource and span
    // attributes, unanchored regexes.
    #[test]
    fn string_attribute() {
        check(
            "- {name: s, type: string_attribute, string_attribute: {key: example, values: [value]}}",
            &[
                (
                    "nonmatching node attribute key",
                    Trace::default()
                        .with_resource(vec![string("non_matching", "value")], attrs(vec![])),
                    false,
                ),
                (
                    "nonmatching node attribute value",
                    Trace::default()
                        .with_resource(vec![string("example", "non_matching")], attrs(vec![])),
                    false,
                ),
                (
                    "matching node attribute",
                    Trace::default().with_resource(vec![string("example", "value")], attrs(vec![])),
                    true,
                ),
                (
                    "nonmatching span attribute key",
                    Trace::default().with(attrs(vec![string("nonmatching", "value")])),
                    false,
                ),
                (
                    "nonmatching span attribute value",
                    Trace::default().with(attrs(vec![string("example", "nonmatching")])),
                    false,
                ),
                (
                    "matching span attribute",
                    Trace::default().with(attrs(vec![string("example", "value")])),
                    true,
                ),
                (
                    "an int is not its text",
                    Trace::default().with(attrs(vec![int("example", 1)])),
                    false,
                ),
            ],
        );
        check(
            "- {name: s, type: string_attribute, string_attribute: {key: example, values: ['v[0-9]+.HealthCheck$'], enabled_regex_matching: true}}",
            &[
                (
                    "regex match",
                    Trace::default()
                        .with(attrs(vec![string("example", "grpc.health.v1.HealthCheck")])),
                    true,
                ),
                (
                    "unanchored at the start",
                    Trace::default().with(attrs(vec![string("example", "x.v1.HealthCheck")])),
                    true,
                ),
                (
                    "anchored where the regex says",
                    Trace::default().with(attrs(vec![string("example", "v1.HealthCheck.Watch")])),
                    false,
                ),
            ],
        );
        // An empty span value never matches, even `.*`; a non-string resource value
        // reads as "" (Go's Str()) and does.
        check(
            "- {name: s, type: string_attribute, string_attribute: {key: k, values: ['.*'], enabled_regex_matching: true}}",
            &[
                (
                    "empty span value",
                    Trace::default().with(attrs(vec![string("k", "")])),
                    false,
                ),
                (
                    "int resource value",
                    Trace::default().with_resource(vec![int("k", 3)], attrs(vec![])),
                    true,
                ),
            ],
        );
    }

    #[test]
    fn boolean_status_span_count_and_trace_state() {
        check(
            "- {name: b, type: boolean_attribute, boolean_attribute: {key: example, value: true}}",
            &[
                (
                    "span true",
                    Trace::default().with(attrs(vec![boolean("example", true)])),
                    true,
                ),
                (
                    "span false",
                    Trace::default().with(attrs(vec![boolean("example", false)])),
                    false,
                ),
                (
                    "resource true",
                    Trace::default().with_resource(vec![boolean("example", true)], attrs(vec![])),
                    true,
                ),
                ("absent", Trace::default().with(attrs(vec![])), false),
            ],
        );
        check(
            "- {name: e, type: status_code, status_code: {status_codes: [ERROR, UNSET]}}",
            &[
                ("ok only", Trace::default().with(status(1)), false),
                (
                    "one error",
                    Trace::default().with(status(1)).with(status(2)),
                    true,
                ),
                (
                    "no status is unset",
                    Trace::default().with(Span::default()),
                    true,
                ),
            ],
        );
        // span_count: spanCount() as the collector's Evaluate has it (max 0: no bound).
        check(
            "- {name: c, type: span_count, span_count: {min_spans: 2, max_spans: 3}}",
            &[
                ("one", Trace::spans(1), false),
                ("two", Trace::spans(2), true),
                ("three", Trace::spans(3), true),
                ("four", Trace::spans(4), false),
            ],
        );
        check(
            "- {name: c, type: span_count, span_count: {min_spans: 2}}",
            &[
                ("one", Trace::spans(1), false),
                ("a thousand", Trace::spans(1000), true),
            ],
        );
        let ts = |s: &str| Span {
            trace_state: s.into(),
            ..Default::default()
        };
        // After internal/sampling/trace_state_filter_test.go.
        check(
            "- {name: t, type: trace_state, trace_state: {key: example, values: [value]}}",
            &[
                ("no tracestate", Trace::default().with(ts("")), false),
                (
                    "other key",
                    Trace::default().with(ts("non_matching=value")),
                    false,
                ),
                (
                    "other value",
                    Trace::default().with(ts("example=non_matching")),
                    false,
                ),
                ("matching", Trace::default().with(ts("example=value")), true),
                (
                    "among others",
                    Trace::default().with(ts("ot=th:8, example=value")),
                    true,
                ),
                (
                    "unparsable",
                    Trace::default().with(ts("example=value,bad")),
                    false,
                ),
                (
                    "duplicate key",
                    Trace::default().with(ts("example=value,example=value")),
                    false,
                ),
            ],
        );
    }

    #[test]
    fn and_not_drop() {
        let and = "- {name: a, type: and, and: {and_sub_policy: [
    {name: x, type: numeric_attribute, numeric_attribute: {key: num, min_value: 50, max_value: 100}},
    {name: z, type: string_attribute, string_attribute: {key: str, values: [v]}}]}}";
        check(
            and,
            &[
                (
                    "both",
                    Trace::default().with(attrs(vec![int("num", 60), string("str", "v")])),
                    true,
                ),
                (
                    "one",
                    Trace::default().with(attrs(vec![int("num", 60)])),
                    false,
                ),
                ("neither", Trace::default().with(attrs(vec![])), false),
            ],
        );
        check(
            "- {name: n, type: not, not: {not_sub_policy: {name: e, type: status_code, status_code: {status_codes: [ERROR]}}}}",
            &[
                ("an error", Trace::default().with(status(2)), false),
                ("no error", Trace::default().with(status(1)), true),
            ],
        );
        let p = policy(
            "- {name: health, type: drop, drop: {drop_sub_policy: [
    {name: p, type: string_attribute, string_attribute: {key: url.path, values: [/health]}}]}}",
        );
        let l = Limiters::new(&p);
        let health = Trace::default().with(attrs(vec![string("url.path", "/health")]));
        let v = evaluate(&p, &l, &health.view(), at(0.0));
        assert_eq!((v.outcome, v.by), (TailOutcome::Drop, Some(0)));
        let other = Trace::default().with(attrs(vec![string("url.path", "/api")]));
        let v = evaluate(&p, &l, &other.view(), at(0.0));
        assert_eq!(v.outcome, TailOutcome::NoMatch);
    }

    /// The outcomes of `trace` evaluated at each time, with one set of limiters.
    fn run(p: &TailPolicy, l: &Limiters, trace: &Trace, times: &[f64]) -> Vec<TailOutcome> {
        times
            .iter()
            .map(|t| evaluate(p, l, &trace.view(), at(*t)).outcome)
            .collect()
    }

    // rate_limiting as the newest collector's (internal/sampling/rate_limiting.go):
    // golang.org/x/time/rate's token bucket, AllowN(now, spans), full at first.
    #[test]
    fn rate_limiting_is_a_token_bucket_of_spans() {
        use TailOutcome::{Drop, Keep};
        let p = policy("- {name: r, type: rate_limiting, rate_limiting: {spans_per_second: 10}}");
        let l = Limiters::new(&p);
        // Burst 20: a 15-span trace passes, the next does not (5 left) and takes nothing,
        // so 0.5 s later (10 tokens) a 10-span trace passes.
        assert_eq!(run(&p, &l, &Trace::spans(15), &[0.0, 0.0]), [Keep, Drop]);
        assert_eq!(run(&p, &l, &Trace::spans(10), &[0.5, 0.5]), [Keep, Drop]);
        // Refilled to the burst, never past it.
        assert_eq!(
            run(&p, &l, &Trace::spans(20), &[100.0, 100.0]),
            [Keep, Drop]
        );
        // A trace larger than the burst never passes.
        assert_eq!(run(&p, &l, &Trace::spans(21), &[1000.0]), [Drop]);
        // A clock step back does not refill it.
        let p = policy(
            "- {name: r, type: rate_limiting, rate_limiting: {spans_per_second: 1, burst_capacity: 1}}",
        );
        let l = Limiters::new(&p);
        assert_eq!(
            run(&p, &l, &Trace::spans(1), &[10.0, 5.0, 10.5, 11.0]),
            [Keep, Drop, Drop, Keep]
        );
    }

    #[test]
    fn bytes_limiting_counts_the_traces_bytes() {
        use TailOutcome::{Drop, Keep};
        let p = policy(
            "- {name: b, type: bytes_limiting, bytes_limiting: {bytes_per_second: 1kB, burst_capacity: 1500}}",
        );
        let l = Limiters::new(&p);
        let t = Trace {
            bytes: 1000,
            ..Trace::spans(1)
        };
        assert_eq!(
            run(&p, &l, &t, &[0.0, 0.0, 0.5, 1.0]),
            [Keep, Drop, Keep, Drop]
        );
    }

    // From internal/sampling/composite_test.go: TestCompositeEvaluatorSampled,
    // TestCompositeEvaluatorThrottling (1-span traces, counters per second of `now`).
    #[test]
    fn composite() {
        use TailOutcome::{Drop, Keep};
        let p = policy(
            "- name: c
  type: composite
  composite:
    max_total_spans_per_second: 1000
    composite_sub_policy:
      - {name: n1, type: numeric_attribute, numeric_attribute: {key: tag, min_value: 0, max_value: 100}}
      - {name: n2, type: always_sample}
    rate_allocation: [{policy: n1, percent: 10}, {policy: n2, percent: 10}]",
        );
        let l = Limiters::new(&p);
        // The first does not match; the second samples.
        assert_eq!(run(&p, &l, &Trace::spans(1), &[0.0]), [Keep]);

        let p = policy(
            "- name: c
  type: composite
  composite:
    max_total_spans_per_second: 10
    composite_sub_policy: [{name: n1, type: always_sample}]
    rate_allocation: [{policy: n1, percent: 100}]",
        );
        let l = Limiters::new(&p);
        let one = Trace::spans(1);
        let times: Vec<f64> = (0..20).map(|i| f64::from(i) * 0.01).collect();
        let outcomes = run(&p, &l, &one, &times);
        assert_eq!(outcomes[..10], [Keep; 10]);
        assert_eq!(outcomes[10..], [Drop; 10]);
        // The next second: sampled again.
        assert_eq!(run(&p, &l, &one, &[1.0]), [Keep]);
        // A trace over the allocation is refused and not counted: a smaller one passes.
        let p = policy(
            "- name: c
  type: composite
  composite:
    max_total_spans_per_second: 10
    composite_sub_policy: [{name: n1, type: always_sample}, {name: n2, type: always_sample}]
    rate_allocation: [{policy: n1, percent: 50}]",
        );
        let l = Limiters::new(&p);
        assert_eq!(run(&p, &l, &Trace::spans(6), &[0.0]), [Drop]);
        assert_eq!(run(&p, &l, &Trace::spans(5), &[0.0]), [Keep]);
    }

    #[test]
    fn the_final_decision() {
        let p = policy(
            "- {name: errors, type: status_code, class: priority, status_code: {status_codes: [ERROR]}}
- {name: slow, type: latency, latency: {threshold_ms: 1000}}
- {name: noise, type: string_attribute, class: bulk, string_attribute: {key: noise, values: ['yes']}}
- {name: limit, type: rate_limiting, rate_limiting: {spans_per_second: 1, burst_capacity: 2}}
- {name: health, type: drop, drop: {drop_sub_policy: [{name: h, type: boolean_attribute, boolean_attribute: {key: health, value: true}}]}}",
        );
        let l = Limiters::new(&p);
        let verdict = |t: &Trace| {
            let v = evaluate(&p, &l, &t.view(), at(0.0));
            (v.outcome, v.class, v.by, v.cap)
        };
        let error = Span {
            status: Some(Status {
                code: 2,
                ..Default::default()
            }),
            attributes: vec![boolean("health", true)],
            ..timed(0, 5000)
        };
        // Drop wins over every keep, whatever its place.
        assert_eq!(
            verdict(&Trace::default().with(error.clone())),
            (TailOutcome::Drop, Class::Normal, Some(4), 1.0)
        );
        // Keep: the highest class among the keepers, by the first of them; the cap is
        // not asked (it keeps its tokens).
        let error = Span {
            attributes: vec![string("noise", "yes")],
            ..error
        };
        assert_eq!(
            verdict(&Trace::default().with(error.clone())),
            (TailOutcome::Keep, Class::Priority, Some(0), 1.0)
        );
        let noisy_slow = Trace::default().with(Span {
            status: None,
            ..error
        });
        assert_eq!(
            verdict(&noisy_slow),
            (TailOutcome::Keep, Class::Normal, Some(1), 1.0)
        );
        // Nothing else keeps it: the cap decides, in its class, until its bucket is empty
        // (2 tokens, none refilled at the same instant, none spent on the traces the other
        // policies kept above); then the cap's refusal drops it.
        let plain = Trace::spans(1);
        assert_eq!(
            verdict(&plain),
            (TailOutcome::Keep, Class::Normal, Some(3), 1.0)
        );
        assert_eq!(verdict(&plain).0, TailOutcome::Keep);
        assert_eq!(
            verdict(&plain),
            (TailOutcome::Drop, Class::Normal, Some(3), 1.0)
        );
        // No policy at all: no match, paced by the caller.
        let none = policy("[]");
        let v = evaluate(&none, &Limiters::new(&none), &plain.view(), at(0.0));
        assert_eq!(
            v,
            Verdict {
                outcome: TailOutcome::NoMatch,
                class: Class::Normal,
                by: None,
                cap: 1.0
            }
        );
        // Policies that do not match, and no cap: no match.
        let p = policy("- {name: slow, type: latency, latency: {threshold_ms: 1000}}");
        let v = evaluate(&p, &Limiters::new(&p), &plain.view(), at(0.0));
        assert_eq!(v.outcome, TailOutcome::NoMatch);
    }

    #[test]
    fn probabilistic_is_a_factor_for_the_callers_consistent_sampling() {
        let p = policy(
            "- {name: slow, type: latency, class: priority, latency: {threshold_ms: 1000}}
- {name: tenth, type: probabilistic, class: bulk, probabilistic: {sampling_percentage: 10, hash_salt: ignored}}
- {name: never, type: probabilistic, probabilistic: {sampling_percentage: 0}}",
        );
        let l = Limiters::new(&p);
        let v = evaluate(&p, &l, &Trace::spans(1).view(), at(0.0));
        assert_eq!(
            (v.outcome, v.class, v.by, v.cap),
            (TailOutcome::Keep, Class::Bulk, Some(1), 0.1)
        );
        // A keeping non-cap policy wins with cap 1.
        let slow = Trace::default().with(timed(0, 2000));
        let v = evaluate(&p, &l, &slow.view(), at(0.0));
        assert_eq!(
            (v.outcome, v.class, v.by, v.cap),
            (TailOutcome::Keep, Class::Priority, Some(0), 1.0)
        );
        // 0% never keeps: as a cap it drops.
        let p =
            policy("- {name: never, type: probabilistic, probabilistic: {sampling_percentage: 0}}");
        let v = evaluate(&p, &Limiters::new(&p), &Trace::spans(1).view(), at(0.0));
        assert_eq!((v.outcome, v.by), (TailOutcome::Drop, Some(0)));
        // Inside `and`, the smallest factor travels with the keep.
        let p = policy(
            "- {name: a, type: and, and: {and_sub_policy: [{name: x, type: always_sample}, {name: y, type: probabilistic, probabilistic: {sampling_percentage: 25}}]}}",
        );
        let v = evaluate(&p, &Limiters::new(&p), &Trace::spans(1).view(), at(0.0));
        assert_eq!((v.outcome, v.cap), (TailOutcome::Keep, 0.25));
    }

    #[test]
    fn each_policy_has_its_own_limiters_nested_ones_too() {
        use TailOutcome::{Keep, NoMatch};
        // Two `and`s with a bucket each: spending one leaves the other full.
        let p = policy(
            "- {name: a, type: and, and: {and_sub_policy: [{name: x, type: span_count, span_count: {min_spans: 2}}, {name: r, type: rate_limiting, rate_limiting: {spans_per_second: 1, burst_capacity: 2}}]}}
- {name: b, type: and, and: {and_sub_policy: [{name: y, type: span_count, span_count: {min_spans: 1, max_spans: 1}}, {name: r, type: rate_limiting, rate_limiting: {spans_per_second: 1, burst_capacity: 1}}]}}",
        );
        let l = Limiters::new(&p);
        let two = Trace::spans(2);
        let one = Trace::spans(1);
        assert_eq!(run(&p, &l, &two, &[0.0, 0.0]), [Keep, NoMatch]);
        assert_eq!(run(&p, &l, &one, &[0.0, 0.0]), [Keep, NoMatch]);
        // Two seconds later the first bucket is full again.
        assert_eq!(run(&p, &l, &two, &[2.0]), [Keep]);
        // A trace over the burst takes nothing: the bucket refilled by 4 s still keeps
        // one trace, and one only.
        let v = evaluate(&p, &l, &Trace::spans(3).view(), at(4.0));
        assert_eq!(v.outcome, NoMatch);
        assert_eq!(run(&p, &l, &two, &[4.0, 4.0]), [Keep, NoMatch]);
    }

    #[test]
    fn limiters_are_send_and_sync() {
        fn shared<T: Send + Sync>() {}
        shared::<Limiters>();
    }
}
