//! The `ingest` section: what frugal accepts from its clients (request size, and the
//! credential they must present).

use crate::policy::defaults::{DEFAULT_MAX_REQUEST_BYTES, MIN_INGEST_SECRET_CHARS};
use crate::policy::tree::{Node, with};
use crate::policy::{Ingest, IngestAuth};
use crate::units::parse_size;

use super::upstream::{basic_auth, secret};

/// Reads `ingest`; `None` when it is not a mapping.
pub(in crate::policy) fn build(n: Node<'_>) -> Option<Ingest> {
    let mut o = n.map()?;
    let max = with(&mut o, "max_request_size", |n| n.parse(parse_size))
        .unwrap_or(DEFAULT_MAX_REQUEST_BYTES);
    let auth = with(&mut o, "auth", auth);
    if max == 0 {
        o.problems()
            .push(&o.child_path("max_request_size"), "must be more than 0");
    }
    o.finish();
    Some(Ingest {
        max_request_bytes: max,
        auth,
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
