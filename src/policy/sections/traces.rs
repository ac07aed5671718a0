//! The `traces` section: how spans are sampled, and their drop, priority and drop-first
//! rules.

use crate::policy::defaults::{
    DEFAULT_FAIL_CLOSED, DEFAULT_MIN_PROBABILITY, DEFAULT_PRECISION, DEFAULT_SAMPLING_MODE,
    PRECISION_RANGE,
};
use crate::policy::tree::{Node, section, with};
use crate::policy::{SamplingMode, TracePolicy, TraceSampling};
use crate::units::parse_ratio;

use super::rules::{RuleKind, rules_of};

/// `sampling.mode` as written; the seed comes from its own key.
#[derive(Clone, Copy)]
enum Mode {
    Proportional,
    HashSeed,
}

/// Reads `traces`; `None` when it or its `sampling` is not usable.
pub(in crate::policy) fn build(n: Node<'_>) -> Option<TracePolicy> {
    let mut o = n.map()?;
    let sampling = section(&mut o, "sampling", sampling);
    let rules = rules_of(&mut o, RuleKind::Span);
    let tail = with(&mut o, "tail", super::tail::build);
    o.finish();
    Some(TracePolicy {
        sampling: sampling?,
        rules,
        tail,
    })
}

fn sampling(n: Node<'_>) -> Option<TraceSampling> {
    let mut s = n.map()?;
    let mode = with(&mut s, "mode", |n| {
        n.choice(&[
            ("proportional", Mode::Proportional),
            ("hash_seed", Mode::HashSeed),
        ])
    });
    let seed = with(&mut s, "hash_seed", |n| {
        let v = n.u64()?;
        u32::try_from(v).ok().or_else(|| {
            n.problem("must fit in 32 bits (0 to 4294967295)");
            None
        })
    });
    let precision = with(&mut s, "precision", |n| {
        let p = n.u64()?;
        if PRECISION_RANGE.contains(&p) {
            Some(p as u8)
        } else {
            n.problem(format!(
                "{p} is not between {} and {} hex digits",
                PRECISION_RANGE.start(),
                PRECISION_RANGE.end()
            ));
            None
        }
    });
    let min_probability = with(&mut s, "min_probability", |n| n.parse(parse_ratio));
    let fail_closed = with(&mut s, "fail_closed", |n| n.bool());
    let multiplier_attribute = with(&mut s, "multiplier_attribute", |n| n.text());
    let seed_at = s.child_path("hash_seed");
    let problems = s.problems();
    s.finish();
    // As in the collector: hash_seed alone chooses hash_seed mode.
    let mode = match (mode, seed) {
        (None, None) => Some(DEFAULT_SAMPLING_MODE),
        (Some(Mode::Proportional), None) => Some(SamplingMode::Proportional),
        (Some(Mode::HashSeed) | None, Some(seed)) => Some(SamplingMode::HashSeed(seed)),
        (Some(Mode::HashSeed), None) => {
            problems.push(&seed_at, "is required in hash_seed mode");
            None
        }
        (Some(Mode::Proportional), Some(_)) => {
            problems.push(&seed_at, "only applies to mode: hash_seed");
            None
        }
    };
    Some(TraceSampling {
        mode: mode?,
        precision: precision.unwrap_or(DEFAULT_PRECISION),
        min_probability: min_probability.unwrap_or(DEFAULT_MIN_PROBABILITY),
        fail_closed: fail_closed.unwrap_or(DEFAULT_FAIL_CLOSED),
        multiplier_attribute,
    })
}
