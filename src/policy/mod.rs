//! The validated policy: everything a user can say in `policies/*.yaml`.
//!
//! Loading happens in two phases (see [`load_str`]): the YAML becomes a plain tree, then a
//! validator walks it, collecting *every* problem with its YAML path, and builds these
//! types. There is no `Default` for [`Policy`]: a policy always comes from a file (or the
//! embedded free-tier one), so what runs is what the user can read.
//!
//! Codemap: `load` (entry points, overrides, `${VAR}`, checks across sections) calls one
//! module per YAML section in `sections`, which walk the tree with `tree` and take every
//! default and bound from [`defaults`]; `problem` holds [`Problem`] and [`PolicyError`] and
//! depends on nothing here.

#![warn(missing_docs)]

pub mod defaults;
mod load;
mod problem;
mod sections;
pub mod tail;
mod tree;

use std::net::SocketAddr;
use std::time::Duration;

use regex::Regex;

use crate::model::{Class, Signal};
use crate::period::PeriodSpec;

pub use load::{EMBEDDED_FREE_TIER, Overrides, load_file, load_str};
pub use problem::{PolicyError, Problem};
pub use tail::{CompositeSub, TailKind, TailPolicy, TailRule};

/// A complete, validated policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Where it came from (a path, or `embedded:grafana-cloud-free`), for messages.
    pub source: String,
    /// Where frugal listens (`listen`).
    pub listen: Listen,
    /// What frugal accepts from clients (`ingest`).
    pub ingest: Ingest,
    /// Where kept data goes (`upstream`).
    pub upstream: Upstreams,
    /// What a budget is per (`period`).
    pub period: PeriodSpec,
    /// Where usage is persisted (`store`).
    pub store: Store,
    /// How much each signal may send per period (`budgets`).
    pub budgets: Budgets,
    /// How the budget is spread over the period (`pacing`).
    pub pacing: Pacing,
    /// Span sampling and rules (`traces`).
    pub traces: TracePolicy,
    /// Log record sampling and rules (`logs`).
    pub logs: LogPolicy,
    /// Metric settings (`metrics`).
    pub metrics: MetricPolicy,
    /// Meter and report what would be dropped, but forward everything.
    pub shadow: bool,
    /// Built-in notifications (`alerts`); `None` when the section is absent (then nothing
    /// is notified).
    pub alerts: Option<Alerts>,
}

/// Built-in notifications: when each budget passes a threshold, or is projected to run out
/// before the period ends, once per period, to these webhooks (`alerts`).
#[derive(Debug, Clone, PartialEq)]
pub struct Alerts {
    /// Fractions of the limit (less reserved) that notify when usage reaches them,
    /// ascending, without duplicates.
    pub thresholds: Vec<Threshold>,
    /// Notify when the projection at the current keep probabilities reaches the limit
    /// before the period ends.
    pub projected_overage: bool,
    /// Where notifications go (none: they are only logged).
    pub webhooks: Vec<Webhook>,
}

/// A usage threshold, in hundredths of a percent (50% is 5000), so thresholds compare
/// and name themselves exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Threshold(pub u32);

impl Threshold {
    /// 100%: what a projected overage is measured against.
    pub const LIMIT: Threshold = Threshold(10_000);

    /// The threshold as a fraction of the limit.
    pub fn ratio(self) -> f64 {
        f64::from(self.0) / 10_000.0
    }

    /// As users write it: `50%`, `99.5%`.
    pub fn label(self) -> String {
        let whole = self.0 / 100;
        match self.0 % 100 {
            0 => format!("{whole}%"),
            f if f % 10 == 0 => format!("{whole}.{}%", f / 10),
            f => format!("{whole}.{f:02}%"),
        }
    }
}

/// One webhook notifications are POSTed to. Its URL and header values are secrets (a
/// Slack webhook URL is its own credential): `Debug` never shows them.
#[derive(Clone, PartialEq, Eq)]
pub struct Webhook {
    /// Where to POST (Alertmanager: its base URL, or the full `/api/v2/alerts` URL).
    pub url: String,
    /// The body's shape.
    pub format: WebhookFormat,
    /// Extra headers sent with every POST (`Authorization` included).
    pub headers: Vec<(String, String)>,
}

impl Webhook {
    /// The webhook without its secrets, for logs: its format and host.
    pub fn describe(&self) -> String {
        let host = self
            .url
            .parse::<http::Uri>()
            .ok()
            .and_then(|u| u.host().map(str::to_string))
            .unwrap_or_default();
        format!("{} webhook at {host}", self.format.as_str())
    }
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let headers: Vec<String> = self
            .headers
            .iter()
            .map(|(k, _)| format!("{k}: <redacted>"))
            .collect();
        f.debug_struct("Webhook")
            .field("url", &"<redacted>")
            .field("format", &self.format)
            .field("headers", &headers)
            .finish()
    }
}

/// The shape of a webhook's body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WebhookFormat {
    /// frugal's own JSON document, one POST per notification.
    Generic,
    /// Slack's incoming webhooks: `{"text": ...}`, one POST per notification.
    Slack,
    /// Alertmanager's `/api/v2/alerts`: every active alert, re-posted while it lasts.
    Alertmanager,
}

impl WebhookFormat {
    /// Every format, in the order the metrics list them.
    pub const ALL: [WebhookFormat; 3] = [
        WebhookFormat::Generic,
        WebhookFormat::Slack,
        WebhookFormat::Alertmanager,
    ];

    /// The name the policy and the metrics use.
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookFormat::Generic => "generic",
            WebhookFormat::Slack => "slack",
            WebhookFormat::Alertmanager => "alertmanager",
        }
    }
}

/// The addresses frugal listens on.
#[derive(Debug, Clone, PartialEq)]
pub struct Listen {
    /// OTLP/HTTP.
    pub http: SocketAddr,
    /// OTLP/gRPC; `None` when OTLP/gRPC is turned off.
    pub grpc: Option<SocketAddr>,
    /// Metrics, the usage API and the status page.
    pub admin: SocketAddr,
    /// Caps and deadlines for client connections (`listen.connections`).
    pub connections: Connections,
}

/// How many connections each port holds and how long a connection may take over each
/// step (`listen.connections`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connections {
    /// Open connections per OTLP port (HTTP and gRPC each); past it, new ones are closed.
    pub max: u32,
    /// Open connections on the admin port, apart from the OTLP ports' so they cannot
    /// starve `/readyz` and `/metrics`.
    pub admin_max: u32,
    /// A request's headers must have arrived this long after the connection opened or the
    /// request's first byte (and a new connection must send its first request within it).
    pub header_timeout: Duration,
    /// A request's body must have arrived this long after its headers.
    pub request_timeout: Duration,
    /// A connection with no request in flight is closed after this long.
    pub idle_timeout: Duration,
    /// Concurrent HTTP/2 streams (requests) per connection.
    pub max_streams: u32,
}

/// What frugal accepts from its clients.
#[derive(Debug, Clone)]
pub struct Ingest {
    /// Largest request body accepted, after decompression and once canonical.
    pub max_request_bytes: u64,
    /// Bytes all requests in flight may hold together: bodies as received, decompressed,
    /// and the decoded messages' estimated size (`max_in_flight`).
    pub max_in_flight_bytes: u64,
    /// What one request may hold (`max_per_request`).
    pub max_per_request: MaxPerRequest,
    /// A credential clients must present, so frugal is not an open relay.
    pub auth: Option<IngestAuth>,
}

/// What one request may hold, counted on its encoding before it is decoded
/// (`ingest.max_per_request`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxPerRequest {
    /// Resources (`ResourceSpans`, `ResourceLogs`, `ResourceMetrics`).
    pub resources: u64,
    /// Instrumentation scopes (`ScopeSpans`, `ScopeLogs`, `ScopeMetrics`).
    pub scopes: u64,
    /// Spans, log records or data points.
    pub items: u64,
    /// Key-value pairs anywhere (attributes, nested maps, metadata).
    pub attributes: u64,
    /// How deep attribute and body values nest (a plain value is 1; a list holding a map
    /// of plain values is 3).
    pub depth: u32,
}

/// The credential clients must present to frugal.
#[derive(Clone)]
pub enum IngestAuth {
    /// `Authorization: Bearer <token>`.
    Bearer(String),
    /// `Authorization: Basic`, with these.
    Basic {
        /// The expected user name.
        username: String,
        /// The expected password.
        password: String,
    },
}

impl std::fmt::Debug for IngestAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IngestAuth::Bearer(_) => f.write_str("Bearer(<redacted>)"),
            IngestAuth::Basic { username, .. } => write!(f, "Basic({username}, <redacted>)"),
        }
    }
}

/// Where frugal sends what it keeps.
#[derive(Debug, Clone, PartialEq)]
pub struct Upstreams {
    /// The OTLP endpoint every signal goes to.
    pub otlp: Endpoint,
    /// Where Prometheus remote-write requests go (the full push URL); `None`: remote
    /// write is refused with a message saying how to configure it.
    pub remote_write: Option<Endpoint>,
    /// Where Loki pushes go (the full push URL); `None`: Loki pushes are refused with a
    /// message saying how to configure it.
    pub loki: Option<Endpoint>,
}

/// An OTLP/HTTP endpoint: Grafana Cloud's OTLP gateway, or any OTLP receiver.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    /// Base URL; the signal path (`/v1/traces`, ...) is appended.
    pub endpoint: String,
    /// How frugal authenticates to it.
    pub auth: UpstreamAuth,
    /// Extra headers sent with every request (e.g. `X-Scope-OrgID`).
    pub headers: Vec<(String, String)>,
    /// How request bodies are compressed.
    pub compression: Compression,
    /// Timeout of one attempt.
    pub timeout: Duration,
    /// How failed attempts are retried.
    pub retry: Retry,
}

/// How frugal authenticates to an upstream.
#[derive(Clone, PartialEq)]
pub enum UpstreamAuth {
    /// No credential.
    None,
    /// HTTP basic auth (Grafana Cloud: instance ID and API token).
    Basic {
        /// The user name (Grafana Cloud: the instance ID).
        username: String,
        /// The password (Grafana Cloud: an API token).
        password: String,
    },
    /// `Authorization: Bearer <token>`.
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

/// Compression of request bodies sent upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Sent as they are.
    None,
    /// gzip.
    Gzip,
}

/// Retries with exponential backoff and jitter; all of them end within `max_elapsed`, which
/// must stay below the client's own timeout (10 s for the SDKs, 30 s for Alloy) so the
/// client never resends what frugal is still delivering.
#[derive(Debug, Clone, PartialEq)]
pub struct Retry {
    /// The wait before the first retry.
    pub initial_backoff: Duration,
    /// The longest wait between two attempts.
    pub max_backoff: Duration,
    /// When all attempts of one request must have ended.
    pub max_elapsed: Duration,
}

/// Where and how the usage counters are persisted.
#[derive(Debug, Clone, PartialEq)]
pub struct Store {
    /// Where sled keeps the usage counters (`--data-dir` overrides).
    pub data_dir: std::path::PathBuf,
    /// How often counters are flushed to disk: at most this much metering is lost on a crash.
    pub flush_interval: Duration,
    /// sled's page cache (its default is 1 GiB; a pod wants far less).
    pub cache_bytes: u64,
}

/// The budget of each signal; `None` where the policy sets none.
#[derive(Debug, Clone)]
pub struct Budgets {
    /// Bytes of spans per period.
    pub traces: Option<ByteBudget>,
    /// Bytes of log records per period.
    pub logs: Option<ByteBudget>,
    /// Active series.
    pub metrics: Option<MetricsBudget>,
}

impl Budgets {
    /// The byte budget of a signal (metrics have none).
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
    /// The plan's limit per period, in bytes.
    pub limit: u64,
    /// What other senders to the same stack use: subtracted from the limit.
    pub reserved: u64,
    /// The fraction of `limit - reserved` the period should end at.
    pub target: f64,
    /// Grafana's per-second ingestion limit to pace under.
    pub max_rate: Option<u64>,
    /// What happens once usage reaches the target.
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

/// The metrics budget.
#[derive(Debug, Clone)]
pub struct MetricsBudget {
    /// Grafana's active-series limit (enforced when series counting lands; reported now).
    pub active_series: Option<u64>,
    /// The fraction of `active_series` to stay under.
    pub target: f64,
}

/// How the budget is spread over the period.
#[derive(Debug, Clone)]
pub struct Pacing {
    /// Whether keep probabilities are lowered to spread the budget over the period; when
    /// off, only [`AtLimit`] applies.
    pub enabled: bool,
    /// How often the budget controller recomputes keep probabilities.
    pub recompute_every: Duration,
}

/// What happens to spans.
#[derive(Debug, Clone)]
pub struct TracePolicy {
    /// How spans are sampled.
    pub sampling: TraceSampling,
    /// Which spans are dropped, preferred or sampled first.
    pub rules: Rules,
    /// Whole-trace decisions (`traces.tail`); `None` when the section is absent, which
    /// leaves tail sampling off.
    pub tail: Option<TailPolicy>,
}

/// What happens to log records.
#[derive(Debug, Clone)]
pub struct LogPolicy {
    /// A record with a trace ID is kept only if its trace would be kept.
    pub follow_traces: bool,
    /// Records without a trace ID are sampled by a hash of this attribute (else at random).
    pub hash_attribute: Option<String>,
    /// Which records are dropped, preferred or sampled first.
    pub rules: Rules,
    /// A per-stream rate limit for Loki pushes (`logs.stream_limit`).
    pub stream_limit: Option<StreamLimit>,
}

/// `logs.stream_limit`: each Loki stream may send `max_rate` bytes a second (a second's
/// worth at once); what passes it is dropped, non-priority entries only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLimit {
    /// Bytes a second per stream.
    pub max_rate: u64,
    /// The most streams tracked apart; past it new streams share an overflow bucket.
    pub max_streams: usize,
}

/// What happens to metrics: which series may exist, and how often a series' points go.
#[derive(Debug, Clone)]
pub struct MetricPolicy {
    /// At most one point per series per this interval (`None`: every point).
    pub min_sample_interval: Option<Duration>,
    /// A series is billed while it had a sample this recently (Grafana: 20 minutes).
    pub billing_window: Duration,
    /// A series counts against `budgets.metrics.active_series` this long after its last
    /// sample (Mimir's head: up to about three hours).
    pub admission_window: Duration,
    /// Which new series are never admitted, admitted first, or refused first.
    pub rules: SeriesRules,
}

impl Default for MetricPolicy {
    fn default() -> Self {
        Self {
            min_sample_interval: None,
            billing_window: defaults::DEFAULT_SERIES_BILLING_WINDOW,
            admission_window: defaults::DEFAULT_SERIES_ADMISSION_WINDOW,
            rules: SeriesRules::default(),
        }
    }
}

/// The metrics rule lists.
#[derive(Debug, Clone, Default)]
pub struct SeriesRules {
    /// Series never admitted.
    pub drop: Vec<SeriesRule>,
    /// Series admitted up to the hard limit.
    pub priority: Vec<SeriesRule>,
    /// Series refused first as the limit nears.
    pub drop_first: Vec<SeriesRule>,
}

/// A named series selector.
#[derive(Debug, Clone)]
pub struct SeriesRule {
    /// The rule's name (in logs and the API).
    pub name: String,
    /// The series it matches.
    pub selector: crate::sampling::selector::Selector,
}

/// How spans are sampled.
#[derive(Debug, Clone)]
pub struct TraceSampling {
    /// Which sampling algorithm.
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

/// The span sampling algorithm.
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
    /// Whether there are no rules at all.
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
    /// The user's name for it (`<list>-<index>` when unnamed).
    pub name: String,
    /// What must hold; never empty.
    pub conditions: Vec<Condition>,
}

/// One condition of a rule.
#[derive(Debug, Clone)]
pub enum Condition {
    /// `service.name` is one of these.
    Service(Vec<String>),
    /// `service.name` matches.
    ServiceMatches(Regex),
    /// The span name is one of these.
    SpanName(Vec<String>),
    /// The span name matches.
    SpanNameMatches(Regex),
    /// The span kind is one of these (OTLP numbers: 1 internal to 5 consumer).
    SpanKind(Vec<i32>),
    /// Span status code (0 unset, 1 ok, 2 error).
    StatusCode(i32),
    /// The span lasted longer than this.
    LatencyOver(Duration),
    /// An attribute (of the item, else of its resource) equals one of the values.
    Attribute {
        /// The attribute's key.
        key: String,
        /// Accepted values, compared as text.
        values: Vec<String>,
    },
    /// An attribute (of the item, else of its resource) matches.
    AttributeMatches {
        /// The attribute's key.
        key: String,
        /// What its value must match.
        regex: Regex,
    },
    /// Log severity number at least this (WARN = 13).
    SeverityAtLeast(i32),
    /// The log body matches.
    BodyMatches(Regex),
}
