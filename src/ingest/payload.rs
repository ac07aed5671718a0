//! What differs per signal on the request path: [`Payload`], implemented for the three
//! OTLP export requests (canonical form, weighing, deciding, applying decisions). A new
//! wire format (remote write, Loki push) is a new `Payload` with its own destination.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

use jiff::Timestamp;

use crate::budget::Pacing;
use crate::budget::series::SeriesAdmission;
use crate::metering::{Weight, loki, mimir, tempo};
use crate::model::{Class, Destination, Signal};
use crate::policy::Policy;
use crate::proto::loki::PushRequest;
use crate::proto::remote_write::WriteRequest;
use crate::sampling::memory::Session;
use crate::sampling::{self, Account, logs::TraceSide};

/// What a decision may read besides the request: the policy, the pacing, the trace
/// memory, the series state and the time.
pub struct Deciding<'a, 'm> {
    /// The policy in force.
    pub policy: &'a Policy,
    /// The keep probabilities in force.
    pub pacing: &'a Pacing,
    /// The trace memory (traces and logs).
    pub memory: &'a mut Session<'m>,
    /// The series state (metrics).
    pub series: &'a SeriesAdmission,
    /// Per-stream limits (Loki pushes).
    pub streams: Option<&'a crate::budget::streams::StreamGates>,
    /// Now.
    pub now: Timestamp,
}

/// A request of one signal, as the pipeline handles it.
pub trait Payload: Message + Default + Clone + Send + 'static {
    /// The signal whose budget it spends.
    const SIGNAL: Signal;
    /// Where it is forwarded.
    const DESTINATION: Destination;
    /// The sampler's decision about one item.
    type Decision: Send;

    /// Puts the request in the form the backend measures; true if it changed.
    fn canonicalize(&mut self) -> bool;
    /// Items and billable units of the request as it is now.
    fn weigh(&self) -> Weight;
    /// [`Payload::weigh`] and the encoded length, computed together where that is cheaper.
    fn weigh_encoded(&self) -> (Weight, usize) {
        (self.weigh(), self.encoded_len())
    }
    /// Whether nothing is left to send.
    fn is_empty(&self) -> bool;
    /// Removes resources and scopes that hold no items (metrics without data points):
    /// they would bill bytes for nothing. True if anything was removed.
    fn prune(&mut self) -> bool;
    /// Decides every item at the current pacing (the request does not change yet; the
    /// trace memory and the series state record what was decided).
    fn decide(ctx: &mut Deciding<'_, '_>, req: &Self) -> (Vec<Self::Decision>, Account);
    /// Applies the decisions: removes dropped items, marks kept ones.
    fn apply(&mut self, policy: &Policy, decisions: &[Self::Decision]);
    /// Keeps only the kept items of `class`.
    fn retain_class(&mut self, decisions: &[Self::Decision], class: Class);
    /// The request as a trace export request, for the tail sampler (others: `Err(self)`).
    fn into_trace_request(self) -> Result<ExportTraceServiceRequest, Self> {
        Err(self)
    }
    /// The trace IDs of the items in the request (spans only; others have none to follow).
    fn trace_ids(&self) -> Vec<[u8; 16]> {
        Vec::new()
    }
}

impl Payload for ExportTraceServiceRequest {
    const SIGNAL: Signal = Signal::Traces;
    const DESTINATION: Destination = Destination::OtlpTraces;
    type Decision = sampling::traces::SpanDecision;

    fn canonicalize(&mut self) -> bool {
        tempo::canonicalize(self)
    }

    fn weigh(&self) -> Weight {
        tempo::weigh(self)
    }

    fn weigh_encoded(&self) -> (Weight, usize) {
        tempo::weigh_encoded(self)
    }

    fn is_empty(&self) -> bool {
        self.resource_spans.is_empty()
    }

    fn prune(&mut self) -> bool {
        prune(
            &mut self.resource_spans,
            |rs| &mut rs.scope_spans,
            |ss| !ss.spans.is_empty(),
        )
    }

    fn decide(ctx: &mut Deciding<'_, '_>, req: &Self) -> (Vec<Self::Decision>, Account) {
        sampling::traces::decide_all(
            &ctx.policy.traces,
            &ctx.pacing.signals[Signal::Traces].probabilities,
            Some(ctx.memory),
            req,
        )
    }

    fn apply(&mut self, policy: &Policy, decisions: &[Self::Decision]) {
        sampling::traces::apply(
            self,
            decisions,
            policy.traces.sampling.multiplier_attribute.as_deref(),
        );
    }

    fn retain_class(&mut self, decisions: &[Self::Decision], class: Class) {
        sampling::traces::retain_class(self, decisions, class);
    }

    fn into_trace_request(self) -> Result<ExportTraceServiceRequest, Self> {
        Ok(self)
    }

    fn trace_ids(&self) -> Vec<[u8; 16]> {
        self.resource_spans
            .iter()
            .flat_map(|rs| &rs.scope_spans)
            .flat_map(|ss| &ss.spans)
            .filter_map(|s| <[u8; 16]>::try_from(&s.trace_id[..]).ok())
            .collect()
    }
}

impl Payload for ExportLogsServiceRequest {
    const SIGNAL: Signal = Signal::Logs;
    const DESTINATION: Destination = Destination::OtlpLogs;
    type Decision = sampling::logs::LogDecision;

    fn canonicalize(&mut self) -> bool {
        false
    }

    fn weigh(&self) -> Weight {
        loki::weigh(self)
    }

    fn is_empty(&self) -> bool {
        self.resource_logs.is_empty()
    }

    fn prune(&mut self) -> bool {
        prune(
            &mut self.resource_logs,
            |rl| &mut rl.scope_logs,
            |sl| !sl.log_records.is_empty(),
        )
    }

    fn decide(ctx: &mut Deciding<'_, '_>, req: &Self) -> (Vec<Self::Decision>, Account) {
        let (policy, pacing) = (ctx.policy, ctx.pacing);
        let side = trace_side(policy, pacing);
        sampling::logs::decide_all(
            &policy.logs,
            &pacing.signals[Signal::Logs].probabilities,
            &side,
            Some(ctx.memory),
            req,
        )
    }

    fn apply(&mut self, _policy: &Policy, decisions: &[Self::Decision]) {
        sampling::logs::apply(self, decisions);
    }

    fn retain_class(&mut self, decisions: &[Self::Decision], class: Class) {
        sampling::logs::retain_class(self, decisions, class);
    }
}

impl Payload for ExportMetricsServiceRequest {
    const SIGNAL: Signal = Signal::Metrics;
    const DESTINATION: Destination = Destination::OtlpMetrics;
    type Decision = ();

    fn canonicalize(&mut self) -> bool {
        false
    }

    fn weigh(&self) -> Weight {
        mimir::weigh(self)
    }

    fn is_empty(&self) -> bool {
        self.resource_metrics.is_empty()
    }

    fn prune(&mut self) -> bool {
        let mut changed = false;
        for sm in self
            .resource_metrics
            .iter_mut()
            .flat_map(|rm| &mut rm.scope_metrics)
        {
            let n = sm.metrics.len();
            sm.metrics.retain(|m| mimir::data_points(m) > 0);
            changed |= sm.metrics.len() != n;
        }
        changed
            | prune(
                &mut self.resource_metrics,
                |rm| &mut rm.scope_metrics,
                |sm| !sm.metrics.is_empty(),
            )
    }

    fn decide(ctx: &mut Deciding<'_, '_>, req: &Self) -> (Vec<()>, Account) {
        // OTLP metrics are counted as the series Grafana's OTLP gateway makes of them, so
        // the series budget sees them, but not refused: admission acts on remote write.
        // One label set at a time; past the tracker's ceiling new series go uncounted.
        crate::metering::series::each_series(req, |labels| {
            let name = labels
                .iter()
                .find(|(k, _)| k == "__name__")
                .map_or("", |(_, v)| v.as_str());
            let id = ctx.series.name_id(name);
            ctx.series.tracker.admit(
                crate::fingerprint::Fingerprint::of(&labels),
                id,
                ctx.now,
                crate::budget::series::MAX_TRACKED_SERIES,
            );
            if name != "target_info" {
                ctx.series.sent(id, 1);
            }
        });
        let mut account = Account::default();
        let w = mimir::weigh(req);
        account.offer(Class::Normal, w);
        account.keep(Class::Normal, w);
        (Vec::new(), account)
    }

    fn apply(&mut self, _policy: &Policy, _decisions: &[()]) {}

    fn retain_class(&mut self, _decisions: &[()], class: Class) {
        if class != Class::Normal {
            self.resource_metrics.clear();
        }
    }
}

impl Payload for PushRequest {
    const SIGNAL: Signal = Signal::Logs;
    const DESTINATION: Destination = Destination::Loki;
    type Decision = sampling::logs::LogDecision;

    fn canonicalize(&mut self) -> bool {
        false
    }

    fn weigh(&self) -> Weight {
        sampling::loki_push::weigh(self)
    }

    fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }

    fn prune(&mut self) -> bool {
        let n = self.streams.len();
        self.streams.retain(|s| !s.entries.is_empty());
        self.streams.len() != n
    }

    fn decide(ctx: &mut Deciding<'_, '_>, req: &Self) -> (Vec<Self::Decision>, Account) {
        let (policy, pacing) = (ctx.policy, ctx.pacing);
        let side = trace_side(policy, pacing);
        sampling::loki_push::decide_all(
            &policy.logs,
            &pacing.signals[Signal::Logs].probabilities,
            &side,
            Some(ctx.memory),
            ctx.streams.map(|g| {
                (
                    g,
                    i64::try_from(ctx.now.as_nanosecond()).unwrap_or(i64::MAX),
                )
            }),
            req,
        )
    }

    fn apply(&mut self, _policy: &Policy, decisions: &[Self::Decision]) {
        sampling::loki_push::apply(self, decisions);
    }

    fn retain_class(&mut self, decisions: &[Self::Decision], class: Class) {
        sampling::loki_push::retain_class(self, decisions, class);
    }
}

impl Payload for WriteRequest {
    const SIGNAL: Signal = Signal::Metrics;
    const DESTINATION: Destination = Destination::RemoteWrite;
    type Decision = sampling::series::SeriesDecision;

    fn canonicalize(&mut self) -> bool {
        false
    }

    fn weigh(&self) -> Weight {
        sampling::series::weigh(self)
    }

    /// Empty when neither series nor metadata is left (a metadata-only request is sent
    /// on, billing nothing).
    fn is_empty(&self) -> bool {
        self.timeseries.is_empty() && self.metadata.is_empty()
    }

    fn prune(&mut self) -> bool {
        false
    }

    fn decide(ctx: &mut Deciding<'_, '_>, req: &Self) -> (Vec<Self::Decision>, Account) {
        sampling::series::decide_all(ctx.policy, ctx.series, ctx.now, req)
    }

    fn apply(&mut self, _policy: &Policy, decisions: &[Self::Decision]) {
        sampling::series::apply(self, decisions);
    }

    fn retain_class(&mut self, decisions: &[Self::Decision], class: Class) {
        sampling::series::retain_class(self, decisions, class);
    }
}

/// What a log record (OTLP or Loki) follows of its trace's decision.
fn trace_side(policy: &Policy, pacing: &Pacing) -> TraceSide {
    TraceSide {
        probabilities: pacing.signals[Signal::Traces].probabilities,
        follow_bulk: !policy.traces.rules.drop_first.is_empty(),
        mode: policy.traces.sampling.mode,
        precision: policy.traces.sampling.precision,
    }
}

/// Keeps the scopes for which `keep` holds, and the resources left with scopes; true if
/// anything was removed.
fn prune<R, S>(
    resources: &mut Vec<R>,
    scopes: impl Fn(&mut R) -> &mut Vec<S>,
    keep: impl Fn(&S) -> bool,
) -> bool {
    let before = resources.len();
    let mut changed = false;
    resources.retain_mut(|r| {
        let scopes = scopes(r);
        let n = scopes.len();
        scopes.retain(&keep);
        changed |= scopes.len() != n;
        !scopes.is_empty()
    });
    changed || resources.len() != before
}
