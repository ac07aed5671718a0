//! Stage 1: decide every item, count what was offered and dropped, remove the dropped.

use std::sync::Arc;

use super::{Payload, record_drop};
use crate::budget::controller::PacingState;
use crate::core::Core;
use crate::metering::Weight;
use crate::model::{DropReason, Unit};
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

/// Decides `req` at the current pacing. `None` when nothing is left to send (everything
/// was dropped by policy: the client is answered 2xx).
pub fn admit<P: Payload>(core: &Core, mut req: P) -> Option<Admitted<P>> {
    let signal = P::SIGNAL;
    let sig = signal.as_str();
    let policy = core.policy();
    let pacing = core.pacing.load();
    req.canonicalize();
    let offered = req.weigh();
    let (decisions, mut account) = {
        let remember = match pacing.signal(crate::model::Signal::Traces).state {
            PacingState::Pacing => Remember::Always,
            PacingState::Unconstrained => Remember::Logs,
            PacingState::PriorityOnly | PacingState::Stopped => Remember::Never,
        };
        let mut memory = core.traces.session(core.clock.now(), remember);
        P::decide(&policy, &pacing, &mut memory, &req)
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
    inc(&core.stats.received_items, &[sig], offered.items);
    if signal.budget_unit() == Unit::Bytes {
        inc(&core.stats.received_bytes, &[sig], offered.units);
    }
    for (class, w) in account.offered.iter() {
        if !w.is_zero() {
            core.ledger.offered(signal, class, *w);
        }
    }
    for (reason, w) in account.dropped.iter() {
        record_drop(core, signal, reason, *w, policy.shadow);
    }
    if !policy.shadow && account.modified {
        req.apply(&policy, &decisions);
    }
    if req.is_empty() {
        return None;
    }
    let kept = if account.modified || policy.shadow {
        req.weigh()
    } else {
        offered
    };
    Some(Admitted {
        req,
        decisions,
        account,
        kept,
        policy,
    })
}
