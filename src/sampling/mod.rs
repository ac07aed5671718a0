//! Which items to keep: the policy's rules put each item in a priority class (or drop it),
//! and the class's keep probability, set by the budget controller, decides by the item's
//! trace randomness, so every span of a trace gets the same decision, here or on another
//! replica, and agrees with the OpenTelemetry Collector's samplers.
//!
//! Decisions are pure functions of (policy, keep probabilities, item): no I/O, no clock.
//! - [`threshold`], [`tracestate`]: consistent probability sampling (`th`, `rv`);
//! - [`hash_seed`]: the collector's `hash_seed` mode;
//! - [`rules`]: matching policy rules against spans and log records;
//! - [`traces`], [`logs`]: applying decisions to a whole OTLP request, with accounting;
//! - [`memory`]: the probability each recent trace was first judged at, so a trace's
//!   later spans and logs get the same decision while pacing moves;
//! - [`min_interval`]: metrics' `min_sample_interval`, at most one point per series per
//!   interval (state per series; the point's own timestamp, no clock);
//! - [`selector`]: PromQL series selectors, for the metrics rules.

pub mod hash_seed;
pub mod logs;
pub mod loki_push;
pub mod memory;
pub mod min_interval;
pub mod rules;
pub mod selector;
pub mod series;
pub mod threshold;
pub mod traces;
pub mod tracestate;

use crate::metering::Weight;
use crate::model::{Class, DropReason, PerClass, PerDropReason};

/// Keep probabilities per class (priority, normal, bulk), as the controller last set them.
pub type ClassProbabilities = PerClass<f64>;

/// Keep everything: no budget, or a budget far from its limits.
pub const KEEP_ALL: ClassProbabilities = PerClass::new([1.0, 1.0, 1.0]);

/// What happened to the items of one request, by class and reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Account {
    /// Items that compete for the budget, by class (before sampling).
    pub offered: PerClass<Weight>,
    /// Items the sampler kept, by class.
    pub kept: PerClass<Weight>,
    /// Items dropped, by reason.
    pub dropped: PerDropReason<Weight>,
    /// Whether kept items were changed (tracestate, attributes) or some were removed.
    pub modified: bool,
}

impl Account {
    /// Counts an item offered in `class`.
    pub fn offer(&mut self, class: Class, w: Weight) {
        self.offered[class].add(w);
    }

    /// Counts an item kept in `class`.
    pub fn keep(&mut self, class: Class, w: Weight) {
        self.kept[class].add(w);
    }

    /// Counts an item dropped for `reason`.
    pub fn drop(&mut self, reason: DropReason, w: Weight) {
        self.dropped[reason].add(w);
    }

    /// Accounts for one item's decision; `changed` says whether a kept item was rewritten.
    pub fn record(&mut self, class: Option<Class>, fate: &Fate, w: Weight, changed: bool) {
        if let Some(class) = class {
            self.offer(class, w);
        }
        match (fate, class) {
            (Fate::Keep, Some(class)) => self.keep(class, w),
            (Fate::Keep, None) => {}
            (Fate::Drop(reason), _) => self.drop(*reason, w),
        }
        self.modified |= *fate != Fate::Keep || changed;
    }

    /// Everything kept, all classes together.
    pub fn kept_total(&self) -> Weight {
        let mut w = Weight::default();
        for k in self.kept.values() {
            w.add(*k);
        }
        w
    }

    /// Scales the byte figures so they add up to `total` (the request's billable size):
    /// per-item sizes leave out the resource and scope wrappers, which are shared out in
    /// proportion.
    pub fn scale_units_to(&mut self, total: u64) {
        // Items dropped before competing for the budget are not offered in a class.
        let sum: u64 = self.offered.values().map(|w| w.units).sum::<u64>()
            + self.dropped[DropReason::Rule].units
            + self.dropped[DropReason::Upstream].units
            + self.dropped[DropReason::MinInterval].units;
        if sum == 0 || sum == total {
            return;
        }
        let f = total as f64 / sum as f64;
        let scale = |w: &mut Weight| w.units = (w.units as f64 * f).round() as u64;
        self.offered.iter_mut().for_each(|(_, w)| scale(w));
        self.kept.iter_mut().for_each(|(_, w)| scale(w));
        self.dropped.iter_mut().for_each(|(_, w)| scale(w));
    }
}

/// The fate of one item.
#[derive(Debug, Clone, PartialEq)]
pub enum Fate {
    /// Sent on.
    Keep,
    /// Left out, and why.
    Drop(DropReason),
}

/// Sets an attribute, replacing one of the same key.
pub(crate) fn set_attribute(
    attrs: &mut Vec<opentelemetry_proto::tonic::common::v1::KeyValue>,
    key: &str,
    value: opentelemetry_proto::tonic::common::v1::any_value::Value,
) {
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
    let value = Some(AnyValue { value: Some(value) });
    if let Some(kv) = attrs.iter_mut().find(|kv| kv.key == key) {
        kv.value = value;
    } else {
        attrs.push(KeyValue {
            key: key.to_string(),
            value,
            ..Default::default()
        });
    }
}
