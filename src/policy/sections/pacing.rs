//! The `pacing` section: whether the budget is spread over the period, and how often the
//! keep probabilities are recomputed (by default, from the period's length).

use std::time::Duration;

use crate::policy::Pacing;
use crate::policy::defaults::{
    DEFAULT_PACING_ENABLED, DEFAULT_RECOMPUTE_EVERY, DEFAULT_RECOMPUTES_PER_PERIOD,
    MIN_RECOMPUTE_EVERY,
};
use crate::policy::problem::must_be_at_least;
use crate::policy::tree::{Node, with};
use crate::units::parse_duration;

/// The section as written. `recompute_every`'s default depends on the period, which
/// [`PacingAsWritten::for_period`] supplies once it is known.
pub(in crate::policy) struct PacingAsWritten {
    enabled: bool,
    /// `None` when the file leaves it to the period.
    pub recompute_every: Option<Duration>,
}

impl PacingAsWritten {
    /// The pacing for a period whose shortest length is `length`.
    pub fn for_period(self, length: Duration) -> Pacing {
        Pacing {
            enabled: self.enabled,
            recompute_every: self
                .recompute_every
                .unwrap_or_else(|| default_recompute_every(length)),
        }
    }
}

/// Reads `pacing`; `None` when it is not a mapping.
pub(in crate::policy) fn build(n: Node<'_>) -> Option<PacingAsWritten> {
    let mut o = n.map()?;
    let enabled = with(&mut o, "enabled", |n| n.bool()).unwrap_or(DEFAULT_PACING_ENABLED);
    let recompute_every = with(&mut o, "recompute_every", |n| n.parse(parse_duration));
    if recompute_every.is_some_and(|r| r < MIN_RECOMPUTE_EVERY) {
        o.problems().push(
            &o.child_path("recompute_every"),
            must_be_at_least(MIN_RECOMPUTE_EVERY),
        );
    }
    o.finish();
    Some(PacingAsWritten {
        enabled,
        recompute_every,
    })
}

/// A short period recomputes proportionally more often.
fn default_recompute_every(length: Duration) -> Duration {
    (length / DEFAULT_RECOMPUTES_PER_PERIOD).clamp(MIN_RECOMPUTE_EVERY, DEFAULT_RECOMPUTE_EVERY)
}
