//! The `logs` section: whether records follow their trace's decision, what the others are
//! sampled by, and their drop, priority and drop-first rules.

use crate::policy::defaults::{DEFAULT_FOLLOW_TRACES, DEFAULT_MAX_LOKI_STREAMS};
use crate::policy::tree::{Node, with};
use crate::policy::{LogPolicy, StreamLimit};

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
    let stream_limit = with(&mut o, "stream_limit", |n| {
        let mut s = n.map()?;
        let max_rate = super::super::tree::required(
            &mut s,
            "max_rate",
            "is required (bytes a second per stream, e.g. 50kB/s)",
            |n| n.parse(crate::units::parse_rate),
        );
        let max_streams = with(&mut s, "max_streams", |n| {
            let v = n.u64()?;
            if v == 0 || v > 1_000_000 {
                n.problem("must be between 1 and 1000000");
                return None;
            }
            usize::try_from(v).ok()
        })
        .unwrap_or(DEFAULT_MAX_LOKI_STREAMS);
        s.finish();
        Some(StreamLimit {
            max_rate: max_rate?.max(1),
            max_streams,
        })
    });
    o.finish();
    Some(LogPolicy {
        follow_traces,
        hash_attribute,
        rules,
        stream_limit,
    })
}
