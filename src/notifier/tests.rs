//! The notifier on a core with an in-memory store, posting to a recording HTTP server on
//! 127.0.0.1:0, tokio's time paused (the core's clock follows it).

use std::collections::VecDeque;

use http_body_util::BodyExt as _;
use serde_json::Value;

use super::*;
use crate::clock::TokioClock;
use crate::testkit;

/// What the server received: path, idempotency key, JSON body.
type Seen = Arc<Mutex<Vec<(String, Option<String>, Value)>>>;

/// A server answering each request with the next status of `script` (then 200).
async fn recorder(script: Vec<u16>) -> (String, Seen) {
    let seen: Seen = Arc::default();
    let script = Arc::new(Mutex::new(VecDeque::from(script)));
    let s = seen.clone();
    let url = testkit::http_server(move |req: http::Request<hyper::body::Incoming>| {
        let (script, seen) = (script.clone(), s.clone());
        async move {
            let path = req.uri().path().to_string();
            let key = req
                .headers()
                .get(sink::IDEMPOTENCY_HEADER)
                .map(|v| v.to_str().unwrap().to_string());
            let body = req.into_body().collect().await.unwrap().to_bytes();
            seen.lock()
                .unwrap()
                .push((path, key, serde_json::from_slice(&body).unwrap()));
            let status = script.lock().unwrap().pop_front().unwrap_or(200);
            let mut r = http::Response::new(http_body_util::Full::new(bytes::Bytes::new()));
            *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
            r
        }
    })
    .await;
    (url, seen)
}

fn core_with(generic: &str, alertmanager: &str) -> Arc<Core> {
    let policy = testkit::policy(&format!(
        "budgets: {{traces: {{limit: 1000}}, logs: {{limit: 1000}}}}\n\
         alerts:\n  thresholds: [50%, 80%]\n  projected_overage: false\n  webhooks:\n\
         \x20   - {{url: '{generic}/hook', format: generic}}\n\
         \x20   - {{url: '{alertmanager}', format: alertmanager}}\n"
    ));
    let clock = Arc::new(TokioClock::new("2026-11-10T00:00:00Z".parse().unwrap()));
    testkit::core(policy, clock).0
}

async fn run(n: &Notifier) {
    let work = n.check().unwrap();
    n.deliver(work).await;
}

#[tokio::test(start_paused = true)]
async fn each_threshold_is_delivered_once_and_a_retry_carries_the_same_key() {
    // The generic webhook fails its first attempt.
    let (generic, hooks) = recorder(vec![500]).await;
    let (am, posts) = recorder(vec![]).await;
    let core = core_with(&generic, &am);
    let n = Notifier::new(core.clone()).unwrap();
    run(&n).await;
    assert!(hooks.lock().unwrap().is_empty(), "below every threshold");
    assert!(posts.lock().unwrap().is_empty());

    core.ledger.set_used(Signal::Traces, 850);
    run(&n).await;
    let got = hooks.lock().unwrap().clone();
    let keys: Vec<&str> = got.iter().map(|(_, k, _)| k.as_deref().unwrap()).collect();
    assert_eq!(
        keys,
        [
            "frugal:2026-11-01T00:00:00Z:traces:used_50",
            "frugal:2026-11-01T00:00:00Z:traces:used_50",
            "frugal:2026-11-01T00:00:00Z:traces:used_80",
        ],
        "the retry after the 500 carries the first attempt's key"
    );
    assert_eq!(got[0].0, "/hook");
    assert_eq!(got[2].2["threshold"], "80%");
    let am_posts = posts.lock().unwrap().clone();
    assert_eq!(am_posts.len(), 1);
    assert_eq!(am_posts[0].0, "/api/v2/alerts");
    assert_eq!(am_posts[0].2.as_array().unwrap().len(), 2);
    let starts = am_posts[0].2[0]["startsAt"].clone();
    assert_eq!(starts, "2026-11-10T00:00:00Z");
    let m = core.stats.render();
    assert!(
        m.contains(r#"frugal_notifications_total{format="generic",outcome="delivered"} 2"#),
        "{m}"
    );
    assert!(
        m.contains(r#"frugal_notifications_total{format="generic",outcome="retried"} 1"#),
        "{m}"
    );

    // A restart (a new notifier on the same store) a minute later: nothing is delivered
    // again; Alertmanager hears the same alerts with their first startsAt.
    tokio::time::sleep(std::time::Duration::from_secs(60)).await;
    drop(n);
    let n = Notifier::new(core.clone()).unwrap();
    run(&n).await;
    run(&n).await;
    assert_eq!(hooks.lock().unwrap().len(), 3);
    let am_posts = posts.lock().unwrap().clone();
    assert_eq!(
        am_posts.len(),
        2,
        "posted once after the restart, not again at once"
    );
    assert_eq!(am_posts[1].2[0]["startsAt"], starts);
    assert_eq!(am_posts[1].2[1]["labels"]["threshold"], "80%");
}

#[tokio::test(start_paused = true)]
async fn a_firing_is_persisted_before_it_is_sent_and_the_ledger_ignores_it() {
    // Nothing listens at this webhook: the delivery fails, the firing stays.
    let dead = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let core = core_with(&dead, &dead);
    core.ledger.set_used(Signal::Logs, 500);
    let n = Notifier::new(core.clone()).unwrap();
    let work = n.check().unwrap();
    let key = core.ledger.period().key();
    let stored = core.ledger.store().totals(&key).unwrap();
    assert_eq!(
        stored.get("alerts/logs/used_50/starts_at"),
        Some(&1_794_268_800),
        "persisted by the check, before any POST"
    );
    n.deliver(work).await;
    let m = core.stats.render();
    assert!(
        m.contains(r#"frugal_notifications_total{format="generic",outcome="failed"} 1"#),
        "{m}"
    );
    // The ledger flushes, reopens and reports around the notifier's counters.
    core.ledger.flush(core.clock.now()).unwrap();
    let reopened = crate::ledger::Ledger::open(
        core.ledger.store().clone(),
        crate::period::PeriodSpec::utc_month(),
        core.clock.now(),
    )
    .unwrap();
    assert_eq!(reopened.used(Signal::Logs), 500);
    assert_eq!(reopened.used(Signal::Traces), 0);
    reopened.flush(core.clock.now()).unwrap();
    let after = core.ledger.store().totals(&key).unwrap();
    assert_eq!(
        after.get("alerts/logs/used_50/starts_at"),
        Some(&1_794_268_800)
    );
}

#[test]
fn without_an_alerts_section_there_is_no_notifier() {
    let clock: crate::clock::SharedClock = Arc::new(crate::clock::ManualClock::new(
        "2026-11-10T00:00:00Z".parse().unwrap(),
    ));
    let (core, _) = testkit::core(testkit::policy("budgets: {traces: {limit: 1GB}}"), clock);
    assert!(Notifier::new(core).is_none());
}
