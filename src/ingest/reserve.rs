//! Stage 2: hold to the per-second limit and to the period's budget.

use super::{Admitted, Payload, minus, record_drop};
use crate::core::Core;
use crate::ledger::Charge;
use crate::metering::Weight;
use crate::model::{Class, DropReason, Signal};
use crate::policy::{AtLimit, ByteBudget};
use crate::sampling::Account;
use crate::sampling::memory::Remember;

/// A request whose billable units are held in the ledger: ready to send.
pub struct Reserved<P: Payload> {
    /// What will be sent.
    pub req: P,
    /// The units held, bound to the period they were held in.
    pub charge: Charge,
}

/// Holds the budget for `a`: drops non-priority items over the rate limit, then reserves
/// against the target (or the limit, for priority items with `keep_priority`), dropping
/// non-priority items past the target. `None` when nothing may be sent (answered 2xx:
/// frugal dropped it by policy). Shadow mode holds nothing back and counts what it would.
pub fn reserve<P: Payload>(core: &Core, a: Admitted<P>) -> Option<Reserved<P>> {
    let signal = P::SIGNAL;
    let Admitted {
        mut req,
        decisions,
        account,
        mut kept,
        policy,
    } = a;
    let budget = policy.budgets.bytes(signal);
    if policy.shadow {
        // Everything goes, but what the budget would have stopped is counted.
        if let Some(b) = budget {
            let rest = minus(kept, account.kept[Class::Priority]);
            if core.ledger.used(signal).saturating_add(kept.units) > b.target_bytes() {
                record_drop(core, signal, DropReason::AtLimit, rest, true);
            }
        }
        let charge = core.ledger.charge(signal, kept);
        return Some(Reserved { req, charge });
    }
    // The per-second limit: non-priority items give way first.
    if let Some(gate) = &core.rate_gates.load()[signal]
        && gate.try_take(kept.units).is_err()
    {
        let priority = account.kept[Class::Priority];
        record_drop(
            core,
            signal,
            DropReason::RateLimit,
            minus(kept, priority),
            false,
        );
        keep_only_priority(core, &mut req, &decisions);
        if req.is_empty() {
            return None;
        }
        kept = req.weigh();
    }
    let charge = match budget {
        None => core.ledger.charge(signal, kept),
        Some(b) => hold(core, signal, b, &mut req, &decisions, &account, kept)?,
    };
    Some(Reserved { req, charge })
}

/// Reserves `kept` against the budget; past the target, keeps only priority items (with
/// `keep_priority`) and reserves them against the limit.
fn hold<P: Payload>(
    core: &Core,
    signal: Signal,
    b: &ByteBudget,
    req: &mut P,
    decisions: &[P::Decision],
    account: &Account,
    kept: Weight,
) -> Option<Charge> {
    let target = b.target_bytes();
    let priority_cap = match b.at_limit {
        AtLimit::KeepPriority => b.effective_limit(),
        AtLimit::DropAll => target,
    };
    let priority = account.kept[Class::Priority];
    let only_priority = priority.items == kept.items;
    let cap = if only_priority { priority_cap } else { target };
    if let Some(charge) = core.ledger.reserve(signal, kept, cap) {
        return Some(charge);
    }
    if !only_priority && priority.items > 0 && b.at_limit == AtLimit::KeepPriority {
        keep_only_priority(core, req, decisions);
        let w = req.weigh();
        record_drop(core, signal, DropReason::AtLimit, minus(kept, w), false);
        if let Some(charge) = core.ledger.reserve(signal, w, priority_cap) {
            return Some(charge);
        }
        record_drop(core, signal, DropReason::AtLimit, w, false);
        super::record_priority_drop(core, signal, w.items);
        remember_dropped(core, req.trace_ids(), &[]);
        return None;
    }
    record_drop(core, signal, DropReason::AtLimit, kept, false);
    super::record_priority_drop(core, signal, priority.items);
    remember_dropped(core, req.trace_ids(), &[]);
    None
}

/// Keeps only the priority items of `req` (a gate stopped the rest).
fn keep_only_priority<P: Payload>(core: &Core, req: &mut P, decisions: &[P::Decision]) {
    let before = req.trace_ids();
    req.retain_class(decisions, Class::Priority);
    remember_dropped(core, before, &req.trace_ids());
}

/// Remembers the traces of `before` not in `after`, whose spans a gate dropped, as
/// dropped (probability 0), so their logs, arriving later, do not outlive them.
fn remember_dropped(core: &Core, before: Vec<[u8; 16]>, after: &[[u8; 16]]) {
    if before.is_empty() {
        return;
    }
    let still: std::collections::HashSet<&[u8; 16]> = after.iter().collect();
    let mut memory = core.traces.session(core.clock.now(), Remember::Never);
    for id in before.iter().filter(|id| !still.contains(id)) {
        memory.set(id, crate::model::PerClass::default());
    }
}
