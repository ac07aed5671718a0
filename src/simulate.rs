//! `frugal simulate`: a month of synthetic traffic through the production ingest path.
//!
//! The production [`Core`] is built as `serve` builds it, with a [`ManualClock`], a
//! [`MemoryStore`] and an in-memory upstream. Real encoded OTLP requests are decoded as the
//! receivers decode them and handed to [`crate::pipeline::handle`]; the production pacer,
//! controller and samplers decide ([`Core::recompute`] on schedule). **Invariant: this
//! module holds no pacing logic** — it only makes traffic, moves the clock, calls the
//! core on schedule and reads the results. The upstream counts what it received itself,
//! so a run can be checked against the world and not only against frugal's ledger.
//!
//! `scale` divides traffic and budget alike, so a month runs in seconds with the same
//! proportions.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use jiff::Timestamp;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message as _;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::budget::controller::PacingState;
use crate::clock::{Clock as _, ManualClock, SharedClock};
use crate::core::Core;
use crate::forwarder::{Export, ExportContext, Outcome};
use crate::ingest::{RequestMeta, Transport};
use crate::model::{Class, Destination, DropReason, PerDropReason, Signal};
use crate::pipeline;
use crate::policy::Policy;
use crate::receivers::codec::{self, Format};
use crate::stats::Stats;
use crate::store::MemoryStore;

/// How much traffic to offer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Traffic {
    /// A multiple of the budget's even pace (the limit spread over the period).
    Multiple(f64),
    /// Traces (requests) per second, before scaling.
    TracesPerSecond(f64),
}

impl std::str::FromStr for Traffic {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        if let Some(x) = t.strip_suffix('x') {
            return x
                .parse::<f64>()
                .ok()
                .filter(|v| *v >= 0.0)
                .map(Traffic::Multiple)
                .ok_or_else(|| format!("{s:?} is not a multiple (try 3x)"));
        }
        if let Some(x) = t.strip_suffix("req/s").or_else(|| t.strip_suffix("/s")) {
            return x
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|v| *v >= 0.0)
                .map(Traffic::TracesPerSecond)
                .ok_or_else(|| format!("{s:?} is not a rate (try 10req/s)"));
        }
        Err(format!("{s:?} is not a traffic level (try 3x or 10req/s)"))
    }
}

/// The shape of the month.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// The same rate all month.
    Steady,
    /// A daily rhythm: busy afternoons, quiet nights (±60%).
    Daily,
    /// Steady, with one day at 20 times the rate (a launch day, a viral post).
    Spike,
    /// Rising steadily from half to one and a half times the level.
    Growth,
}

impl Scenario {
    /// Every scenario, in the order `--scenario all` runs them.
    pub const ALL: [Scenario; 4] = [
        Scenario::Steady,
        Scenario::Daily,
        Scenario::Spike,
        Scenario::Growth,
    ];

    /// The scenario's name, as `--scenario` takes it and the report prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            Scenario::Steady => "steady",
            Scenario::Daily => "daily",
            Scenario::Spike => "spike",
            Scenario::Growth => "growth",
        }
    }

    /// The demand multiplier at `elapsed` of the period (`fraction` of it gone).
    fn multiplier(
        self,
        elapsed_seconds: f64,
        fraction: f64,
        day_seconds: f64,
        spike_day: usize,
    ) -> f64 {
        match self {
            Scenario::Steady => 1.0,
            Scenario::Daily => {
                let phase = (elapsed_seconds % day_seconds) / day_seconds;
                1.0 + 0.6 * ((phase - 0.375) * std::f64::consts::TAU).sin()
            }
            Scenario::Spike => {
                if (elapsed_seconds / day_seconds) as usize == spike_day {
                    20.0
                } else {
                    1.0
                }
            }
            Scenario::Growth => 0.5 + fraction,
        }
    }
}

impl std::str::FromStr for Scenario {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Scenario::ALL
            .into_iter()
            .find(|x| x.as_str() == s)
            .ok_or_else(|| format!("{s:?} is not a scenario (steady, daily, spike, growth)"))
    }
}

/// A simulation run.
#[derive(Debug, Clone)]
pub struct Config {
    /// How much traffic to offer (`--traffic`).
    pub traffic: Traffic,
    /// Spans in each synthetic trace (at least 1).
    pub spans_per_trace: u32,
    /// The month's shape.
    pub scenario: Scenario,
    /// Traffic and budget are both divided by this.
    pub scale: f64,
    /// Seed of the traffic generator: the same seed repeats a month exactly.
    pub seed: u64,
    /// A time inside the period to simulate (default: November 2026).
    pub start: Option<Timestamp>,
    /// Also send log records (warn+ 10%), at the same multiple of the log budget.
    pub with_logs: bool,
    /// Day (0-based) of the spike scenario's spike.
    pub spike_day: usize,
    /// Where to write the hourly usage, pace line and keep probabilities as CSV
    /// ([`CSV_HEADER`]), if anywhere.
    pub csv: Option<PathBuf>,
    /// Whether to draw a progress bar on stderr.
    pub progress: bool,
    /// Tail sampling: the policy's `traces.tail`, or [`SIMULATED_TAIL`] if it has none.
    pub tail: bool,
}

/// The tail section `--tail` adds to a policy without one: errors and slow traces kept
/// whole, in the priority class.
pub const SIMULATED_TAIL: &str = "traces:
  tail:
    policies:
      - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}, class: priority}
      - {name: slow, type: latency, latency: {threshold_ms: 2000}, class: priority}
";

impl Default for Config {
    fn default() -> Self {
        Self {
            traffic: Traffic::Multiple(3.0),
            spans_per_trace: 20,
            scenario: Scenario::Steady,
            scale: 1000.0,
            seed: 1,
            start: None,
            with_logs: false,
            spike_day: 11,
            csv: None,
            progress: false,
            tail: false,
        }
    }
}

/// One simulated day.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Day {
    /// Trace bytes received that day, before drop rules and sampling.
    pub offered_bytes: u64,
    /// Trace bytes sent upstream that day.
    pub kept_bytes: u64,
    /// Priority spans offered that day (by the policy's own rules).
    pub priority_offered: u64,
    /// Priority spans that reached the upstream that day.
    pub priority_kept: u64,
    /// Whether the budget still allowed priority items all day.
    pub budget_allowed_priority: bool,
    /// Usage at the day's end, as a fraction of the limit.
    pub used_fraction: f64,
    /// The normal class's keep probability, averaged over the day.
    pub keep_probability: f64,
}

/// The outcome of a run, for printing and for tests.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// The month's shape.
    pub scenario: Scenario,
    /// The traffic asked for.
    pub traffic: Traffic,
    /// Demand over the period as a multiple of the limit.
    pub demand_multiple: f64,
    /// The traces budget's limit (less reserved), scaled.
    pub limit: u64,
    /// The budget's target fraction.
    pub target: f64,
    /// Trace bytes used at the end, by frugal's ledger.
    pub used: u64,
    /// The most the ledger's figure reached at any step.
    pub max_used: u64,
    /// Day by day.
    pub days: Vec<Day>,
    /// Trace bytes the sampler left out.
    pub sampled_out_bytes: u64,
    /// Trace bytes dropped by reason (drop rules, sampling, at the limit, rate limit).
    pub dropped_bytes: PerDropReason<u64>,
    /// Trace bytes offered over the period.
    pub offered_bytes: u64,
    /// Priority spans offered (by the policy's own rules).
    pub priority_offered: u64,
    /// Priority spans that reached the upstream.
    pub priority_kept: u64,
    /// Trace bytes the simulated upstream received, by its own count (Tempo's: the bodies
    /// plus 2 bytes per empty ID).
    pub upstream_bytes: u64,
    /// The logs budget's limit (less reserved), scaled, if the policy has one.
    pub log_limit: Option<u64>,
    /// Log bytes used at the end, by frugal's ledger.
    pub log_used: u64,
    /// Log bytes the simulated upstream received (Loki's count of what arrived).
    pub upstream_log_bytes: u64,
    /// Log records that reached the upstream.
    pub log_records_kept: u64,
    /// Of those, non-priority records whose trace never arrived.
    pub log_records_of_dropped_traces: u64,
    /// When the policy's `alerts` would have notified, in order (none without `alerts`).
    pub notifications: Vec<Notification>,
    /// Traces offered with an error or a slow request (the generator's own flag).
    pub notable_traces: u64,
    /// Spans of those traces offered.
    pub notable_spans: u64,
    /// Spans of those traces that reached the upstream.
    pub notable_spans_kept: u64,
    /// Bytes of those traces' spans the upstream received (each span's share).
    pub notable_bytes: u64,
    /// Whether tail sampling ran.
    pub tail: bool,
}

/// A notification the policy's `alerts` would have sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    /// Day of the period (1-based; a thirtieth of the period).
    pub day: usize,
    /// Time of that (scaled) day, `HH:MM`.
    pub time: String,
    /// What it says (the Slack text).
    pub summary: String,
}

impl RunReport {
    /// Trace usage at the end of the period, as a fraction of the limit.
    pub fn end_fraction(&self) -> f64 {
        self.used as f64 / self.limit as f64
    }

    /// The fraction of offered trace bytes sent over the period (1 when nothing was offered).
    pub fn average_keep(&self) -> f64 {
        let kept: u64 = self.days.iter().map(|d| d.kept_bytes).sum();
        if self.offered_bytes == 0 {
            1.0
        } else {
            kept as f64 / self.offered_bytes as f64
        }
    }

    /// The smallest ratio, over days, of what a day kept to what it would have kept at the
    /// period's average keep probability (1 = even; the bar is 0.25).
    pub fn worst_day_ratio(&self) -> f64 {
        let avg = self.average_keep();
        self.days
            .iter()
            .filter(|d| d.offered_bytes > 0)
            .map(|d| d.kept_bytes as f64 / (d.offered_bytes as f64 * avg))
            .fold(f64::INFINITY, f64::min)
    }

    /// Priority items kept on days the budget still allowed them, as a fraction.
    pub fn priority_kept_fraction(&self) -> f64 {
        let (o, k) = self
            .days
            .iter()
            .filter(|d| d.budget_allowed_priority)
            .fold((0u64, 0u64), |(o, k), d| {
                (o + d.priority_offered, k + d.priority_kept)
            });
        if o == 0 { 1.0 } else { k as f64 / o as f64 }
    }
}

/// The in-memory upstream: acknowledges everything, and counts what a backend would see
/// in what it received: Tempo's bytes (the body plus 2 bytes per empty ID), spans and log
/// records, and which of them the policy's own rules call priority.
struct SimUpstream {
    policy: Arc<Policy>,
    trace_bytes: AtomicU64,
    log_bytes: AtomicU64,
    priority_spans: AtomicU64,
    kept_traces: Mutex<std::collections::HashSet<[u8; 16]>>,
    /// Traces the generator made with an error or a slow request.
    notable: Mutex<std::collections::HashSet<[u8; 16]>>,
    notable_spans: AtomicU64,
    notable_bytes: AtomicU64,
    log_records: AtomicU64,
    orphan_logs: AtomicU64,
}

impl SimUpstream {
    fn new(policy: Arc<Policy>) -> Self {
        Self {
            policy,
            trace_bytes: AtomicU64::new(0),
            log_bytes: AtomicU64::new(0),
            priority_spans: AtomicU64::new(0),
            kept_traces: Mutex::default(),
            notable: Mutex::default(),
            notable_spans: AtomicU64::new(0),
            notable_bytes: AtomicU64::new(0),
            log_records: AtomicU64::new(0),
            orphan_logs: AtomicU64::new(0),
        }
    }

    fn traces(&self, body: &[u8]) {
        let Ok(req) = ExportTraceServiceRequest::decode(body) else {
            return;
        };
        let mut empty_ids = 0u64;
        let mut kept = self.kept_traces.lock().unwrap_or_else(|e| e.into_inner());
        let notable = self.notable.lock().unwrap_or_else(|e| e.into_inner());
        for rs in &req.resource_spans {
            let resource = rs.resource.as_ref();
            let service = crate::sampling::rules::service_name(resource);
            for s in rs.scope_spans.iter().flat_map(|s| &s.spans) {
                empty_ids += [&s.trace_id, &s.span_id, &s.parent_span_id]
                    .iter()
                    .filter(|id| id.is_empty())
                    .count() as u64;
                if is_priority_span(&self.policy, resource, service, s) {
                    self.priority_spans.fetch_add(1, Ordering::Relaxed);
                }
                if let Ok(id) = <[u8; 16]>::try_from(&s.trace_id[..]) {
                    kept.insert(id);
                    if notable.contains(&id) {
                        self.notable_spans.fetch_add(1, Ordering::Relaxed);
                        self.notable_bytes
                            .fetch_add(crate::metering::tempo::span_share(s), Ordering::Relaxed);
                    }
                }
            }
        }
        self.trace_bytes
            .fetch_add(body.len() as u64 + 2 * empty_ids, Ordering::Relaxed);
    }

    fn logs(&self, body: &[u8]) {
        let Ok(req) = ExportLogsServiceRequest::decode(body) else {
            return;
        };
        self.log_bytes
            .fetch_add(crate::metering::loki::weigh(&req).units, Ordering::Relaxed);
        let kept = self.kept_traces.lock().unwrap_or_else(|e| e.into_inner());
        for rl in &req.resource_logs {
            let resource = rl.resource.as_ref();
            let service = crate::sampling::rules::service_name(resource);
            for r in rl.scope_logs.iter().flat_map(|s| &s.log_records) {
                self.log_records.fetch_add(1, Ordering::Relaxed);
                let class =
                    crate::sampling::logs::classify(&self.policy.logs, resource, service, r);
                if let Ok(id) = <[u8; 16]>::try_from(&r.trace_id[..])
                    && class != Some(Class::Priority)
                    && !kept.contains(&id)
                {
                    self.orphan_logs.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// Whether the policy's own rules (the code ingest uses) put a span in the priority class.
fn is_priority_span(
    policy: &Policy,
    resource: Option<&opentelemetry_proto::tonic::resource::v1::Resource>,
    service: &str,
    s: &Span,
) -> bool {
    crate::sampling::traces::classify(&policy.traces, resource, service, s) == Ok(Class::Priority)
}

impl Export for SimUpstream {
    fn export(&self, to: Destination, body: Bytes, _ctx: ExportContext) -> BoxFuture<'_, Outcome> {
        match to.signal() {
            Signal::Traces => self.traces(&body),
            Signal::Logs => self.logs(&body),
            Signal::Metrics => {}
        }
        Box::pin(async move {
            Outcome::Accepted {
                rejected: 0,
                message: String::new(),
            }
        })
    }
}

fn s(v: &str) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(any_value::Value::StringValue(v.to_string())),
    })
}

fn int(v: i64) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(any_value::Value::IntValue(v)),
    })
}

fn kv(k: &str, v: Option<AnyValue>) -> KeyValue {
    KeyValue {
        key: k.to_string(),
        value: v,
        ..Default::default()
    }
}

/// Synthetic traffic shaped like the seed's Mastodon instance.
struct Generator {
    rng: StdRng,
    spans_per_trace: u32,
}

const ROUTES: [&str; 6] = [
    "/api/v1/timelines/home",
    "/api/v1/notifications",
    "/api/v1/statuses",
    "/users/:username/inbox",
    "/api/v2/search",
    "/@:account/:id",
];

impl Generator {
    fn trace(&mut self, now: Timestamp) -> (ExportTraceServiceRequest, [u8; 16], bool) {
        let rng = &mut self.rng;
        let mut trace_id = [0u8; 16];
        rng.fill(&mut trace_id);
        let sidekiq = rng.random_bool(0.3);
        let error = rng.random_bool(0.02);
        let slow = rng.random_bool(0.03);
        let start = now.as_nanosecond().max(0) as u64;
        let duration: u64 = if slow {
            2_500_000_000
        } else {
            rng.random_range(5_000_000..400_000_000)
        };
        let route = ROUTES[rng.random_range(0..ROUTES.len())];
        let service = if sidekiq {
            "mastodon-prod/sidekiq"
        } else {
            "mastodon-prod/web"
        };
        let mut spans = Vec::with_capacity(self.spans_per_trace as usize);
        let mut root_id = [0u8; 8];
        rng.fill(&mut root_id);
        let mut root = Span {
            trace_id: trace_id.to_vec(),
            span_id: root_id.to_vec(),
            name: if sidekiq {
                "ActivityPub::DeliveryWorker process".into()
            } else {
                format!("GET {route}")
            },
            kind: if sidekiq { 5 } else { 2 },
            start_time_unix_nano: start,
            end_time_unix_nano: start + duration,
            attributes: vec![
                kv("http.request.method", s("GET")),
                kv("http.route", s(route)),
                kv(
                    "url.path",
                    s(&route
                        .replace(":username", "alice")
                        .replace(":account", "bob")
                        .replace(":id", "1129384")),
                ),
                kv("url.scheme", s("https")),
                kv("server.address", s("mastodon.example")),
                kv(
                    "http.response.status_code",
                    int(if error { 500 } else { 200 }),
                ),
                kv(
                    "user_agent.original",
                    s("Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/133.0"),
                ),
                kv("network.protocol.version", s("1.1")),
            ],
            status: Some(Status {
                code: if error { 2 } else { 0 },
                message: if error {
                    "Internal Server Error".into()
                } else {
                    String::new()
                },
            }),
            ..Default::default()
        };
        if sidekiq {
            root.attributes.truncate(0);
            root.attributes.push(kv("messaging.system", s("sidekiq")));
            root.attributes
                .push(kv("messaging.destination.name", s("push")));
            root.attributes
                .push(kv("code.namespace", s("ActivityPub::DeliveryWorker")));
            root.attributes
                .push(kv("messaging.message.id", s("5f0c4e1b2a3d4c5b6a7f8e9d")));
        }
        spans.push(root);
        for i in 1..self.spans_per_trace {
            let mut id = [0u8; 8];
            rng.fill(&mut id);
            let child_start =
                start + u64::from(i) * (duration / u64::from(self.spans_per_trace + 1));
            let (name, attrs) = match i % 3 {
                0 => (
                    "SELECT statuses".to_string(),
                    vec![
                        kv("db.system", s("postgresql")),
                        kv("db.name", s("mastodon_production")),
                        kv(
                            "db.statement",
                            s(
                                "SELECT \"statuses\".* FROM \"statuses\" WHERE \"statuses\".\"id\" = $1 LIMIT $2",
                            ),
                        ),
                        kv("server.address", s("postgres.mastodon.svc")),
                    ],
                ),
                1 => (
                    "GET".to_string(),
                    vec![
                        kv("db.system", s("redis")),
                        kv("db.statement", s("GET feed:home:108222")),
                        kv("server.address", s("redis.mastodon.svc")),
                    ],
                ),
                _ => (
                    "render".to_string(),
                    vec![
                        kv("code.function", s("render_with_cache")),
                        kv("code.namespace", s("Api::V1::StatusesController")),
                    ],
                ),
            };
            spans.push(Span {
                trace_id: trace_id.to_vec(),
                span_id: id.to_vec(),
                parent_span_id: root_id.to_vec(),
                name,
                kind: 3,
                start_time_unix_nano: child_start,
                end_time_unix_nano: child_start + 1_000_000,
                attributes: attrs,
                status: Some(Status::default()),
                ..Default::default()
            });
        }
        let req = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![
                        kv("service.name", s(service)),
                        kv("service.version", s("4.3.2")),
                        kv("k8s.pod.name", s("mastodon-web-7c9f8d6b5-x2x9z")),
                        kv("telemetry.sdk.language", s("ruby")),
                    ],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "OpenTelemetry::Instrumentation::Rack".into(),
                        version: "0.24.6".into(),
                        ..Default::default()
                    }),
                    spans,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        };
        (req, trace_id, error || slow)
    }

    fn logs(&mut self, now: Timestamp, trace_id: &[u8; 16], n: u32) -> ExportLogsServiceRequest {
        let t = now.as_nanosecond().max(0) as u64;
        let records = (0..n)
            .map(|i| {
                let warn = self.rng.random_bool(0.1);
                LogRecord {
                    time_unix_nano: t + u64::from(i),
                    observed_time_unix_nano: t + u64::from(i) + 1000,
                    severity_number: if warn { 13 } else { 9 },
                    severity_text: if warn { "WARN".into() } else { "INFO".into() },
                    body: s(&format!(
                        "method=GET path=/api/v1/timelines/home format=json controller=Api::V1::Timelines::HomeController action=show status=200 duration={}.{:02}",
                        self.rng.random_range(3..400),
                        self.rng.random_range(0..100)
                    )),
                    trace_id: trace_id.to_vec(),
                    span_id: vec![7; 8],
                    ..Default::default()
                }
            })
            .collect();
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(Resource {
                    attributes: vec![
                        kv("service.name", s("mastodon-prod/web")),
                        kv("host.name", s("node-1")),
                    ],
                    ..Default::default()
                }),
                scope_logs: vec![ScopeLogs {
                    scope: None,
                    log_records: records,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        }
    }
}

/// Scales a policy's budgets down by `scale`.
fn scaled(policy: &Policy, scale: f64) -> Policy {
    let mut p = policy.clone();
    for b in [p.budgets.traces.as_mut(), p.budgets.logs.as_mut()]
        .into_iter()
        .flatten()
    {
        b.limit = ((b.limit as f64) / scale).round() as u64;
        b.reserved = ((b.reserved as f64) / scale).round() as u64;
        b.max_rate = b
            .max_rate
            .map(|r| ((r as f64 / scale).ceil() as u64).max(1));
    }
    p
}

/// The columns of `--csv`, one row per scaled hour.
pub const CSV_HEADER: &str = "time,elapsed_fraction,used_bytes,pace_bytes,limit_bytes,offered_bytes,sent_bytes,p_priority,p_normal,p_bulk,state,demand_long_bytes_per_second,demand_short_bytes_per_second,projected_used_bytes";

/// Runs one simulation.
pub fn simulate(policy: &Policy, cfg: &Config) -> anyhow::Result<RunReport> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(simulate_async(policy, cfg))
}

async fn simulate_async(policy: &Policy, cfg: &Config) -> anyhow::Result<RunReport> {
    let mut policy = scaled(policy, cfg.scale.max(1e-9));
    if cfg.tail && policy.traces.tail.is_none() {
        let with_tail = crate::policy::load_str(
            &format!("upstream: {{otlp: {{endpoint: 'http://127.0.0.1:9'}}}}\n{SIMULATED_TAIL}"),
            "simulated tail",
            &crate::policy::Overrides::default(),
            &|_| None,
        )?;
        policy.traces.tail = with_tail.traces.tail;
    }
    if !cfg.tail {
        policy.traces.tail = None;
    }
    let budget = policy
        .budgets
        .traces
        .clone()
        .context("the policy has no traces budget to simulate (budgets.traces)")?;
    let inside: Timestamp = cfg.start.unwrap_or("2026-11-01T00:00:00Z".parse()?);
    let period = policy.period.period_at(inside);
    let clock = Arc::new(ManualClock::new(period.start));
    let shared: SharedClock = clock.clone();
    let policy = Arc::new(policy);
    let upstream = Arc::new(SimUpstream::new(policy.clone()));
    let core = Core::build(
        policy.clone(),
        Arc::new(MemoryStore::default()),
        upstream.clone(),
        shared,
        Arc::new(Stats::new()?),
    )?
    .with_tail(Arc::new(crate::store::MemorySpool::default()))?;
    let ledger = core.ledger.clone();
    let mut generator = Generator {
        rng: StdRng::seed_from_u64(cfg.seed),
        spans_per_trace: cfg.spans_per_trace.max(1),
    };

    let length = period.length_seconds();
    let limit = budget.effective_limit();
    // How big a trace is, to turn a demand in bytes into traces per second.
    let (sample, _, _) = generator.trace(period.start);
    let trace_bytes = crate::metering::tempo::billable_bytes(&sample) as f64;
    let base_traces_per_second = match cfg.traffic {
        Traffic::Multiple(m) => m * limit as f64 / length / trace_bytes,
        Traffic::TracesPerSecond(r) => r / cfg.scale.max(1e-9),
    };
    let log_records_per_trace = if cfg.with_logs {
        let log_limit = policy
            .budgets
            .logs
            .as_ref()
            .map_or(limit, |b| b.effective_limit()) as f64;
        let (probe, ..) = (generator.logs(period.start, &[1; 16], 10), ());
        let record_bytes = crate::metering::loki::weigh(&probe).units as f64 / 10.0;
        let multiple = match cfg.traffic {
            Traffic::Multiple(m) => m,
            Traffic::TracesPerSecond(_) => {
                base_traces_per_second * trace_bytes * length / limit as f64
            }
        };
        ((multiple * log_limit / length) / (base_traces_per_second.max(1e-12) * record_bytes))
            .max(0.0)
    } else {
        0.0
    };

    let step = policy
        .pacing
        .recompute_every
        .max(Duration::from_millis(100));
    let step_s = step.as_secs_f64();
    let day_seconds = length / 30.0;
    let n_days = (length / day_seconds).round() as usize;
    let mut days: Vec<Day> = vec![
        Day {
            budget_allowed_priority: true,
            ..Default::default()
        };
        n_days.max(1)
    ];
    let mut csv = match &cfg.csv {
        Some(p) => {
            let mut f = std::io::BufWriter::new(
                std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
            );
            writeln!(f, "{CSV_HEADER}")?;
            Some(f)
        }
        None => None,
    };
    let mut day_p_sum = vec![0.0f64; days.len()];
    let mut day_ticks = vec![0u32; days.len()];
    let mut carry = 0.0f64;
    let mut log_carry = 0.0f64;
    let mut max_used = 0u64;
    let mut offered_total = 0u64;
    let mut priority_offered_total = 0u64;
    let steps = (length / step_s).ceil() as u64;
    let mut last_progress = 0u64;
    let mut last_csv_hour = u64::MAX;
    let mut prev_offered = 0u64;
    let mut prev_sent = 0u64;
    let mut prev_priority_kept = 0u64;
    let mut notifications = Vec::new();
    let (mut notable_traces, mut notable_spans) = (0u64, 0u64);
    // The notifier checks every scaled ten minutes (a checked step's resolution is enough
    // to say when each alert would fire), and at the last step before the period's end (at
    // the end itself the period is over, as in production).
    let check_every = ((length / 4320.0) / step_s).round().max(1.0) as u64;

    for i in 0..steps {
        let now = clock.now();
        let elapsed = period.elapsed_seconds(now);
        let day = ((elapsed / day_seconds) as usize).min(days.len() - 1);
        let mult = cfg
            .scenario
            .multiplier(elapsed, elapsed / length, day_seconds, cfg.spike_day);
        carry += base_traces_per_second * mult * step_s;
        let n = carry.floor();
        carry -= n;
        // Requests arrive spread over the step, as a collector's batches do.
        let gap = step.div_f64(n + 1.0);
        for _ in 0..n as u64 {
            clock.advance(gap);
            let now = clock.now();
            let (req, trace_id, notable) = generator.trace(now);
            if notable {
                notable_traces += 1;
                notable_spans += crate::metering::tempo::span_count(&req);
                upstream
                    .notable
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(trace_id);
            }
            let body = Bytes::from(req.encode_to_vec());
            let decoded: ExportTraceServiceRequest = codec::decode(Format::Protobuf, &body)?;
            let pri_spans = decoded
                .resource_spans
                .iter()
                .flat_map(|r| &r.scope_spans)
                .flat_map(|s| &s.spans)
                .filter(|s| {
                    let resource = decoded.resource_spans[0].resource.as_ref();
                    let service = crate::sampling::rules::service_name(resource);
                    is_priority_span(&policy, resource, service, s)
                })
                .count() as u64;
            days[day].priority_offered += pri_spans;
            priority_offered_total += pri_spans;
            let meta = RequestMeta::new(Transport::Simulated);
            // Policy outcomes are 2xx; the in-memory upstream never fails.
            let _ = pipeline::handle(&core, decoded, meta).await;
            if log_records_per_trace > 0.0 {
                log_carry += log_records_per_trace;
                let k = log_carry.floor();
                log_carry -= k;
                if k >= 1.0 {
                    let logs = generator.logs(now, &trace_id, k as u32);
                    let body = Bytes::from(logs.encode_to_vec());
                    let decoded: ExportLogsServiceRequest = codec::decode(Format::Protobuf, &body)?;
                    let meta = RequestMeta::new(Transport::Simulated);
                    let _ = pipeline::handle(&core, decoded, meta).await;
                }
            }
        }
        // The tail sampler's release loop, on the simulated clock.
        if let Some(tail) = &core.tail {
            tail.tick(&core).await;
        }
        let used = ledger.used(Signal::Traces);
        max_used = max_used.max(used);
        clock.set(crate::clock::add(
            period.start,
            step.mul_f64((i + 1) as f64),
        ));
        let now = clock.now();
        let pacing = core.recompute();
        if let Some(alerts) = &policy.alerts
            && (i % check_every == 0 || i + 2 == steps)
        {
            let snapshot = crate::notifier::snapshot(&core);
            let d = crate::notifier::check_in(&core, alerts, &snapshot, &[], now)?;
            // Said in the unscaled budget's figures.
            let mut shown = snapshot.clone();
            for b in &mut shown.budgets {
                b.used = (b.used as f64 * cfg.scale) as u64;
                b.limit = (b.limit as f64 * cfg.scale) as u64;
                b.projected_used = b.projected_used.map(|p| p * cfg.scale);
            }
            for a in &d.fire {
                let elapsed = period.elapsed_seconds(a.starts_at);
                let of_day = (elapsed % day_seconds) / day_seconds * 24.0;
                notifications.push(Notification {
                    day: (elapsed / day_seconds) as usize + 1,
                    time: format!("{:02}:{:02}", of_day as u32, (of_day.fract() * 60.0) as u32),
                    summary: crate::notifier::sink::summary(a, &shown),
                });
            }
        }
        let traces = pacing.signal(Signal::Traces);
        if matches!(traces.state, PacingState::Stopped) {
            days[day].budget_allowed_priority = false;
        }

        let u = ledger.usage(Signal::Traces);
        let offered_now = u.offered_total().units
            + u.dropped[DropReason::Rule].units
            + u.dropped[DropReason::Upstream].units;
        let priority_kept_now = upstream.priority_spans.load(Ordering::Relaxed);
        days[day].offered_bytes += offered_now - prev_offered;
        days[day].kept_bytes += u.sent.units - prev_sent;
        days[day].priority_kept += priority_kept_now - prev_priority_kept;
        offered_total += offered_now - prev_offered;
        prev_offered = offered_now;
        prev_sent = u.sent.units;
        prev_priority_kept = priority_kept_now;
        days[day].used_fraction = u.used as f64 / limit as f64;
        // The day's mean keep probability (of the normal class).
        day_p_sum[day] += traces.probabilities[Class::Normal];
        day_ticks[day] += 1;
        days[day].keep_probability = day_p_sum[day] / f64::from(day_ticks[day]);

        if let Some(f) = csv.as_mut() {
            let hour = (period.elapsed_seconds(now) / (length / 720.0)) as u64;
            if hour != last_csv_hour {
                last_csv_hour = hour;
                let frac = period.elapsed_seconds(now) / length;
                let p = traces.probabilities;
                let d = &traces.demand;
                writeln!(
                    f,
                    "{now},{frac:.5},{},{:.0},{limit},{offered_now},{},{:.5},{:.5},{:.5},{},{:.3},{:.3},{:.0}",
                    u.used,
                    budget.target_bytes() as f64 * frac,
                    u.sent.units,
                    p[Class::Priority],
                    p[Class::Normal],
                    p[Class::Bulk],
                    traces.state.as_str(),
                    d.values().map(|x| x.long).sum::<f64>(),
                    d.values().map(|x| x.short).sum::<f64>(),
                    traces.projected_used,
                )?;
            }
        }
        if cfg.progress {
            let pct = (i + 1) * 100 / steps.max(1);
            if pct != last_progress {
                last_progress = pct;
                let filled = (pct / 4) as usize;
                eprint!(
                    "\r  [{}{}] {pct:>3}%  day {:>2}/{}  used {:>5.1}%  keep {:.3}",
                    "#".repeat(filled),
                    " ".repeat(25 - filled),
                    day + 1,
                    days.len(),
                    100.0 * u.used as f64 / limit as f64,
                    traces.probabilities[Class::Normal]
                );
            }
        }
    }
    if cfg.progress {
        eprintln!();
    }
    if let Some(mut f) = csv {
        f.flush()?;
    }
    let u = ledger.usage(Signal::Traces);
    let logs = ledger.usage(Signal::Logs);
    let demand_multiple = offered_total as f64 / limit as f64;
    Ok(RunReport {
        scenario: cfg.scenario,
        traffic: cfg.traffic,
        demand_multiple,
        limit,
        target: budget.target,
        used: u.used,
        max_used: max_used.max(u.used),
        days,
        sampled_out_bytes: u.dropped[DropReason::Sampled].units,
        dropped_bytes: u.dropped.map(|_, w| w.units),
        upstream_bytes: upstream.trace_bytes.load(Ordering::Relaxed),
        log_limit: policy.budgets.logs.as_ref().map(|b| b.effective_limit()),
        log_used: logs.used,
        upstream_log_bytes: upstream.log_bytes.load(Ordering::Relaxed),
        offered_bytes: offered_total,
        priority_offered: priority_offered_total,
        priority_kept: upstream.priority_spans.load(Ordering::Relaxed),
        log_records_kept: upstream.log_records.load(Ordering::Relaxed),
        log_records_of_dropped_traces: upstream.orphan_logs.load(Ordering::Relaxed),
        notifications,
        notable_traces,
        notable_spans,
        notable_spans_kept: upstream.notable_spans.load(Ordering::Relaxed),
        notable_bytes: upstream.notable_bytes.load(Ordering::Relaxed),
        tail: core.tail.is_some(),
    })
}

/// Prints a run the way `frugal simulate` shows it.
pub fn print(out: &mut dyn std::io::Write, r: &RunReport, scale: f64) -> std::io::Result<()> {
    let gb = |b: f64| crate::units::format_size((b * scale) as u64);
    writeln!(
        out,
        "scenario {:<7} demand {:.2}x the limit ({} offered over the period)",
        r.scenario.as_str(),
        r.demand_multiple,
        gb(r.offered_bytes as f64)
    )?;
    writeln!(out, "  day  offered      kept     keep p   used")?;
    for (i, d) in r.days.iter().enumerate() {
        let bar = "#".repeat((d.used_fraction * 40.0).round() as usize);
        writeln!(
            out,
            "  {:>3}  {:>9} {:>9}   {:.3}   {:>5.1}% {bar}",
            i + 1,
            gb(d.offered_bytes as f64),
            gb(d.kept_bytes as f64),
            d.keep_probability,
            100.0 * d.used_fraction
        )?;
    }
    writeln!(
        out,
        "  end of period: {:.1}% of the limit (target {:.0}%), highest {:.1}%; kept {:.1}% of offered bytes",
        100.0 * r.end_fraction(),
        100.0 * r.target,
        100.0 * r.max_used as f64 / r.limit as f64,
        100.0 * r.average_keep()
    )?;
    writeln!(
        out,
        "  priority spans kept while the budget allowed: {:.2}% ({} of {}); worst day kept {:.2}x its share at the average keep rate",
        100.0 * r.priority_kept_fraction(),
        r.priority_kept,
        r.priority_offered,
        r.worst_day_ratio()
    )?;
    if r.notable_traces > 0 {
        writeln!(
            out,
            "  {}: traces with an error or a slow request got {:.1}% of the bytes sent; {:.2}% of their spans arrived ({} of {}, {} traces)",
            if r.tail {
                "tail sampling"
            } else {
                "head sampling"
            },
            100.0 * r.notable_bytes as f64 / r.upstream_bytes.max(1) as f64,
            100.0 * r.notable_spans_kept as f64 / r.notable_spans.max(1) as f64,
            r.notable_spans_kept,
            r.notable_spans,
            r.notable_traces
        )?;
    }
    let drops: Vec<String> = r
        .dropped_bytes
        .iter()
        .filter(|(_, b)| **b > 0)
        .map(|(reason, b)| format!("{} {}", reason.as_str(), gb(*b as f64)))
        .collect();
    if !drops.is_empty() {
        writeln!(out, "  dropped: {}", drops.join(", "))?;
    }
    for n in &r.notifications {
        writeln!(
            out,
            "  notification on day {:>2} at {}: {}",
            n.day, n.time, n.summary
        )?;
    }
    if r.log_records_kept > 0 {
        writeln!(
            out,
            "  log records kept: {}; of traces that were dropped (non-priority): {}",
            r.log_records_kept, r.log_records_of_dropped_traces
        )?;
    }
    Ok(())
}
