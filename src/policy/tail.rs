//! The validated `traces.tail` section: whole-trace decisions in the OpenTelemetry
//! Collector's `tail_sampling` vocabulary, each policy feeding one of frugal's classes.
//! Types only: `sections/tail.rs` reads them, `crate::tail::policies` evaluates them.

use std::time::Duration;

use regex::Regex;

use crate::model::Class;

/// Tail sampling: spans wait, grouped by trace, until the trace can be judged whole.
#[derive(Debug, Clone)]
pub struct TailPolicy {
    /// How long a trace waits after its first span before it is decided.
    pub decision_wait: Duration,
    /// A trace is decided this long after its root span (no `parent_span_id`) arrived,
    /// when that is sooner than `decision_wait`.
    pub root_grace: Duration,
    /// Bytes all waiting traces may hold together.
    pub max_buffer: u64,
    /// A trace past this many bytes is decided early.
    pub max_trace_size: u64,
    /// How many traces' decisions are remembered for late spans.
    pub decision_cache: usize,
    /// How long a decision is remembered; longer than `decision_wait`.
    pub decision_ttl: Duration,
    /// A span attribute, set on kept spans, naming the policy that kept the trace.
    pub mark_attribute: Option<String>,
    /// The policies, in the order written (names unique).
    pub policies: Vec<TailRule>,
}

/// One top-level tail sampling policy.
#[derive(Debug, Clone)]
pub struct TailRule {
    /// Its name (unique among the top-level policies).
    pub name: String,
    /// The class a trace it keeps is paced in (`class:`, default normal).
    pub class: Class,
    /// What it looks at.
    pub kind: TailKind,
}

/// What a tail policy looks at, as the collector's policy types do (`type:` and its
/// block). Field names are the collector's keys.
#[derive(Debug, Clone)]
pub enum TailKind {
    /// `always_sample`: every trace.
    AlwaysSample,
    /// `latency`: the trace's duration (latest end minus earliest start), in whole
    /// milliseconds: `>= threshold_ms`, or with an upper bound `> threshold_ms` and
    /// `<= upper_threshold_ms`.
    Latency {
        /// Lower bound, milliseconds.
        threshold_ms: i64,
        /// Upper bound, milliseconds; 0 for none.
        upper_threshold_ms: i64,
    },
    /// `status_code`: a span whose status code is one of these.
    StatusCode {
        /// OTLP status code numbers (UNSET 0, OK 1, ERROR 2).
        status_codes: Vec<i32>,
    },
    /// `string_attribute`: a resource or span attribute with a string value among these.
    StringAttribute {
        /// The attribute.
        key: String,
        /// Exact values (empty strings left out, as the collector does).
        values: Vec<String>,
        /// With `enabled_regex_matching`: the values compiled, matched anywhere in the
        /// value (the collector does not anchor them); `None` for exact matching.
        regexes: Option<Vec<Regex>>,
    },
    /// `numeric_attribute`: a resource or span attribute with an integer value within
    /// `[min_value, max_value]`.
    NumericAttribute {
        /// The attribute.
        key: String,
        /// Inclusive lower bound (`i64::MIN` when not written).
        min_value: i64,
        /// Inclusive upper bound (`i64::MAX` when not written).
        max_value: i64,
    },
    /// `boolean_attribute`: a resource or span attribute equal to `value`.
    BooleanAttribute {
        /// The attribute.
        key: String,
        /// The value matched.
        value: bool,
    },
    /// `span_count`: the trace has at least `min_spans` and, unless `max_spans` is 0, at
    /// most `max_spans` spans.
    SpanCount {
        /// Inclusive lower bound.
        min_spans: u32,
        /// Inclusive upper bound; 0 for none.
        max_spans: u32,
    },
    /// `trace_state`: a span whose W3C tracestate has `key` with one of `values`.
    TraceState {
        /// The tracestate key.
        key: String,
        /// The values matched exactly.
        values: Vec<String>,
    },
    /// `rate_limiting`: a token bucket of spans; a trace takes all its spans at once.
    RateLimiting {
        /// Tokens added per second.
        spans_per_second: u64,
        /// The bucket's size (default twice `spans_per_second`).
        burst_capacity: u64,
    },
    /// `bytes_limiting`: a token bucket of bytes; a trace takes all its bytes at once.
    BytesLimiting {
        /// Tokens added per second.
        bytes_per_second: u64,
        /// The bucket's size (default twice `bytes_per_second`).
        burst_capacity: u64,
    },
    /// `probabilistic`: a share of traces, decided by the trace's own consistent
    /// randomness (the caller's threshold), not by a hash.
    Probabilistic {
        /// Percent of traces kept, 0 to 100.
        sampling_percentage: f64,
        /// Accepted for the collector's configs and ignored: frugal's decision must agree
        /// with the `th` it writes, so it cannot be a salted hash of the trace ID.
        hash_salt: Option<String>,
    },
    /// `and`: every sub-policy samples (`and_sub_policy`).
    And(Vec<TailKind>),
    /// `not`: the opposite of its sub-policy (`not_sub_policy`).
    Not(Box<TailKind>),
    /// `drop`: every sub-policy samples, and then the trace is dropped whatever else
    /// says (`drop_sub_policy`).
    Drop(Vec<TailKind>),
    /// `composite`: the first sub-policy that samples decides, within its share of
    /// `max_total_spans_per_second` (counted per second).
    Composite {
        /// The cap every sub-policy's own count is held under.
        max_total_spans_per_second: u64,
        /// As written; the collector does not use it to order evaluation, and neither
        /// does frugal (sub-policies run in `composite_sub_policy` order).
        policy_order: Vec<String>,
        /// The sub-policies, in `composite_sub_policy` order.
        sub_policies: Vec<CompositeSub>,
    },
}

/// A sub-policy of `composite` with its share of the spans per second.
#[derive(Debug, Clone)]
pub struct CompositeSub {
    /// Its name (unique within the composite).
    pub name: String,
    /// What it looks at.
    pub kind: TailKind,
    /// Spans per second it may sample: its `rate_allocation` percent of
    /// `max_total_spans_per_second`, an equal share when listed without a percent, 0
    /// when not listed (as in the collector).
    pub spans_per_second: u64,
}

impl TailKind {
    /// The collector's name for this type (`type:`).
    pub fn type_name(&self) -> &'static str {
        match self {
            TailKind::AlwaysSample => "always_sample",
            TailKind::Latency { .. } => "latency",
            TailKind::StatusCode { .. } => "status_code",
            TailKind::StringAttribute { .. } => "string_attribute",
            TailKind::NumericAttribute { .. } => "numeric_attribute",
            TailKind::BooleanAttribute { .. } => "boolean_attribute",
            TailKind::SpanCount { .. } => "span_count",
            TailKind::TraceState { .. } => "trace_state",
            TailKind::RateLimiting { .. } => "rate_limiting",
            TailKind::BytesLimiting { .. } => "bytes_limiting",
            TailKind::Probabilistic { .. } => "probabilistic",
            TailKind::And(_) => "and",
            TailKind::Not(_) => "not",
            TailKind::Drop(_) => "drop",
            TailKind::Composite { .. } => "composite",
        }
    }

    /// Whether a top-level policy of this type is a *cap*: it only limits how much of
    /// what no other policy kept is kept (rate_limiting, bytes_limiting, probabilistic,
    /// composite).
    pub fn is_cap(&self) -> bool {
        matches!(
            self,
            TailKind::RateLimiting { .. }
                | TailKind::BytesLimiting { .. }
                | TailKind::Probabilistic { .. }
                | TailKind::Composite { .. }
        )
    }
}
