//! The ingest entry point every receiver (and the simulator) calls with a decoded OTLP
//! request: classify and sample its items, meter them, hold the period's budget, forward,
//! and say what to answer.
//!
//! The steps, per request:
//! 1. canonicalise (so the bytes sent are the bytes Grafana counts) and decide every item
//!    at the current keep probabilities ([`crate::sampling`]);
//! 2. record what was offered, per class, and what was dropped, per reason;
//! 3. hold to the per-second limit (drop non-priority items first) and to the budget:
//!    the ledger reserves the request's bytes atomically against the target (normal and
//!    bulk items) or the limit (priority items with `keep_priority`);
//! 4. send, and account for the answer: acknowledged, refused (bytes taken back only when
//!    no attempt may have arrived), or unavailable (503 with `Retry-After` to the client).
//!
//! A 2xx is answered only after upstream acknowledged the data, or when frugal dropped it
//! by policy. In shadow mode every decision is counted but everything is forwarded.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::HeaderValue;
use jiff::Timestamp;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

use crate::budget::BudgetState;
use crate::budget::controller::PacingState;
use crate::budget::rate::RateGate;
use crate::clock::SharedClock;
use crate::forwarder::{Export, ExportContext, Outcome};
use crate::ledger::{Charge, Ledger};
use crate::metering::{Weight, loki, mimir, tempo};
use crate::model::{Class, DropReason, RejectReason, Signal};
use crate::policy::{AtLimit, ByteBudget, Policy};
use crate::sampling::memory::{Remember, Session, TraceMemory};
use crate::sampling::{self, Account, ClassProbabilities, logs::TraceSide};
use crate::stats::{Stats, inc};

/// How a request arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Http,
    Grpc,
    Simulated,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Http => "http",
            Transport::Grpc => "grpc",
            Transport::Simulated => "simulated",
        }
    }
}

/// What the receiver knows about a request besides its items.
#[derive(Debug, Clone)]
pub struct RequestMeta {
    pub transport: Transport,
    /// The protobuf body as received, forwarded as is when nothing changes.
    pub raw: Option<Bytes>,
    pub client_auth: Option<HeaderValue>,
    /// When the client stops waiting, if it said (gRPC `grpc-timeout`).
    pub deadline: Option<Timestamp>,
}

impl RequestMeta {
    pub fn new(transport: Transport) -> Self {
        Self {
            transport,
            raw: None,
            client_auth: None,
            deadline: None,
        }
    }
}

/// A request frugal took responsibility for: forwarded and acknowledged, or dropped by
/// policy. `rejected` relays an upstream partial success.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Accepted {
    pub rejected: u64,
    pub message: String,
}

/// Why a request was not accepted; receivers map it to HTTP and gRPC status in one place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IngestError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("missing or wrong credentials")]
    Unauthorized,
    #[error("{message}")]
    Unavailable {
        retry_after: Duration,
        message: String,
    },
    #[error("upstream refused the data ({status}): {message}")]
    UpstreamRejected { status: u16, message: String },
}

impl IngestError {
    /// The HTTP status this error is answered with.
    pub fn http_status(&self) -> u16 {
        match self {
            IngestError::BadRequest(_) => 400,
            IngestError::UnsupportedMediaType(_) => 415,
            IngestError::TooLarge(_) => 413,
            IngestError::Unauthorized => 401,
            IngestError::Unavailable { .. } => 503,
            IngestError::UpstreamRejected { status, .. } => *status,
        }
    }
}

/// An OTLP export request of one signal, as the pipeline handles it.
pub trait Payload: Message + Default + Clone + Send + 'static {
    const SIGNAL: Signal;
    type Decision: Send;

    /// Puts the request in the form the backend measures; true if it changed.
    fn canonicalize(&mut self) -> bool;
    /// Items and billable units of the request as it is now.
    fn weigh(&self) -> Weight;
    /// [`Payload::weigh`] and the encoded length, computed together where that is cheaper.
    fn weigh_encoded(&self) -> (Weight, usize) {
        (self.weigh(), self.encoded_len())
    }
    fn is_empty(&self) -> bool;
    /// Decides every item at the current pacing (nothing changes yet).
    fn decide(
        policy: &Policy,
        pacing: &crate::budget::Pacing,
        memory: &mut Session<'_>,
        req: &Self,
    ) -> (Vec<Self::Decision>, Account);
    /// Applies the decisions: removes dropped items, marks kept ones.
    fn apply(&mut self, policy: &Policy, decisions: &[Self::Decision]);
    /// Keeps only the kept items of `class`.
    fn retain_class(&mut self, decisions: &[Self::Decision], class: Class);
    /// The trace IDs of the items in the request (spans only; others have none to follow).
    fn trace_ids(&self) -> Vec<[u8; 16]> {
        Vec::new()
    }
}

impl Payload for ExportTraceServiceRequest {
    const SIGNAL: Signal = Signal::Traces;
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

    fn decide(
        policy: &Policy,
        pacing: &crate::budget::Pacing,
        memory: &mut Session<'_>,
        req: &Self,
    ) -> (Vec<Self::Decision>, Account) {
        sampling::traces::decide_all(
            &policy.traces,
            &pacing.traces.probabilities,
            Some(memory),
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

    fn decide(
        policy: &Policy,
        pacing: &crate::budget::Pacing,
        memory: &mut Session<'_>,
        req: &Self,
    ) -> (Vec<Self::Decision>, Account) {
        let side = TraceSide {
            probabilities: pacing.traces.probabilities,
            follow_bulk: !policy.traces.rules.drop_first.is_empty(),
            mode: policy.traces.sampling.mode,
            precision: policy.traces.sampling.precision,
        };
        sampling::logs::decide_all(
            &policy.logs,
            &pacing.logs.probabilities,
            &side,
            Some(memory),
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

    fn decide(
        _policy: &Policy,
        _pacing: &crate::budget::Pacing,
        _memory: &mut Session<'_>,
        req: &Self,
    ) -> (Vec<()>, Account) {
        // Metrics are metered, not sampled, until series admission lands.
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

/// The shared state of the ingest path.
pub struct Ingest {
    policy: ArcSwap<Policy>,
    ledger: Arc<Ledger>,
    budget: Arc<BudgetState>,
    upstream: Arc<dyn Export>,
    clock: SharedClock,
    stats: Arc<Stats>,
    rate_gates: [Option<RateGate>; 3],
    traces_seen: TraceMemory,
}

impl Ingest {
    pub fn new(
        policy: Arc<Policy>,
        ledger: Arc<Ledger>,
        budget: Arc<BudgetState>,
        upstream: Arc<dyn Export>,
        clock: SharedClock,
        stats: Arc<Stats>,
    ) -> Self {
        let gate = |s: Signal| {
            policy
                .budgets
                .bytes(s)
                .and_then(|b| b.max_rate)
                .map(|r| RateGate::new(r, clock.clone()))
        };
        let rate_gates = [gate(Signal::Traces), gate(Signal::Logs), None];
        Self {
            policy: ArcSwap::new(policy),
            ledger,
            budget,
            upstream,
            clock,
            stats,
            rate_gates,
            traces_seen: TraceMemory::default(),
        }
    }

    pub fn policy(&self) -> Arc<Policy> {
        self.policy.load_full()
    }

    pub fn ledger(&self) -> &Arc<Ledger> {
        &self.ledger
    }

    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    pub fn budget(&self) -> &Arc<BudgetState> {
        &self.budget
    }

    /// Handles one decoded export request.
    pub async fn handle<P: Payload>(
        &self,
        mut req: P,
        meta: RequestMeta,
    ) -> Result<Accepted, IngestError> {
        let signal = P::SIGNAL;
        let sig = signal.as_str();
        let policy = self.policy.load_full();
        let pacing = self.budget.load();
        let mut raw = meta.raw;
        if req.canonicalize() {
            raw = None;
        }
        let (offered, encoded_len) = req.weigh_encoded();
        // Forwarded as received only when nothing would be lost re-encoding it (no fields
        // unknown to frugal's protobuf types, which upstream would bill but frugal not count).
        if raw.as_ref().is_some_and(|b| b.len() != encoded_len) {
            raw = None;
        }
        let (decisions, mut account) = {
            let remember = match pacing.traces.state {
                PacingState::Pacing => Remember::Always,
                PacingState::Unconstrained => Remember::Logs,
                PacingState::PriorityOnly | PacingState::Stopped => Remember::Never,
            };
            let mut memory = self.traces_seen.session(self.clock.now(), remember);
            P::decide(&policy, &pacing, &mut memory, &req)
        };
        account.scale_units_to(offered.units);
        if matches!(
            pacing.signal(signal).state,
            PacingState::Stopped | PacingState::PriorityOnly
        ) {
            // Past the target the probabilities are 0 because of the limit: say so.
            let sampled = std::mem::take(&mut account.dropped[DropReason::Sampled as usize]);
            account.dropped[DropReason::AtLimit as usize].add(sampled);
        }
        inc(&self.stats.received_items, &[sig], offered.items);
        if signal != Signal::Metrics {
            inc(&self.stats.received_bytes, &[sig], offered.units);
        }
        for class in Class::ALL {
            let w = account.offered[class.index()];
            if !w.is_zero() {
                self.ledger.offered(signal, class, w.items, w.units);
            }
        }
        // Drops by drop rules and upstream decisions never compete for the budget.
        for reason in DropReason::ALL {
            let w = account.dropped[reason as usize];
            self.drop_items(signal, reason, w, policy.shadow);
        }

        if !policy.shadow && account.modified {
            req.apply(&policy, &decisions);
            raw = None;
        }
        if req.is_empty() {
            return Ok(Accepted::default());
        }
        let budget = policy.budgets.bytes(signal);
        let mut charge: Option<Charge> = None;
        let mut kept = if account.modified || policy.shadow {
            req.weigh()
        } else {
            offered
        };

        if !policy.shadow {
            // The per-second limit: non-priority items give way first.
            if let Some(gate) = &self.rate_gates[signal as usize]
                && gate.try_take(kept.units).is_err()
            {
                let priority = account.kept[Class::Priority.index()];
                self.drop_items(signal, DropReason::RateLimit, minus(kept, priority), false);
                self.keep_only_priority(&mut req, &decisions);
                raw = None;
                if req.is_empty() {
                    return Ok(Accepted::default());
                }
                kept = req.weigh();
            }
            if let Some(b) = budget {
                match self.reserve(signal, b, &mut req, &decisions, &account, kept) {
                    Some(c) => {
                        if c.units() != kept.units || c.items() != kept.items {
                            raw = None;
                        }
                        charge = Some(c);
                    }
                    None => return Ok(Accepted::default()),
                }
            }
        } else if let Some(b) = budget {
            // Shadow mode: everything goes, but what the budget would have stopped is counted.
            let priority = account.kept[Class::Priority.index()];
            let rest = minus(kept, priority);
            if self.ledger.used(signal) + kept.units > b.target_bytes() && !rest.is_zero() {
                self.ledger
                    .shadow_dropped(signal, DropReason::AtLimit, rest.items, rest.units);
            }
        }
        let charge = match charge {
            Some(c) => c,
            None => self.ledger.charge(signal, kept.items, kept.units),
        };
        let billing = Arc::new(Billing {
            charge,
            stats: self.stats.clone(),
            signal,
        });
        billing.count_sent();

        let body = match raw {
            Some(b) => b,
            None => Bytes::from(req.encode_to_vec()),
        };
        let deadline = meta.deadline.map(|d| {
            // Answer a little before the client gives up.
            let margin = jiff::SignedDuration::from_millis(500);
            d.checked_sub(margin).unwrap_or(d)
        });
        let outcome = self
            .upstream
            .export(
                signal,
                body,
                ExportContext {
                    client_auth: meta.client_auth,
                    deadline,
                    metering: Some(billing.clone()),
                },
            )
            .await;
        self.settle(signal, &billing, &outcome)
    }

    /// Holds the budget for what is about to be sent. Returns the charge for what may be
    /// sent, having removed non-priority items past the target; `None` when nothing may.
    fn reserve<P: Payload>(
        &self,
        signal: Signal,
        b: &ByteBudget,
        req: &mut P,
        decisions: &[P::Decision],
        account: &Account,
        kept: Weight,
    ) -> Option<Charge> {
        let target = b.target_bytes();
        let limit = b.effective_limit();
        let priority_cap = match b.at_limit {
            AtLimit::KeepPriority => limit,
            AtLimit::DropAll => target,
        };
        let only_priority = account.kept[Class::Priority.index()].items == kept.items;
        let cap = if only_priority { priority_cap } else { target };
        if let Some(charge) = self.ledger.reserve(signal, kept.items, kept.units, cap) {
            return Some(charge);
        }
        let priority = account.kept[Class::Priority.index()];
        if !only_priority && priority.items > 0 && b.at_limit == AtLimit::KeepPriority {
            self.keep_only_priority(req, decisions);
            let w = req.weigh();
            self.drop_items(signal, DropReason::AtLimit, minus(kept, w), false);
            if let Some(charge) = self.ledger.reserve(signal, w.items, w.units, priority_cap) {
                return Some(charge);
            }
            self.drop_items(signal, DropReason::AtLimit, w, false);
            self.remember_dropped(req.trace_ids(), &[]);
            return None;
        }
        self.drop_items(signal, DropReason::AtLimit, kept, false);
        self.remember_dropped(req.trace_ids(), &[]);
        None
    }

    /// Keeps only the priority items of `req` (a gate stopped the rest).
    fn keep_only_priority<P: Payload>(&self, req: &mut P, decisions: &[P::Decision]) {
        let before = req.trace_ids();
        req.retain_class(decisions, Class::Priority);
        self.remember_dropped(before, &req.trace_ids());
    }

    /// Remembers the traces of `before` not in `after`, whose spans a gate dropped, as
    /// dropped (probability 0), so their logs, arriving later, do not outlive them.
    fn remember_dropped(&self, before: Vec<[u8; 16]>, after: &[[u8; 16]]) {
        if before.is_empty() {
            return;
        }
        let still: std::collections::HashSet<&[u8; 16]> = after.iter().collect();
        let mut memory = self.traces_seen.session(self.clock.now(), Remember::Never);
        for id in before.iter().filter(|id| !still.contains(id)) {
            memory.set(id, [0.0; 3]);
        }
    }

    fn drop_items(&self, signal: Signal, reason: DropReason, w: Weight, shadow: bool) {
        if w.is_zero() {
            return;
        }
        let sig = signal.as_str();
        if shadow {
            self.ledger.shadow_dropped(signal, reason, w.items, w.units);
            return;
        }
        self.ledger.dropped(signal, reason, w.items, w.units);
        inc(&self.stats.dropped_items, &[sig, reason.as_str()], w.items);
        if signal != Signal::Metrics {
            inc(&self.stats.dropped_bytes, &[sig, reason.as_str()], w.units);
        }
    }

    /// Turns upstream's answer into the client's. Attempts were billed as they went
    /// (see [`Billing`]); what is left is the acknowledgement.
    fn settle(
        &self,
        signal: Signal,
        billing: &Billing,
        outcome: &Outcome,
    ) -> Result<Accepted, IngestError> {
        let sig = signal.as_str();
        match outcome {
            Outcome::Accepted { rejected, message } => {
                let rejected = (*rejected).min(billing.charge.items());
                billing.charge.acked(rejected);
                inc(
                    &self.stats.acked_items,
                    &[sig],
                    billing.charge.items() - rejected,
                );
                inc(
                    &self.stats.rejected_items,
                    &[sig, "partial_success"],
                    rejected,
                );
                Ok(Accepted {
                    rejected,
                    message: message.clone(),
                })
            }
            // The data itself was refused: the client should know, and not resend it.
            Outcome::Rejected { status, message } if matches!(status, 400 | 413 | 422) => {
                Err(IngestError::UpstreamRejected {
                    status: *status,
                    message: message.clone(),
                })
            }
            // Anything else is frugal's own configuration (credentials, endpoint) or a
            // redirect: nothing is wrong with the client's data, so it keeps it and retries.
            Outcome::Rejected { status, message } => {
                tracing::error!(
                    signal = sig,
                    status,
                    %message,
                    "upstream refused frugal's request: check the upstream endpoint and credentials"
                );
                Err(IngestError::Unavailable {
                    retry_after: Duration::from_secs(30),
                    message: format!(
                        "upstream refused frugal's request ({status}): the proxy's endpoint or credentials need fixing; retry later"
                    ),
                })
            }
            Outcome::Unavailable {
                retry_after,
                message,
            } => Err(IngestError::Unavailable {
                retry_after: *retry_after,
                message: message.clone(),
            }),
        }
    }
}

/// Bills each attempt to upstream: the ledger's charge (held to the period it was made in)
/// and frugal's own counters.
pub struct Billing {
    charge: Charge,
    stats: Arc<Stats>,
    signal: Signal,
}

impl Billing {
    fn count_sent(&self) {
        let sig = self.signal.as_str();
        inc(&self.stats.sent_items, &[sig], self.charge.items());
        if self.signal != Signal::Metrics {
            inc(&self.stats.sent_bytes, &[sig], self.charge.units());
        }
    }
}

impl crate::forwarder::Metering for Billing {
    fn again(&self) -> bool {
        let ok = self.charge.again();
        if ok {
            self.count_sent();
        }
        ok
    }

    fn not_arrived(&self, reason: RejectReason) {
        self.charge.not_arrived(reason);
        let sig = self.signal.as_str();
        inc(
            &self.stats.rejected_items,
            &[sig, reason.as_str()],
            self.charge.items(),
        );
    }
}

fn minus(a: Weight, b: Weight) -> Weight {
    Weight {
        items: a.items.saturating_sub(b.items),
        units: a.units.saturating_sub(b.units),
    }
}

/// Keep probabilities in use for `signal` right now (for the simulator and the API).
pub fn probabilities(budget: &BudgetState, signal: Signal) -> ClassProbabilities {
    budget.load().signal(signal).probabilities
}
