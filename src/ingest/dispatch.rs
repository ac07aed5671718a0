//! Stage 3: send to the payload's destination and settle with the client.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::{Accepted, IngestError, Payload, RequestMeta, Reserved, Ticket};
use crate::core::Core;
use crate::forwarder::{ExportContext, Metering, Outcome};
use crate::ledger::Charge;
use crate::model::{Destination, RejectReason, Unit};
use crate::stats::{Stats, inc};

/// Bodies up to this size are encoded on the async worker (a millisecond or so).
const ENCODE_INLINE_MAX: usize = 1024 * 1024;

/// How long before the client's own deadline frugal answers.
const DEADLINE_MARGIN_MS: i64 = 500;

/// Sends `r` upstream and turns the answer into the client's.
pub async fn dispatch<P: Payload>(
    core: &Core,
    r: Reserved<P>,
    meta: RequestMeta,
) -> Result<Accepted, IngestError> {
    let Reserved { req, charge } = r;
    // Always the canonical encoding of what was metered, never the body as received: that
    // may carry fields unknown to frugal's types, or over-long varints, and still have the
    // same length (checking its bytes would cost an encoding too; BENCHMARKS.md).
    let body = encode(req, meta.ticket.as_ref()).await;
    // While upstream answers, the request holds its body (and the wire's compressed copy),
    // no longer its decoded form.
    if let Some(t) = &meta.ticket {
        t.shrink_to(body.len() as u64 + body.len() as u64 / 4);
    }
    send_encoded(core, P::DESTINATION, body, charge, meta).await
}

/// Sends `body`, already encoded from what `charge` holds, to `destination`, and turns
/// upstream's answer into the client's (the tail sampler's decided traces come here).
pub async fn send_encoded(
    core: &Core,
    destination: Destination,
    body: Bytes,
    charge: Charge,
    meta: RequestMeta,
) -> Result<Accepted, IngestError> {
    let billing = Arc::new(Billing {
        charge,
        stats: core.stats.clone(),
    });
    billing.count_sent();
    let deadline = meta.deadline.map(|d| {
        // Answer a little before the client gives up.
        let margin = jiff::SignedDuration::from_millis(DEADLINE_MARGIN_MS);
        d.checked_sub(margin).unwrap_or(d)
    });
    let ctx = ExportContext {
        client_auth: meta.client_auth,
        deadline,
        metering: Some(billing.clone()),
    };
    let outcome = core.upstream.export(destination, body, ctx).await;
    settle(&billing, &outcome)
}

/// Encodes `req`, off the async workers (and one per core at a time) when it is large: a
/// 16 MiB body takes tens of milliseconds.
async fn encode<P: Payload>(req: P, ticket: Option<&Ticket>) -> Bytes {
    let len = req.encoded_len();
    let run = move || {
        let mut buf = Vec::with_capacity(len);
        req.encode_raw(&mut buf);
        Bytes::from(buf)
    };
    if len <= ENCODE_INLINE_MAX {
        return run();
    }
    let _turn = match ticket {
        Some(t) => t.heavy_turn().await,
        None => None,
    };
    super::off_the_workers(run)
}

/// Turns upstream's answer into the client's. Attempts were billed as they went (see
/// [`Billing`]); what is left is the acknowledgement.
fn settle(billing: &Billing, outcome: &Outcome) -> Result<Accepted, IngestError> {
    let sig = billing.charge.signal().as_str();
    match outcome {
        Outcome::Accepted { rejected, message } => {
            let items = billing.charge.weight().items;
            let rejected = (*rejected).min(items);
            billing.charge.acked(rejected);
            inc(&billing.stats.acked_items, &[sig], items - rejected);
            inc(
                &billing.stats.rejected_items,
                &[sig, RejectReason::Partial.as_str()],
                rejected,
            );
            Ok(Accepted {
                rejected,
                message: message.clone(),
            })
        }
        // The data itself was refused: the client should know, and not resend it.
        Outcome::Rejected { status, message } if matches!(status, 400 | 413 | 422) => {
            Err(IngestError::UpstreamRejected {
                status: *status,
                message: message.clone(),
            })
        }
        // Anything else is frugal's own configuration (credentials, endpoint) or a
        // redirect: nothing is wrong with the client's data, so it keeps it and retries.
        Outcome::Rejected { status, message } => {
            tracing::error!(
                signal = sig,
                status,
                %message,
                "upstream refused frugal's request: check the upstream endpoint and credentials"
            );
            Err(IngestError::Unavailable {
                retry_after: Duration::from_secs(30),
                message: format!(
                    "upstream refused frugal's request ({status}): the proxy's endpoint or credentials need fixing; retry later"
                ),
            })
        }
        Outcome::Unavailable {
            retry_after,
            message,
        } => Err(IngestError::Unavailable {
            retry_after: *retry_after,
            message: message.clone(),
        }),
    }
}

/// Bills each attempt to upstream: the ledger's charge (held to the period it was made in)
/// and frugal's own counters.
pub struct Billing {
    charge: Charge,
    stats: Arc<Stats>,
}

impl Billing {
    fn count_sent(&self) {
        let signal = self.charge.signal();
        let w = self.charge.weight();
        inc(&self.stats.sent_items, &[signal.as_str()], w.items);
        if signal.budget_unit() == Unit::Bytes {
            inc(&self.stats.sent_bytes, &[signal.as_str()], w.units);
        }
    }
}

impl Metering for Billing {
    fn again(&self) -> bool {
        let ok = self.charge.again();
        if ok {
            self.count_sent();
        }
        ok
    }

    fn not_arrived(&self, reason: RejectReason) {
        self.charge.not_arrived(reason);
        let signal = self.charge.signal();
        inc(
            &self.stats.rejected_items,
            &[signal.as_str(), reason.as_str()],
            self.charge.weight().items,
        );
    }
}
