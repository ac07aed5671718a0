//! One module per top-level section of the policy YAML, each turning its part of the tree
//! into the validated types of [`crate::policy`] and reporting what is wrong inside it.
//! Checks that need two sections at once are `load`'s; defaults come from `defaults`.

pub(super) mod alerts;
pub(super) mod budgets;
pub(super) mod ingest;
pub(super) mod listen;
pub(super) mod logs;
pub(super) mod metrics;
pub(super) mod pacing;
pub(super) mod period;
mod rules;
pub(super) mod store;
mod tail;
pub(super) mod traces;
pub(super) mod upstream;
