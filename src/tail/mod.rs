//! Tail sampling (`traces.tail`): whole-trace decisions, byte-bounded and durable.
//!
//! A trace request goes through [`accept`] instead of the admit stage: span rules drop
//! what they drop, the rest is split by trace ID into encoded fragments, written to the
//! [`Spool`] (the client hears 2xx once it is on disk), and the [`Buffer`] holds where
//! each trace's spans are in it (they are read back at the decision). The
//! release loop ([`Tail::tick`], spawned by `app.rs`, driven by the simulator on its
//! clock) takes the traces due, decides each whole ([`Tail::decide`]: the tail policies
//! of [`policies`], then the class's keep probability for what no keep policy took, by
//! the same consistent sampling as head sampling, so the `th` written is the effective
//! one), counts what was offered and dropped at that moment, and queues what is kept.
//! The sender ([`Tail::send_ready`]) then runs the usual reserve and dispatch stages:
//! waiting on the per-second limit rather than dropping by it, with buffered priority
//! bytes set aside in the budget; what upstream cannot take now waits for the next turn.
//! A spool record is released once every trace in it is done (acknowledged, refused by
//! upstream, or dropped), so after a crash the rest is replayed ([`Tail::replay`]).
//!
//! Each decision is remembered in the trace memory for `decision_ttl`: a span arriving
//! later (a late span) and the trace's logs get the same answer.
//!
//! Bounded: `max_buffer` holds the bytes buffered plus those decided and waiting to be
//! sent; near it the traces due soonest are decided early; when what waits to be sent
//! alone fills it (upstream slower than the clients), clients get 503 with `Retry-After`.
//! A trace past `max_trace_size` is decided at once and its later spans follow.

pub mod buffer;
pub mod policies;
pub mod record;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use jiff::Timestamp;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value;

use crate::budget::controller::PacingState;
use crate::core::Core;
use crate::ingest::{
    Accepted, IngestError, Payload, RequestMeta, Transport, count_decided, record_drop,
    record_priority_drop, send_encoded, within_size,
};
use crate::ledger::Charge;
use crate::metering::{Weight, tempo};
use crate::model::{Class, Destination, DropReason, Signal};
use crate::policy::{AtLimit, Policy, TailPolicy};
use crate::sampling::memory::TraceDecision;
use crate::sampling::traces::{SpanDecision, classify, decide_at};
use crate::sampling::{Account, ClassProbabilities, Fate, rules};
use crate::stats::{Stats, TailStats, inc};
use crate::store::{RecordId, Spool, SpoolError};
pub use buffer::{Arrival, Buffer, Early, Pending, Timing};
use policies::{Limiters, SpanRef, TailOutcome, TraceView};

/// Decided traces are sent in requests of about this many bytes (about 500 spans: a
/// decision's decoded working set stays small; see BENCHMARKS.md's tail flood).
const BATCH_BYTES: usize = 128 * 1024;
/// How often the release loop looks for traces due (sooner when a request brings one).
pub const TICK: Duration = Duration::from_millis(200);

/// Decided traces waiting to be sent.
struct Ready {
    /// The kept spans, marked, encoded as they are sent (what is held is what goes out).
    body: Bytes,
    /// Their billable weight.
    kept: Weight,
    /// Whether they are priority traces (batches never mix priority with the rest).
    priority: bool,
    /// The spool record of each chunk of its traces.
    records: Vec<RecordId>,
    /// Its traces (remembered as dropped if the budget refuses them).
    traces: Vec<[u8; 16]>,
}

/// The tail sampler: the buffer, the spool, the policies' limiters, and what waits to be
/// sent.
pub struct Tail {
    settings: TailPolicy,
    buffer: Buffer,
    spool: Arc<dyn Spool>,
    limiters: Limiters,
    /// Per spool record, how many of its traces are not done.
    refs: Mutex<HashMap<RecordId, u32>>,
    ready: Mutex<VecDeque<Ready>>,
    ready_bytes: AtomicU64,
    /// Bytes of requests between making room and entering the buffer.
    admitting: AtomicU64,
    sending: tokio::sync::Mutex<()>,
    /// Held by the request deciding traces early to make room (one at a time: the others
    /// wait for the room it makes instead of each deciding a batch of their own).
    making_room: std::sync::Mutex<()>,
    /// Wakes the release loop when a request brings a trace due at once.
    pub wake: tokio::sync::Notify,
    /// Wakes requests waiting for room when decided traces leave.
    freed: tokio::sync::Notify,
    stats: TailStats,
}

fn key(id: &[u8]) -> Option<[u8; 16]> {
    <[u8; 16]>::try_from(id).ok()
}

fn spans(req: &ExportTraceServiceRequest) -> impl Iterator<Item = SpanRef<'_>> {
    req.resource_spans.iter().flat_map(|rs| {
        rs.scope_spans.iter().flat_map(move |ss| {
            ss.spans.iter().map(move |span| SpanRef {
                resource: rs.resource.as_ref(),
                span,
            })
        })
    })
}

/// The class span rules put a whole trace in: priority if any span is, else normal if
/// any is, else bulk.
fn rule_class(policy: &Policy, req: &ExportTraceServiceRequest) -> Class {
    let mut class = Class::Bulk;
    for rs in &req.resource_spans {
        let resource = rs.resource.as_ref();
        let service = rules::service_name(resource);
        for span in rs.scope_spans.iter().flat_map(|ss| &ss.spans) {
            if let Ok(c) = classify(&policy.traces, resource, service, span) {
                class = class.min(c);
            }
        }
    }
    class
}

/// A trace's decision: its class, the probability it is kept at (0: dropped by a
/// policy), and the policy that decided it.
#[derive(Debug, Clone, Copy)]
struct TraceVerdict {
    class: Class,
    p: f64,
    by: Option<u16>,
    dropped_by_policy: bool,
}

/// Decides one whole trace: a pure function of the policy, the keep probabilities, the
/// trace and the limiters' state at `now`.
fn verdict(
    ruled: Class,
    tail: &TailPolicy,
    limiters: &Limiters,
    probs: &ClassProbabilities,
    trace: &ExportTraceServiceRequest,
    bytes: u64,
    now: Timestamp,
) -> TraceVerdict {
    let view = TraceView {
        spans: spans(trace).collect(),
        bytes,
    };
    let v = policies::evaluate(tail, limiters, &view, now);
    let by = v.by.and_then(|i| u16::try_from(i).ok());
    match v.outcome {
        TailOutcome::Drop => TraceVerdict {
            class: ruled,
            p: 0.0,
            by,
            dropped_by_policy: true,
        },
        TailOutcome::Keep => {
            let class = ruled.min(v.class);
            // Caps (rate, bytes, probabilistic, composite, or a probabilistic inside a
            // combinator) multiply with the pacing probability; other keeps are whole.
            let cap = v.cap < 1.0
                || v.by
                    .and_then(|i| tail.policies.get(i))
                    .is_some_and(|r| r.kind.is_cap());
            TraceVerdict {
                class,
                p: if cap {
                    (v.cap * probs[class]).clamp(0.0, 1.0)
                } else {
                    1.0
                },
                by,
                dropped_by_policy: false,
            }
        }
        TailOutcome::NoMatch => TraceVerdict {
            class: ruled,
            p: probs[ruled],
            by: None,
            dropped_by_policy: false,
        },
    }
}

/// A batch of decided traces being put together.
#[derive(Default)]
struct Batch {
    req: ExportTraceServiceRequest,
    decisions: Vec<SpanDecision>,
    account: Account,
    kept_records: Vec<RecordId>,
    kept_traces: Vec<[u8; 16]>,
    dropped_records: Vec<RecordId>,
    bytes: usize,
}

impl Tail {
    /// A tail sampler with `settings`, on `spool`, its metrics registered in `stats`.
    pub fn new(
        settings: TailPolicy,
        spool: Arc<dyn Spool>,
        stats: &Stats,
    ) -> prometheus::Result<Tail> {
        let limiters = Limiters::new(&settings);
        Ok(Tail {
            settings,
            buffer: Buffer::default(),
            spool,
            limiters,
            refs: Mutex::new(HashMap::new()),
            ready: Mutex::new(VecDeque::new()),
            ready_bytes: AtomicU64::new(0),
            admitting: AtomicU64::new(0),
            sending: tokio::sync::Mutex::new(()),
            making_room: std::sync::Mutex::new(()),
            wake: tokio::sync::Notify::new(),
            freed: tokio::sync::Notify::new(),
            stats: stats.tail()?,
        })
    }

    /// The settings it runs with (a restart applies new ones).
    pub fn settings(&self) -> &TailPolicy {
        &self.settings
    }

    fn timing(&self) -> Timing {
        Timing {
            wait: self.settings.decision_wait,
            root_grace: self.settings.root_grace,
            max_trace_size: self.settings.max_trace_size,
        }
    }

    /// Bytes held: buffered, decided but not yet sent, and entering.
    pub fn held_bytes(&self) -> u64 {
        self.buffer.bytes()
            + self.ready_bytes.load(Ordering::Relaxed)
            + self.admitting.load(Ordering::Relaxed)
    }

    /// Traces buffered, undecided.
    pub fn buffered_traces(&self) -> u64 {
        self.buffer.traces()
    }

    fn gauges(&self) {
        let s = &self.stats;
        s.buffered_traces
            .set(i64::try_from(self.buffer.traces()).unwrap_or(i64::MAX));
        s.buffered_bytes
            .set(i64::try_from(self.held_bytes()).unwrap_or(i64::MAX));
        s.spool_bytes
            .set(i64::try_from(self.spool.bytes()).unwrap_or(i64::MAX));
    }

    fn lock_refs(&self) -> std::sync::MutexGuard<'_, HashMap<RecordId, u32>> {
        self.refs.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_ready(&self) -> std::sync::MutexGuard<'_, VecDeque<Ready>> {
        self.ready.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One trace of each record in `records` is done; records with none left go.
    fn unref(&self, records: &[RecordId]) {
        let mut refs = self.lock_refs();
        for id in records {
            if let Some(n) = refs.get_mut(id) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    refs.remove(id);
                    self.spool.release(*id);
                }
            }
        }
    }

    /// Puts a record's traces in the buffer at `now`; returns whether any is due at once.
    fn hold(&self, core: &Core, id: RecordId, groups: Vec<Arrival>, now: Timestamp) -> bool {
        // One reference per trace (each arrival is one chunk of the record).
        self.lock_refs()
            .insert(id, u32::try_from(groups.len()).unwrap_or(u32::MAX));
        let timing = self.timing();
        let mut due = false;
        let mut late_spans = 0;
        for a in groups {
            let spans = a.spans;
            let i = self
                .buffer
                .insert(a, now, timing, |t| core.traces.decided(t, now));
            if i.new {
                self.stats.traces_received.inc();
            }
            if let Some(at) = i.late {
                late_spans += spans;
                self.stats
                    .late_span_age
                    .observe(crate::clock::seconds_between(at, now).max(0.0));
            }
            due |= i.due_now;
        }
        self.stats.late_spans.inc_by(late_spans);
        due
    }

    /// Replays what the spool kept from before a restart into the buffer (before the
    /// receivers start). Returns how many records were replayed.
    pub fn replay(&self, core: &Core) -> usize {
        let now = core.clock.now();
        let policy = core.policy();
        let records = self.spool.take_replay();
        let n = records.len();
        for (id, bytes) in records {
            let Some(record) = record::decode(&bytes, id) else {
                tracing::error!(record = id, "unreadable tail-sampling spool record skipped");
                self.spool.release(id);
                continue;
            };
            let read = record::from_record(&bytes);
            // The wait counts from when the spans were first accepted.
            let seen = record.accepted_at.min(now);
            let arrivals: Vec<Arrival> = record
                .traces
                .into_iter()
                .map(|(trace, chunk)| {
                    let req = record::expand([&chunk], &read);
                    Arrival {
                        id: trace,
                        has_root: spans(&req).any(|s| s.span.parent_span_id.is_empty()),
                        class: rule_class(&policy, &req),
                        spans: spans(&req).count() as u64,
                        chunk,
                        late: None,
                    }
                })
                .collect();
            if arrivals.is_empty() {
                self.spool.release(id);
                continue;
            }
            self.hold(core, id, arrivals, seen);
        }
        self.gauges();
        n
    }

    /// Decides the traces due now and sends what waits (the release loop's turn; the
    /// simulator calls it on its clock).
    pub async fn tick(&self, core: &Core) {
        let now = core.clock.now();
        let due = self.buffer.take_due(now);
        if due.len() > 1000 {
            crate::ingest::off_the_workers(|| self.decide(core, due, now));
        } else {
            self.decide(core, due, now);
        }
        self.send_ready(core).await;
        self.gauges();
    }

    /// At shutdown: decides what is due, sends what it can within `within`, and makes
    /// the spool's releases durable. Undecided traces stay in the spool for the next start.
    pub async fn drain(&self, core: &Core, within: Duration) -> Result<(), SpoolError> {
        let now = core.clock.now();
        let due = self.buffer.take_due(now);
        self.decide(core, due, now);
        let sent = tokio::time::timeout(within, async {
            loop {
                let before = self.lock_ready().len();
                if before == 0 {
                    break;
                }
                self.send_ready(core).await;
                if self.lock_ready().len() >= before {
                    tokio::time::sleep(TICK).await;
                }
            }
        })
        .await;
        if sent.is_err() {
            tracing::warn!(
                held_bytes = self.held_bytes(),
                "tail sampler: not everything decided could be sent before the grace period ended; the spool keeps it for the next start"
            );
        }
        self.gauges();
        self.spool.sync().await
    }

    /// Decides `taken` whole at `now`, counts the decisions, and queues what is kept.
    pub fn decide(&self, core: &Core, taken: Vec<([u8; 16], Pending)>, now: Timestamp) {
        if taken.is_empty() {
            return;
        }
        let policy = core.policy();
        let pacing = core.pacing.load();
        let traces = pacing.signal(Signal::Traces);
        let probs = traces.probabilities;
        let state = traces.state;
        let mark = self.settings.mark_attribute.as_deref();
        let timing = self.timing();
        // Priority traces travel apart, so the budget can refuse the rest without them.
        let mut priority = Batch::default();
        let mut other = Batch::default();
        let mut late_spans = 0;
        let mut due = false;
        for (id, pending) in taken {
            let mut trace = record::expand(&pending.chunks, |c| {
                self.spool.read(c.record, c.offset, c.len)
            });
            let v = match pending.late {
                Some((d, _)) => TraceVerdict {
                    class: pending.class,
                    p: d.p,
                    by: d.by,
                    dropped_by_policy: false,
                },
                None => verdict(
                    pending.class,
                    &self.settings,
                    &self.limiters,
                    &probs,
                    &trace,
                    pending.bytes,
                    now,
                ),
            };
            let mut decisions = Vec::new();
            for s in spans(&trace) {
                decisions.push(if v.dropped_by_policy {
                    SpanDecision {
                        class: Some(v.class),
                        fate: Fate::Drop(DropReason::Rule),
                        tracestate: None,
                        adjusted_count: None,
                    }
                } else {
                    decide_at(&policy.traces, v.class, v.p, s.span)
                });
            }
            let kept = decisions.iter().any(|d| d.fate == Fate::Keep);
            let name =
                v.by.and_then(|i| self.settings.policies.get(usize::from(i)))
                    .map(|r| r.name.as_str());
            let decision = TraceDecision {
                p: if kept { v.p } else { 0.0 },
                by: v.by,
            };
            let decided_at = match pending.late {
                Some((_, at)) => at,
                None => {
                    core.traces.decide(&id, decision, now);
                    let outcome = if kept { "kept" } else { "dropped" };
                    inc(&self.stats.decisions, &[name.unwrap_or("none"), outcome], 1);
                    self.stats
                        .decision_seconds
                        .observe(crate::clock::seconds_between(pending.first_seen, now).max(0.0));
                    if let Some(e) = pending.early {
                        inc(&self.stats.early_decisions, &[e.as_str()], 1);
                    }
                    now
                }
            };
            // What arrived while it was being decided follows the decision.
            let (parked, parked_due) = self.buffer.settle(&id, decision, decided_at, now, timing);
            late_spans += parked;
            due |= parked_due;
            if kept && let (Some(key), Some(name)) = (mark, name) {
                for rs in &mut trace.resource_spans {
                    for span in rs.scope_spans.iter_mut().flat_map(|ss| &mut ss.spans) {
                        crate::sampling::set_attribute(
                            &mut span.attributes,
                            key,
                            any_value::Value::StringValue(name.to_string()),
                        );
                    }
                }
            }
            let is_priority = v.class == Class::Priority;
            let batch = if is_priority {
                &mut priority
            } else {
                &mut other
            };
            for (s, d) in spans(&trace).zip(&decisions) {
                let w = Weight {
                    items: 1,
                    units: tempo::span_share(s.span),
                };
                batch
                    .account
                    .record(d.class, &d.fate, w, d.tracestate.is_some());
            }
            batch.account.modified = true;
            if kept {
                batch.kept_records.extend(pending.records());
                batch.kept_traces.push(id);
            } else {
                batch.dropped_records.extend(pending.records());
            }
            batch.bytes += pending.bytes as usize;
            batch.req.resource_spans.extend(trace.resource_spans);
            batch.decisions.extend(decisions);
            if batch.bytes >= BATCH_BYTES {
                let full = std::mem::take(batch);
                self.queue(core, &policy, full, state, is_priority);
            }
        }
        self.queue(core, &policy, priority, state, true);
        self.queue(core, &policy, other, state, false);
        self.stats.late_spans.inc_by(late_spans);
        if due {
            self.wake.notify_one();
        }
    }

    /// Counts a batch's decisions and queues what is kept for the sender, encoded.
    fn queue(
        &self,
        core: &Core,
        policy: &Arc<Policy>,
        mut b: Batch,
        state: PacingState,
        priority: bool,
    ) {
        if b.decisions.is_empty() {
            return;
        }
        let (offered, _) = b.req.weigh_encoded();
        b.account.scale_units_to(offered.units);
        if matches!(state, PacingState::Stopped | PacingState::PriorityOnly) {
            let sampled = std::mem::take(&mut b.account.dropped[DropReason::Sampled]);
            b.account.dropped[DropReason::AtLimit].add(sampled);
        }
        count_decided(core, Signal::Traces, &b.account, false);
        b.req.apply(policy, &b.decisions);
        self.unref(&b.dropped_records);
        if b.req.is_empty() {
            return;
        }
        let (kept, _) = b.req.weigh_encoded();
        let body = Bytes::from(prost::Message::encode_to_vec(&b.req));
        self.ready_bytes
            .fetch_add(body.len() as u64, Ordering::Relaxed);
        self.lock_ready().push_back(Ready {
            body,
            kept,
            priority,
            records: b.kept_records,
            traces: b.kept_traces,
        });
    }

    fn done(&self, r: &Ready) {
        self.ready_bytes
            .fetch_sub(r.body.len() as u64, Ordering::Relaxed);
        self.unref(&r.records);
        self.freed.notify_waiters();
    }

    /// Holds the budget for `r`: priority traces against the limit (with `keep_priority`),
    /// the rest against the target less the buffered priority bytes. Refused: counted as
    /// dropped at the limit, its traces remembered as dropped.
    fn reserve(&self, core: &Core, r: &Ready) -> Option<Charge> {
        let policy = core.policy();
        let Some(b) = policy.budgets.bytes(Signal::Traces) else {
            return Some(core.ledger.charge(Signal::Traces, r.kept));
        };
        let cap = match (r.priority, b.at_limit) {
            (true, AtLimit::KeepPriority) => b.effective_limit(),
            (true, AtLimit::DropAll) => b.target_bytes(),
            (false, _) => b
                .target_bytes()
                .saturating_sub(self.buffer.priority_bytes()),
        };
        if let Some(charge) = core.ledger.reserve(Signal::Traces, r.kept, cap) {
            return Some(charge);
        }
        record_drop(core, Signal::Traces, DropReason::AtLimit, r.kept, false);
        if r.priority {
            record_priority_drop(core, Signal::Traces, r.kept.items);
        }
        let now = core.clock.now();
        for id in &r.traces {
            core.traces
                .decide(id, TraceDecision { p: 0.0, by: None }, now);
        }
        None
    }

    /// Sends decided traces in order: each waits for the per-second limit (and stops the
    /// turn when it must wait), reserves the budget with buffered priority bytes set
    /// aside, and is dispatched; what upstream cannot take now waits for the next turn.
    pub async fn send_ready(&self, core: &Core) {
        let _one = self.sending.lock().await;
        loop {
            let Some(r) = self.lock_ready().pop_front() else {
                break;
            };
            if let Some(gate) = &core.rate_gates.load()[Signal::Traces]
                && gate.try_take(r.kept.units).is_err()
            {
                self.lock_ready().push_front(r);
                break;
            }
            let Some(charge) = self.reserve(core, &r) else {
                self.done(&r);
                continue;
            };
            let meta = RequestMeta::new(Transport::Tail);
            let body = r.body.clone();
            match send_encoded(core, Destination::OtlpTraces, body, charge, meta).await {
                Ok(_) => self.done(&r),
                Err(IngestError::Unavailable { message, .. }) => {
                    tracing::debug!(%message, "upstream cannot take decided traces now; next turn");
                    self.lock_ready().push_front(r);
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "upstream refused decided traces; they are dropped");
                    self.done(&r);
                }
            }
        }
    }
}

/// How long a request waits for decided traces to leave when the buffer is full.
const ROOM_WAIT: Duration = Duration::from_secs(2);

/// Room taken in the buffer by a request on its way in; given back when dropped (by
/// then its spans are in the buffer, or it was refused).
struct Admitting<'a>(&'a AtomicU64, u64);

impl Drop for Admitting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(self.1, Ordering::Relaxed);
    }
}

/// Makes room for `incoming` bytes under `max_buffer` and takes it (atomically, so
/// requests arriving together cannot overshoot): decides the traces due soonest early
/// (one request at a time; the others wait for the room it makes), then waits (up to [`ROOM_WAIT`]) for the sender to take decided ones; 503 when they
/// still fill it (upstream slower than the clients).
async fn make_room<'a>(
    core: &Core,
    tail: &'a Tail,
    incoming: u64,
) -> Result<Admitting<'a>, IngestError> {
    let max = tail.settings.max_buffer;
    if incoming > max {
        return Err(IngestError::TooLarge(format!(
            "the request's spans take {}, more than traces.tail.max_buffer ({}): send smaller batches",
            crate::units::format_size(incoming),
            crate::units::format_size(max)
        )));
    }
    let began = core.clock.now();
    loop {
        let freed = tail.freed.notified();
        tokio::pin!(freed);
        freed.as_mut().enable();
        tail.admitting.fetch_add(incoming, Ordering::Relaxed);
        let taken = Admitting(&tail.admitting, incoming);
        let held = tail.held_bytes();
        if held <= max {
            return Ok(taken);
        }
        drop(taken);
        if let Ok(_one) = tail.making_room.try_lock() {
            let early = tail.buffer.take_soonest(held - max, Early::BufferFull);
            if !early.is_empty() {
                tail.decide(core, early, core.clock.now());
                tail.wake.notify_one();
                // What was dropped left at once: requests waiting for room look again.
                tail.freed.notify_waiters();
                continue;
            }
        }
        tail.wake.notify_one();
        let waited = crate::clock::seconds_between(began, core.clock.now()).max(0.0);
        let left = ROOM_WAIT.saturating_sub(Duration::from_secs_f64(waited));
        if tokio::time::timeout(left, freed).await.is_err() {
            tail.gauges();
            return Err(IngestError::Unavailable {
                retry_after: Duration::from_secs(1),
                message: format!(
                    "the tail sampler holds {} of traces.tail.max_buffer ({}) waiting for upstream; retry",
                    crate::units::format_size(tail.held_bytes()),
                    crate::units::format_size(max)
                ),
            });
        }
    }
}

/// Takes a trace request for tail sampling: span rules first, then the spans go to the
/// spool and the buffer by trace. Answered once they are on disk; 503 with `Retry-After`
/// when the buffer is full of decided traces upstream has not taken yet, or the spool
/// cannot write.
pub async fn accept(
    core: &Core,
    tail: &Tail,
    mut req: ExportTraceServiceRequest,
) -> Result<Accepted, IngestError> {
    let policy = core.policy();
    req.prune();
    if req.is_empty() {
        return Ok(Accepted::default());
    }
    req.canonicalize();
    let (offered, len) = req.weigh_encoded();
    within_size(len, policy.ingest.max_request_bytes)?;
    let sig = [Signal::Traces.as_str()];
    inc(&core.stats.received_items, &sig, offered.items);
    inc(&core.stats.received_bytes, &sig, offered.units);

    // Span rules (and `sampling.priority`) first: what they drop never waits.
    let mut dropped = Account::default();
    let mut split = record::Builder::default();
    // Per trace: whether its root span is here, its spans' highest class, its spans.
    let mut seen: HashMap<[u8; 16], (bool, Class, u64)> = HashMap::new();
    for rs in &mut req.resource_spans {
        let service = rules::service_name(rs.resource.as_ref()).to_string();
        let scopes = std::mem::take(&mut rs.scope_spans);
        for mut ss in scopes {
            let env = split.envelope(rs, &ss);
            for span in std::mem::take(&mut ss.spans) {
                let class = match classify(&policy.traces, rs.resource.as_ref(), &service, &span) {
                    Ok(c) => c,
                    Err(reason) => {
                        let w = Weight {
                            items: 1,
                            units: tempo::span_share(&span),
                        };
                        dropped.drop(reason, w);
                        continue;
                    }
                };
                let Some(id) = key(&span.trace_id) else {
                    continue;
                };
                let t = seen.entry(id).or_insert((false, Class::Bulk, 0));
                t.0 |= span.parent_span_id.is_empty();
                t.1 = t.1.min(class);
                t.2 += 1;
                split.span(id, env, span);
            }
        }
    }
    count_decided(core, Signal::Traces, &dropped, false);
    if split.is_empty() {
        return Ok(Accepted::default());
    }
    let bytes = split.encode(core.clock.now(), len);
    let incoming = bytes.len() as u64;
    let room = make_room(core, tail, incoming).await?;

    let id = match tail.spool.append(bytes.clone()).await {
        Ok(id) => id,
        Err(e) => {
            tracing::error!(error = %e, "tail sampling: spans not accepted");
            return Err(IngestError::Unavailable {
                retry_after: Duration::from_secs(5),
                message: format!("{e}; retry"),
            });
        }
    };
    let now = core.clock.now();
    let Some(record) = record::decode(&bytes, id) else {
        // Written just above: cannot happen; the record is released, never half-held.
        tail.spool.release(id);
        return Err(IngestError::BadRequest("unreadable spans".into()));
    };
    let arrivals: Vec<Arrival> = record
        .traces
        .into_iter()
        .map(|(trace, chunk)| {
            let (root, class, n) = seen
                .get(&trace)
                .copied()
                .unwrap_or((false, Class::Normal, 0));
            Arrival {
                id: trace,
                chunk,
                has_root: root,
                class,
                spans: n,
                late: None,
            }
        })
        .collect();
    if tail.hold(core, id, arrivals, now) {
        tail.wake.notify_one();
    }
    drop(room);
    tail.gauges();
    Ok(Accepted::default())
}

#[cfg(test)]
mod tests;
