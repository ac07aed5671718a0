//! The rule lists of the `traces` and `logs` sections (`drop`, `priority`, `drop_first`):
//! each rule a name and conditions, and only the conditions its signal can have.

use opentelemetry_proto::tonic::logs::v1::SeverityNumber;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use regex::Regex;
use serde_json::Value;

use crate::policy::tree::{Node, Obj, with};
use crate::policy::{Condition, Rule, Rules};
use crate::units::parse_duration;

/// Which rule conditions a signal's rules may use.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum RuleKind {
    /// Span conditions (`span_name`, `span_kind`, `status_code`, `latency_over`, ...).
    Span,
    /// Log record conditions (`severity_at_least`, `body_matches`, ...).
    Log,
}

/// Span kinds by name, in the order messages list them.
const SPAN_KINDS: [(&str, SpanKind); 5] = [
    ("SERVER", SpanKind::Server),
    ("CLIENT", SpanKind::Client),
    ("INTERNAL", SpanKind::Internal),
    ("PRODUCER", SpanKind::Producer),
    ("CONSUMER", SpanKind::Consumer),
];

const STATUS_CODES: [(&str, i32); 3] = [
    ("ERROR", StatusCode::Error as i32),
    ("OK", StatusCode::Ok as i32),
    ("UNSET", StatusCode::Unset as i32),
];

/// The lowest severity number of each level.
const SEVERITIES: [(&str, i32); 6] = [
    ("TRACE", SeverityNumber::Trace as i32),
    ("DEBUG", SeverityNumber::Debug as i32),
    ("INFO", SeverityNumber::Info as i32),
    ("WARN", SeverityNumber::Warn as i32),
    ("ERROR", SeverityNumber::Error as i32),
    ("FATAL", SeverityNumber::Fatal as i32),
];

/// Reads the `drop`, `priority` and `drop_first` lists of a signal's section.
pub(super) fn rules_of(o: &mut Obj<'_>, kind: RuleKind) -> Rules {
    let list = |o: &mut Obj<'_>, key: &'static str| -> Vec<Rule> {
        with(o, key, |n| {
            let mut rules = Vec::new();
            let listed = n.each_item("a list of rules", |i, node| {
                if let Some(r) = rule(node, kind, &format!("{key}-{i}")) {
                    rules.push(r);
                }
            });
            listed.then_some(rules)
        })
        .unwrap_or_default()
    };
    Rules {
        drop: list(o, "drop"),
        priority: list(o, "priority"),
        drop_first: list(o, "drop_first"),
    }
}

fn strings(n: Node<'_>) -> Option<Vec<String>> {
    let mut out = Vec::new();
    for v in n.list() {
        match v {
            Value::String(s) => out.push(s.clone()),
            Value::Number(x) => out.push(x.to_string()),
            Value::Bool(b) => out.push(b.to_string()),
            _ => {
                n.problem("expected a string or a list of strings");
                return None;
            }
        }
    }
    Some(out)
}

fn regex(n: Node<'_>) -> Option<Regex> {
    n.parse(|s| Regex::new(s).map_err(|e| format!("{s:?} is not a regular expression: {e}")))
}

/// `attributes` (values are strings) or `attributes_match` (values are regexes): one
/// condition per attribute.
fn attributes(n: Node<'_>, as_regex: bool) -> Option<Vec<Condition>> {
    let mut out = Vec::new();
    for (k, v, path) in n.entries()? {
        let node = Node {
            value: v,
            path: &path,
            problems: n.problems,
        };
        if as_regex {
            if let Some(regex) = regex(node) {
                out.push(Condition::AttributeMatches {
                    key: k.to_string(),
                    regex,
                });
            }
        } else if let Some(values) = strings(node) {
            out.push(Condition::Attribute {
                key: k.to_string(),
                values,
            });
        }
    }
    Some(out)
}

fn span_kinds(n: Node<'_>) -> Option<Vec<i32>> {
    let mut out = Vec::new();
    for w in strings(n)? {
        let upper = w.to_ascii_uppercase();
        let name = upper.trim_start_matches("SPAN_KIND_");
        match SPAN_KINDS.iter().find(|(k, _)| *k == name) {
            Some((_, kind)) => out.push(*kind as i32),
            None => {
                let allowed: Vec<&str> = SPAN_KINDS.iter().map(|(k, _)| *k).collect();
                n.problem(format!(
                    "{w:?} is not a span kind (allowed: {})",
                    allowed.join(", ")
                ));
                return None;
            }
        }
    }
    Some(out)
}

fn rule(n: Node<'_>, kind: RuleKind, default_name: &str) -> Option<Rule> {
    let mut o = n.map()?;
    let name = with(&mut o, "name", |n| n.text()).unwrap_or_else(|| default_name.to_string());
    let mut conditions = Vec::new();
    if let Some(v) = with(&mut o, "service", strings) {
        conditions.push(Condition::Service(v));
    }
    if let Some(r) = with(&mut o, "service_matches", regex) {
        conditions.push(Condition::ServiceMatches(r));
    }
    if let Some(c) = with(&mut o, "attributes", |n| attributes(n, false)) {
        conditions.extend(c);
    }
    if let Some(c) = with(&mut o, "attributes_match", |n| attributes(n, true)) {
        conditions.extend(c);
    }
    match kind {
        RuleKind::Span => {
            if let Some(v) = with(&mut o, "span_name", strings) {
                conditions.push(Condition::SpanName(v));
            }
            if let Some(r) = with(&mut o, "span_name_matches", regex) {
                conditions.push(Condition::SpanNameMatches(r));
            }
            if let Some(kinds) = with(&mut o, "span_kind", span_kinds) {
                conditions.push(Condition::SpanKind(kinds));
            }
            if let Some(code) = with(&mut o, "status_code", |n| n.choice(&STATUS_CODES)) {
                conditions.push(Condition::StatusCode(code));
            }
            if let Some(d) = with(&mut o, "latency_over", |n| n.parse(parse_duration)) {
                conditions.push(Condition::LatencyOver(d));
            }
        }
        RuleKind::Log => {
            if let Some(s) = with(&mut o, "severity_at_least", |n| n.choice(&SEVERITIES)) {
                conditions.push(Condition::SeverityAtLeast(s));
            }
            if let Some(r) = with(&mut o, "body_matches", regex) {
                conditions.push(Condition::BodyMatches(r));
            }
        }
    }
    let path = o.path.clone();
    let problems = o.problems();
    let unknown = o.finish();
    // A rule whose only key was misspelt has already been reported.
    if conditions.is_empty() {
        if unknown == 0 {
            problems.push(
                &path,
                "a rule needs at least one condition (it would match everything)",
            );
        }
        return None;
    }
    Some(Rule { name, conditions })
}
