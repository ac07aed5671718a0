//! The `metrics` section: nothing to say yet (series budgets come with "metrics by
//! series"), so any key in it is unknown.

use crate::policy::MetricPolicy;
use crate::policy::tree::Node;

/// Reads `metrics`, reporting whatever it holds; there is always a (so far empty) policy.
pub(in crate::policy) fn build(n: Node<'_>) -> MetricPolicy {
    if let Some(o) = n.map() {
        o.finish();
    }
    MetricPolicy {}
}
