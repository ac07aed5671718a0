//! The `logs` section: whether records follow their trace's decision, what the others are
//! sampled by, and their drop, priority and drop-first rules.

use crate::policy::LogPolicy;
use crate::policy::defaults::DEFAULT_FOLLOW_TRACES;
use crate::policy::tree::{Node, with};

use super::rules::{RuleKind, rules_of};

/// Reads `logs`; `None` when it is not a mapping.
pub(in crate::policy) fn build(n: Node<'_>) -> Option<LogPolicy> {
    let mut o = n.map()?;
    let follow_traces =
        with(&mut o, "follow_traces", |n| n.bool()).unwrap_or(DEFAULT_FOLLOW_TRACES);
    let hash_attribute = with(&mut o, "sampling", |n| {
        let mut s = n.map()?;
        let a = with(&mut s, "hash_attribute", |n| n.text());
        s.finish();
        a
    });
    let rules = rules_of(&mut o, RuleKind::Log);
    o.finish();
    Some(LogPolicy {
        follow_traces,
        hash_attribute,
        rules,
    })
}
