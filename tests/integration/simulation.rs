//! Simulated months through the production pacing and sampling code: the bar of the
//! budget-pacing issue, measured.

use frugal::policy::{EMBEDDED_FREE_TIER, Overrides, load_str};
use frugal::simulate::{Config, RunReport, Scenario, Traffic, simulate};

fn free_tier() -> frugal::policy::Policy {
    let env = |_: &str| Some("https://otlp-gateway-prod-eu-west-2.grafana.net/otlp".to_string());
    load_str(EMBEDDED_FREE_TIER, "free tier", &Overrides::default(), &env).unwrap()
}

fn run(traffic: f64, scenario: Scenario) -> RunReport {
    let cfg = Config {
        traffic: Traffic::Multiple(traffic),
        scenario,
        scale: 500.0,
        ..Config::default()
    };
    simulate(&free_tier(), &cfg).unwrap()
}

fn check(r: &RunReport) {
    let label = format!("{} at {:.2}x", r.scenario.as_str(), r.demand_multiple);
    assert!(r.max_used <= r.limit, "{label}: usage went over the limit");
    if r.demand_multiple > r.target {
        let end = r.end_fraction();
        assert!((end - r.target).abs() <= 0.03, "{label}: ended at {end:.4}");
        assert!(end <= 1.0);
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
