//! Stage 1: decide every item, count what was offered and dropped, remove the dropped.

use std::sync::Arc;

use super::{IngestError, Payload, record_drop};
use crate::budget::controller::PacingState;
use crate::core::Core;
use crate::metering::Weight;
use crate::model::{Class, DropReason, Signal, Unit};
use crate::policy::Policy;
use crate::sampling::Account;
use crate::sampling::memory::Remember;
use crate::stats::inc;

/// A request whose items are decided: what is left of it, and how it was judged.
pub struct Admitted<P: Payload> {
    /// The request, dropped items removed and kept ones marked (unless in shadow mode).
    pub req: P,
    /// Each item's decision, in request order (as decided, before removal).
    pub decisions: Vec<P::Decision>,
    /// Offered, kept and dropped weights.
    pub account: Account,
    /// What is left to send.
    pub kept: Weight,
    /// The policy it was judged under (the next stages use the same).
    pub policy: Arc<Policy>,
}

/// Decides `req` at the current pacing. `None` when nothing is left to send (it held no
/// items, or everything was dropped by policy: the client is answered 2xx). Refused (413,
/// before anything is counted or billed) when the body frugal would forward is larger than
/// `ingest.max_request_size`.
pub fn admit<P: Payload>(core: &Core, mut req: P) -> Result<Option<Admitted<P>>, IngestError> {
    let signal = P::SIGNAL;
    let sig = signal.as_str();
    let policy = core.policy();
    let pacing = core.pacing.load();
    // Resources and scopes without items bill bytes for nothing: they go first, and a
    // request of nothing else is answered without counting or forwarding anything.
    req.prune();
    if req.is_empty() {
        return Ok(None);
    }
    req.canonicalize();
    let (offered, encoded_len) = req.weigh_encoded();
    let max = policy.ingest.max_request_bytes;
    within_size(encoded_len, max)?;
    let (decisions, mut account) = {
        let remember = match pacing.signal(crate::model::Signal::Traces).state {
            PacingState::Pacing => Remember::Always,
            PacingState::Unconstrained => Remember::Logs,
            PacingState::PriorityOnly | PacingState::Stopped => Remember::Never,
        };
        let now = core.clock.now();
        let streams = core.streams.load();
        let mut memory = core.traces.session(now, remember);
        let mut ctx = super::payload::Deciding {
            policy: &policy,
            pacing: &pacing,
            memory: &mut memory,
            series: &core.series,
            streams: streams.as_deref(),
            now,
        };
        P::decide(&mut ctx, &req)
    };
    account.scale_units_to(offered.units);
    if matches!(
        pacing.signal(signal).state,
        PacingState::Stopped | PacingState::PriorityOnly
    ) {
        // Past the target the probabilities are 0 because of the limit: say so.
        let sampled = std::mem::take(&mut account.dropped[DropReason::Sampled]);
        account.dropped[DropReason::AtLimit].add(sampled);
    }
    if !policy.shadow && account.modified {
        req.apply(&policy, &decisions);
    }
    let kept = if account.modified || policy.shadow {
        let (kept, len) = req.weigh_encoded();
        // Marking kept spans adds to them: what goes out is held to the limit too.
        if !req.is_empty() {
            within_size(len, max)?;
        }
        kept
    } else {
        offered
    };
    inc(&core.stats.received_items, &[sig], offered.items);
    if signal.budget_unit() == Unit::Bytes {
        inc(&core.stats.received_bytes, &[sig], offered.units);
    }
    count_decided(core, signal, &account, policy.shadow);
    if req.is_empty() {
        return Ok(None);
    }
    Ok(Some(Admitted {
        req,
        decisions,
        account,
        kept,
        policy,
    }))
}

/// Counts what `account` says was decided: offered per class, dropped per reason, and
/// priority items dropped (the tail sampler counts its decisions here too).
pub(crate) fn count_decided(core: &Core, signal: Signal, account: &Account, shadow: bool) {
    for (class, w) in account.offered.iter() {
        if !w.is_zero() {
            core.ledger.offered(signal, class, *w);
        }
    }
    for (reason, w) in account.dropped.iter() {
        record_drop(core, signal, reason, *w, shadow);
    }
    if !shadow {
        let offered = account.offered[Class::Priority].items;
        let kept = account.kept[Class::Priority].items;
        super::record_priority_drop(core, signal, offered.saturating_sub(kept));
    }
}

/// Refuses a body of `len` bytes, as frugal would forward it, over `max`.
pub(crate) fn within_size(len: usize, max: u64) -> Result<(), IngestError> {
    if len as u64 > max {
        return Err(IngestError::TooLarge(format!(
            "the request is {} in the form frugal forwards (absent messages written out, kept \
             spans marked), more than ingest.max_request_size ({}): send smaller batches",
            crate::units::format_size(len as u64),
            crate::units::format_size(max)
        )));
    }
    Ok(())
}
