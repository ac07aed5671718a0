//! Simulated months through the production pacing and sampling code: the bar of the
//! budget-pacing issue, measured on what the simulated upstream received.

use frugal::policy::{EMBEDDED_FREE_TIER, Overrides, Policy, load_str};
use frugal::simulate::{CSV_HEADER, Config, RunReport, Scenario, Traffic, simulate};

fn load(text: &str) -> Policy {
    let env = |_: &str| Some("https://otlp-gateway-prod-eu-west-2.grafana.net/otlp".to_string());
    load_str(text, "test policy", &Overrides::default(), &env).unwrap()
}

fn free_tier() -> Policy {
    load(EMBEDDED_FREE_TIER)
}

fn config(traffic: f64, scenario: Scenario) -> Config {
    Config {
        traffic: Traffic::Multiple(traffic),
        scenario,
        scale: 500.0,
        ..Config::default()
    }
}

fn run(traffic: f64, scenario: Scenario) -> RunReport {
    simulate(&free_tier(), &config(traffic, scenario)).unwrap()
}

/// The month's promises, checked on the upstream's own count of what it received.
fn check(r: &RunReport) {
    let label = format!("{} at {:.2}x", r.scenario.as_str(), r.demand_multiple);
    let received = r.upstream_bytes;
    assert_eq!(
        received, r.used,
        "{label}: frugal's ledger and the upstream's bill disagree"
    );
    assert!(
        received <= r.limit,
        "{label}: upstream received more than the limit"
    );
    assert!(r.max_used <= r.limit, "{label}: usage went over the limit");
    if r.demand_multiple > r.target {
        let end = received as f64 / r.limit as f64;
        assert!((end - r.target).abs() <= 0.03, "{label}: ended at {end:.4}");
    } else {
        assert_eq!(
            r.sampled_out_bytes, 0,
            "{label}: sampled although demand fits"
        );
    }
    let worst = r.worst_day_ratio();
    assert!(
        worst >= 0.25,
        "{label}: a day kept only {worst:.2}x its share"
    );
    let pri = r.priority_kept_fraction();
    assert_eq!(
        pri, 1.0,
        "{label}: priority spans dropped while the budget allowed"
    );
    // The free tier's alerts: each threshold notifies once, when usage first passes it
    // (the notifier checks every scaled ten minutes: at the latest early the next day).
    for t in [50u32, 80, 95] {
        let says = format!("traces reached {t}% ");
        let fired: Vec<_> = r
            .notifications
            .iter()
            .filter(|n| n.summary.contains(&says))
            .collect();
        let passed = r
            .days
            .iter()
            .position(|d| d.used_fraction >= f64::from(t) / 100.0);
        match passed {
            None => assert!(fired.is_empty(), "{label}: {t}% fired unreached: {fired:?}"),
            Some(day) => {
                assert_eq!(fired.len(), 1, "{label}: {t}% fired {fired:?}");
                assert!(
                    fired[0].day == day + 1 || fired[0].day == day + 2,
                    "{label}: {t}% passed on day {} but fired on day {}",
                    day + 1,
                    fired[0].day
                );
            }
        }
    }
}

#[test]
fn months_from_half_to_ten_times_the_budget() {
    for traffic in [0.5, 0.9, 1.5, 3.0, 10.0] {
        for scenario in [Scenario::Steady, Scenario::Daily, Scenario::Growth] {
            check(&run(traffic, scenario));
        }
    }
}

#[test]
fn a_twenty_times_one_day_spike() {
    for traffic in [0.5, 1.0, 3.0, 10.0] {
        check(&run(traffic, Scenario::Spike));
    }
}

#[test]
fn the_same_seed_gives_the_same_month() {
    let a = run(3.0, Scenario::Daily);
    let b = run(3.0, Scenario::Daily);
    assert_eq!(a.used, b.used);
    assert_eq!(a.days, b.days);
}

#[test]
fn logs_follow_their_traces_and_stay_inside_their_own_budget() {
    for traffic in [0.5, 3.0] {
        let cfg = Config {
            with_logs: true,
            ..config(traffic, Scenario::Daily)
        };
        let r = simulate(&free_tier(), &cfg).unwrap();
        check(&r);
        let limit = r.log_limit.unwrap();
        assert!(r.log_records_kept > 0);
        assert_eq!(
            r.upstream_log_bytes, r.log_used,
            "ledger and upstream disagree on logs"
        );
        assert!(r.upstream_log_bytes <= limit, "logs over their limit");
        if traffic > 1.0 {
            let end = r.upstream_log_bytes as f64 / limit as f64;
            assert!((end - 0.95).abs() <= 0.03, "logs ended at {end:.4}");
        }
        assert_eq!(
            r.log_records_of_dropped_traces, 0,
            "a log outlived its dropped trace"
        );
    }
}

#[test]
fn priority_is_what_the_policy_says_it_is() {
    // Only errors are priority here: slow requests are not, and may be sampled.
    let policy = load(
        r#"
upstream: {otlp: {endpoint: "http://127.0.0.1:9"}}
budgets: {traces: {limit: 50GB}}
traces:
  priority: [{name: errors, status_code: ERROR}]
"#,
    );
    let r = simulate(&policy, &config(3.0, Scenario::Steady)).unwrap();
    assert!(r.sampled_out_bytes > 0, "the month was paced");
    assert!(r.priority_offered > 0);
    assert_eq!(
        r.priority_kept, r.priority_offered,
        "every error span arrived"
    );
    assert_eq!(r.priority_kept_fraction(), 1.0);
}

#[test]
fn the_csv_has_as_many_columns_in_every_row_as_in_its_header() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("month.csv");
    let cfg = Config {
        csv: Some(path.clone()),
        ..config(3.0, Scenario::Steady)
    };
    simulate(&free_tier(), &cfg).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    assert_eq!(header, CSV_HEADER);
    let columns = header.split(',').count();
    let mut rows = 0;
    for line in lines {
        assert_eq!(line.split(',').count(), columns, "{line}");
        rows += 1;
    }
    assert!(rows >= 700, "an hourly row for the month: {rows}");
}

#[test]
fn tail_sampling_keeps_every_error_and_slow_trace_whole_inside_the_budget() {
    // The free-tier policy has no tail section: `--tail` adds one keeping errors and slow
    // traces whole (`simulate::SIMULATED_TAIL`); the same month by head sampling keeps only
    // the error and slow spans themselves.
    let cfg = |tail| Config {
        tail,
        ..config(3.0, Scenario::Steady)
    };
    let tail = simulate(&free_tier(), &cfg(true)).unwrap();
    check(&tail);
    assert!(tail.tail && tail.notable_traces > 0);
    assert_eq!(
        tail.notable_spans_kept, tail.notable_spans,
        "every span of every error or slow trace arrived"
    );
    let head = simulate(&free_tier(), &cfg(false)).unwrap();
    assert!(!head.tail);
    assert!(
        head.notable_spans_kept * 2 < head.notable_spans,
        "head sampling keeps the error and slow spans, not their traces: {} of {}",
        head.notable_spans_kept,
        head.notable_spans
    );
    assert!(tail.notable_bytes > 2 * head.notable_bytes);
}
