//! The validated policy: everything a user can say in `policies/*.yaml`.
//!
//! Loading happens in two phases (see [`load`]): the YAML becomes a plain tree, then a
//! validator walks it, collecting *every* problem with its YAML path, and builds these
//! types. There is no `Default` for [`Policy`]: a policy always comes from a file (or the
//! embedded free-tier one), so what runs is what the user can read.

mod load;
mod tree;

use std::net::SocketAddr;
use std::time::Duration;

use regex::Regex;

use crate::model::{Class, Signal};
use crate::period::PeriodSpec;

pub use load::{EMBEDDED_FREE_TIER, Overrides, PolicyError, Problem, load_file, load_str};

/// A complete, validated policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Where it came from (a path, or `embedded:grafana-cloud-free`), for messages.
    pub source: String,
    pub listen: Listen,
    pub ingest: Ingest,
    pub upstream: Upstreams,
    pub period: PeriodSpec,
    pub store: Store,
    pub budgets: Budgets,
    pub pacing: Pacing,
    pub traces: TracePolicy,
    pub logs: LogPolicy,
    pub metrics: MetricPolicy,
    /// Meter and report what would be dropped, but forward everything.
    pub shadow: bool,
}

#[derive(Debug, Clone)]
pub struct Listen {
    pub http: SocketAddr,
    /// `None` when OTLP/gRPC is turned off.
    pub grpc: Option<SocketAddr>,
    pub admin: SocketAddr,
}

#[derive(Debug, Clone)]
pub struct Ingest {
    /// Largest request body accepted, after decompression.
    pub max_request_bytes: u64,
    /// A credential clients must present, so frugal is not an open relay.
    pub auth: Option<IngestAuth>,
}

#[derive(Clone)]
pub enum IngestAuth {
    Bearer(String),
    Basic { username: String, password: String },
}

impl std::fmt::Debug for IngestAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IngestAuth::Bearer(_) => f.write_str("Bearer(<redacted>)"),
            IngestAuth::Basic { username, .. } => write!(f, "Basic({username}, <redacted>)"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Upstreams {
    pub otlp: OtlpUpstream,
}

/// An OTLP/HTTP endpoint: Grafana Cloud's OTLP gateway, or any OTLP receiver.
#[derive(Debug, Clone)]
pub struct OtlpUpstream {
    /// Base URL; the signal path (`/v1/traces`, ...) is appended.
    pub endpoint: String,
    pub auth: UpstreamAuth,
    /// Extra headers sent with every request (e.g. `X-Scope-OrgID`).
    pub headers: Vec<(String, String)>,
    pub compression: Compression,
    /// Timeout of one attempt.
    pub timeout: Duration,
    pub retry: Retry,
}

#[derive(Clone)]
pub enum UpstreamAuth {
    None,
    Basic {
        username: String,
        password: String,
    },
    Bearer(String),
    /// Forward the client's own `Authorization` header.
    PassThrough,
}

impl std::fmt::Debug for UpstreamAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamAuth::None => f.write_str("None"),
            UpstreamAuth::Basic { username, .. } => write!(f, "Basic({username}, <redacted>)"),
            UpstreamAuth::Bearer(_) => f.write_str("Bearer(<redacted>)"),
            UpstreamAuth::PassThrough => f.write_str("PassThrough"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
}

/// Retries with exponential backoff and jitter; all of them end within `max_elapsed`, which
/// must stay below the client's own timeout (10 s for the SDKs, 30 s for Alloy) so the
/// client never resends what frugal is still delivering.
#[derive(Debug, Clone)]
pub struct Retry {
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub max_elapsed: Duration,
}

#[derive(Debug, Clone)]
pub struct Store {
    /// Where sled keeps the usage counters (`--data-dir` overrides).
    pub data_dir: std::path::PathBuf,
    /// How often counters are flushed to disk: at most this much metering is lost on a crash.
    pub flush_interval: Duration,
    /// sled's page cache (its default is 1 GiB; a pod wants far less).
    pub cache_bytes: u64,
}

#[derive(Debug, Clone)]
pub struct Budgets {
    pub traces: Option<ByteBudget>,
    pub logs: Option<ByteBudget>,
    pub metrics: Option<MetricsBudget>,
}

impl Budgets {
    pub fn bytes(&self, signal: Signal) -> Option<&ByteBudget> {
        match signal {
            Signal::Traces => self.traces.as_ref(),
            Signal::Logs => self.logs.as_ref(),
            Signal::Metrics => None,
        }
    }
}

/// A monthly (per period) byte budget, as Grafana bills traces and logs.
#[derive(Debug, Clone)]
pub struct ByteBudget {
    pub limit: u64,
    /// What other senders to the same stack use: subtracted from the limit.
    pub reserved: u64,
    /// The fraction of `limit - reserved` the period should end at.
    pub target: f64,
    /// Grafana's per-second ingestion limit to pace under.
    pub max_rate: Option<u64>,
    pub at_limit: AtLimit,
}

impl ByteBudget {
    /// What frugal may spend this period: the limit less what others use.
    pub fn effective_limit(&self) -> u64 {
        self.limit.saturating_sub(self.reserved)
    }

    /// Where pacing aims to end the period.
    pub fn target_bytes(&self) -> u64 {
        (self.effective_limit() as f64 * self.target) as u64
    }
}

/// What happens once usage reaches the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtLimit {
    /// Past the target, drop everything.
    DropAll,
    /// Between the target and the limit, send only priority items; at the limit, nothing.
    KeepPriority,
}

#[derive(Debug, Clone)]
pub struct MetricsBudget {
    /// Grafana's active-series limit (enforced when series counting lands; reported now).
    pub active_series: Option<u64>,
    pub target: f64,
}

#[derive(Debug, Clone)]
pub struct Pacing {
    pub enabled: bool,
    /// How often the budget controller recomputes keep probabilities.
    pub recompute_every: Duration,
}

#[derive(Debug, Clone)]
pub struct TracePolicy {
    pub sampling: TraceSampling,
    pub rules: Rules,
}

#[derive(Debug, Clone)]
pub struct LogPolicy {
    /// A record with a trace ID is kept only if its trace would be kept.
    pub follow_traces: bool,
    /// Records without a trace ID are sampled by a hash of this attribute (else at random).
    pub hash_attribute: Option<String>,
    pub rules: Rules,
}

#[derive(Debug, Clone)]
pub struct MetricPolicy {}

#[derive(Debug, Clone)]
pub struct TraceSampling {
    pub mode: SamplingMode,
    /// Hex digits of `th` written on kept spans (the collector's `sampling_precision`).
    pub precision: u8,
    /// The keep probability never goes below this while budget remains.
    pub min_probability: f64,
    /// In hash_seed mode: drop spans that already carry `th`/`rv` (the collector's
    /// `fail_closed`); otherwise pass them on with their earlier decision.
    pub fail_closed: bool,
    /// When set, kept spans carry 1/p (their adjusted count) in this attribute, for Tempo's
    /// metrics-generator `span_multiplier_key`.
    pub multiplier_attribute: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SamplingMode {
    /// OpenTelemetry consistent probability sampling; probabilities multiply.
    Proportional,
    /// Bit-for-bit the collector's probabilistic_sampler `hash_seed` mode.
    HashSeed(u32),
}

/// The priority, drop and drop-first rules of one signal.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    /// Never sent (health checks and the like).
    pub drop: Vec<Rule>,
    /// Spend the budget on these first.
    pub priority: Vec<Rule>,
    /// Sampled before anything else.
    pub drop_first: Vec<Rule>,
}

impl Rules {
    pub fn is_empty(&self) -> bool {
        self.drop.is_empty() && self.priority.is_empty() && self.drop_first.is_empty()
    }

    /// The class rules put an item in, or `None` when a drop rule matches. `matches` says
    /// whether a rule matches the item.
    pub fn classify(&self, mut matches: impl FnMut(&Rule) -> bool) -> Option<Class> {
        if self.drop.iter().any(&mut matches) {
            return None;
        }
        if self.priority.iter().any(&mut matches) {
            return Some(Class::Priority);
        }
        if self.drop_first.iter().any(&mut matches) {
            return Some(Class::Bulk);
        }
        Some(Class::Normal)
    }
}

/// One rule: every condition it states must hold.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub conditions: Vec<Condition>,
}

#[derive(Debug, Clone)]
pub enum Condition {
    /// `service.name` is one of these.
    Service(Vec<String>),
    ServiceMatches(Regex),
    SpanName(Vec<String>),
    SpanNameMatches(Regex),
    SpanKind(Vec<i32>),
    /// Span status code (0 unset, 1 ok, 2 error).
    StatusCode(i32),
    LatencyOver(Duration),
    /// An attribute (of the item, else of its resource) equals one of the values.
    Attribute {
        key: String,
        values: Vec<String>,
    },
    AttributeMatches {
        key: String,
        regex: Regex,
    },
    /// Log severity number at least this (WARN = 13).
    SeverityAtLeast(i32),
    BodyMatches(Regex),
}
