//! Sending to upstream: the only outbound calls besides the notifier's.
//!
//! [`Export`] is the seam the ingest path calls: it takes a [`Destination`] (an upstream
//! and its wire format) and an encoded body. [`Forwarder`] is the production
//! implementation: one [`HttpUpstream`] per configured destination, each a pooled
//! keep-alive HTTP client (HTTP/2 over TLS where the server offers it) with the policy's
//! auth, headers, per-attempt timeout and retries with backoff and jitter on connection
//! errors, 429 and 5xx, honouring `Retry-After`, all within the request's deadline. What
//! differs per destination — URL, content type, compression, success answers and which
//! failures upstream may still have billed — is its [`Wire`] (`otlp.rs` today; remote
//! write and Loki push plug in beside it). The simulator plugs in an in-memory upstream
//! instead.
//!
//! Every attempt is metered through the request's [`Metering`] (the ledger's charge): an
//! attempt after the first is billed before it is sent (and not sent if it would pass the
//! limit); one that certainly did not reach upstream is given back.

mod loki;
mod otlp;
mod remote_write;
pub mod retry;
mod upstream;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::HeaderValue;
use jiff::Timestamp;

use crate::clock::SharedClock;
use crate::model::{Destination, PerDestination, RejectReason};
use crate::policy::{Compression, Policy};
use crate::stats::Stats;
pub use loki::LokiWire;
pub use otlp::OtlpWire;
pub use remote_write::RemoteWriteWire;
use retry::BillsAt;
pub use upstream::{HttpUpstream, https_client};

/// How each attempt is billed.
pub trait Metering: Send + Sync {
    /// Bills another attempt before it is sent; false if it may not be (the limit).
    fn again(&self) -> bool;
    /// The last attempt certainly did not reach upstream.
    fn not_arrived(&self, reason: RejectReason);
}

/// What the ingest path hands the forwarder besides the body.
#[derive(Clone, Default)]
pub struct ExportContext {
    /// The client's own `Authorization` header (forwarded only with `pass_through_auth`).
    pub client_auth: Option<HeaderValue>,
    /// When frugal must have answered the client: retries end before it.
    pub deadline: Option<Timestamp>,
    /// Bills each attempt (none: attempts are not metered).
    pub metering: Option<Arc<dyn Metering>>,
}

/// How an export ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Upstream acknowledged. `rejected` items of a partial success, with its message.
    Accepted {
        /// Items upstream reported it rejected.
        rejected: u64,
        /// Upstream's message about them.
        message: String,
    },
    /// Upstream refused it for good (4xx).
    Rejected {
        /// The HTTP status.
        status: u16,
        /// Upstream's message.
        message: String,
    },
    /// Upstream could not take it before the deadline: the client should retry after this.
    Unavailable {
        /// When the client should retry.
        retry_after: Duration,
        /// Why, for the client.
        message: String,
    },
}

/// Where encoded bodies go: one call per request, retries included.
pub trait Export: Send + Sync + 'static {
    /// Sends `body` (the destination's protobuf, not yet compressed) to `to`.
    fn export(&self, to: Destination, body: Bytes, ctx: ExportContext) -> BoxFuture<'_, Outcome>;
}

/// What differs between upstream protocols, for [`HttpUpstream`].
pub trait Wire: Send + Sync + 'static {
    /// The destination this wire sends to.
    fn destination(&self) -> Destination;
    /// The request URL, from the policy's endpoint.
    fn url(&self, endpoint: &str) -> String;
    /// The body's content type.
    fn content_type(&self) -> &'static str;
    /// Headers the protocol adds to every request.
    fn headers(&self) -> &'static [(&'static str, &'static str)] {
        &[]
    }
    /// The body as sent and its `Content-Encoding`, given the policy's compression.
    fn encode(&self, body: Bytes, compression: Compression) -> (Bytes, Option<&'static str>);
    /// When the backend bills what it receives (which failed attempts count).
    fn bills_at(&self) -> BillsAt;
    /// Items upstream rejected in a 2xx answer, with its message (a partial success).
    fn partial_success(&self, body: &[u8], json: bool) -> Option<(u64, String)>;
}

/// The production [`Export`]: an [`HttpUpstream`] per configured destination.
pub struct Forwarder {
    upstreams: PerDestination<Option<HttpUpstream>>,
}

impl Forwarder {
    /// The upstreams the policy configures.
    pub fn from_policy(policy: &Policy, clock: &SharedClock, stats: &Arc<Stats>) -> Self {
        let upstreams = PerDestination::from_fn(|d| {
            let (config, wire): (_, Arc<dyn Wire>) = match d {
                Destination::RemoteWrite => (
                    policy.upstream.remote_write.clone()?,
                    Arc::new(RemoteWriteWire),
                ),
                Destination::Loki => (policy.upstream.loki.clone()?, Arc::new(LokiWire)),
                _ => (
                    policy.upstream.otlp.clone(),
                    Arc::new(OtlpWire::new(d.signal())),
                ),
            };
            Some(HttpUpstream::new(
                config,
                wire,
                clock.clone(),
                stats.clone(),
            ))
        });
        Self { upstreams }
    }

    /// Where each destination goes, for the startup log (no credentials).
    pub fn describe(&self) -> String {
        self.upstreams
            .iter()
            .filter_map(|(d, u)| {
                u.as_ref()
                    .map(|u| format!("{}={}", d.as_str(), redacted(u.url())))
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl Export for Forwarder {
    fn export(&self, to: Destination, body: Bytes, ctx: ExportContext) -> BoxFuture<'_, Outcome> {
        match &self.upstreams[to] {
            Some(u) => Box::pin(u.send(body, ctx)),
            None => Box::pin(async move {
                // Receivers refuse such requests before decoding them: this is a safety
                // net. Nothing was sent, so nothing stays billed.
                if let Some(m) = &ctx.metering {
                    m.not_arrived(RejectReason::Unreachable);
                }
                Outcome::Unavailable {
                    retry_after: Duration::from_secs(60),
                    message: not_configured(to),
                }
            }),
        }
    }
}

/// What to configure for a destination the policy gives no upstream.
pub fn not_configured(to: Destination) -> String {
    match to {
        Destination::Loki => "Loki push is not configured: set upstream.loki.endpoint in the policy (the full push URL, Grafana Cloud's .../loki/api/v1/push) or start frugal with --upstream-loki URL".to_string(),
        Destination::RemoteWrite => "remote write is not configured: set upstream.remote_write.endpoint in the policy (the full push URL, Grafana Cloud's .../api/prom/push) or start frugal with --upstream-remote-write URL".to_string(),
        other => format!("no upstream is configured for {}", other.as_str()),
    }
}

/// A URL with any `user:password@` replaced, for logs.
pub fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://<redacted>@{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

/// The message of an error answer: a JSON `message`, a `google.rpc.Status`'s, or the text.
pub(crate) fn error_message(body: &[u8], json: bool) -> String {
    use prost::Message as _;
    let text = if json {
        serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| {
                v.get("message")
                    .and_then(|m| m.as_str())
                    .map(str::to_string)
            })
    } else {
        crate::proto::rpc::Status::decode(body)
            .ok()
            .map(|s| s.message)
    };
    let text = text
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    text.chars().take(300).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_urls_are_not_logged() {
        assert_eq!(
            redacted("https://u:p@otlp.example/otlp/v1/traces"),
            "https://<redacted>@otlp.example/otlp/v1/traces"
        );
        assert_eq!(redacted("http://h:1/a@b"), "http://h:1/a@b");
        assert_eq!(redacted("not a url"), "not a url");
    }
}
