//! Status at a glance: the admin port's page (`/`, a self-contained HTML page charting
//! `/api/v1/usage/history`) and `frugal status`'s text form of `/api/v1/usage`.
//!
//! Both only render documents the admin API already serves; nothing here reads the ledger,
//! the clock or the network.

use base64::Engine as _;
use serde_json::Value;

use crate::model::{Class, Signal};

/// The page, its script and style inline; `{nonce}` marks where each request's nonce goes.
const PAGE: &str = include_str!("status_page.html");

/// A fresh nonce for one answer of the page (128 random bits, base64).
pub fn nonce() -> String {
    base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 16]>())
}

/// The page with `nonce` on its inline script and style.
pub fn page(nonce: &str) -> String {
    PAGE.replace("{nonce}", nonce)
}

/// The page's Content-Security-Policy: nothing but its own inline script and style (by
/// nonce), fetches to the admin port itself, the empty `data:` icon; no framing.
pub fn content_security_policy(nonce: &str) -> String {
    format!(
        "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; \
         connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; \
         frame-ancestors 'none'"
    )
}

/// Cells of the text bar.
const BAR: usize = 40;

/// `frugal status`: the usage document of `/api/v1/usage` as a person reads it. Per
/// signal with a budget, a bar of the limit with `#` for what is used and `|` where the
/// even pace to the target stands now; the projection at the period's end, when the
/// budget runs out at the current rate, the pacing state and the keep probability of each
/// class.
pub fn render_text(doc: &Value, source: &str) -> String {
    let period = &doc["period"];
    let elapsed = period["elapsed_fraction"]
        .as_f64()
        .unwrap_or(0.0)
        .clamp(0.0, 1.0);
    let mut out = format!(
        "{source}: period {} .. {}, {} passed\n",
        period["start"].as_str().unwrap_or("?"),
        period["end"].as_str().unwrap_or("?"),
        percent(elapsed),
    );
    for signal in Signal::ALL {
        let (name, s) = (signal.as_str(), &doc["signals"][signal.as_str()]);
        if s.is_null() {
            continue;
        }
        let unit = s["unit"].as_str().unwrap_or("bytes");
        let used = s["used"].as_u64().unwrap_or(0);
        if let Some(series_limit) = s["series_limit"].as_u64().filter(|l| *l > 0) {
            // Metrics are budgeted by series.
            let in_memory = s["series_in_memory"].as_u64().unwrap_or(0);
            let fraction = in_memory as f64 / series_limit as f64;
            out += &format!(
                "{name:<8} [{}] {in_memory} of {series_limit} series ({}), active {}, refused {}, {} data points/min\n",
                bar(fraction, fraction),
                percent(fraction),
                s["active_series"].as_u64().unwrap_or(0),
                s["series_refused"].as_u64().unwrap_or(0),
                s["dpm"].as_u64().unwrap_or(0),
            );
            continue;
        }
        let Some(limit) = s["limit"].as_u64().filter(|l| *l > 0) else {
            out += &format!("{name:<8} {} (no budget)\n", amount(used, unit));
            continue;
        };
        let target = s["target"].as_u64().unwrap_or(limit);
        let pace = target as f64 * elapsed;
        out += &format!(
            "{name:<8} [{}] {} of {} ({}), pace {}\n",
            bar(used as f64 / limit as f64, pace / limit as f64),
            amount(used, unit),
            amount(limit, unit),
            percent(used as f64 / limit as f64),
            amount(pace as u64, unit),
        );
        let p = &s["pacing"];
        let projected = p["projected_used"].as_f64().unwrap_or(0.0).max(0.0);
        let runs_out = match p["runs_out_at"].as_str() {
            None => "lasts the period".to_string(),
            Some(_) if used >= limit => "spent".to_string(),
            Some(t) => match t.parse::<jiff::Timestamp>() {
                Ok(t) => format!("runs out {}", t.strftime("%Y-%m-%d %H:%M UTC")),
                Err(_) => format!("runs out {t}"),
            },
        };
        out += &format!(
            "{:<8} projected {} ({}) at the end; {}; {}\n",
            "",
            amount(projected as u64, unit),
            percent(projected / limit as f64),
            runs_out,
            p["state"].as_str().unwrap_or("?").replace('_', " "),
        );
        let keep: Vec<String> = Class::ALL
            .iter()
            .filter_map(|c| {
                let p = p["keep_probability"][c.as_str()].as_f64()?;
                Some(format!("{} {}", c.as_str(), percent(p)))
            })
            .collect();
        if !keep.is_empty() {
            out += &format!("{:<8} keep {}\n", "", keep.join(", "));
        }
    }
    out
}

/// `#` up to `used` (a fraction of the limit), `-` after, `|` at `pace`; `>` at the end
/// when usage is past the limit.
fn bar(used: f64, pace: f64) -> String {
    let cells = |f: f64| ((f.clamp(0.0, 1.0) * BAR as f64).round() as usize).min(BAR);
    let filled = cells(used);
    let mark = cells(pace).min(BAR - 1);
    (0..BAR)
        .map(|i| match i {
            _ if i == BAR - 1 && used > 1.0 => '>',
            _ if i == mark => '|',
            _ if i < filled => '#',
            _ => '-',
        })
        .collect()
}

fn amount(v: u64, unit: &str) -> String {
    match unit {
        "bytes" => crate::units::format_size(v),
        _ => format!("{v} data points"),
    }
}

fn percent(f: f64) -> String {
    let v = f * 100.0;
    if (v - v.round()).abs() < 1e-9 {
        format!("{v:.0}%")
    } else if v >= 10.0 {
        format!("{v:.1}%")
    } else {
        format!("{v:.2}%")
    }
}

/// `frugal top`'s form of `/api/v1/series`: the series counts, then a table of the metric
/// names holding the most series, and the Alloy rule that would drop the first at the
/// source.
pub fn render_top(v: &Value) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let num = |k: &str| v[k].as_u64().map_or("-".to_string(), |n| n.to_string());
    let _ = writeln!(
        out,
        "series in memory {} (limit {}), active {}, refused {}, data points/min {}",
        num("total_series"),
        num("series_limit"),
        num("active_series"),
        num("series_refused"),
        num("dpm")
    );
    let empty = Vec::new();
    let metrics = v["metrics"].as_array().unwrap_or(&empty);
    let _ = writeln!(out, "{:>9} {:>9} {:>9}  metric", "series", "dpm", "refused");
    for m in metrics {
        let _ = writeln!(
            out,
            "{:>9} {:>9} {:>9}  {}",
            m["series"].as_u64().unwrap_or(0),
            m["dpm"].as_u64().unwrap_or(0),
            m["refused"].as_u64().unwrap_or(0),
            m["name"].as_str().unwrap_or("")
        );
    }
    if let Some(first) = metrics.first() {
        let _ = writeln!(
            out,
            "\nTo drop {} at the source, add to Alloy's prometheus.relabel:\n{}",
            first["name"].as_str().unwrap_or(""),
            first["relabel"].as_str().unwrap_or("")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A month at `elapsed` with `traces` and metrics without a budget: the traces lines.
    fn check(elapsed: f64, traces: Value, want: &str) {
        let doc = json!({
            "period": {
                "start": "2026-12-01T00:00:00Z",
                "end": "2027-01-01T00:00:00Z",
                "elapsed_fraction": elapsed,
            },
            "signals": {
                "traces": traces,
                "metrics": {"unit": "data_points", "used": 1234, "limit": null},
            },
        });
        let got = render_text(&doc, "frugal at http://127.0.0.1:4319");
        let head = format!(
            "frugal at http://127.0.0.1:4319: period 2026-12-01T00:00:00Z .. 2027-01-01T00:00:00Z, {} passed\n",
            percent(elapsed)
        );
        let want = format!("{head}{want}metrics  1234 data points (no budget)\n");
        assert_eq!(got, want, "\n{got}");
    }

    fn traces(used: u64, projected: f64, runs_out: Value, state: &str, normal: f64) -> Value {
        json!({
            "unit": "bytes", "used": used, "limit": 50_000_000_000u64,
            "target": 47_500_000_000u64,
            "pacing": {
                "state": state,
                "projected_used": projected,
                "runs_out_at": runs_out,
                "keep_probability": {"priority": 1.0, "normal": normal, "bulk": normal / 2.0},
            },
        })
    }

    #[test]
    fn a_month_on_pace_shows_the_bar_the_pace_mark_and_the_projection() {
        let t = traces(12_500_000_000, 47.5e9, Value::Null, "pacing", 0.419);
        check(
            0.25,
            t,
            "traces   [##########|-----------------------------] 12.5GB of 50GB (25%), pace 11.88GB\n\
             \x20        projected 47.5GB (95%) at the end; lasts the period; pacing\n\
             \x20        keep priority 100%, normal 41.9%, bulk 20.9%\n",
        );
    }

    #[test]
    fn ahead_of_pace_the_mark_sits_inside_the_used_part_and_the_run_out_time_shows() {
        let at = json!("2026-12-09T07:36:00.5Z");
        let t = traces(30_000_000_000, 120e9, at, "priority_only", 0.0);
        check(
            0.1,
            t,
            "traces   [####|###################----------------] 30GB of 50GB (60%), pace 4.75GB\n\
             \x20        projected 120GB (240%) at the end; runs out 2026-12-09 07:36 UTC; priority only\n\
             \x20        keep priority 100%, normal 0%, bulk 0%\n",
        );
    }

    #[test]
    fn past_the_limit_the_bar_says_so_and_the_budget_is_spent() {
        let at = json!("2026-12-31T20:00:00Z");
        let t = traces(51_000_000_000, 51e9, at, "stopped", 0.0);
        check(
            0.995,
            t,
            "traces   [######################################|>] 51GB of 50GB (102%), pace 47.26GB\n\
             \x20        projected 51GB (102%) at the end; spent; stopped\n\
             \x20        keep priority 100%, normal 0%, bulk 0%\n",
        );
    }

    #[test]
    fn the_page_carries_its_nonce_and_the_policy_allows_nothing_else() {
        let n = nonce();
        assert_eq!(n.len(), 24);
        assert_ne!(n, nonce(), "a new nonce each time");
        let html = page(&n);
        assert!(!html.contains("{nonce}"));
        assert_eq!(html.matches(&format!("nonce=\"{n}\"")).count(), 2);
        // The SVG namespace is a name, not an address; nothing else names another origin.
        let rest = html.replace("\"http://www.w3.org/2000/svg\"", "");
        assert!(!rest.contains("http:") && !rest.contains("https:") && !rest.contains("\"//"));
        let csp = content_security_policy(&n);
        assert!(csp.starts_with("default-src 'none'; script-src 'nonce-"));
        assert!(!csp.contains("unsafe"), "{csp}");
    }
}
