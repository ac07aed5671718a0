//! The stages of the request path, each a function of the [`Core`] a test can call alone
//! ([`crate::pipeline::handle`] runs a decoded request through them):
//!
//! 1. [`admit`] — put the request in the form the backend measures, decide every item at
//!    the current keep probabilities (the policy's classes, consistent sampling, the
//!    trace memory), count what was offered per class and dropped per reason, and remove
//!    the dropped items. With `traces.tail`, spans go to the tail sampler instead
//!    ([`crate::tail`]), which decides whole traces and then runs the next two stages
//!    itself (so the tail sampler depends on these stages, never the reverse).
//! 2. [`reserve`] — hold to the per-second limit (non-priority items give way first) and
//!    to the budget: the ledger reserves the request's billable units atomically against
//!    the target (or the limit, for priority items with `keep_priority`).
//! 3. [`dispatch`] — encode what changed, send it to the payload's destination, and turn
//!    upstream's answer into the client's: acknowledged, refused (units given back only
//!    when no attempt may have arrived), or unavailable (503 with `Retry-After`).
//!
//! A 2xx is answered only after upstream acknowledged the data, or when frugal dropped it
//! by policy, or (with `traces.tail`) when the spans are in the tail sampler's spool on
//! disk. In shadow mode every decision is counted but everything is forwarded.

mod admit;
mod dispatch;
mod inflight;
mod payload;
mod reserve;

use std::time::Duration;

use http::HeaderValue;
use jiff::Timestamp;

use crate::core::Core;
use crate::metering::Weight;
use crate::model::{DropReason, Signal};
use crate::stats::inc;
pub use admit::{Admitted, admit};
pub(crate) use admit::{count_decided, within_size};
pub use dispatch::{Billing, dispatch, send_encoded};
pub use inflight::{InFlight, Ticket};
pub use payload::Payload;
pub use reserve::{Reserved, reserve};

/// How a request arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// OTLP/HTTP.
    Http,
    /// OTLP/gRPC.
    Grpc,
    /// `frugal simulate`.
    Simulated,
    /// Released by the tail sampler (`traces.tail`), after the client was answered.
    Tail,
}

impl Transport {
    /// The transport's name (a metric label value).
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Http => "http",
            Transport::Grpc => "grpc",
            Transport::Simulated => "simulated",
            Transport::Tail => "tail",
        }
    }
}

/// What the receiver knows about a request besides its items.
#[derive(Debug, Clone)]
pub struct RequestMeta {
    /// How it arrived.
    pub transport: Transport,
    /// The client's `Authorization` header (forwarded only with `pass_through_auth`).
    pub client_auth: Option<HeaderValue>,
    /// When the client stops waiting, if it said (gRPC `grpc-timeout`).
    pub deadline: Option<Timestamp>,
    /// What the request holds of the in-flight budget: shrunk to the body sent once the
    /// decoded request is encoded and dropped.
    pub ticket: Option<Ticket>,
}

impl RequestMeta {
    /// A request with nothing known but its transport.
    pub fn new(transport: Transport) -> Self {
        Self {
            transport,
            client_auth: None,
            deadline: None,
            ticket: None,
        }
    }
}

/// A request frugal took responsibility for: forwarded and acknowledged, or dropped by
/// policy. `rejected` relays an upstream partial success.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Accepted {
    /// Items upstream reported it rejected (a partial success).
    pub rejected: u64,
    /// Upstream's message about them.
    pub message: String,
}

/// Why a request was not accepted. The receivers answer it with the HTTP or gRPC status
/// `crate::receivers::status` maps it to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IngestError {
    /// The request is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// The content type or encoding is not one frugal reads.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The request is over a size limit.
    #[error("{0}")]
    TooLarge(String),
    /// The request body did not arrive in time (`listen.connections.request_timeout`).
    #[error("{0}")]
    TimedOut(String),
    /// The ingest credential is missing or wrong.
    #[error("missing or wrong credentials")]
    Unauthorized,
    /// frugal cannot take it now; the client should retry after `retry_after`.
    #[error("{message}")]
    Unavailable {
        /// When to retry.
        retry_after: Duration,
        /// Why.
        message: String,
    },
    /// The request needs an upstream the policy does not configure (remote write without
    /// `upstream.remote_write`): 404, saying what to set.
    #[error("{0}")]
    NotConfigured(String),
    /// Upstream refused the data itself (400, 413, 422): the client should not resend it.
    #[error("upstream refused the data ({status}): {message}")]
    UpstreamRejected {
        /// Upstream's HTTP status.
        status: u16,
        /// Upstream's message.
        message: String,
    },
}

/// Runs `f`, which may take long (decompressing, decoding, encoding a large request),
/// without holding up the other tasks: on the multi-threaded runtime through
/// `block_in_place` (the worker hands its queued tasks to another thread while this one
/// works; the request's data stays on the thread that allocated it, warm in its cache and
/// freed where it was allocated), elsewhere (single-threaded tests, the simulator) in
/// place.
pub fn off_the_workers<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Counts priority items frugal dropped (already counted by reason).
pub(crate) fn record_priority_drop(core: &Core, signal: Signal, items: u64) {
    inc(
        &core.stats.priority_dropped_items,
        &[signal.as_str()],
        items,
    );
}

/// Counts items frugal dropped (or, in shadow mode, would have).
pub(crate) fn record_drop(
    core: &Core,
    signal: Signal,
    reason: DropReason,
    w: Weight,
    shadow: bool,
) {
    if w.is_zero() {
        return;
    }
    if shadow {
        core.ledger.shadow_dropped(signal, reason, w);
        return;
    }
    core.ledger.dropped(signal, reason, w);
    let labels = [signal.as_str(), reason.as_str()];
    inc(&core.stats.dropped_items, &labels, w.items);
    if signal.budget_unit() == crate::model::Unit::Bytes {
        inc(&core.stats.dropped_bytes, &labels, w.units);
    }
}

fn minus(a: Weight, b: Weight) -> Weight {
    Weight {
        items: a.items.saturating_sub(b.items),
        units: a.units.saturating_sub(b.units),
    }
}

#[cfg(test)]
mod tests;
