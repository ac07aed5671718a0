//! The stages alone and together, on a core with an in-memory store and a scripted
//! upstream, with tokio's time paused (the core's clock follows it).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use prost::Message as _;

use super::*;
use crate::clock::TokioClock;
use crate::forwarder::Outcome;
use crate::model::{Class, DropReason, RejectReason};
use crate::testkit::{self, span, traces};

fn clock() -> crate::clock::SharedClock {
    Arc::new(TokioClock::new("2026-11-15T00:00:00Z".parse().unwrap()))
}

const RULES: &str = "
traces:
  drop: [{name: health, span_name: ['GET /1/1']}]
  priority: [{name: errors, status_code: ERROR}]
";

#[tokio::test(start_paused = true)]
async fn admit_counts_what_was_offered_and_dropped_and_removes_the_dropped() {
    let (core, _) = testkit::core(testkit::policy(RULES), clock());
    let req = traces(
        "web",
        vec![span(1, 1, false), span(2, 2, true), span(3, 3, false)],
    );
    let a = admit(&core, req).unwrap().unwrap();
    assert_eq!(a.kept.items, 2);
    assert_eq!(a.kept, a.req.weigh(), "kept is what is left to send");
    let u = core.ledger.usage(Signal::Traces);
    assert_eq!(u.dropped[DropReason::Rule].items, 1);
    assert_eq!(u.offered[Class::Priority].items, 1);
    assert_eq!(u.offered[Class::Normal].items, 1);
    assert_eq!(u.used, 0, "admitting bills nothing");
}

#[tokio::test(start_paused = true)]
async fn a_request_frugal_did_not_change_is_forwarded_canonical_and_billed_as_tempo_counts() {
    let (core, upstream) =
        testkit::core(testkit::policy("budgets: {traces: {limit: 1GB}}"), clock());
    let req = traces("web", vec![span(1, 1, false), span(2, 2, false)]);
    let raw = Bytes::from(req.encode_to_vec());
    let a = handle(&core, req, RequestMeta::new(Transport::Http))
        .await
        .unwrap();
    assert_eq!(a, Accepted::default());
    let got = upstream.received.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1, raw, "byte for byte");
    // Tempo bills the encoding plus 2 bytes for each empty ID (two empty parent IDs).
    assert_eq!(core.ledger.used(Signal::Traces), raw.len() as u64 + 4);
    assert_eq!(core.ledger.usage(Signal::Traces).acked.items, 2);
}

#[tokio::test(start_paused = true)]
async fn past_the_target_only_priority_goes_and_at_the_limit_nothing() {
    let policy = testkit::policy(&format!(
        "{RULES}budgets: {{traces: {{limit: 100kB, target: 50%, at_limit: keep_priority}}}}"
    ));
    let (core, upstream) = testkit::core(policy, clock());
    core.ledger.set_used(Signal::Traces, 50_000);
    let req = traces("web", vec![span(2, 2, true), span(3, 3, false)]);
    let a = admit(&core, req).unwrap().unwrap();
    let r = reserve(&core, a).expect("the priority span may still go");
    assert_eq!(r.req.weigh().items, 1);
    let u = core.ledger.usage(Signal::Traces);
    assert_eq!(u.dropped[DropReason::AtLimit].items, 1);
    dispatch(&core, r, RequestMeta::new(Transport::Http))
        .await
        .unwrap();
    let sent = upstream.traces();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0].resource_spans[0].scope_spans[0].spans[0].span_id,
        vec![2; 8]
    );
    // At the limit, nothing goes, priority included; the client still hears 2xx.
    core.ledger.set_used(Signal::Traces, 100_000);
    let req = traces("web", vec![span(4, 4, true)]);
    let a = admit(&core, req).unwrap().unwrap();
    let priority_dropped = || {
        core.stats
            .priority_dropped_items
            .with_label_values(&["traces"])
            .get()
    };
    assert_eq!(
        priority_dropped(),
        0,
        "past the target, priority still went"
    );
    assert!(reserve(&core, a).is_none());
    assert_eq!(
        core.ledger.used(Signal::Traces),
        100_000,
        "never over the limit"
    );
    assert_eq!(priority_dropped(), 1, "at the limit, priority was dropped");
}

#[tokio::test(start_paused = true)]
async fn the_rate_gate_drops_non_priority_items_first_and_refills_with_time() {
    let policy = testkit::policy(&format!(
        "{RULES}budgets: {{traces: {{limit: 1GB, max_rate: 1kB/s}}}}"
    ));
    let (core, upstream) = testkit::core(policy, clock());
    let big = || traces("web", (0..20).map(|i| span(9, i, i == 0)).collect());
    // The first burst passes whole (and leaves a debt the next requests wait out).
    handle(&core, big(), RequestMeta::new(Transport::Http))
        .await
        .unwrap();
    handle(&core, big(), RequestMeta::new(Transport::Http))
        .await
        .unwrap();
    let u = core.ledger.usage(Signal::Traces);
    assert_eq!(
        u.dropped[DropReason::RateLimit].items,
        19,
        "only the error span went"
    );
    assert_eq!(upstream.traces().len(), 2);
    tokio::time::sleep(Duration::from_secs(30)).await;
    handle(&core, big(), RequestMeta::new(Transport::Http))
        .await
        .unwrap();
    let u = core.ledger.usage(Signal::Traces);
    assert_eq!(
        u.dropped[DropReason::RateLimit].items,
        19,
        "the bucket refilled"
    );
}

#[tokio::test(start_paused = true)]
async fn upstream_answers_become_client_answers() {
    let (core, upstream) =
        testkit::core(testkit::policy("budgets: {traces: {limit: 1GB}}"), clock());
    let send = || {
        handle(
            &core,
            traces("web", vec![span(1, 1, false), span(1, 2, false)]),
            RequestMeta::new(Transport::Grpc),
        )
    };

    upstream.then(Outcome::Unavailable {
        retry_after: Duration::from_secs(3),
        message: "down".into(),
    });
    assert_eq!(
        send().await,
        Err(IngestError::Unavailable {
            retry_after: Duration::from_secs(3),
            message: "down".into()
        })
    );
    upstream.then(Outcome::Rejected {
        status: 400,
        message: "bad span".into(),
    });
    assert!(matches!(
        send().await,
        Err(IngestError::UpstreamRejected { status: 400, .. })
    ));
    // A refusal of frugal itself (its credentials) keeps the data with the client.
    upstream.then(Outcome::Rejected {
        status: 401,
        message: "no".into(),
    });
    assert!(matches!(send().await, Err(IngestError::Unavailable { .. })));
    upstream.then(Outcome::Accepted {
        rejected: 1,
        message: "one too old".into(),
    });
    assert_eq!(
        send().await,
        Ok(Accepted {
            rejected: 1,
            message: "one too old".into()
        })
    );
    let u = core.ledger.usage(Signal::Traces);
    assert_eq!(u.acked.items, 1);
    assert_eq!(u.rejected[RejectReason::Partial].items, 1);
    assert_eq!(
        u.sent.items, 8,
        "every attempt that may have arrived is billed"
    );
}

#[tokio::test(start_paused = true)]
async fn shadow_mode_forwards_everything_and_counts_what_it_would_drop() {
    let policy = testkit::policy(&format!(
        "{RULES}shadow: true\nbudgets: {{traces: {{limit: 10kB, target: 50%}}}}"
    ));
    let (core, upstream) = testkit::core(policy, clock());
    core.ledger.set_used(Signal::Traces, 6_000);
    let req = traces(
        "web",
        vec![span(1, 1, false), span(2, 2, true), span(3, 3, false)],
    );
    handle(&core, req, RequestMeta::new(Transport::Http))
        .await
        .unwrap();
    let sent = upstream.traces();
    assert_eq!(sent[0].resource_spans[0].scope_spans[0].spans.len(), 3);
    let u = core.ledger.usage(Signal::Traces);
    assert_eq!(u.shadow_dropped[DropReason::Rule].items, 1);
    assert_eq!(u.shadow_dropped[DropReason::AtLimit].items, 2);
    assert_eq!(u.dropped[DropReason::Rule].items, 0);
}

#[tokio::test(start_paused = true)]
async fn containers_without_items_are_dropped_before_anything_is_counted_or_sent() {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::metrics::v1::{
        Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric,
    };
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};

    let (core, upstream) =
        testkit::core(testkit::policy("budgets: {traces: {limit: 1GB}}"), clock());
    // Only empty containers: answered 2xx, nothing offered, billed or sent.
    let mut empty = traces("web", vec![]);
    empty.resource_spans.push(ResourceSpans::default());
    assert!(admit(&core, empty.clone()).unwrap().is_none());
    assert_eq!(
        handle(&core, empty, RequestMeta::new(Transport::Http)).await,
        Ok(Accepted::default())
    );
    assert!(upstream.received.lock().unwrap().is_empty());
    let u = core.ledger.usage(Signal::Traces);
    assert_eq!((u.offered[Class::Normal].units, u.used), (0, 0));

    // Beside real spans, the empty ones go and the rest is billed as what is sent.
    let mut req = traces("web", vec![span(1, 1, false)]);
    req.resource_spans[0]
        .scope_spans
        .push(ScopeSpans::default());
    req.resource_spans
        .extend(std::iter::repeat_n(ResourceSpans::default(), 1000));
    let raw = Bytes::from(req.encode_to_vec());
    handle(&core, req, RequestMeta::new(Transport::Http))
        .await
        .unwrap();
    let sent = upstream.received.lock().unwrap()[0].1.clone();
    assert!(
        sent.len() < raw.len() - 2000,
        "{} of {}",
        sent.len(),
        raw.len()
    );
    let got = upstream.traces();
    assert_eq!(got[0].resource_spans.len(), 1);
    assert_eq!(got[0].resource_spans[0].scope_spans.len(), 1);
    // Tempo's size of what was sent (one empty parent span ID: 2 bytes more).
    assert_eq!(core.ledger.used(Signal::Traces), sent.len() as u64 + 2);

    // Logs and metrics alike (a metric without points is no data).
    let mut logs = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs::default()],
            ..Default::default()
        }],
    };
    assert!(logs.prune() && logs.is_empty());
    logs.resource_logs = vec![ResourceLogs {
        scope_logs: vec![
            ScopeLogs::default(),
            ScopeLogs {
                log_records: vec![LogRecord::default()],
                ..Default::default()
            },
        ],
        ..Default::default()
    }];
    assert!(logs.prune());
    assert_eq!(logs.resource_logs[0].scope_logs.len(), 1);
    assert!(!logs.prune(), "nothing more to prune");
    let point = |points| Metric {
        name: "m".into(),
        data: Some(metric::Data::Gauge(Gauge {
            data_points: vec![NumberDataPoint::default(); points],
        })),
        ..Default::default()
    };
    let mut metrics = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![
                ScopeMetrics {
                    metrics: vec![point(0), Metric::default()],
                    ..Default::default()
                },
                ScopeMetrics {
                    metrics: vec![point(2), point(0)],
                    ..Default::default()
                },
            ],
            ..Default::default()
        }],
    };
    assert!(metrics.prune());
    let sm = &metrics.resource_metrics[0].scope_metrics;
    assert_eq!((sm.len(), sm[0].metrics.len()), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn the_size_limit_holds_for_the_body_frugal_forwards() {
    use opentelemetry_proto::tonic::trace::v1::Span;
    // Spans without status, resource or scope: 6 bytes more each once canonical.
    let bare = |n: usize| {
        let mut req = traces("web", vec![]);
        req.resource_spans[0].resource = None;
        req.resource_spans[0].scope_spans[0].scope = None;
        req.resource_spans[0].scope_spans[0].spans = (0..n)
            .map(|i| Span {
                trace_id: vec![1; 16],
                span_id: vec![i as u8; 8],
                ..Default::default()
            })
            .collect();
        req
    };
    let req = bare(1000);
    let len = req.encoded_len();
    let limit = len + 1000;
    let (core, upstream) = testkit::core(
        testkit::policy(&format!(
            "ingest: {{max_request_size: {limit}B, max_in_flight: 1MiB}}"
        )),
        clock(),
    );
    let err = handle(&core, req, RequestMeta::new(Transport::Http))
        .await
        .unwrap_err();
    assert!(matches!(err, IngestError::TooLarge(_)), "{err:?}");
    assert!(err.to_string().contains("ingest.max_request_size"), "{err}");
    assert!(upstream.received.lock().unwrap().is_empty());
    assert_eq!(
        core.ledger.usage(Signal::Traces).offered[Class::Normal].items,
        0
    );
    // A smaller one passes.
    handle(&core, bare(100), RequestMeta::new(Transport::Http))
        .await
        .unwrap();
    assert_eq!(upstream.traces().len(), 1);
}
