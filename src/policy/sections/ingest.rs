//! The `ingest` section: what frugal accepts from its clients (request size, what one
//! request may hold, the memory all requests in flight may take, and the credential
//! clients must present).

use crate::policy::defaults::{
    DEFAULT_MAX_IN_FLIGHT_BYTES, DEFAULT_MAX_PER_REQUEST, DEFAULT_MAX_REQUEST_BYTES,
    MAX_IN_FLIGHT_BYTES, MAX_VALUE_DEPTH, MIN_IN_FLIGHT_PER_REQUEST_SIZE, MIN_INGEST_SECRET_CHARS,
};
use crate::policy::tree::{Node, Obj, with};
use crate::policy::{Ingest, IngestAuth, MaxPerRequest};
use crate::units::{format_size, parse_size};

use super::upstream::{basic_auth, secret};

/// Reads `ingest`; `None` when it is not a mapping.
pub(in crate::policy) fn build(n: Node<'_>) -> Option<Ingest> {
    let mut o = n.map()?;
    let max = with(&mut o, "max_request_size", |n| n.parse(parse_size))
        .unwrap_or(DEFAULT_MAX_REQUEST_BYTES);
    let in_flight = with(&mut o, "max_in_flight", |n| n.parse(parse_size));
    let max_per_request =
        with(&mut o, "max_per_request", max_per_request).unwrap_or(DEFAULT_MAX_PER_REQUEST);
    let auth = with(&mut o, "auth", auth);
    if max == 0 {
        o.problems()
            .push(&o.child_path("max_request_size"), "must be more than 0");
    }
    let least = max.saturating_mul(MIN_IN_FLIGHT_PER_REQUEST_SIZE);
    let in_flight = match in_flight {
        Some(b) if b < least => {
            o.problems().push(
                &o.child_path("max_in_flight"),
                format!(
                    "must be at least {} (twice max_request_size: a largest body and its decompressed form)",
                    format_size(least)
                ),
            );
            b
        }
        Some(b) if b > MAX_IN_FLIGHT_BYTES => {
            o.problems().push(
                &o.child_path("max_in_flight"),
                format!("must be at most {}", format_size(MAX_IN_FLIGHT_BYTES)),
            );
            b
        }
        Some(b) => b,
        // A larger max_request_size raises the default with it.
        None => DEFAULT_MAX_IN_FLIGHT_BYTES.max(least.min(MAX_IN_FLIGHT_BYTES)),
    };
    o.finish();
    Some(Ingest {
        max_request_bytes: max,
        max_in_flight_bytes: in_flight,
        max_per_request,
        auth,
    })
}

/// `ingest.max_per_request`: counts, each more than 0; keys left out keep their defaults.
fn max_per_request(n: Node<'_>) -> Option<MaxPerRequest> {
    let mut o = n.map()?;
    let d = DEFAULT_MAX_PER_REQUEST;
    fn count(o: &mut Obj<'_>, key: &'static str, default: u64) -> u64 {
        let v = with(o, key, |n| n.u64());
        if v == Some(0) {
            o.problems().push(&o.child_path(key), "must be more than 0");
        }
        v.unwrap_or(default)
    }
    let resources = count(&mut o, "resources", d.resources);
    let scopes = count(&mut o, "scopes", d.scopes);
    let items = count(&mut o, "items", d.items);
    let attributes = count(&mut o, "attributes", d.attributes);
    let depth = count(&mut o, "depth", u64::from(d.depth));
    if depth > MAX_VALUE_DEPTH {
        o.problems().push(
            &o.child_path("depth"),
            format!(
                "must be at most {MAX_VALUE_DEPTH} (deeper values pass the protobuf decoder's own nesting limit)"
            ),
        );
    }
    o.finish();
    Some(MaxPerRequest {
        resources,
        scopes,
        items,
        attributes,
        depth: u32::try_from(depth.min(MAX_VALUE_DEPTH)).unwrap_or(d.depth),
    })
}

/// `ingest.auth`: exactly one of a bearer token or basic auth.
fn auth(n: Node<'_>) -> Option<IngestAuth> {
    let mut a = n.map()?;
    let bearer = with(&mut a, "bearer_token", |n| {
        n.parse(|s| secret(s, MIN_INGEST_SECRET_CHARS))
    });
    let basic = with(&mut a, "basic_auth", |n| {
        basic_auth(n, MIN_INGEST_SECRET_CHARS)
    });
    let path = a.path.clone();
    // A credential given but refused has its own problem already.
    let given = a.has("bearer_token") || a.has("basic_auth");
    a.finish();
    match (bearer, basic) {
        (Some(t), None) => Some(IngestAuth::Bearer(t)),
        (None, Some((username, password))) => Some(IngestAuth::Basic { username, password }),
        (Some(_), Some(_)) => {
            n.problems
                .push(&path, "give either bearer_token or basic_auth, not both");
            None
        }
        (None, None) if given => None,
        (None, None) => {
            n.problems.push(
                &path,
                "needs bearer_token or basic_auth: {username, password}",
            );
            None
        }
    }
}
