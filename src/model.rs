//! The nouns every stage shares: which signal a batch carries, the priority class of an
//! item, and why an item did not reach upstream.
//!
//! These are the label values of frugal's metrics and the keys of its usage counters, so
//! each enum is small, closed and has a stable `as_str`.

use serde::Serialize;

use crate::table::{Table, table_key};

/// One value per signal.
pub type PerSignal<V> = Table<Signal, V, { Signal::ALL.len() }>;
/// One value per priority class.
pub type PerClass<V> = Table<Class, V, { Class::ALL.len() }>;
/// One value per reason frugal drops an item.
pub type PerDropReason<V> = Table<DropReason, V, { DropReason::ALL.len() }>;
/// One value per reason upstream refused an item.
pub type PerRejectReason<V> = Table<RejectReason, V, { RejectReason::ALL.len() }>;
/// One value per destination.
pub type PerDestination<V> = Table<Destination, V, { Destination::ALL.len() }>;

/// A kind of telemetry, billed separately by Grafana Cloud.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    /// Spans, billed in bytes.
    Traces,
    /// Log records, billed in bytes.
    Logs,
    /// Metric data points, billed by series.
    Metrics,
}

table_key!(Signal);

impl Signal {
    /// Every signal.
    pub const ALL: [Signal; 3] = [Signal::Traces, Signal::Logs, Signal::Metrics];

    /// The signal's name (a metric label value and an API key).
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Traces => "traces",
            Signal::Logs => "logs",
            Signal::Metrics => "metrics",
        }
    }

    /// The signal named `s`.
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
    /// Bytes (traces and logs).
    Bytes,
    /// Data points (metrics).
    DataPoints,
}

impl Unit {
    /// The unit's name, as the usage API spells it.
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
    /// Matched a `priority` rule: spends the budget first.
    Priority,
    /// Matched no class rule.
    Normal,
    /// Matched a `drop_first` rule: sampled before anything else.
    Bulk,
}

table_key!(Class);

impl Class {
    /// Every class, in the order they spend the budget.
    pub const ALL: [Class; 3] = [Class::Priority, Class::Normal, Class::Bulk];

    /// The class's name (a metric label value and an API key).
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Priority => "priority",
            Class::Normal => "normal",
            Class::Bulk => "bulk",
        }
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
    /// A new series over the active-series budget: not admitted (metrics).
    SeriesLimit,
    /// A point of a series within `metrics.min_sample_interval` of the one sent before.
    MinInterval,
    /// A Loki entry over its stream's share (`logs.stream_limit`).
    StreamLimit,
}

table_key!(DropReason);

impl DropReason {
    /// Every drop reason.
    pub const ALL: [DropReason; 8] = [
        DropReason::Rule,
        DropReason::Sampled,
        DropReason::AtLimit,
        DropReason::RateLimit,
        DropReason::Upstream,
        DropReason::SeriesLimit,
        DropReason::MinInterval,
        DropReason::StreamLimit,
    ];

    /// The reason's name (a metric label value and an API key).
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Rule => "drop_rule",
            DropReason::Sampled => "sampled",
            DropReason::AtLimit => "at_limit",
            DropReason::RateLimit => "rate_limit",
            DropReason::Upstream => "upstream_decision",
            DropReason::SeriesLimit => "series_limit",
            DropReason::MinInterval => "min_interval",
            DropReason::StreamLimit => "stream_limit",
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

table_key!(RejectReason);

impl RejectReason {
    /// Every reject reason.
    pub const ALL: [RejectReason; 6] = [
        RejectReason::BadRequest,
        RejectReason::Unauthorized,
        RejectReason::TooLarge,
        RejectReason::RateLimited,
        RejectReason::Unreachable,
        RejectReason::Partial,
    ];

    /// The reason's name (a metric label value and an API key).
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

/// Where a batch is sent: an upstream and the wire format it speaks. Each has its own
/// encoding, headers, success codes and rules for what upstream may have billed
/// (`crate::forwarder`), and its own optional `upstream.<name>` policy section.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Destination {
    /// OTLP/HTTP traces (Grafana Cloud's OTLP gateway, `/v1/traces`).
    OtlpTraces,
    /// OTLP/HTTP logs (`/v1/logs`).
    OtlpLogs,
    /// OTLP/HTTP metrics (`/v1/metrics`).
    OtlpMetrics,
    /// Prometheus remote write 1.0 (Grafana Cloud's `.../api/prom/push`).
    RemoteWrite,
    /// Loki's push API (Grafana Cloud's `.../loki/api/v1/push`).
    Loki,
}

table_key!(Destination);

impl Destination {
    /// Every destination.
    pub const ALL: [Destination; 5] = [
        Destination::OtlpTraces,
        Destination::OtlpLogs,
        Destination::OtlpMetrics,
        Destination::RemoteWrite,
        Destination::Loki,
    ];

    /// The destination's name (a metric label value).
    pub fn as_str(self) -> &'static str {
        match self {
            Destination::OtlpTraces => "otlp_traces",
            Destination::OtlpLogs => "otlp_logs",
            Destination::OtlpMetrics => "otlp_metrics",
            Destination::RemoteWrite => "remote_write",
            Destination::Loki => "loki",
        }
    }

    /// The signal it carries (whose budget it spends).
    pub fn signal(self) -> Signal {
        match self {
            Destination::OtlpTraces => Signal::Traces,
            Destination::OtlpLogs | Destination::Loki => Signal::Logs,
            Destination::OtlpMetrics | Destination::RemoteWrite => Signal::Metrics,
        }
    }

    /// Whether it is a signal's OTLP destination (every signal has one, always configured).
    pub fn is_otlp(self) -> bool {
        Destination::otlp(self.signal()) == self
    }

    /// The OTLP destination of a signal.
    pub fn otlp(signal: Signal) -> Destination {
        match signal {
            Signal::Traces => Destination::OtlpTraces,
            Signal::Logs => Destination::OtlpLogs,
            Signal::Metrics => Destination::OtlpMetrics,
        }
    }
}

/// One of frugal's listening ports, as metric labels name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    /// OTLP/HTTP.
    Http,
    /// OTLP/gRPC.
    Grpc,
    /// The admin API.
    Admin,
}

impl Port {
    /// Every port.
    pub const ALL: [Port; 3] = [Port::Http, Port::Grpc, Port::Admin];

    /// The `port` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Port::Http => "http",
            Port::Grpc => "grpc",
            Port::Admin => "admin",
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
        for d in Destination::ALL {
            assert_eq!(serde_json::to_value(d).unwrap(), d.as_str());
            assert_eq!(Destination::otlp(d.signal()) == d, d.is_otlp());
        }
    }
}
