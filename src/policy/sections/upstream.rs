//! The `upstream` section: where frugal sends what it keeps (the OTLP endpoint, its
//! credentials, headers, compression, timeout and retries; optionally a Prometheus
//! remote-write endpoint, whose URL is the full push URL and whose body is always snappy).

use serde_json::Value;

use crate::policy::defaults::{
    DEFAULT_COMPRESSION, DEFAULT_INITIAL_BACKOFF, DEFAULT_MAX_BACKOFF, DEFAULT_MAX_ELAPSED,
    DEFAULT_RETRY, DEFAULT_TIMEOUT, MAX_ELAPSED_RANGE, MIN_INITIAL_BACKOFF, TIMEOUT_RANGE,
};
use crate::policy::problem::{must_be_at_least, must_be_between};
use crate::policy::tree::{Node, Obj, required, with};
use crate::policy::{Compression, Endpoint, Retry, UpstreamAuth, Upstreams};
use crate::units::parse_duration;

/// Reads `upstream`; `None` when it is not a mapping or has no usable `otlp`.
pub(in crate::policy) fn build(n: Node<'_>) -> Option<Upstreams> {
    let mut o = n.map()?;
    let otlp = required(
        &mut o,
        "otlp",
        "is required (the OTLP endpoint to send to)",
        |n| http_endpoint(n, Protocol::Otlp),
    );
    // An empty endpoint (`${GRAFANA_CLOUD_PROM_URL:-}` unset) means none.
    let optional = |o: &mut Obj<'_>, key: &'static str, protocol: Protocol| {
        with(o, key, |n| {
            let empty = n
                .value
                .get("endpoint")
                .and_then(Value::as_str)
                .is_some_and(|e| e.trim().is_empty());
            if empty {
                Some(None)
            } else {
                http_endpoint(n, protocol).map(Some)
            }
        })
        .flatten()
    };
    let remote_write = optional(&mut o, "remote_write", Protocol::PushUrl);
    let loki = optional(&mut o, "loki", Protocol::PushUrl);
    o.finish();
    Some(Upstreams {
        otlp: otlp?,
        remote_write,
        loki,
    })
}

/// What an endpoint speaks: OTLP takes a base URL and a compression; remote write and
/// Loki a full push URL, always snappy.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Otlp,
    PushUrl,
}

/// `username` and `password`, both required (upstream and ingest credentials alike); the
/// password has at least `min_password` characters.
pub(super) fn basic_auth(n: Node<'_>, min_password: usize) -> Option<(String, String)> {
    let mut b = n.map()?;
    let user = required(&mut b, "username", "is required", |n| n.parse(username));
    let pass = required(&mut b, "password", "is required", |n| {
        n.parse(|s| secret(s, min_password))
    });
    b.finish();
    Some((user?, pass?))
}

/// A basic-auth user name: not empty, nothing a header cannot carry. No minimum: Grafana
/// Cloud's is an instance ID, a short number.
fn username(s: &str) -> Result<String, String> {
    secret(s, 1)
}

/// A credential (token or password) as the policy gives it, checked without ever being
/// repeated in the message: not empty, no surrounding whitespace (a trailing newline from a
/// secret file would never match, or would make the header invalid), no control characters,
/// and at least `min` characters.
pub(super) fn secret(s: &str, min: usize) -> Result<String, String> {
    if s.trim().is_empty() {
        return Err("is empty: give the credential (is its variable set?)".into());
    }
    if s.trim() != s {
        return Err(
            "begins or ends with whitespace (a trailing newline from a secret file?): remove it"
                .into(),
        );
    }
    if s.chars().any(char::is_control) {
        return Err("contains a control character, which an HTTP header cannot carry".into());
    }
    let len = s.chars().count();
    if len < min {
        return Err(format!(
            "is too short ({len} characters): use at least {min}, e.g. the output of `openssl rand -hex 16`"
        ));
    }
    Ok(s.to_string())
}

fn http_endpoint(n: Node<'_>, protocol: Protocol) -> Option<Endpoint> {
    let mut o = n.map()?;
    let endpoint = required(&mut o, "endpoint", "is required", |n| n.parse(endpoint));
    let basic = with(&mut o, "basic_auth", |n| basic_auth(n, 1));
    let bearer = with(&mut o, "bearer_token", |n| n.parse(|s| secret(s, 1)));
    let pass = with(&mut o, "pass_through_auth", |n| n.bool()).unwrap_or(false);
    if pass && protocol == Protocol::PushUrl {
        o.problems().push(
            &o.child_path("pass_through_auth"),
            "is for OTLP only: give this endpoint its own basic_auth or bearer_token",
        );
    }
    let auth = match (basic, bearer, pass) {
        (None, None, false) => UpstreamAuth::None,
        (Some((username, password)), None, false) => UpstreamAuth::Basic { username, password },
        (None, Some(t), false) => UpstreamAuth::Bearer(t),
        (None, None, true) => UpstreamAuth::PassThrough,
        _ => {
            o.problems().push(
                &o.path,
                "give one of basic_auth, bearer_token or pass_through_auth: true",
            );
            // Reported; the upstream still stands so the checks across sections run.
            UpstreamAuth::None
        }
    };
    let headers = with(&mut o, "headers", |n| headers(n, false)).unwrap_or_default();
    let compression = match protocol {
        Protocol::Otlp => with(&mut o, "compression", |n| {
            n.choice(&[("gzip", Compression::Gzip), ("none", Compression::None)])
        })
        .unwrap_or(DEFAULT_COMPRESSION),
        // Remote write is snappy-compressed by definition: no `compression` key.
        Protocol::PushUrl => Compression::None,
    };
    let timeout = with(&mut o, "timeout", |n| n.parse(parse_duration)).unwrap_or(DEFAULT_TIMEOUT);
    let retry = with(&mut o, "retry", retry).unwrap_or(DEFAULT_RETRY);
    if timeout.is_zero() || timeout > *TIMEOUT_RANGE.end() {
        o.problems()
            .push(&o.child_path("timeout"), must_be_between(&TIMEOUT_RANGE));
    }
    o.finish();
    Some(Endpoint {
        endpoint: endpoint?,
        auth,
        headers,
        compression,
        timeout,
        retry,
    })
}

/// A base URL the signal paths are appended to, without its trailing `/`. It may not carry
/// a user name or password: frugal prints its endpoints, and credentials have their keys.
fn endpoint(s: &str) -> Result<String, String> {
    let s = s.trim().trim_end_matches('/');
    match check_http_url(s) {
        Ok(()) => Ok(s.to_string()),
        // Not repeated here: the message would print the password.
        Err(BadUrl::Credentials) => Err(
            "must not contain a user name or password (user:password@host): put them in basic_auth: {username, password} (or bearer_token) instead"
                .into(),
        ),
        Err(BadUrl::NotHttp) => Err(format!(
            "{s:?} is not an http:// or https:// URL (try https://otlp-gateway-prod-eu-west-2.grafana.net/otlp)"
        )),
    }
}

/// Why a URL is refused.
pub(super) enum BadUrl {
    /// It has `user:password@` before its host.
    Credentials,
    /// It is not an http:// or https:// URL with a host.
    NotHttp,
}

/// Whether `s` is an http(s) URL with a host and without credentials in it.
pub(super) fn check_http_url(s: &str) -> Result<(), BadUrl> {
    if has_userinfo(s) {
        return Err(BadUrl::Credentials);
    }
    let ok = (s.starts_with("http://") || s.starts_with("https://"))
        && s.parse::<http::Uri>().is_ok_and(|u| u.host().is_some());
    if ok { Ok(()) } else { Err(BadUrl::NotHttp) }
}

/// Whether a URL (or something meant to be one) has `userinfo@` before its host.
fn has_userinfo(s: &str) -> bool {
    let rest = s.split_once("://").map_or(s, |(_, rest)| rest);
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    rest[..authority_end].contains('@')
}

/// Extra headers: valid names and values; `Authorization` only where `authorization` allows
/// it (an upstream has keys of its own for it, a webhook does not).
pub(super) fn headers(n: Node<'_>, authorization: bool) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    for (k, v, path) in n.entries()? {
        let value = match v {
            Value::String(s) => s.clone(),
            Value::Number(x) => x.to_string(),
            _ => {
                n.problems.push(&path, "a header value must be a string");
                continue;
            }
        };
        if http::HeaderName::from_bytes(k.as_bytes()).is_err() {
            n.problems.push(&path, "is not a valid header name");
        } else if http::HeaderValue::from_str(&value).is_err() {
            n.problems.push(&path, "is not a valid header value");
        } else if !authorization && k.eq_ignore_ascii_case("authorization") {
            n.problems
                .push(&path, "use basic_auth or bearer_token for Authorization");
        } else {
            out.push((k.to_string(), value));
        }
    }
    Some(out)
}

/// `retry`: its backoffs, and a total that ends before the clients give up.
fn retry(n: Node<'_>) -> Option<Retry> {
    let mut r = n.map()?;
    let initial_backoff = with(&mut r, "initial_backoff", |n| n.parse(parse_duration))
        .unwrap_or(DEFAULT_INITIAL_BACKOFF);
    let max_backoff =
        with(&mut r, "max_backoff", |n| n.parse(parse_duration)).unwrap_or(DEFAULT_MAX_BACKOFF);
    let max_elapsed =
        with(&mut r, "max_elapsed", |n| n.parse(parse_duration)).unwrap_or(DEFAULT_MAX_ELAPSED);
    let problems = r.problems();
    let initial_at = r.child_path("initial_backoff");
    let max_at = r.child_path("max_backoff");
    let elapsed_at = r.child_path("max_elapsed");
    r.finish();
    if initial_backoff < MIN_INITIAL_BACKOFF {
        problems.push(&initial_at, must_be_at_least(MIN_INITIAL_BACKOFF));
    }
    if max_backoff < initial_backoff {
        problems.push(&max_at, "must be at least initial_backoff");
    }
    if !MAX_ELAPSED_RANGE.contains(&max_elapsed) {
        problems.push(
            &elapsed_at,
            format!(
                "{}: keep it under your clients' timeout (10s for the SDKs, 30s for Alloy), or they resend what frugal is still delivering",
                must_be_between(&MAX_ELAPSED_RANGE)
            ),
        );
    }
    Some(Retry {
        initial_backoff,
        max_backoff,
        max_elapsed,
    })
}
