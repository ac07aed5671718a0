//! The tail sampler on a core with an in-memory store and spool, a scripted upstream, and
//! tokio's time paused (the core's clock follows it).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::budget::{Pacing, SignalPacing};
use crate::clock::TokioClock;
use crate::forwarder::Outcome;
use crate::ingest::{RequestMeta, Transport};
use crate::model::PerClass;
use crate::pipeline;
use crate::store::MemorySpool;
use crate::testkit::{self, FakeUpstream, span, traces};
use opentelemetry_proto::tonic::trace::v1::Span;

fn clock() -> crate::clock::SharedClock {
    Arc::new(TokioClock::new("2026-11-15T00:00:00Z".parse().unwrap()))
}

const TAIL: &str = "
traces:
  tail:
    decision_wait: 10s
    root_grace: 1s
    policies:
      - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}, class: priority}
";

fn pace(core: &Core, normal: f64) {
    let mut p = Pacing::UNCONSTRAINED;
    p.signals[Signal::Traces] = SignalPacing {
        probabilities: PerClass::new([1.0, normal, normal]),
        state: PacingState::Pacing,
        ..SignalPacing::UNCONSTRAINED
    };
    core.pacing.publish(p);
}

/// A span of trace `t` (its ID's bytes all `t`), not a root unless `root`.
fn sp(t: u8, id: u8, error: bool, root: bool) -> Span {
    let mut s = span(t, id, error);
    s.parent_span_id = if root { Vec::new() } else { vec![9; 8] };
    s
}

async fn send(core: &Core, spans: Vec<Span>) {
    let r = pipeline::handle(
        core,
        traces("web", spans),
        RequestMeta::new(Transport::Http),
    )
    .await;
    assert_eq!(r, Ok(Accepted::default()));
}

/// (trace byte, span byte) of every span upstream received.
fn received(up: &FakeUpstream) -> BTreeSet<(u8, u8)> {
    up.traces()
        .iter()
        .flat_map(|r| &r.resource_spans)
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
        .map(|s| (s.trace_id[0], s.span_id[0]))
        .collect()
}

async fn tick(core: &Core) {
    core.tail.as_ref().unwrap().tick(core).await;
}

#[tokio::test(start_paused = true)]
async fn a_trace_over_several_requests_is_decided_whole_after_the_wait() {
    let (core, up) = testkit::core(testkit::policy(TAIL), clock());
    send(&core, vec![sp(1, 1, false, false), sp(2, 1, false, false)]).await;
    tokio::time::advance(Duration::from_secs(3)).await;
    send(&core, vec![sp(1, 2, false, false)]).await;
    tick(&core).await;
    assert!(up.traces().is_empty(), "nothing leaves before the decision");
    let u = core.ledger.usage(Signal::Traces);
    assert_eq!(
        u.offered_total().items,
        0,
        "offered is counted at the decision"
    );
    tokio::time::advance(Duration::from_secs(7)).await;
    tick(&core).await;
    assert_eq!(received(&up), BTreeSet::from([(1, 1), (1, 2), (2, 1)]));
    let u = core.ledger.usage(Signal::Traces);
    assert_eq!(u.offered_total().items, 3);
    assert!(u.used > 0, "what was sent is billed");
    assert_eq!(core.tail.as_ref().unwrap().held_bytes(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_root_span_brings_the_decision_forward() {
    let (core, up) = testkit::core(testkit::policy(TAIL), clock());
    send(&core, vec![sp(1, 1, false, false)]).await;
    send(&core, vec![sp(1, 2, false, true)]).await;
    tokio::time::advance(Duration::from_millis(999)).await;
    tick(&core).await;
    assert!(up.traces().is_empty());
    tokio::time::advance(Duration::from_millis(1)).await;
    tick(&core).await;
    assert_eq!(received(&up).len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_keep_policy_keeps_whole_traces_and_the_rest_is_paced_as_whole_traces() {
    let (core, up) = testkit::core(testkit::policy(TAIL), clock());
    pace(&core, 0.25);
    // 200 traces of 3 spans; every 10th has an error on its last (non-root) span.
    for t in 0..200u8 {
        let spans = (0..3u8)
            .map(|i| {
                let mut s = sp(t, i, i == 2 && t % 10 == 0, i == 0);
                s.trace_id[1] = t; // distinct randomness per trace
                s.trace_id[8..].copy_from_slice(&[t.wrapping_mul(37); 8]);
                s
            })
            .collect();
        send(&core, spans).await;
    }
    tokio::time::advance(Duration::from_secs(2)).await;
    tick(&core).await;
    let got = received(&up);
    let mut per_trace = std::collections::BTreeMap::<u8, usize>::new();
    for (t, _) in &got {
        *per_trace.entry(*t).or_default() += 1;
    }
    assert!(per_trace.values().all(|n| *n == 3), "whole traces only");
    for t in (0..200u8).step_by(10) {
        assert_eq!(per_trace.get(&t), Some(&3), "error trace {t} kept");
    }
    let others = per_trace.keys().filter(|t| *t % 10 != 0).count();
    assert!(
        (20..=70).contains(&others),
        "about a quarter of 180: {others}"
    );
    let u = core.ledger.usage(Signal::Traces);
    assert_eq!(u.offered[Class::Priority].items, 60);
    assert_eq!(u.offered[Class::Normal].items, 540);
    // Kept paced spans carry the threshold; policy-kept ones do not.
    for r in up.traces() {
        for s in r
            .resource_spans
            .iter()
            .flat_map(|rs| &rs.scope_spans)
            .flat_map(|ss| &ss.spans)
        {
            let paced = s.trace_id[0] % 10 != 0;
            assert_eq!(s.trace_state.contains("th:c"), paced, "{:?}", s.trace_state);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn late_spans_get_their_traces_decision() {
    let (core, up) = testkit::core(testkit::policy(TAIL), clock());
    pace(&core, 0.5);
    let mut ids = Vec::new();
    for t in 0..40u8 {
        let mut s = sp(t, 1, false, true);
        s.trace_id[8..].copy_from_slice(&[t.wrapping_mul(53); 8]);
        ids.push(s.trace_id.clone());
        send(&core, vec![s]).await;
    }
    tokio::time::advance(Duration::from_secs(1)).await;
    tick(&core).await;
    let first: BTreeSet<u8> = received(&up).iter().map(|(t, _)| *t).collect();
    assert!(!first.is_empty() && first.len() < 40, "{first:?}");
    // 25 s later (25 x decision_wait would be 250 s; the point is: after the decision),
    // each trace's second span arrives; pacing has moved meanwhile.
    pace(&core, 1.0);
    tokio::time::advance(Duration::from_secs(25)).await;
    for (t, id) in ids.iter().enumerate() {
        let mut s = sp(t as u8, 2, false, false);
        s.trace_id.clone_from(id);
        send(&core, vec![s]).await;
    }
    tick(&core).await;
    let got = received(&up);
    for t in 0..40u8 {
        let n = got.iter().filter(|(x, _)| *x == t).count();
        assert_eq!(n, if first.contains(&t) { 2 } else { 0 }, "trace {t}");
    }
    let tail = core.tail.as_ref().unwrap();
    assert_eq!(tail.stats.late_spans.get(), 40);
}

#[tokio::test(start_paused = true)]
async fn acknowledged_spans_survive_a_restart_and_are_delivered() {
    let spool = MemorySpool::default();
    let build = |spool: MemorySpool| {
        let up = Arc::new(FakeUpstream::default());
        let core = Core::build(
            Arc::new(testkit::policy(TAIL)),
            Arc::new(crate::store::MemoryStore::default()),
            up.clone(),
            clock(),
            Arc::new(Stats::new().unwrap()),
        )
        .unwrap()
        .with_tail(Arc::new(spool))
        .unwrap();
        (Arc::new(core), up)
    };
    let (core, up) = build(spool.clone());
    send(&core, vec![sp(1, 1, false, false), sp(2, 1, false, false)]).await;
    send(&core, vec![sp(1, 2, false, false)]).await;
    drop(core);
    assert!(up.traces().is_empty());
    // A crash: nothing was decided. The next start replays the spool.
    let (core, up) = build(spool.reopen());
    let tail = core.tail.clone().unwrap();
    assert_eq!(tail.replay(&core), 2);
    assert_eq!(tail.buffered_traces(), 2);
    tokio::time::advance(Duration::from_secs(10)).await;
    tick(&core).await;
    assert_eq!(received(&up), BTreeSet::from([(1, 1), (1, 2), (2, 1)]));
    assert_eq!(
        spool.bytes(),
        0,
        "every record released once its traces were sent"
    );
}

#[tokio::test(start_paused = true)]
async fn upstream_unavailable_keeps_the_traces_for_the_next_turn() {
    let (core, up) = testkit::core(testkit::policy(TAIL), clock());
    send(&core, vec![sp(1, 1, false, true)]).await;
    up.then(Outcome::Unavailable {
        retry_after: Duration::from_secs(1),
        message: "down".into(),
    });
    tokio::time::advance(Duration::from_secs(1)).await;
    tick(&core).await;
    assert_eq!(up.traces().len(), 1, "one attempt");
    let tail = core.tail.clone().unwrap();
    assert!(tail.held_bytes() > 0, "still held");
    tick(&core).await;
    assert_eq!(up.traces().len(), 2, "tried again");
    assert_eq!(tail.held_bytes(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_full_buffer_decides_the_oldest_early_and_refuses_only_when_decided_traces_fill_it() {
    let policy = testkit::policy(
        "
traces:
  tail: {decision_wait: 10s, max_buffer: 1MB}
",
    );
    let (core, up) = testkit::core(policy, clock());
    let big = |t: u8, i: u8| {
        let mut s = sp(t, i, false, false);
        s.attributes
            .push(testkit::kv("payload", testkit::string(&"x".repeat(20_000))));
        s
    };
    // The release loop runs beside the requests, as in `serve` (a request that finds the
    // buffer full waits for it, up to a moment).
    let tail = core.tail.clone().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(crate::app::tail_release(
        core.clone(),
        tail.clone(),
        stop.clone(),
    ));
    for t in 0..30u8 {
        send(&core, vec![big(t, 1), big(t, 2)]).await;
    }
    let early = tail
        .stats
        .early_decisions
        .with_label_values(&["buffer_full"])
        .get();
    assert!(early > 0, "the oldest were decided early");
    assert!(tail.held_bytes() <= 1_000_000, "{}", tail.held_bytes());
    tick(&core).await;
    // Upstream down: decided traces stay, and once they fill the buffer clients hear 503.
    for _ in 0..100 {
        up.then(Outcome::Unavailable {
            retry_after: Duration::from_secs(1),
            message: "down".into(),
        });
    }
    let mut refused = false;
    for t in 30..90u8 {
        let r = pipeline::handle(
            &core,
            traces("web", vec![big(t, 1)]),
            RequestMeta::new(Transport::Http),
        )
        .await;
        tick(&core).await;
        if matches!(r, Err(IngestError::Unavailable { .. })) {
            refused = true;
            break;
        }
    }
    assert!(refused, "503 once decided traces fill max_buffer");
    assert!(tail.held_bytes() <= 1_000_000, "{}", tail.held_bytes());
    stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn a_trace_over_its_size_cap_is_decided_at_once_and_its_later_spans_follow() {
    let policy = testkit::policy(
        "
traces:
  tail: {decision_wait: 10s, max_trace_size: 1kB}
",
    );
    let (core, up) = testkit::core(policy, clock());
    let big: Vec<Span> = (0..20u8).map(|i| sp(1, i, false, false)).collect();
    send(&core, big).await;
    send(&core, vec![sp(2, 1, false, false)]).await;
    tick(&core).await;
    let got = received(&up);
    assert_eq!(
        got.len(),
        20,
        "the huge trace went at once; the small one waits"
    );
    let tail = core.tail.clone().unwrap();
    assert_eq!(
        tail.stats
            .early_decisions
            .with_label_values(&["trace_size"])
            .get(),
        1
    );
    send(&core, vec![sp(1, 99, false, false)]).await;
    tick(&core).await;
    assert!(received(&up).contains(&(1, 99)), "a late span follows");
}

#[tokio::test(start_paused = true)]
async fn logs_follow_their_traces_decision() {
    let (core, up) = testkit::core(testkit::policy(TAIL), clock());
    pace(&core, 0.0);
    send(&core, vec![sp(7, 1, true, true)]).await; // an error: kept by policy
    send(&core, vec![sp(8, 1, false, true)]).await; // paced at 0: dropped
    tokio::time::advance(Duration::from_secs(1)).await;
    tick(&core).await;
    assert_eq!(received(&up), BTreeSet::from([(7, 1)]));
    let decided = core.traces.decided(&[7; 16], core.clock.now()).unwrap().0;
    assert_eq!(decided.p, 1.0);
    let dropped = core.traces.decided(&[8; 16], core.clock.now()).unwrap().0;
    assert_eq!(dropped.p, 0.0);
    let mut s = core
        .traces
        .session(core.clock.now(), crate::sampling::memory::Remember::Always);
    assert_eq!(
        s.judge(&[7; 16], &PerClass::new([0.0; 3]), true),
        PerClass::new([1.0; 3])
    );
    assert_eq!(
        s.judge(&[8; 16], &PerClass::new([1.0; 3]), true),
        PerClass::new([0.0; 3])
    );
}
