//! The `alerts` section: built-in notifications. Usage thresholds (`50%`), the projected
//! overage, and the webhooks notifications go to. Webhook URLs are secrets (a Slack
//! webhook URL is its own credential): no problem message repeats one.

use std::collections::HashSet;

use super::upstream::{BadUrl, check_http_url, headers};
use crate::policy::defaults::{DEFAULT_ALERT_THRESHOLDS, DEFAULT_PROJECTED_OVERAGE};
use crate::policy::tree::{Node, required, with};
use crate::policy::{Alerts, Threshold, Webhook, WebhookFormat};
use crate::units::parse_ratio;

/// Reads `alerts`; `None` when it is not a mapping.
pub(in crate::policy) fn build(n: Node<'_>) -> Option<Alerts> {
    let mut o = n.map()?;
    let thresholds =
        with(&mut o, "thresholds", thresholds).unwrap_or_else(|| DEFAULT_ALERT_THRESHOLDS.to_vec());
    let projected_overage =
        with(&mut o, "projected_overage", |n| n.bool()).unwrap_or(DEFAULT_PROJECTED_OVERAGE);
    let webhooks = with(&mut o, "webhooks", webhooks).unwrap_or_default();
    o.finish();
    Some(Alerts {
        thresholds,
        projected_overage,
        webhooks,
    })
}

/// `thresholds`: percentages above 0% and at most 100%, each once; sorted.
fn thresholds(n: Node<'_>) -> Option<Vec<Threshold>> {
    let mut out: Vec<Threshold> = Vec::new();
    n.each_listed(|_, item| {
        let Some(ratio) = item.parse(parse_ratio) else {
            return;
        };
        let hundredths = ratio * 10_000.0;
        if ratio <= 0.0 {
            item.problem("must be more than 0%");
        } else if (hundredths - hundredths.round()).abs() > 1e-6 {
            item.problem("give at most two decimals of a percent (99.95%)");
        } else {
            let t = Threshold(hundredths.round() as u32);
            if out.contains(&t) {
                item.problem(format!("{} is listed twice", t.label()));
            } else {
                out.push(t);
            }
        }
    });
    out.sort();
    Some(out)
}

/// `webhooks`: a list of `{url, format, headers}`.
fn webhooks(n: Node<'_>) -> Option<Vec<Webhook>> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let listed = n.each_item("a list of {url, format} mappings", |_, item| {
        let Some(w) = webhook(item) else {
            return;
        };
        if !seen.insert((w.url.clone(), w.format)) {
            item.problem("the same webhook (url and format) is listed twice");
            return;
        }
        out.push(w);
    });
    listed.then_some(out)
}

fn webhook(n: Node<'_>) -> Option<Webhook> {
    let mut o = n.map()?;
    let url = required(
        &mut o,
        "url",
        "is required (usually ${SOME_VARIABLE})",
        |n| n.parse(webhook_url),
    );
    let format = required(
        &mut o,
        "format",
        "is required: generic, slack or alertmanager",
        |n| {
            n.choice(&[
                ("generic", WebhookFormat::Generic),
                ("slack", WebhookFormat::Slack),
                ("alertmanager", WebhookFormat::Alertmanager),
            ])
        },
    );
    let headers = with(&mut o, "headers", |n| headers(n, true)).unwrap_or_default();
    o.finish();
    Some(Webhook {
        url: url?,
        format: format?,
        headers,
    })
}

/// An http(s) URL without credentials in it, never repeated in a message (the URL may be
/// the secret itself).
fn webhook_url(s: &str) -> Result<String, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("is empty (is its variable set?)".into());
    }
    match check_http_url(s) {
        Ok(()) => Ok(s.to_string()),
        Err(BadUrl::Credentials) => Err(
            "must not contain a user name or password (user:password@host): put the credential in headers (Authorization: ...) instead"
                .into(),
        ),
        Err(BadUrl::NotHttp) => Err("is not an http:// or https:// URL".into()),
    }
}
