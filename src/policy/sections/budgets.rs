//! The `budgets` section: how much of each signal a period may send (bytes for traces and
//! logs, series for metrics), and what happens at the limit.

use crate::policy::defaults::{DEFAULT_AT_LIMIT, DEFAULT_RESERVED, DEFAULT_TARGET};
use crate::policy::tree::{Node, required, with};
use crate::policy::{AtLimit, Budgets, ByteBudget, MetricsBudget};
use crate::units::{parse_rate, parse_ratio, parse_size};

/// Reads `budgets`; `None` when it is not a mapping. A signal without a budget is `None`
/// in [`Budgets`].
pub(in crate::policy) fn build(n: Node<'_>) -> Option<Budgets> {
    let mut o = n.map()?;
    let traces = with(&mut o, "traces", byte_budget);
    let logs = with(&mut o, "logs", byte_budget);
    let metrics = with(&mut o, "metrics", metrics_budget);
    o.finish();
    Some(Budgets {
        traces,
        logs,
        metrics,
    })
}

/// A byte budget (`budgets.traces`, `budgets.logs`).
fn byte_budget(n: Node<'_>) -> Option<ByteBudget> {
    let mut o = n.map()?;
    let limit = required(&mut o, "limit", "is required (e.g. 50GB)", |n| {
        n.parse(parse_size)
    });
    let reserved = with(&mut o, "reserved", |n| n.parse(parse_size)).unwrap_or(DEFAULT_RESERVED);
    let target = with(&mut o, "target", |n| n.parse(parse_ratio)).unwrap_or(DEFAULT_TARGET);
    let max_rate = with(&mut o, "max_rate", |n| n.parse(parse_rate));
    let at_limit = with(&mut o, "at_limit", |n| {
        n.choice(&[
            ("keep_priority", AtLimit::KeepPriority),
            ("drop_all", AtLimit::DropAll),
        ])
    })
    .unwrap_or(DEFAULT_AT_LIMIT);
    if let Some(l) = limit {
        if l == 0 {
            o.problems()
                .push(&o.child_path("limit"), "must be more than 0");
        } else if reserved >= l {
            o.problems()
                .push(&o.child_path("reserved"), "must be less than the limit");
        }
    }
    if target == 0.0 {
        o.problems()
            .push(&o.child_path("target"), "must be more than 0%");
    }
    if max_rate == Some(0) {
        o.problems()
            .push(&o.child_path("max_rate"), "must be more than 0");
    }
    o.finish();
    Some(ByteBudget {
        limit: limit?,
        reserved,
        target,
        max_rate,
        at_limit,
    })
}

/// `budgets.metrics`.
fn metrics_budget(n: Node<'_>) -> Option<MetricsBudget> {
    let mut m = n.map()?;
    let active_series = with(&mut m, "active_series", |n| n.u64());
    let target = with(&mut m, "target", |n| n.parse(parse_ratio)).unwrap_or(DEFAULT_TARGET);
    m.finish();
    Some(MetricsBudget {
        active_series,
        target,
    })
}
