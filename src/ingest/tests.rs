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
use crate::pipeline::handle;
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

mod remote_write {
    use super::*;
    use crate::proto::remote_write::{Label, MetricMetadata, Sample, TimeSeries, WriteRequest};

    fn series(name: &str, id: u32, points: &[(i64, f64)]) -> TimeSeries {
        TimeSeries {
            labels: vec![
                Label {
                    name: "__name__".into(),
                    value: name.into(),
                },
                Label {
                    name: "id".into(),
                    value: id.to_string(),
                },
            ],
            samples: points
                .iter()
                .map(|&(timestamp, value)| Sample { value, timestamp })
                .collect(),
            ..Default::default()
        }
    }

    fn request(ts: Vec<TimeSeries>) -> WriteRequest {
        WriteRequest {
            timeseries: ts,
            metadata: vec![],
        }
    }

    const POLICY: &str = "
upstream: {otlp: {endpoint: 'http://127.0.0.1:1'}, remote_write: {endpoint: 'http://127.0.0.1:1/api/v1/push'}}
budgets: {metrics: {active_series: 20, target: 50%}}
metrics:
  priority: [{name: up, selector: '{__name__=\"up\"}'}]
  drop_first: [{name: buckets, metric_matches: '.*_bucket'}]
  drop: [{name: noisy, metric: noisy_total}]
";

    fn sent_series(upstream: &crate::testkit::FakeUpstream) -> Vec<WriteRequest> {
        upstream
            .received
            .lock()
            .unwrap()
            .iter()
            .filter(|(d, _)| *d == crate::model::Destination::RemoteWrite)
            .map(|(_, b)| WriteRequest::decode(b.clone()).unwrap())
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn new_series_are_admitted_by_class_under_the_caps_and_known_ones_keep_flowing() {
        let (core, upstream) = testkit::core(testkit::policy(POLICY), clock());
        // Normal cap: 50 % of 20 = 10; bulk: 90 % of that = 9; priority: 20.
        let first: Vec<TimeSeries> = (0..8).map(|i| series("a", i, &[(1000, 1.0)])).collect();
        handle(&core, request(first), RequestMeta::new(Transport::Http))
            .await
            .unwrap();
        assert_eq!(core.series.tracker.len(), 8);
        // Bulk series: one more fits under 9, the second is refused.
        let buckets = vec![
            series("h_bucket", 1, &[(1000, 1.0)]),
            series("h_bucket", 2, &[(1000, 1.0)]),
        ];
        handle(&core, request(buckets), RequestMeta::new(Transport::Http))
            .await
            .unwrap();
        assert_eq!(core.series.tracker.len(), 9);
        // Normal: one more to 10, then refused; dropped by rule never counted.
        let more = vec![
            series("a", 100, &[(1000, 1.0)]),
            series("a", 101, &[(1000, 1.0)]),
            series("noisy_total", 1, &[(1000, 1.0)]),
        ];
        handle(&core, request(more), RequestMeta::new(Transport::Http))
            .await
            .unwrap();
        assert_eq!(core.series.tracker.len(), 10);
        // Priority still fits up to 20; known normal series keep flowing past the cap.
        let mixed = vec![
            series("up", 1, &[(2000, 1.0)]),
            series("a", 0, &[(2000, 2.0)]),
            series("a", 102, &[(2000, 1.0)]),
        ];
        handle(&core, request(mixed), RequestMeta::new(Transport::Http))
            .await
            .unwrap();
        assert_eq!(core.series.tracker.len(), 11);
        let sent = sent_series(&upstream);
        let last: Vec<String> = sent
            .last()
            .unwrap()
            .timeseries
            .iter()
            .map(|t| format!("{}{}", t.labels[0].value, t.labels[1].value))
            .collect();
        assert_eq!(last, ["up1", "a0"]);
        let u = core.ledger.usage(Signal::Metrics);
        assert_eq!(u.dropped[DropReason::SeriesLimit].items, 3);
        assert_eq!(u.dropped[DropReason::Rule].items, 1);
        assert_eq!(core.series.refused_total(), 3);
        assert_eq!(u.used, 8 + 1 + 1 + 2, "data points sent");
    }

    #[tokio::test(start_paused = true)]
    async fn the_minimum_interval_keeps_one_point_per_series_per_interval_and_retries_pass() {
        let policy = testkit::policy(&format!("{POLICY}  min_sample_interval: 5s\n"));
        let (core, upstream) = testkit::core(policy, clock());
        let points: Vec<(i64, f64)> = (0..12).map(|s| (1_000 * s, s as f64)).collect();
        let req = request(vec![series("c_total", 1, &points)]);
        handle(&core, req.clone(), RequestMeta::new(Transport::Http))
            .await
            .unwrap();
        let sent = sent_series(&upstream);
        let ts: Vec<i64> = sent[0].timeseries[0]
            .samples
            .iter()
            .map(|s| s.timestamp)
            .collect();
        assert_eq!(ts, [0, 5000, 10000]);
        let u = core.ledger.usage(Signal::Metrics);
        assert_eq!(u.dropped[DropReason::MinInterval].items, 9);
        assert_eq!(
            u.offered[Class::Normal].items,
            3,
            "thinned points are not offered"
        );
        assert_eq!(u.used, 3);
        // The client sends the last kept point again (it did not hear our answer): it goes.
        let again = request(vec![series("c_total", 1, &[(10_000, 10.0)])]);
        handle(&core, again, RequestMeta::new(Transport::Http))
            .await
            .unwrap();
        assert_eq!(sent_series(&upstream).len(), 2);
        // A counter reset is kept even within the interval.
        let reset = request(vec![series("c_total", 1, &[(11_000, 0.5)])]);
        handle(&core, reset, RequestMeta::new(Transport::Http))
            .await
            .unwrap();
        assert_eq!(sent_series(&upstream).len(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn dpm_above_the_series_count_takes_places_of_the_limit() {
        // Normal cap 10. Two series sending 6 points a minute each: DPM 12 bills as 12
        // series, so no new series fits although only two are in memory.
        let (core, _) = testkit::core(testkit::policy(POLICY), clock());
        let minute = |m: i64| (0..6).map(move |i| (m * 60_000 + i * 10_000, i as f64));
        let busy = |m: i64| {
            request(vec![
                series("a", 1, &minute(m).collect::<Vec<_>>()),
                series("a", 2, &minute(m).collect::<Vec<_>>()),
            ])
        };
        handle(&core, busy(0), RequestMeta::new(Transport::Http))
            .await
            .unwrap();
        core.series.measure(0);
        handle(&core, busy(1), RequestMeta::new(Transport::Http))
            .await
            .unwrap();
        core.series.measure(60_000);
        assert_eq!(core.series.dpm(), 12);
        let new = request(vec![series("a", 3, &[(130_000, 1.0)])]);
        handle(&core, new, RequestMeta::new(Transport::Http))
            .await
            .unwrap();
        assert_eq!(core.series.tracker.len(), 2, "billed as 12 of a cap of 10");
        assert_eq!(core.series.refused_total(), 1);
        // Priority (cap 20) still fits: 2 + 10 excess < 20.
        let up = request(vec![series("up", 1, &[(130_000, 1.0)])]);
        handle(&core, up, RequestMeta::new(Transport::Http))
            .await
            .unwrap();
        assert_eq!(core.series.tracker.len(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_frugal_prefix_is_no_way_past_the_limit_and_empty_series_take_no_place() {
        let (core, _) = testkit::core(testkit::policy(POLICY), clock());
        let own: Vec<TimeSeries> = (0..30)
            .map(|i| series("frugal_fake", i, &[(1000, 1.0)]))
            .collect();
        handle(&core, request(own), RequestMeta::new(Transport::Http))
            .await
            .unwrap();
        assert_eq!(
            core.series.tracker.len(),
            20,
            "priority: up to the limit, not past it"
        );
        let (core, upstream) = testkit::core(testkit::policy(POLICY), clock());
        let empty = request(vec![series("a", 1, &[]), series("a", 2, &[(1000, 1.0)])]);
        handle(&core, empty, RequestMeta::new(Transport::Http))
            .await
            .unwrap();
        assert_eq!(core.series.tracker.len(), 1);
        assert_eq!(sent_series(&upstream)[0].timeseries.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn in_shadow_mode_everything_goes_and_is_tracked_while_refusals_are_counted() {
        let policy = testkit::policy(&format!("{POLICY}shadow: true\n"));
        let (core, upstream) = testkit::core(policy, clock());
        let all: Vec<TimeSeries> = (0..15).map(|i| series("a", i, &[(1000, 1.0)])).collect();
        handle(&core, request(all), RequestMeta::new(Transport::Http))
            .await
            .unwrap();
        assert_eq!(sent_series(&upstream)[0].timeseries.len(), 15);
        assert_eq!(core.series.tracker.len(), 15, "upstream holds all of them");
        assert_eq!(core.series.refused_total(), 5, "past the normal cap of 10");
        let u = core.ledger.usage(Signal::Metrics);
        assert_eq!(u.shadow_dropped[DropReason::SeriesLimit].items, 5);
    }

    #[tokio::test(start_paused = true)]
    async fn a_metadata_only_request_is_forwarded_without_counting_series_or_points() {
        let (core, upstream) = testkit::core(testkit::policy(POLICY), clock());
        let req = WriteRequest {
            timeseries: vec![],
            metadata: vec![MetricMetadata {
                r#type: 1,
                metric_family_name: "a".into(),
                help: "A.".into(),
                unit: String::new(),
            }],
        };
        handle(&core, req.clone(), RequestMeta::new(Transport::Http))
            .await
            .unwrap();
        assert_eq!(sent_series(&upstream), vec![req]);
        assert_eq!(core.series.tracker.len(), 0);
        assert_eq!(core.ledger.used(Signal::Metrics), 0);
    }
}
