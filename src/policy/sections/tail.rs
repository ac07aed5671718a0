//! The `traces.tail` section: the buffer's sizes and times in frugal's units, and
//! `policies:` in the OpenTelemetry Collector's `tail_sampling` shape
//! (`- {name: x, type: latency, latency: {threshold_ms: 2000}}`) plus frugal's `class:`.
//! What frugal cannot do exactly as the collector does (OTTL, `invert_match`) is refused
//! by name rather than approximated.

use std::time::Duration;

use regex::{Regex, RegexBuilder};
use serde_json::Value;

use crate::model::Class;
use crate::policy::defaults::{
    DEFAULT_TAIL_DECISION_CACHE, DEFAULT_TAIL_DECISION_TTL, DEFAULT_TAIL_DECISION_WAIT,
    DEFAULT_TAIL_MAX_BUFFER, DEFAULT_TAIL_MAX_TRACE_SIZE, DEFAULT_TAIL_ROOT_GRACE,
    TAIL_BURST_PER_RATE, TAIL_DECISION_WAIT_RANGE, TAIL_MAX_BUFFER_RANGE, TAIL_MAX_DECISION_CACHE,
    TAIL_MAX_DECISION_TTL, TAIL_MIN_TRACE_SIZE, TAIL_REGEX_SIZE_LIMIT,
};
use crate::policy::problem::must_be_between;
use crate::policy::tail::{CompositeSub, TailKind, TailPolicy, TailRule};
use crate::policy::tree::{Node, Obj, closest, required, with};
use crate::units::{format_duration, format_size, parse_duration, parse_size};

/// The collector's policy types frugal evaluates, in the order messages list them.
const TYPES: [&str; 15] = [
    "always_sample",
    "latency",
    "status_code",
    "string_attribute",
    "numeric_attribute",
    "boolean_attribute",
    "span_count",
    "trace_state",
    "rate_limiting",
    "bytes_limiting",
    "probabilistic",
    "and",
    "not",
    "drop",
    "composite",
];

/// The collector's policy types frugal refuses, and why.
const UNSUPPORTED: [(&str, &str); 2] = [
    (
        "ottl_condition",
        "not supported by frugal: OTTL is not implemented; use the attribute, status_code, \
         latency and span_count types, combined with and, not and drop",
    ),
    (
        "trace_flags",
        "not supported by frugal: use trace_state or the attribute types",
    ),
];

/// Top-level keys of the collector's processor that frugal spells differently or does
/// without, with what to write instead.
const COLLECTOR_KEYS: [(&str, &str); 6] = [
    (
        "num_traces",
        "not used by frugal, which bounds the buffer in bytes: use max_buffer",
    ),
    (
        "expected_new_traces_per_sec",
        "not used by frugal: leave it out",
    ),
    (
        "decision_wait_after_root_received",
        "frugal calls it root_grace",
    ),
    (
        "maximum_trace_size_bytes",
        "frugal calls it max_trace_size (a size: 8MB)",
    ),
    (
        "sample_on_first_match",
        "not supported by frugal: every policy votes, and the class of the keeping \
         policies decides",
    ),
    (
        "block_on_overflow",
        "not used by frugal: a full buffer decides its oldest traces early",
    ),
];

const CLASSES: [(&str, Class); 3] = [
    ("priority", Class::Priority),
    ("normal", Class::Normal),
    ("bulk", Class::Bulk),
];

const STATUS_CODES: [(&str, i32); 3] = [("OK", 1), ("ERROR", 2), ("UNSET", 0)];

/// Where a policy is written, which decides the types it may have (as in the
/// collector: `and`, `not` and `drop` take the plain types, `composite` also `and`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Level {
    Top,
    And,
    Not,
    Drop,
    Composite,
}

impl Level {
    fn key(self) -> &'static str {
        match self {
            Level::Top => "policies",
            Level::And => "and_sub_policy",
            Level::Not => "not_sub_policy",
            Level::Drop => "drop_sub_policy",
            Level::Composite => "composite_sub_policy",
        }
    }

    fn allows(self, ty: &str) -> bool {
        match self {
            Level::Top => true,
            Level::Composite => !matches!(ty, "not" | "drop" | "composite"),
            Level::And | Level::Not | Level::Drop => {
                !matches!(ty, "and" | "not" | "drop" | "composite")
            }
        }
    }
}

/// A policy as read, at any level.
struct Parsed {
    name: Option<String>,
    class: Class,
    kind: TailKind,
}

/// Reads `traces.tail`; `None` when it is not a mapping. Problems inside are recorded
/// (which fails the load) and the defaults stand in for what could not be read.
pub(super) fn build(n: Node<'_>) -> Option<TailPolicy> {
    let mut o = n.map()?;
    let decision_wait = with(&mut o, "decision_wait", |n| {
        duration_in(n, &TAIL_DECISION_WAIT_RANGE)
    });
    let root_grace = with(&mut o, "root_grace", |n| n.parse(parse_duration));
    let max_buffer = with(&mut o, "max_buffer", |n| {
        let v = n.parse(parse_size)?;
        if TAIL_MAX_BUFFER_RANGE.contains(&v) {
            Some(v)
        } else {
            n.problem(format!(
                "must be between {} and {}",
                format_size(*TAIL_MAX_BUFFER_RANGE.start()),
                format_size(*TAIL_MAX_BUFFER_RANGE.end())
            ));
            None
        }
    });
    let max_trace_size = with(&mut o, "max_trace_size", |n| n.parse(parse_size));
    let decision_cache = with(&mut o, "decision_cache", |n| {
        if n.value.is_object() {
            n.problem(
                "frugal remembers kept and dropped traces in one cache: write a number of \
                 traces (decision_cache: 500000)",
            );
            return None;
        }
        let v = n.u64()?;
        if v > TAIL_MAX_DECISION_CACHE {
            n.problem(format!("must be at most {TAIL_MAX_DECISION_CACHE} traces"));
            return None;
        }
        usize::try_from(v).ok()
    });
    let decision_ttl = with(&mut o, "decision_ttl", |n| n.parse(parse_duration));
    let mark_attribute = with(&mut o, "mark_attribute", non_empty_text);
    let policies = with(&mut o, "policies", policies).unwrap_or_default();
    for (key, hint) in COLLECTOR_KEYS {
        if let Some((_, path)) = o.get(key) {
            o.problems().push(&path, hint);
        }
    }
    let decision_wait = decision_wait.unwrap_or(DEFAULT_TAIL_DECISION_WAIT);
    let root_grace = root_grace.unwrap_or(DEFAULT_TAIL_ROOT_GRACE);
    let max_buffer = max_buffer.unwrap_or(DEFAULT_TAIL_MAX_BUFFER);
    let decision_ttl = decision_ttl.unwrap_or(DEFAULT_TAIL_DECISION_TTL);
    // Without max_trace_size, the default, but never more than the whole buffer.
    let trace_size_written = max_trace_size.is_some();
    let max_trace_size = max_trace_size.unwrap_or(DEFAULT_TAIL_MAX_TRACE_SIZE.min(max_buffer));
    let problems = o.problems();
    if root_grace > decision_wait {
        problems.push(
            &o.child_path("root_grace"),
            format!(
                "must not be longer than decision_wait ({})",
                format_duration(decision_wait)
            ),
        );
    }
    if decision_ttl <= decision_wait {
        problems.push(
            &o.child_path("decision_ttl"),
            format!(
                "must be longer than decision_wait ({}): late spans must still find their \
                 trace's decision",
                format_duration(decision_wait)
            ),
        );
    } else if decision_ttl > TAIL_MAX_DECISION_TTL {
        problems.push(
            &o.child_path("decision_ttl"),
            format!("must be at most {}", format_duration(TAIL_MAX_DECISION_TTL)),
        );
    }
    if trace_size_written && !(TAIL_MIN_TRACE_SIZE..=max_buffer).contains(&max_trace_size) {
        problems.push(
            &o.child_path("max_trace_size"),
            format!(
                "must be between {} and max_buffer ({})",
                format_size(TAIL_MIN_TRACE_SIZE),
                format_size(max_buffer)
            ),
        );
    }
    o.finish();
    Some(TailPolicy {
        decision_wait,
        root_grace,
        max_buffer,
        max_trace_size,
        decision_cache: decision_cache.unwrap_or(DEFAULT_TAIL_DECISION_CACHE),
        decision_ttl,
        mark_attribute,
        policies,
    })
}

fn duration_in(n: Node<'_>, range: &std::ops::RangeInclusive<Duration>) -> Option<Duration> {
    let d = n.parse(parse_duration)?;
    if range.contains(&d) {
        Some(d)
    } else {
        n.problem(must_be_between(range));
        None
    }
}

fn non_empty_text(n: Node<'_>) -> Option<String> {
    let t = n.text()?;
    if t.is_empty() {
        n.problem("must not be empty");
        return None;
    }
    Some(t)
}

/// The top-level `policies:` list: names required and unique.
fn policies(n: Node<'_>) -> Option<Vec<TailRule>> {
    let mut out = Vec::new();
    let mut names: Vec<String> = Vec::new();
    let listed = n.each_item("a list of policies", |_, node| {
        let Some(p) = policy(node, Level::Top) else {
            return;
        };
        let Some(name) = p.name else {
            return;
        };
        if names.contains(&name) {
            node.problems.push(
                &format!("{}.name", node.path),
                format!("duplicate policy name {name:?}"),
            );
            return;
        }
        names.push(name.clone());
        out.push(TailRule {
            name,
            class: p.class,
            kind: p.kind,
        });
    });
    listed.then_some(out)
}

/// One policy at `level`: `name`, `type`, its block, and at the top `class`.
fn policy(n: Node<'_>, level: Level) -> Option<Parsed> {
    let mut o = n.map()?;
    let name = with(&mut o, "name", non_empty_text);
    let class = if level == Level::Top {
        with(&mut o, "class", |n| n.choice(&CLASSES))
    } else {
        if let Some((_, path)) = o.get("class") {
            o.problems().push(
                &path,
                "only a top-level policy has a class (sub-policies decide together)",
            );
        }
        None
    };
    let type_path = o.child_path("type");
    let ty = required(
        &mut o,
        "type",
        &format!("missing (one of: {})", TYPES.join(", ")),
        |n| n.text(),
    );
    let kind = ty.and_then(|t| kind(&mut o, &t, &type_path, level));
    if name.is_none() && matches!(level, Level::Top | Level::Composite) {
        // Pushed at the name's path: a name that was there but bad is already reported.
        o.problems().push(
            &o.child_path("name"),
            "missing: every policy needs a name (it is how a kept trace says why)",
        );
    }
    o.finish();
    Some(Parsed {
        name,
        class: class.unwrap_or(Class::Normal),
        kind: kind?,
    })
}

/// The policy's type and its block.
fn kind(o: &mut Obj<'_>, t: &str, type_path: &str, level: Level) -> Option<TailKind> {
    let problems = o.problems();
    if let Some((key, why)) = UNSUPPORTED.iter().find(|(k, _)| *k == t) {
        problems.push(type_path, format!("{t}: {why}"));
        o.get(key);
        return None;
    }
    let Some(&ty) = TYPES.iter().find(|k| **k == t) else {
        let hint = match closest(t, &TYPES) {
            Some(k) => format!(" (did you mean {k}?)"),
            None => String::new(),
        };
        problems.push(
            type_path,
            format!(
                "{t:?} is not a policy type{hint}; known types: {}",
                TYPES.join(", ")
            ),
        );
        // Its block is not reported again as an unknown key.
        for k in TYPES {
            o.get(k);
        }
        return None;
    };
    if !level.allows(ty) {
        problems.push(
            type_path,
            format!(
                "{ty} cannot be used in {} (the collector allows only the plain types there{})",
                level.key(),
                if level == Level::Composite {
                    " and and"
                } else {
                    ""
                }
            ),
        );
        o.get(ty);
        return None;
    }
    if ty == "probabilistic" && matches!(level, Level::Not | Level::Drop) {
        problems.push(
            type_path,
            format!(
                "probabilistic cannot be used in {} by frugal: its share is taken by the \
                 trace's consistent randomness after the policies decide",
                level.key()
            ),
        );
        o.get(ty);
        return None;
    }
    if ty == "always_sample" {
        return Some(TailKind::AlwaysSample);
    }
    required(
        o,
        ty,
        &format!("missing: a {ty} policy needs its {ty} block"),
        |n| block(n, ty),
    )
}

fn block(n: Node<'_>, ty: &str) -> Option<TailKind> {
    let mut o = n.map()?;
    let kind = match ty {
        "latency" => latency(&mut o),
        "status_code" => status_code(&mut o),
        "string_attribute" => string_attribute(&mut o),
        "numeric_attribute" => numeric_attribute(&mut o),
        "boolean_attribute" => boolean_attribute(&mut o),
        "span_count" => span_count(&mut o),
        "trace_state" => trace_state(&mut o),
        "rate_limiting" => rate_limiting(&mut o),
        "bytes_limiting" => bytes_limiting(&mut o),
        "probabilistic" => probabilistic(&mut o),
        "and" => sub_list(&mut o, Level::And).map(TailKind::And),
        "drop" => sub_list(&mut o, Level::Drop).map(TailKind::Drop),
        "not" => not(&mut o),
        "composite" => composite(&mut o),
        _ => None,
    };
    o.finish();
    kind
}

fn latency(o: &mut Obj<'_>) -> Option<TailKind> {
    let threshold_ms = with(o, "threshold_ms", int).unwrap_or(0);
    let upper_threshold_ms = with(o, "upper_threshold_ms", int).unwrap_or(0);
    if threshold_ms < 0 {
        o.problems()
            .push(&o.child_path("threshold_ms"), "must not be negative");
        return None;
    }
    if upper_threshold_ms != 0 && upper_threshold_ms <= threshold_ms {
        o.problems().push(
            &o.child_path("upper_threshold_ms"),
            "must be above threshold_ms (or 0 for no upper bound): nothing would match",
        );
        return None;
    }
    Some(TailKind::Latency {
        threshold_ms,
        upper_threshold_ms,
    })
}

fn status_code(o: &mut Obj<'_>) -> Option<TailKind> {
    let codes = required(
        o,
        "status_codes",
        "missing: the codes to match (OK, ERROR, UNSET)",
        |n| {
            let mut codes = Vec::new();
            let mut ok = true;
            n.each_listed(|_, item| match item.choice(&STATUS_CODES) {
                Some(c) => codes.push(c),
                None => ok = false,
            });
            if ok && codes.is_empty() {
                n.problem("needs at least one of OK, ERROR, UNSET");
                return None;
            }
            ok.then_some(codes)
        },
    )?;
    Some(TailKind::StatusCode {
        status_codes: codes,
    })
}

fn no_invert(o: &mut Obj<'_>) -> bool {
    let inverted = with(o, "invert_match", |n| {
        let v = n.bool()?;
        if v {
            n.problem(
                "not supported by frugal (the collector deprecates inverted decisions): \
                 wrap the policy in a `not` policy to keep what does not match, or use a \
                 `drop` policy to drop what matches",
            );
        }
        Some(v)
    });
    inverted != Some(true)
}

fn key(o: &mut Obj<'_>) -> Option<String> {
    required(o, "key", "missing: the attribute to look at", |n| {
        // YAML reads a bare n, y, no, off... as a boolean; a key is never one.
        if let Value::Bool(b) = n.value {
            n.problem(format!(
                "read as the boolean {b}: quote the attribute's name ('n', 'yes', ...)"
            ));
            return None;
        }
        non_empty_text(n)
    })
}

fn string_attribute(o: &mut Obj<'_>) -> Option<TailKind> {
    let key = key(o);
    let regex = with(o, "enabled_regex_matching", |n| n.bool()).unwrap_or(false);
    // The collector caches regex results; frugal's matching needs no cache.
    let _ = with(o, "cache_max_size", |n| n.u64());
    let plain = no_invert(o);
    let values_path = o.child_path("values");
    let (values, regexes) = required(o, "values", "missing: the values to match", |n| {
        let mut values = Vec::new();
        let mut regexes = Vec::new();
        let mut ok = true;
        n.each_listed(|_, item| {
            let Some(v) = scalar_text(item) else {
                ok = false;
                return;
            };
            // As in the collector: empty values are left out.
            if v.is_empty() {
                return;
            }
            if regex {
                match compile(&v) {
                    Ok(r) => regexes.push(r),
                    Err(e) => {
                        item.problem(e);
                        ok = false;
                    }
                }
            }
            values.push(v);
        });
        ok.then_some((values, regexes))
    })?;
    if values.is_empty() {
        o.problems()
            .push(&values_path, "needs at least one non-empty value");
        return None;
    }
    if !plain {
        return None;
    }
    Some(TailKind::StringAttribute {
        key: key?,
        values,
        regexes: regex.then_some(regexes),
    })
}

fn compile(s: &str) -> Result<Regex, String> {
    RegexBuilder::new(s)
        .size_limit(TAIL_REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| format!("{s:?} is not a regular expression (or is too large): {e}"))
}

fn numeric_attribute(o: &mut Obj<'_>) -> Option<TailKind> {
    let key = key(o);
    let min = with(o, "min_value", int);
    let max = with(o, "max_value", int);
    let plain = no_invert(o);
    if !o.has("min_value") && !o.has("max_value") {
        o.problems()
            .push(&o.path, "at least one of min_value or max_value is needed");
        return None;
    }
    let min_value = min.unwrap_or(i64::MIN);
    let max_value = max.unwrap_or(i64::MAX);
    if min_value > max_value {
        o.problems()
            .push(&o.child_path("max_value"), "must not be below min_value");
        return None;
    }
    if !plain || (o.has("min_value") && min.is_none()) || (o.has("max_value") && max.is_none()) {
        return None;
    }
    Some(TailKind::NumericAttribute {
        key: key?,
        min_value,
        max_value,
    })
}

fn boolean_attribute(o: &mut Obj<'_>) -> Option<TailKind> {
    let key = key(o);
    let value = required(o, "value", "missing: true or false", |n| n.bool());
    let plain = no_invert(o);
    if !plain {
        return None;
    }
    Some(TailKind::BooleanAttribute {
        key: key?,
        value: value?,
    })
}

fn span_count(o: &mut Obj<'_>) -> Option<TailKind> {
    let spans = |n: Node<'_>| {
        let v = n.u64()?;
        u32::try_from(v)
            .ok()
            .filter(|v| *v <= i32::MAX as u32)
            .or_else(|| {
                n.problem("must be at most 2147483647");
                None
            })
    };
    let min_spans = with(o, "min_spans", spans);
    let max_spans = with(o, "max_spans", spans);
    if o.has("min_spans") && min_spans.is_none() || o.has("max_spans") && max_spans.is_none() {
        return None;
    }
    let (min_spans, max_spans) = (min_spans.unwrap_or(0), max_spans.unwrap_or(0));
    if max_spans != 0 && max_spans < min_spans {
        o.problems().push(
            &o.child_path("max_spans"),
            "must not be below min_spans (or 0 for no upper bound)",
        );
        return None;
    }
    Some(TailKind::SpanCount {
        min_spans,
        max_spans,
    })
}

fn trace_state(o: &mut Obj<'_>) -> Option<TailKind> {
    let key = key(o);
    let key_len = key.as_ref().map_or(0, String::len);
    let values = required(o, "values", "missing: the values to match", |n| {
        let mut values = Vec::new();
        let mut ok = true;
        n.each_listed(|_, item| match scalar_text(item) {
            Some(v) if v.is_empty() => {}
            // A tracestate entry (key=value) is under 256 characters.
            Some(v) if key_len + v.len() >= 256 => {
                item.problem("key and value together must be under 256 characters");
                ok = false;
            }
            Some(v) => values.push(v),
            None => ok = false,
        });
        if ok && values.is_empty() {
            n.problem("needs at least one non-empty value");
            return None;
        }
        ok.then_some(values)
    })?;
    Some(TailKind::TraceState { key: key?, values })
}

fn rate_limiting(o: &mut Obj<'_>) -> Option<TailKind> {
    let missing = "missing: how many spans a second this policy keeps";
    let (rate, burst) = bucket(o, "spans_per_second", missing, positive)?;
    Some(TailKind::RateLimiting {
        spans_per_second: rate,
        burst_capacity: burst,
    })
}

fn bytes_limiting(o: &mut Obj<'_>) -> Option<TailKind> {
    let size = |n: Node<'_>| {
        let v = n.parse(parse_size)?;
        if v == 0 {
            n.problem("must be above 0");
            return None;
        }
        Some(v)
    };
    let missing = "missing: how many bytes a second this policy keeps (a size: 100kB)";
    let (rate, burst) = bucket(o, "bytes_per_second", missing, size)?;
    Some(TailKind::BytesLimiting {
        bytes_per_second: rate,
        burst_capacity: burst,
    })
}

/// A token bucket's rate (`rate_key`, required) and `burst_capacity` (by default
/// [`TAIL_BURST_PER_RATE`] times the rate), each read by `read`.
fn bucket(
    o: &mut Obj<'_>,
    rate_key: &'static str,
    missing: &'static str,
    read: impl Fn(Node<'_>) -> Option<u64> + Copy,
) -> Option<(u64, u64)> {
    let rate = required(o, rate_key, missing, read)?;
    let burst = with(o, "burst_capacity", read);
    if o.has("burst_capacity") && burst.is_none() {
        return None;
    }
    Some((
        rate,
        burst.unwrap_or(rate.saturating_mul(TAIL_BURST_PER_RATE)),
    ))
}

fn probabilistic(o: &mut Obj<'_>) -> Option<TailKind> {
    let pct = required(
        o,
        "sampling_percentage",
        "missing: the percent of traces to keep (sampling_percentage: 10)",
        |n| {
            let v = number(n)?;
            if !v.is_finite() || v < 0.0 {
                n.problem("must be a percent from 0 to 100");
                return None;
            }
            // As in the collector: 100 or more keeps every trace.
            Some(v.min(100.0))
        },
    );
    let hash_salt = with(o, "hash_salt", |n| n.text());
    Some(TailKind::Probabilistic {
        sampling_percentage: pct?,
        hash_salt,
    })
}

/// `and_sub_policy` / `drop_sub_policy`: a non-empty list of plain policies.
fn sub_list(o: &mut Obj<'_>, level: Level) -> Option<Vec<TailKind>> {
    let key = level.key();
    let path = o.child_path(key);
    let subs = required(o, key, &format!("missing: the sub-policies ({key})"), |n| {
        let mut subs = Vec::new();
        let mut ok = true;
        let listed = n.each_item("a list of policies", |_, item| match policy(item, level) {
            Some(p) => subs.push(p.kind),
            None => ok = false,
        });
        (listed && ok).then_some(subs)
    })?;
    if subs.is_empty() {
        o.problems().push(&path, "needs at least one policy");
        return None;
    }
    Some(subs)
}

fn not(o: &mut Obj<'_>) -> Option<TailKind> {
    required(
        o,
        "not_sub_policy",
        "missing: the policy to invert (not_sub_policy)",
        |n| {
            if n.value.is_array() {
                n.problem("expected one policy (a mapping), not a list");
                return None;
            }
            policy(n, Level::Not).map(|p| TailKind::Not(Box::new(p.kind)))
        },
    )
}

fn composite(o: &mut Obj<'_>) -> Option<TailKind> {
    let max_total = required(
        o,
        "max_total_spans_per_second",
        "missing: the spans a second all sub-policies share",
        positive,
    );
    let subs_path = o.child_path("composite_sub_policy");
    let subs = required(
        o,
        "composite_sub_policy",
        "missing: the sub-policies (composite_sub_policy)",
        |n| {
            let mut subs: Vec<(String, TailKind)> = Vec::new();
            let mut ok = true;
            let listed = n.each_item("a list of policies", |_, item| {
                let Some(p) = policy(item, Level::Composite) else {
                    ok = false;
                    return;
                };
                let Some(name) = p.name else {
                    ok = false;
                    return;
                };
                if subs.iter().any(|(s, _)| *s == name) {
                    item.problems.push(
                        &format!("{}.name", item.path),
                        format!("duplicate policy name {name:?}"),
                    );
                    ok = false;
                    return;
                }
                subs.push((name, p.kind));
            });
            (listed && ok).then_some(subs)
        },
    );
    if subs.as_ref().is_some_and(Vec::is_empty) {
        o.problems().push(&subs_path, "needs at least one policy");
        return None;
    }
    let names: Vec<String> = subs
        .as_ref()
        .map(|s| s.iter().map(|(n, _)| n.clone()).collect())
        .unwrap_or_default();
    let known = |item: &Node<'_>, name: &str| -> bool {
        // Without the sub-policies there is nothing to check the name against.
        if subs.is_none() || names.iter().any(|n| n == name) {
            return true;
        }
        item.problem(format!(
            "{name:?} is not a policy of composite_sub_policy (they are: {})",
            names.join(", ")
        ));
        false
    };
    let policy_order = with(o, "policy_order", |n| {
        let mut order: Vec<String> = Vec::new();
        let mut ok = true;
        n.each_listed(|_, item| {
            let Some(name) = scalar_text(item) else {
                ok = false;
                return;
            };
            if !known(&item, &name) {
                ok = false;
            } else if order.contains(&name) {
                item.problem(format!("{name:?} is listed twice"));
                ok = false;
            } else {
                order.push(name);
            }
        });
        ok.then_some(order)
    });
    if o.has("policy_order") && policy_order.is_none() {
        return None;
    }
    let allocation_path = o.child_path("rate_allocation");
    let allocation = with(o, "rate_allocation", |n| {
        let mut out: Vec<(String, u64)> = Vec::new();
        let mut ok = true;
        let listed = n.each_item("a list of {policy, percent}", |_, item| {
            let Some(mut a) = item.map() else {
                ok = false;
                return;
            };
            let name = required(
                &mut a,
                "policy",
                "missing: a composite sub-policy's name",
                |n| {
                    let name = scalar_text(n)?;
                    if !known(&n, &name) {
                        return None;
                    }
                    Some(name)
                },
            );
            let percent = with(&mut a, "percent", |n| {
                let v = n.u64()?;
                if v > 100 {
                    n.problem("must be a percent from 0 to 100");
                    return None;
                }
                Some(v)
            });
            if a.has("percent") && percent.is_none() {
                ok = false;
            }
            let unknown = a.finish();
            match name {
                Some(name) if out.iter().any(|(s, _)| *s == name) => {
                    item.problem(format!("{name:?} has a rate allocation already"));
                    ok = false;
                }
                Some(name) if unknown == 0 => out.push((name, percent.unwrap_or(0))),
                _ => ok = false,
            }
        });
        (listed && ok).then_some(out)
    });
    if o.has("rate_allocation") && allocation.is_none() {
        return None;
    }
    let allocation = allocation.unwrap_or_default();
    if allocation.iter().map(|(_, p)| p).sum::<u64>() > 100 {
        o.problems()
            .push(&allocation_path, "the percents add up to more than 100");
        return None;
    }
    let (max_total, subs) = (max_total?, subs?);
    let n_subs = subs.len() as f64;
    let sub_policies = subs
        .into_iter()
        .map(|(name, kind)| {
            // As the collector computes it: a share in float, truncated.
            let share = match allocation.iter().find(|(s, _)| *s == name) {
                Some((_, p)) if *p > 0 => (*p as f64 / 100.0) * max_total as f64,
                Some(_) => max_total as f64 / n_subs,
                None => 0.0,
            };
            CompositeSub {
                name,
                kind,
                spans_per_second: share as u64,
            }
        })
        .collect();
    Some(TailKind::Composite {
        max_total_spans_per_second: max_total,
        policy_order: policy_order.unwrap_or_default(),
        sub_policies,
    })
}

fn positive(n: Node<'_>) -> Option<u64> {
    let v = n.u64()?;
    if v == 0 {
        n.problem("must be above 0");
        return None;
    }
    Some(v)
}

/// A whole number, negative allowed (also quoted).
fn int(n: Node<'_>) -> Option<i64> {
    numeric(n, serde_json::Number::as_i64, "a whole number")
}

/// A number (also quoted).
fn number(n: Node<'_>) -> Option<f64> {
    numeric(n, serde_json::Number::as_f64, "a number")
}

/// A number read by `from`, or parsed from a quoted one; a problem saying it is not
/// `what` otherwise.
fn numeric<T: std::str::FromStr>(
    n: Node<'_>,
    from: fn(&serde_json::Number) -> Option<T>,
    what: &str,
) -> Option<T> {
    let v = match n.value {
        Value::Number(x) => from(x),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    if v.is_none() {
        n.problem(format!("{} is not {what}", n.value));
    }
    v
}

/// A string, or a number or boolean as written; a problem for anything else.
fn scalar_text(n: Node<'_>) -> Option<String> {
    match n.value {
        Value::String(s) => Some(s.clone()),
        Value::Number(x) => Some(x.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => {
            n.problem("expected a string");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::model::Class;
    use crate::policy::load::{Overrides, load_str};
    use crate::policy::{Policy, TailKind, TailPolicy};

    fn load(tail: &str) -> Result<Policy, Vec<(String, String)>> {
        let text = format!(
            "upstream: {{otlp: {{endpoint: 'http://127.0.0.1:9'}}}}\ntraces:\n  tail:\n{}",
            tail.lines()
                .map(|l| format!("    {l}\n"))
                .collect::<String>()
        );
        load_str(&text, "t.yaml", &Overrides::default(), &|_| None).map_err(|e| {
            e.problems
                .into_iter()
                .map(|p| (p.path, p.message))
                .collect()
        })
    }

    fn tail(yaml: &str) -> TailPolicy {
        match load(yaml) {
            Ok(p) => p.traces.tail.expect("tail is present"),
            Err(e) => panic!("{e:?}"),
        }
    }

    /// The problems of a policy that must not load.
    fn problems(yaml: &str) -> Vec<(String, String)> {
        match load(yaml) {
            Ok(_) => panic!("loaded: {yaml}"),
            Err(e) => e,
        }
    }

    /// Asserts one problem at `path` whose message contains `words`.
    fn refused(yaml: &str, path: &str, words: &str) {
        let ps = problems(yaml);
        assert!(
            ps.iter().any(|(p, m)| p == path && m.contains(words)),
            "expected {path}: ...{words}... in {ps:?}"
        );
    }

    #[test]
    fn absent_is_off_and_empty_is_on_with_the_defaults() {
        let text = "upstream: {otlp: {endpoint: 'http://127.0.0.1:9'}}\n";
        let p = load_str(text, "t.yaml", &Overrides::default(), &|_| None).unwrap();
        assert!(p.traces.tail.is_none());
        let t = tail("{}");
        assert_eq!(t.decision_wait, Duration::from_secs(10));
        assert_eq!(t.root_grace, Duration::from_secs(1));
        assert_eq!(t.max_buffer, 256_000_000);
        assert_eq!(t.max_trace_size, 8_000_000);
        assert_eq!(t.decision_cache, 500_000);
        assert_eq!(t.decision_ttl, Duration::from_secs(600));
        assert!(t.mark_attribute.is_none());
        assert!(t.policies.is_empty());
    }

    #[test]
    fn sizes_and_durations_carry_units() {
        let t = tail(
            "decision_wait: 30s
root_grace: 500ms
max_buffer: 1GiB
max_trace_size: 16MB
decision_cache: 1000
decision_ttl: 1h
mark_attribute: frugal.tail.policy",
        );
        assert_eq!(t.decision_wait, Duration::from_secs(30));
        assert_eq!(t.root_grace, Duration::from_millis(500));
        assert_eq!(t.max_buffer, 1 << 30);
        assert_eq!(t.max_trace_size, 16_000_000);
        assert_eq!(t.decision_cache, 1000);
        assert_eq!(t.decision_ttl, Duration::from_secs(3600));
        assert_eq!(t.mark_attribute.as_deref(), Some("frugal.tail.policy"));
    }

    #[test]
    fn buffer_settings_are_held_to_their_bounds() {
        refused(
            "decision_wait: 10s\ndecision_ttl: 5s",
            "traces.tail.decision_ttl",
            "must be longer than decision_wait (10s)",
        );
        refused(
            "decision_wait: 10s\ndecision_ttl: 10s",
            "traces.tail.decision_ttl",
            "longer than decision_wait",
        );
        refused(
            "decision_wait: 2s\nroot_grace: 5s",
            "traces.tail.root_grace",
            "decision_wait",
        );
        refused(
            "decision_wait: 1h",
            "traces.tail.decision_wait",
            "must be between",
        );
        refused("max_buffer: 10kB", "traces.tail.max_buffer", "between");
        refused(
            "max_buffer: 10MB\nmax_trace_size: 20MB",
            "traces.tail.max_trace_size",
            "max_buffer",
        );
        refused("max_buffer: lots", "traces.tail.max_buffer", "not a size");
        refused(
            "decision_cache: {sampled_cache_size: 10}",
            "traces.tail.decision_cache",
            "one cache",
        );
        refused("num_traces: 50000", "traces.tail.num_traces", "max_buffer");
        refused(
            "decision_wait_after_root_received: 1s",
            "traces.tail.decision_wait_after_root_received",
            "root_grace",
        );
        refused(
            "decison_wait: 1s",
            "traces.tail.decison_wait",
            "did you mean decision_wait",
        );
    }

    /// The README's big example (collector-contrib `processor/tailsamplingprocessor/
    /// README.md`), with `ottl_condition` left out (frugal refuses it) and a frugal class.
    const README: &str = r#"decision_wait: 10s
policies:
  [
      {name: test-policy-1, type: always_sample},
      {name: test-policy-2, type: latency, latency: {threshold_ms: 5000, upper_threshold_ms: 10000}},
      {name: test-policy-3, type: numeric_attribute, numeric_attribute: {key: key1, min_value: 50, max_value: 100}},
      {name: test-policy-4, type: probabilistic, probabilistic: {sampling_percentage: 10}},
      {name: test-policy-5, type: status_code, status_code: {status_codes: [ERROR, UNSET]}, class: priority},
      {name: test-policy-6, type: string_attribute, string_attribute: {key: key2, values: [value1, value2]}},
      {name: test-policy-7, type: string_attribute, string_attribute: {key: key2, values: [value1, val*], enabled_regex_matching: true, cache_max_size: 10}},
      {name: test-policy-8, type: rate_limiting, rate_limiting: {spans_per_second: 35}},
      {name: test-policy-9, type: span_count, span_count: {min_spans: 2, max_spans: 20}},
      {name: test-policy-10, type: trace_state, trace_state: { key: key3, values: [value1, value2] }},
      {name: test-policy-11, type: boolean_attribute, boolean_attribute: {key: key4, value: true}},
      {name: test-policy-12, type: bytes_limiting, bytes_limiting: {bytes_per_second: 1MB, burst_capacity: 4000000}},
      {name: test-policy-13, type: not, not: {not_sub_policy: {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}}},
      {
        name: and-policy-1,
        type: and,
        and: {
          and_sub_policy:
          [
            {name: test-and-policy-1, type: numeric_attribute, numeric_attribute: { key: key1, min_value: 50, max_value: 100 }},
            {name: test-and-policy-2, type: string_attribute, string_attribute: { key: key2, values: [ value1, value2 ] }},
          ]
        }
      },
      {
        name: drop-policy-1,
        type: drop,
        drop: {
          drop_sub_policy:
          [
            {name: test-drop-policy-1, type: string_attribute, string_attribute: {key: url.path, values: [\/health, \/metrics], enabled_regex_matching: true}}
          ]
        }
      },
      {
        name: composite-policy-1,
        type: composite,
        composite:
          {
            max_total_spans_per_second: 1000,
            policy_order: [test-composite-policy-1, test-composite-policy-2, test-composite-policy-3],
            composite_sub_policy:
              [
                {name: test-composite-policy-1, type: numeric_attribute, numeric_attribute: {key: key1, min_value: 50}},
                {name: test-composite-policy-2, type: string_attribute, string_attribute: {key: key2, values: [value1, value2]}},
                {name: test-composite-policy-3, type: always_sample}
              ],
            rate_allocation:
              [
                {policy: test-composite-policy-1, percent: 50},
                {policy: test-composite-policy-2, percent: 25}
              ]
          }
      },
    ]
"#;

    #[test]
    fn the_collector_readme_example_loads() {
        let t = tail(README);
        let names: Vec<&str> = t.policies.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names.len(), 16);
        assert_eq!(names[0], "test-policy-1");
        let types: Vec<&str> = t.policies.iter().map(|p| p.kind.type_name()).collect();
        assert_eq!(
            types,
            [
                "always_sample",
                "latency",
                "numeric_attribute",
                "probabilistic",
                "status_code",
                "string_attribute",
                "string_attribute",
                "rate_limiting",
                "span_count",
                "trace_state",
                "boolean_attribute",
                "bytes_limiting",
                "not",
                "and",
                "drop",
                "composite"
            ]
        );
        assert_eq!(t.policies[4].class, Class::Priority);
        assert_eq!(t.policies[0].class, Class::Normal);
        let k = |i: usize| &t.policies[i].kind;
        assert!(matches!(
            k(1),
            TailKind::Latency {
                threshold_ms: 5000,
                upper_threshold_ms: 10000
            }
        ));
        assert!(matches!(
            k(2),
            TailKind::NumericAttribute {
                min_value: 50,
                max_value: 100,
                ..
            }
        ));
        assert!(
            matches!(k(3), TailKind::Probabilistic { sampling_percentage, hash_salt: None } if *sampling_percentage == 10.0)
        );
        assert!(
            matches!(k(4), TailKind::StatusCode { status_codes } if *status_codes == vec![2, 0])
        );
        assert!(matches!(
            k(5),
            TailKind::StringAttribute { regexes: None, .. }
        ));
        match k(6) {
            TailKind::StringAttribute {
                key,
                values,
                regexes: Some(res),
            } => {
                assert_eq!(key, "key2");
                assert_eq!(values, &["value1", "val*"]);
                assert_eq!(res.len(), 2);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            k(7),
            TailKind::RateLimiting {
                spans_per_second: 35,
                burst_capacity: 70
            }
        ));
        assert!(matches!(
            k(8),
            TailKind::SpanCount {
                min_spans: 2,
                max_spans: 20
            }
        ));
        assert!(matches!(k(9), TailKind::TraceState { values, .. } if values.len() == 2));
        assert!(matches!(
            k(10),
            TailKind::BooleanAttribute { value: true, .. }
        ));
        assert!(matches!(
            k(11),
            TailKind::BytesLimiting {
                bytes_per_second: 1_000_000,
                burst_capacity: 4_000_000
            }
        ));
        assert!(
            matches!(k(12), TailKind::Not(sub) if matches!(**sub, TailKind::StatusCode { .. }))
        );
        assert!(matches!(k(13), TailKind::And(subs) if subs.len() == 2));
        assert!(matches!(k(14), TailKind::Drop(subs) if subs.len() == 1));
        match k(15) {
            TailKind::Composite {
                max_total_spans_per_second,
                policy_order,
                sub_policies,
            } => {
                assert_eq!(*max_total_spans_per_second, 1000);
                assert_eq!(policy_order.len(), 3);
                // 50% and 25% of 1000; the unallocated one gets nothing, as in the
                // collector's getRateAllocationMap.
                let shares: Vec<u64> = sub_policies.iter().map(|s| s.spans_per_second).collect();
                assert_eq!(shares, [500, 250, 0]);
                assert_eq!(sub_policies[2].name, "test-composite-policy-3");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_collectors_block_style_loads_too() {
        let t = tail(
            "policies:
  - name: slow
    type: latency
    class: priority
    latency:
      threshold_ms: 2000
  - name: even-share
    type: composite
    composite:
      max_total_spans_per_second: 90
      composite_sub_policy:
        - {name: a, type: always_sample}
        - name: b
          type: and
          and:
            and_sub_policy:
              - {name: x, type: span_count, span_count: {min_spans: 3}}
              - {name: y, type: rate_limiting, rate_limiting: {spans_per_second: 5, burst_capacity: 7}}
      rate_allocation:
        - {policy: a}
        - {policy: b, percent: 10}",
        );
        assert_eq!(t.policies[0].class, Class::Priority);
        match &t.policies[1].kind {
            TailKind::Composite { sub_policies, .. } => {
                // Listed without a percent: an equal share (90 / 2); with 10%: 9.
                assert_eq!(sub_policies[0].spans_per_second, 45);
                assert_eq!(sub_policies[1].spans_per_second, 9);
                assert!(matches!(&sub_policies[1].kind, TailKind::And(s) if s.len() == 2));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_refusal_names_its_path() {
        let p = |body: &str| format!("policies:\n  - {body}");
        refused(
            &p("{name: a, type: latncy, latency: {threshold_ms: 1}}"),
            "traces.tail.policies[0].type",
            "did you mean latency?",
        );
        refused(
            &p("{name: a, type: nope}"),
            "traces.tail.policies[0].type",
            "known types: always_sample, latency",
        );
        refused(&p("{name: a}"), "traces.tail.policies[0].type", "missing");
        refused(
            &p("{name: a, type: latency}"),
            "traces.tail.policies[0].latency",
            "needs its latency block",
        );
        refused(
            &p("{type: always_sample}"),
            "traces.tail.policies[0].name",
            "missing",
        );
        refused(
            &p("{name: a, type: latency, latency: {threshold_ms: 1, treshold: 2}}"),
            "traces.tail.policies[0].latency.treshold",
            "unknown key",
        );
        refused(
            &p("{name: a, type: always_sample, colour: red}"),
            "traces.tail.policies[0].colour",
            "unknown key",
        );
        refused(
            &p("{name: a, type: ottl_condition, ottl_condition: {span: ['x']}}"),
            "traces.tail.policies[0].type",
            "not supported by frugal",
        );
        refused(
            &p(
                "{name: a, type: string_attribute, string_attribute: {key: k, values: [v], invert_match: true}}",
            ),
            "traces.tail.policies[0].string_attribute.invert_match",
            "`drop` policy",
        );
        refused(
            &p(
                "{name: a, type: numeric_attribute, numeric_attribute: {key: k, min_value: 1, invert_match: true}}",
            ),
            "traces.tail.policies[0].numeric_attribute.invert_match",
            "not supported by frugal",
        );
        refused(
            &p("{name: a, type: always_sample, class: urgent}"),
            "traces.tail.policies[0].class",
            "allowed: priority, normal, bulk",
        );
        refused(
            "policies:\n  - {name: a, type: always_sample}\n  - {name: a, type: always_sample}",
            "traces.tail.policies[1].name",
            "duplicate policy name \"a\"",
        );
        refused(
            &p(
                "{name: a, type: string_attribute, string_attribute: {key: k, values: ['('], enabled_regex_matching: true}}",
            ),
            "traces.tail.policies[0].string_attribute.values[0]",
            "not a regular expression",
        );
        refused(
            &p(
                "{name: a, type: string_attribute, string_attribute: {key: k, values: ['\\w{1000}{1000}'], enabled_regex_matching: true}}",
            ),
            "traces.tail.policies[0].string_attribute.values[0]",
            "too large",
        );
        refused(
            &p("{name: a, type: status_code, status_code: {status_codes: [FAILED]}}"),
            "traces.tail.policies[0].status_code.status_codes[0]",
            "allowed: OK, ERROR, UNSET",
        );
        refused(
            &p("{name: a, type: numeric_attribute, numeric_attribute: {key: k}}"),
            "traces.tail.policies[0].numeric_attribute",
            "at least one of min_value or max_value",
        );
        refused(
            &p(
                "{name: a, type: numeric_attribute, numeric_attribute: {key: k, min_value: 5, max_value: 1}}",
            ),
            "traces.tail.policies[0].numeric_attribute.max_value",
            "below min_value",
        );
        refused(
            &p("{name: a, type: latency, latency: {threshold_ms: 500, upper_threshold_ms: 100}}"),
            "traces.tail.policies[0].latency.upper_threshold_ms",
            "above threshold_ms",
        );
        refused(
            &p("{name: a, type: span_count, span_count: {min_spans: 5, max_spans: 2}}"),
            "traces.tail.policies[0].span_count.max_spans",
            "below min_spans",
        );
        refused(
            &p("{name: a, type: rate_limiting, rate_limiting: {spans_per_second: 0}}"),
            "traces.tail.policies[0].rate_limiting.spans_per_second",
            "above 0",
        );
        refused(
            &p("{name: a, type: probabilistic, probabilistic: {hash_salt: x}}"),
            "traces.tail.policies[0].probabilistic.sampling_percentage",
            "missing",
        );
        refused(
            &p(
                "{name: a, type: and, and: {and_sub_policy: [{name: b, type: and, and: {and_sub_policy: []}}]}}",
            ),
            "traces.tail.policies[0].and.and_sub_policy[0].type",
            "cannot be used in and_sub_policy",
        );
        refused(
            &p("{name: a, type: and, and: {and_sub_policy: []}}"),
            "traces.tail.policies[0].and.and_sub_policy",
            "at least one policy",
        );
        refused(
            &p("{name: a, type: not, not: {not_sub_policy: [{name: b, type: always_sample}]}}"),
            "traces.tail.policies[0].not.not_sub_policy",
            "not a list",
        );
        refused(
            &p(
                "{name: a, type: drop, drop: {drop_sub_policy: [{name: b, type: probabilistic, probabilistic: {sampling_percentage: 5}}]}}",
            ),
            "traces.tail.policies[0].drop.drop_sub_policy[0].type",
            "consistent randomness",
        );
        refused(
            &p(
                "{name: a, type: and, and: {and_sub_policy: [{name: b, type: always_sample, class: priority}]}}",
            ),
            "traces.tail.policies[0].and.and_sub_policy[0].class",
            "top-level",
        );
    }

    #[test]
    fn a_key_yaml_reads_as_a_boolean_is_refused() {
        refused(
            "policies:\n  - {name: a, type: boolean_attribute, boolean_attribute: {key: true, value: true}}",
            "traces.tail.policies[0].boolean_attribute.key",
            "quote",
        );
        // YAML 1.1's short booleans: `key: n` would otherwise look for "false".
        refused(
            "policies:\n  - {name: a, type: numeric_attribute, numeric_attribute: {key: n, min_value: 1}}",
            "traces.tail.policies[0].numeric_attribute.key",
            "read as the boolean false",
        );
    }

    #[test]
    fn composite_refers_only_to_its_own_sub_policies() {
        let c = |rest: &str| {
            format!(
                "policies:
  - name: c
    type: composite
    composite:
      max_total_spans_per_second: 100
      composite_sub_policy:
        - {{name: a, type: always_sample}}
        - {{name: b, type: always_sample}}
{rest}"
            )
        };
        refused(
            &c("      policy_order: [a, z]"),
            "traces.tail.policies[0].composite.policy_order[1]",
            "\"z\" is not a policy of composite_sub_policy (they are: a, b)",
        );
        refused(
            &c("      rate_allocation: [{policy: y, percent: 10}]"),
            "traces.tail.policies[0].composite.rate_allocation[0].policy",
            "not a policy of composite_sub_policy",
        );
        refused(
            &c("      rate_allocation: [{policy: a, percent: 60}, {policy: b, percent: 50}]"),
            "traces.tail.policies[0].composite.rate_allocation",
            "more than 100",
        );
        refused(
            &c("      rate_allocation: [{policy: a, percent: 101}]"),
            "traces.tail.policies[0].composite.rate_allocation[0].percent",
            "0 to 100",
        );
        refused(
            &c("      policy_order: [a, a]"),
            "traces.tail.policies[0].composite.policy_order[1]",
            "twice",
        );
        refused(
            "policies:
  - name: c
    type: composite
    composite:
      max_total_spans_per_second: 100
      composite_sub_policy:
        - {name: a, type: always_sample}
        - {name: a, type: always_sample}",
            "traces.tail.policies[0].composite.composite_sub_policy[1].name",
            "duplicate",
        );
        refused(
            "policies:
  - name: c
    type: composite
    composite:
      composite_sub_policy: [{type: always_sample}]",
            "traces.tail.policies[0].composite.composite_sub_policy[0].name",
            "missing",
        );
    }

    #[test]
    fn all_problems_are_reported_at_once() {
        let ps = problems(
            "decision_ttl: 1s
policies:
  - {name: a, type: latncy}
  - {name: b, type: ottl_condition}
  - {name: c, type: always_sample, class: top}",
        );
        assert_eq!(ps.len(), 4, "{ps:?}");
    }
}
