//! What is wrong with a policy: one [`Problem`] per mistake with its YAML path, the
//! [`PolicyError`] that carries all of them, and the collector a walk records them in.
//! Depends on nothing else in the policy module, so everything may depend on it.

use std::cell::RefCell;
use std::ops::RangeInclusive;
use std::time::Duration;

/// One thing wrong with a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted YAML path, with list indexes: `traces.priority[1].latency_over`.
    pub path: String,
    /// What is wrong, and where possible what would be accepted.
    pub message: String,
}

/// A policy that could not be loaded: every problem found, in file order.
#[derive(Debug, thiserror::Error)]
pub struct PolicyError {
    /// Where the policy came from (a path, or `embedded:grafana-cloud-free`).
    pub source_name: String,
    /// Every problem found, not just the first.
    pub problems: Vec<Problem>,
}

impl std::fmt::Display for PolicyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.problems.len();
        write!(
            f,
            "{}: {n} problem{}",
            self.source_name,
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            if p.path.is_empty() {
                write!(f, "\n  {}", p.message)?;
            } else {
                write!(f, "\n  {}: {}", p.path, p.message)?;
            }
        }
        Ok(())
    }
}

/// Collected problems, shared by every node of one walk.
#[derive(Default)]
pub(super) struct Problems(RefCell<Vec<Problem>>);

impl Problems {
    /// Records a problem; only the first one at a path is kept, so an unset `${VAR}` is
    /// not reported again as a bad value.
    pub fn push(&self, path: &str, message: impl Into<String>) {
        let mut v = self.0.borrow_mut();
        if v.iter().any(|p| p.path == path) {
            return;
        }
        v.push(Problem {
            path: path.to_string(),
            message: message.into(),
        });
    }

    /// The problems, in the order they were found.
    pub fn into_vec(self) -> Vec<Problem> {
        self.0.into_inner()
    }
}

/// "must be between 10ms and 60s", worded from the bound itself so the two cannot drift.
pub(super) fn must_be_between(range: &RangeInclusive<Duration>) -> String {
    format!(
        "must be between {} and {}",
        bound(*range.start()),
        bound(*range.end())
    )
}

/// "must be at least 100ms", worded from the bound itself.
pub(super) fn must_be_at_least(min: Duration) -> String {
    format!("must be at least {}", bound(min))
}

/// A bound as users write it: whole seconds in `s`, anything finer in `ms`.
fn bound(d: Duration) -> String {
    if d.subsec_nanos() == 0 && !d.is_zero() {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_read_as_users_write_them() {
        let range = Duration::from_millis(10)..=Duration::from_secs(60);
        assert_eq!(must_be_between(&range), "must be between 10ms and 60s");
        assert_eq!(
            must_be_at_least(Duration::from_millis(100)),
            "must be at least 100ms"
        );
        assert_eq!(
            must_be_at_least(Duration::from_secs(1)),
            "must be at least 1s"
        );
    }
}
