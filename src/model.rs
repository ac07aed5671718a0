//! The nouns every stage shares: which signal a batch carries, the priority class of an
//! item, and why an item did not reach upstream.
//!
//! These are the label values of frugal's metrics and the keys of its usage counters, so
//! each enum is small, closed and has a stable `as_str`.

use serde::Serialize;

/// A kind of telemetry, billed separately by Grafana Cloud.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    Traces,
    Logs,
    Metrics,
}

impl Signal {
    pub const ALL: [Signal; 3] = [Signal::Traces, Signal::Logs, Signal::Metrics];

    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Traces => "traces",
            Signal::Logs => "logs",
            Signal::Metrics => "metrics",
        }
    }

    pub fn parse(s: &str) -> Option<Signal> {
        Signal::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// The OTLP/HTTP path suffix of this signal.
    pub fn otlp_path(self) -> &'static str {
        match self {
            Signal::Traces => "/v1/traces",
            Signal::Logs => "/v1/logs",
            Signal::Metrics => "/v1/metrics",
        }
    }

    /// What the budget of this signal counts: bytes for traces and logs, data points for
    /// metrics (series arrive with the metrics issue).
    pub fn budget_unit(self) -> Unit {
        match self {
            Signal::Traces | Signal::Logs => Unit::Bytes,
            Signal::Metrics => Unit::DataPoints,
        }
    }

    /// What one item of this signal is called.
    pub fn item_name(self) -> &'static str {
        match self {
            Signal::Traces => "spans",
            Signal::Logs => "log_records",
            Signal::Metrics => "data_points",
        }
    }
}

impl std::fmt::Display for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The unit a budget is kept in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    Bytes,
    DataPoints,
}

impl Unit {
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Bytes => "bytes",
            Unit::DataPoints => "data_points",
        }
    }
}

/// The priority class of an item. Classes spend the budget in this order: priority items
/// first, then normal ones, then the `drop_first` (bulk) ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    Priority,
    Normal,
    Bulk,
}

impl Class {
    pub const ALL: [Class; 3] = [Class::Priority, Class::Normal, Class::Bulk];

    pub fn as_str(self) -> &'static str {
        match self {
            Class::Priority => "priority",
            Class::Normal => "normal",
            Class::Bulk => "bulk",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// Why frugal itself did not send an item: a policy outcome, answered with 2xx.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    /// A `drop` rule of the policy matched (health checks and the like).
    #[serde(rename = "drop_rule")]
    Rule,
    /// The probabilistic sampler left it out to pace the budget.
    Sampled,
    /// The budget's target or limit was reached.
    AtLimit,
    /// Sending it would have exceeded the per-second ingestion limit.
    RateLimit,
    /// It carried `sampling.priority = 0`, or an earlier sampler's decision that frugal
    /// must respect (hash_seed mode on an item already sampled with `th`).
    #[serde(rename = "upstream_decision")]
    Upstream,
}

impl DropReason {
    pub const ALL: [DropReason; 5] = [
        DropReason::Rule,
        DropReason::Sampled,
        DropReason::AtLimit,
        DropReason::RateLimit,
        DropReason::Upstream,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Rule => "drop_rule",
            DropReason::Sampled => "sampled",
            DropReason::AtLimit => "at_limit",
            DropReason::RateLimit => "rate_limit",
            DropReason::Upstream => "upstream_decision",
        }
    }
}

/// Why upstream did not take what frugal sent. A definite rejection is taken back from the
/// period's usage; anything that may have been ingested is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// 400, 404, 422 and the like: the data or the request was refused.
    BadRequest,
    /// 401 or 403: frugal's credentials were refused.
    Unauthorized,
    /// 413: too large for upstream.
    TooLarge,
    /// 429: rate limited (retried while the deadline allows).
    RateLimited,
    /// The connection could not be made: nothing was sent.
    Unreachable,
    /// Upstream accepted the request but reported items it rejected (partial success).
    #[serde(rename = "partial_success")]
    Partial,
}

impl RejectReason {
    pub const ALL: [RejectReason; 6] = [
        RejectReason::BadRequest,
        RejectReason::Unauthorized,
        RejectReason::TooLarge,
        RejectReason::RateLimited,
        RejectReason::Unreachable,
        RejectReason::Partial,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::BadRequest => "bad_request",
            RejectReason::Unauthorized => "unauthorized",
            RejectReason::TooLarge => "too_large",
            RejectReason::RateLimited => "rate_limited",
            RejectReason::Unreachable => "unreachable",
            RejectReason::Partial => "partial_success",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_names_and_metric_labels_agree() {
        for r in DropReason::ALL {
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
        }
        for r in RejectReason::ALL {
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
        }
        for c in Class::ALL {
            assert_eq!(serde_json::to_value(c).unwrap(), c.as_str());
        }
    }
}
