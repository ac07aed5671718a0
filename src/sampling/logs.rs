//! Sampling log records.
//!
//! A record with a trace ID follows its trace: it is kept only when its trace randomness
//! `R >= max(T_traces, T_logs)`, so no log is kept whose trace was dropped, whichever
//! budget is tighter. `T_traces` is the threshold of the non-priority trace classes (the
//! strictest of normal and, when the policy has `drop_first` rules, bulk): a trace's
//! priority spans do not rescue its ordinary logs. Priority records (e.g. warn+) only
//! answer to the log budget. Records without a trace ID are sampled by a hash of the
//! configured attribute, or of their timestamp and body (a stand-in for a random draw
//! that keeps the decision a pure function). Kept, sampled records carry
//! `sampling.threshold`, as the collector's log sampler writes it.
//!
//! In `hash_seed` trace mode, trace-following uses the same FNV hash the spans were
//! judged by, so the two agree exactly.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::resource::v1::Resource;

use super::memory::Session;
use super::rules::{self, Item};
use super::threshold::{self, Randomness, Threshold};
use super::{Account, ClassProbabilities, Fate, hash_seed};
use crate::metering::{Weight, loki};
use crate::model::{Class, DropReason};
use crate::policy::{LogPolicy, SamplingMode};

/// The log attribute holding a record's threshold (a `th` value): read on arrival, written
/// on kept, sampled records.
pub const THRESHOLD_ATTRIBUTE: &str = "sampling.threshold";
/// The log attribute holding a record's explicit randomness (an `rv` value), used before
/// its trace ID's.
pub const RANDOMNESS_ATTRIBUTE: &str = "sampling.randomness";

/// How traces are being sampled, for records that follow their trace.
#[derive(Debug, Clone, Copy)]
pub struct TraceSide {
    /// The trace classes' keep probabilities.
    pub probabilities: ClassProbabilities,
    /// Whether the trace policy has `drop_first` rules (then a record follows the stricter
    /// of the normal and bulk classes).
    pub follow_bulk: bool,
    /// How spans are sampled: in hash_seed mode a record follows its trace by the same hash.
    pub mode: SamplingMode,
    /// Hex digits of the `sampling.threshold` written on kept records (the trace policy's
    /// `precision`).
    pub precision: u8,
}

impl TraceSide {
    /// The probability a record follows, from the trace classes' probabilities.
    pub fn follow(&self, p: &ClassProbabilities) -> f64 {
        let normal = p[Class::Normal];
        if self.follow_bulk {
            normal.min(p[Class::Bulk])
        } else {
            normal
        }
    }
}

/// The decision for one log record.
#[derive(Debug, Clone, PartialEq)]
pub struct LogDecision {
    /// The priority class the rules put it in; `None` when a drop rule matched.
    pub class: Option<Class>,
    /// Kept, or dropped and why.
    pub fate: Fate,
    /// The `sampling.threshold` to write on a kept, sampled record.
    pub threshold: Option<String>,
}

fn string_attr<'a>(r: &'a LogRecord, key: &str) -> Option<&'a str> {
    match rules::find(&r.attributes, key)?.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s),
        _ => None,
    }
}

fn fnv64(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for &b in *p {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// Randomness of a record without a usable trace ID.
fn record_randomness(policy: &LogPolicy, r: &LogRecord) -> Randomness {
    if let Some(key) = &policy.hash_attribute
        && let Some(v) = rules::find(&r.attributes, key)
    {
        let bytes = match v.value.as_ref() {
            Some(any_value::Value::BytesValue(b)) => b.clone(),
            _ => loki::as_string(Some(v)).into_bytes(),
        };
        if !bytes.is_empty() {
            return hash_seed::decide(&bytes, 0, 1.0).randomness;
        }
    }
    let body = loki::line(r.body.as_ref());
    Randomness::from_unsigned(fnv64(&[
        &r.time_unix_nano.to_le_bytes(),
        &r.observed_time_unix_nano.to_le_bytes(),
        body.as_bytes(),
    ]))
}

/// The class the policy's rules put a record in; `None` when a drop rule matches.
pub fn classify(
    policy: &LogPolicy,
    resource: Option<&Resource>,
    service: &str,
    r: &LogRecord,
) -> Option<Class> {
    if policy.rules.is_empty() {
        return Some(Class::Normal);
    }
    let item = Item::Log(r);
    policy
        .rules
        .classify(|rule| rules::matches(rule, resource, service, &item))
}

/// Decides one record. `probs` are the log budget's class probabilities; with `memory`, a
/// record of a trace judged before follows that trace's first probability.
pub fn decide(
    policy: &LogPolicy,
    probs: &ClassProbabilities,
    traces: &TraceSide,
    memory: Option<&mut Session<'_>>,
    resource: Option<&Resource>,
    service: &str,
    r: &LogRecord,
) -> LogDecision {
    let Some(class) = classify(policy, resource, service, r) else {
        return LogDecision {
            class: None,
            fate: Fate::Drop(DropReason::Rule),
            threshold: None,
        };
    };
    let p_log = probs[class];
    let trace_rnd = Randomness::from_trace_id(&r.trace_id);
    let follows = policy.follow_traces && class != Class::Priority && trace_rnd.is_some();
    let p_trace = match (follows, memory) {
        (false, _) => 1.0,
        (true, Some(m)) => traces.follow(&m.judge(&r.trace_id, &traces.probabilities, true)),
        (true, None) => traces.follow(&traces.probabilities),
    };
    if p_log >= 1.0 && p_trace >= 1.0 {
        return LogDecision {
            class: Some(class),
            fate: Fate::Keep,
            threshold: None,
        };
    }
    let dropped = LogDecision {
        class: Some(class),
        fate: Fate::Drop(DropReason::Sampled),
        threshold: None,
    };
    if follows && let SamplingMode::HashSeed(seed) = traces.mode {
        // The spans were judged by the FNV hash: judge their logs by the same hash.
        let d = hash_seed::decide(&r.trace_id, seed, p_log.min(p_trace));
        return if d.keep {
            LogDecision {
                class: Some(class),
                fate: Fate::Keep,
                threshold: Some(d.threshold.tvalue()),
            }
        } else {
            dropped
        };
    }
    let rnd = string_attr(r, RANDOMNESS_ATTRIBUTE)
        .and_then(|s| Randomness::parse_rvalue(s).ok())
        .or(trace_rnd)
        .unwrap_or_else(|| record_randomness(policy, r));
    let t_in = string_attr(r, THRESHOLD_ATTRIBUTE)
        .and_then(|s| Threshold::parse_tvalue(s).ok())
        .filter(|t| t.should_sample(rnd))
        .unwrap_or(Threshold::ALWAYS);
    let Some(t_log) = threshold::proportional(t_in, p_log, traces.precision) else {
        return dropped;
    };
    let t_trace = if p_trace >= 1.0 {
        Threshold::ALWAYS
    } else {
        match Threshold::from_probability(p_trace, traces.precision) {
            Ok(t) => t,
            Err(_) => return dropped,
        }
    };
    let t = t_log.max(t_trace);
    if !t.should_sample(rnd) {
        return dropped;
    }
    LogDecision {
        class: Some(class),
        fate: Fate::Keep,
        threshold: (t > t_in || t_in == Threshold::ALWAYS).then(|| t.tvalue()),
    }
}

/// Decides every record of a request and accounts for them (bytes as Loki bills them,
/// resource and scope metadata shared out in proportion).
pub fn decide_all(
    policy: &LogPolicy,
    probs: &ClassProbabilities,
    traces: &TraceSide,
    mut memory: Option<&mut Session<'_>>,
    req: &ExportLogsServiceRequest,
) -> (Vec<LogDecision>, Account) {
    let mut decisions = Vec::new();
    let mut account = Account::default();
    for rl in &req.resource_logs {
        let resource = rl.resource.as_ref();
        let service = rules::service_name(resource);
        for r in rl.scope_logs.iter().flat_map(|sl| &sl.log_records) {
            let d = decide(
                policy,
                probs,
                traces,
                memory.as_deref_mut(),
                resource,
                service,
                r,
            );
            let w = Weight {
                items: 1,
                units: loki::record_bytes(r),
            };
            account.record(d.class, &d.fate, w, d.threshold.is_some());
            decisions.push(d);
        }
    }
    (decisions, account)
}

/// Applies decisions made by [`decide_all`] on the same request.
pub fn apply(req: &mut ExportLogsServiceRequest, decisions: &[LogDecision]) {
    let mut it = decisions.iter();
    for rl in &mut req.resource_logs {
        for sl in &mut rl.scope_logs {
            sl.log_records.retain_mut(|r| {
                let Some(d) = it.next() else { return true };
                if d.fate != Fate::Keep {
                    return false;
                }
                if let Some(t) = &d.threshold {
                    set_string(&mut r.attributes, THRESHOLD_ATTRIBUTE, t);
                }
                true
            });
        }
        rl.scope_logs.retain(|sl| !sl.log_records.is_empty());
    }
    req.resource_logs.retain(|rl| !rl.scope_logs.is_empty());
}

/// Kept records of one class only.
pub fn retain_class(req: &mut ExportLogsServiceRequest, decisions: &[LogDecision], keep: Class) {
    let mut it = decisions.iter().filter(|d| d.fate == Fate::Keep);
    for rl in &mut req.resource_logs {
        for sl in &mut rl.scope_logs {
            sl.log_records
                .retain(|_| it.next().is_some_and(|d| d.class == Some(keep)));
        }
        rl.scope_logs.retain(|sl| !sl.log_records.is_empty());
    }
    req.resource_logs.retain(|rl| !rl.scope_logs.is_empty());
}

fn set_string(attrs: &mut Vec<KeyValue>, key: &str, v: &str) {
    super::set_attribute(attrs, key, any_value::Value::StringValue(v.to_string()));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::PerClass;
    use crate::policy::Rules;
    use opentelemetry_proto::tonic::common::v1::AnyValue;

    fn policy() -> LogPolicy {
        LogPolicy {
            stream_limit: None,
            follow_traces: true,
            hash_attribute: None,
            rules: Rules::default(),
        }
    }

    fn side(p: f64) -> TraceSide {
        TraceSide {
            probabilities: PerClass::new([1.0, p, p]),
            follow_bulk: false,
            mode: SamplingMode::Proportional,
            precision: 4,
        }
    }

    fn record(tid: &[u8]) -> LogRecord {
        LogRecord {
            trace_id: tid.to_vec(),
            body: Some(AnyValue {
                value: Some(any_value::Value::StringValue("hello".into())),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_record_is_kept_only_if_its_trace_would_be() {
        // For many random trace IDs: record kept => span kept at the trace probability.
        let pol = policy();
        let mut state: u64 = 0x1234_5678;
        for i in 0..20_000 {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let mut tid = [0u8; 16];
            tid[..8].copy_from_slice(&state.to_be_bytes());
            tid[8..].copy_from_slice(&state.rotate_left(17).to_be_bytes());
            let (p_trace, p_log) = match i % 3 {
                0 => (0.3, 0.6),
                1 => (0.6, 0.3),
                _ => (0.05, 1.0),
            };
            let d = decide(
                &pol,
                &PerClass::new([1.0, p_log, p_log]),
                &side(p_trace),
                None,
                None,
                "",
                &record(&tid),
            );
            let span_kept = Threshold::from_probability(p_trace, 4)
                .unwrap()
                .should_sample(Randomness::from_trace_id(&tid).unwrap());
            if d.fate == Fate::Keep {
                assert!(span_kept, "log of a dropped trace kept: {tid:?}");
            }
        }
    }

    #[test]
    fn a_trace_is_judged_at_its_first_probability_across_logs_and_spans() {
        use crate::sampling::memory::TraceMemory;
        let memory = TraceMemory::default();
        let now: jiff::Timestamp = "2026-11-25T00:00:00Z".parse().unwrap();
        let pol = policy();
        // R = 0x70..: kept at 50%? no (T = 0x80..); kept at 60% (T = 0x66..).
        let tid = hex::decode("0102030405060708097000000000000a").unwrap();
        let mut s = memory.session(now, crate::sampling::memory::Remember::Always);
        // The log comes first, while traces are kept at 60%: kept.
        let d = decide(
            &pol,
            &PerClass::new([1.0, 1.0, 1.0]),
            &side(0.6),
            Some(&mut s),
            None,
            "",
            &record(&tid),
        );
        assert_eq!(d.fate, Fate::Keep);
        // Pacing tightens to 50% before the spans arrive: they follow the trace's first
        // probability, so the log does not outlive its trace.
        let span = opentelemetry_proto::tonic::trace::v1::Span {
            trace_id: tid.clone(),
            span_id: vec![1; 8],
            ..Default::default()
        };
        let tp = crate::policy::TracePolicy {
            sampling: crate::policy::TraceSampling {
                mode: SamplingMode::Proportional,
                precision: 4,
                min_probability: 0.0,
                fail_closed: true,
                multiplier_attribute: None,
            },
            rules: Rules::default(),
            tail: None,
        };
        let mut s = memory.session(now, crate::sampling::memory::Remember::Always);
        let d = crate::sampling::traces::decide(
            &tp,
            &PerClass::new([1.0, 0.5, 0.5]),
            Some(&mut s),
            None,
            "",
            &span,
        );
        assert_eq!(d.fate, Fate::Keep);
        let without = crate::sampling::traces::decide(
            &tp,
            &PerClass::new([1.0, 0.5, 0.5]),
            None,
            None,
            "",
            &span,
        );
        assert_ne!(
            without.fate,
            Fate::Keep,
            "at 50% alone the span would have been dropped"
        );
    }

    #[test]
    fn kept_records_carry_the_threshold() {
        let pol = policy();
        let tid = hex::decode("fefefefefefefefefef0000000000000").unwrap();
        let d = decide(
            &pol,
            &PerClass::new([1.0, 0.5, 0.5]),
            &side(1.0),
            None,
            None,
            "",
            &record(&tid),
        );
        assert_eq!(d.threshold.as_deref(), Some("8"));
        let mut r = record(&tid);
        set_string(&mut r.attributes, THRESHOLD_ATTRIBUTE, "c");
        // 25% arriving, sampled at 50% here: 12.5% leaves (the collector's "25 percent incoming").
        let d = decide(
            &pol,
            &PerClass::new([1.0, 0.5, 0.5]),
            &side(1.0),
            None,
            None,
            "",
            &r,
        );
        assert_eq!(d.threshold.as_deref(), Some("e"));
    }

    #[test]
    fn records_without_trace_ids_are_sampled_by_attribute_hash() {
        let mut pol = policy();
        pol.hash_attribute = Some("k8s.pod.uid".into());
        let mut kept = 0;
        for i in 0..10_000 {
            let mut r = record(&[]);
            set_string(&mut r.attributes, "k8s.pod.uid", &format!("pod-{i}"));
            let d1 = decide(
                &pol,
                &PerClass::new([1.0, 0.25, 0.25]),
                &side(1.0),
                None,
                None,
                "",
                &r,
            );
            let d2 = decide(
                &pol,
                &PerClass::new([1.0, 0.25, 0.25]),
                &side(1.0),
                None,
                None,
                "",
                &r,
            );
            assert_eq!(d1, d2, "decisions are pure");
            kept += usize::from(d1.fate == Fate::Keep);
        }
        assert!((2200..2800).contains(&kept), "{kept}");
    }
}
