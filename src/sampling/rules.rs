//! Matching the policy's rules against spans and log records.
//!
//! Attribute conditions look at the item's own attributes first, then its resource's.
//! Values are compared as text (`200` matches the integer 200).

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;

use crate::policy::{Condition, Rule};

/// Looks an attribute up in a list.
pub fn find<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a AnyValue> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
}

/// A scalar attribute as text; `None` for maps, lists and empty values.
pub fn text(v: &AnyValue) -> Option<std::borrow::Cow<'_, str>> {
    use std::borrow::Cow;
    match v.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(Cow::Borrowed(s)),
        any_value::Value::IntValue(i) => Some(Cow::Owned(i.to_string())),
        any_value::Value::BoolValue(b) => Some(Cow::Owned(b.to_string())),
        any_value::Value::DoubleValue(d) => Some(Cow::Owned(d.to_string())),
        _ => None,
    }
}

/// The resource's `service.name`, or "" when it has none.
pub fn service_name(resource: Option<&Resource>) -> &str {
    resource
        .and_then(|r| find(&r.attributes, "service.name"))
        .and_then(|v| match v.value.as_ref() {
            Some(any_value::Value::StringValue(s)) => Some(s.as_str()),
            _ => None,
        })
        .unwrap_or("")
}

/// What a rule sees of an item.
pub enum Item<'a> {
    /// A span: log-only conditions never hold for it.
    Span(&'a Span),
    /// A log record: span-only conditions never hold for it.
    Log(&'a LogRecord),
}

impl Item<'_> {
    fn attributes(&self) -> &[KeyValue] {
        match self {
            Item::Span(s) => &s.attributes,
            Item::Log(l) => &l.attributes,
        }
    }
}

/// Whether every condition of `rule` holds for the item.
pub fn matches(rule: &Rule, resource: Option<&Resource>, service: &str, item: &Item<'_>) -> bool {
    rule.conditions
        .iter()
        .all(|c| condition(c, resource, service, item))
}

fn attribute<'a>(
    resource: Option<&'a Resource>,
    item: &'a Item<'_>,
    key: &str,
) -> Option<&'a AnyValue> {
    find(item.attributes(), key).or_else(|| resource.and_then(|r| find(&r.attributes, key)))
}

fn condition(c: &Condition, resource: Option<&Resource>, service: &str, item: &Item<'_>) -> bool {
    match c {
        Condition::Service(names) => names.iter().any(|n| n == service),
        Condition::ServiceMatches(re) => re.is_match(service),
        Condition::Attribute { key, values } => attribute(resource, item, key)
            .and_then(text)
            .is_some_and(|t| values.iter().any(|v| *v == t)),
        Condition::AttributeMatches { key, regex } => attribute(resource, item, key)
            .and_then(text)
            .is_some_and(|t| regex.is_match(&t)),
        Condition::SpanName(names) => match item {
            Item::Span(s) => names.contains(&s.name),
            Item::Log(_) => false,
        },
        Condition::SpanNameMatches(re) => match item {
            Item::Span(s) => re.is_match(&s.name),
            Item::Log(_) => false,
        },
        Condition::SpanKind(kinds) => match item {
            Item::Span(s) => kinds.contains(&s.kind),
            Item::Log(_) => false,
        },
        Condition::StatusCode(code) => match item {
            Item::Span(s) => s.status.as_ref().map_or(0, |st| st.code) == *code,
            Item::Log(_) => false,
        },
        Condition::LatencyOver(d) => match item {
            Item::Span(s) => {
                let nanos = s.end_time_unix_nano.saturating_sub(s.start_time_unix_nano);
                u128::from(nanos) > d.as_nanos()
            }
            Item::Log(_) => false,
        },
        Condition::SeverityAtLeast(n) => match item {
            // A record without a severity number is judged by the level its text shows,
            // as Loki's `detected_level` finds it.
            Item::Log(l) if l.severity_number == 0 => {
                let line = crate::metering::loki::line(l.body.as_ref());
                let text = (!l.severity_text.is_empty()).then(|| {
                    vec![crate::proto::loki::LabelPair {
                        name: "level".into(),
                        value: l.severity_text.clone(),
                    }]
                });
                super::loki_push::severity(&line, text.as_deref().unwrap_or(&[]), &[]) >= *n
            }
            Item::Log(l) => l.severity_number >= *n,
            Item::Span(_) => false,
        },
        Condition::BodyMatches(re) => match item {
            Item::Log(l) => {
                let body = crate::metering::loki::line(l.body.as_ref());
                re.is_match(&body)
            }
            Item::Span(_) => false,
        },
    }
}
