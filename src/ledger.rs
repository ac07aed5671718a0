//! The period's usage, counted in memory and persisted through a [`UsageStore`].
//!
//! Every outcome of every item is counted here: offered (per priority class), dropped (per
//! reason), sent, acknowledged and rejected (per reason). The budget's *used* figure is
//! `sent - rejected + adjustments`: a request that may have reached upstream counts, and
//! only a definite rejection is taken back, so usage is never under-counted.
//!
//! Sending reserves first ([`Ledger::reserve`]): the reservation succeeds only while
//! `used + units <= cap`, atomically, which is what keeps a period from ever going over its
//! limit however many requests race for the last bytes.
//!
//! [`Ledger::flush`] writes the deltas since the last flush to the store (the app calls it
//! every `flush_interval`; at most that much metering is lost on a crash), and with them,
//! in the same `add`, what they moved each signal's `used` by in the hour of the flush
//! ([`crate::history`]; [`Ledger::history`] reads it back). When the clock
//! passes the period's end, [`Ledger::roll`] starts the next period from the store's
//! counters for it; the finished period keeps being flushed until it is quiet, so late
//! increments are not lost. No I/O happens on the request path.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use jiff::Timestamp;

use crate::history::{History, Movement};
use crate::metering::Weight;
use crate::model::{
    Class, DropReason, PerClass, PerDropReason, PerRejectReason, PerSignal, RejectReason, Signal,
};
use crate::period::{Period, PeriodSpec};
use crate::store::{Counters, StoreError, UsageStore};
use crate::table::Key;

/// An item count and its billable units (bytes; data points for metrics).
#[derive(Debug, Default)]
struct Pair {
    items: AtomicU64,
    units: AtomicU64,
}

/// Adds `v` to `a`, stopping at `u64::MAX` instead of wrapping (a counter that wrapped
/// would read as a nearly empty budget).
fn saturating_add(a: &AtomicU64, v: u64) {
    if v == 0 {
        return;
    }
    // `fetch_update` retries until its closure's answer is stored; the closure always
    // answers, so this never fails.
    let _ = a.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |x| {
        Some(x.saturating_add(v))
    });
}

impl Pair {
    fn add(&self, items: u64, units: u64) {
        saturating_add(&self.items, items);
        saturating_add(&self.units, units);
    }

    fn get(&self) -> Weight {
        Weight {
            items: self.items.load(Ordering::Relaxed),
            units: self.units.load(Ordering::Relaxed),
        }
    }

    fn set(&self, w: Weight) {
        self.items.store(w.items, Ordering::Relaxed);
        self.units.store(w.units, Ordering::Relaxed);
    }
}

/// One signal's counters for one period.
#[derive(Debug, Default)]
struct SignalCounters {
    offered: PerClass<Pair>,
    dropped: PerDropReason<Pair>,
    /// Drops shadow mode would have made (everything was forwarded).
    shadow_dropped: PerDropReason<Pair>,
    sent: Pair,
    acked: Pair,
    rejected: PerRejectReason<Pair>,
    /// `frugal usage set` adjustments (units only).
    adjust_up: Pair,
    adjust_down: Pair,
}

impl SignalCounters {
    fn rejected_units(&self) -> u64 {
        self.rejected
            .values()
            .map(|p| p.units.load(Ordering::Relaxed))
            .fold(0, u64::saturating_add)
    }

    /// What moved `used`: sent and adjusted up, against refused and adjusted down.
    fn movement(&self) -> Movement {
        let units = |p: &Pair| p.units.load(Ordering::Relaxed);
        Movement {
            added: units(&self.sent).saturating_add(units(&self.adjust_up)),
            subtracted: units(&self.adjust_down).saturating_add(self.rejected_units()),
        }
    }

    fn used(&self) -> u64 {
        self.movement().used()
    }

    /// Sets every counter of signal `s` from the store's form (missing names are 0).
    fn set_from(&self, s: Signal, totals: &Counters) {
        let get = |k: &str| totals.get(k).copied().unwrap_or(0);
        self.each(s, |items, units, p| {
            p.set(Weight {
                items: get(&items),
                units: get(&units),
            })
        });
    }

    /// Every counter with its store name (`traces/offered_units/normal`, ...).
    fn each(&self, s: Signal, mut f: impl FnMut(String, String, &Pair)) {
        let mut table = |what: &str, t: &mut dyn Iterator<Item = (&'static str, &Pair)>| {
            for (label, p) in t {
                f(
                    format!("{s}/{what}_items/{label}"),
                    format!("{s}/{what}_units/{label}"),
                    p,
                );
            }
        };
        table(
            "offered",
            &mut self.offered.iter().map(|(k, p)| (k.name(), p)),
        );
        table(
            "dropped",
            &mut self.dropped.iter().map(|(k, p)| (k.name(), p)),
        );
        table(
            "shadow_dropped",
            &mut self.shadow_dropped.iter().map(|(k, p)| (k.name(), p)),
        );
        table(
            "rejected",
            &mut self.rejected.iter().map(|(k, p)| (k.name(), p)),
        );
        for (what, p) in [
            ("sent", &self.sent),
            ("acked", &self.acked),
            ("adjust_up", &self.adjust_up),
            ("adjust_down", &self.adjust_down),
        ] {
            f(format!("{s}/{what}_items"), format!("{s}/{what}_units"), p);
        }
    }
}

/// Where the time frugal began counting in a period is stored (Unix seconds).
const SINCE_KEY: &str = "meta/since_seconds";

/// What stored counters (or a flush's deltas of them) moved `signal`'s `used` by: read
/// into counters of their own, so the sums are [`SignalCounters::movement`]'s.
fn movement(counters: &Counters, signal: Signal) -> Movement {
    let c = SignalCounters::default();
    c.set_from(signal, counters);
    c.movement()
}

/// The counters of one period.
#[derive(Debug)]
struct PeriodCounters {
    period: Period,
    /// When frugal began counting in this period (later than its start in the month
    /// frugal was installed).
    since: Timestamp,
    signals: PerSignal<SignalCounters>,
    /// What the store holds for this period (as of the last successful flush).
    flushed: Mutex<Counters>,
}

impl PeriodCounters {
    fn new(period: Period) -> Self {
        Self {
            period,
            since: period.start,
            signals: Default::default(),
            flushed: Mutex::new(Counters::new()),
        }
    }

    /// Every counter as a name -> value map (the store's form).
    fn snapshot(&self) -> Counters {
        let mut out = Counters::new();
        for (s, c) in self.signals.iter() {
            c.each(s, |items, units, p| {
                let w = p.get();
                out.insert(items, w.items);
                out.insert(units, w.units);
            });
        }
        out.retain(|_, v| *v != 0);
        out
    }

    /// Sets every counter from stored totals (at start-up or when a period begins).
    fn load(&self, totals: &Counters) {
        for (s, c) in self.signals.iter() {
            c.set_from(s, totals);
        }
        *self.flushed.lock().unwrap_or_else(|e| e.into_inner()) = totals.clone();
    }

    /// Writes what changed since the last flush, and its history in the step of `now`.
    /// Returns whether anything was written.
    fn flush(&self, store: &dyn UsageStore, now_at: Timestamp) -> Result<bool, StoreError> {
        // The snapshot is taken under the lock, so two flushes cannot record an older
        // snapshot over a newer one (and write its deltas twice).
        let mut flushed = self.flushed.lock().unwrap_or_else(|e| e.into_inner());
        let now = self.snapshot();
        let mut deltas: Counters = now
            .iter()
            .filter_map(|(k, v)| {
                let old = flushed.get(k).copied().unwrap_or(0);
                v.checked_sub(old)
                    .filter(|d| *d > 0)
                    .map(|d| (k.clone(), d))
            })
            .collect();
        if deltas.is_empty() {
            return Ok(false);
        }
        let moved = PerSignal::from_fn(|s| movement(&deltas, s));
        crate::history::record(&self.period, now_at, &moved, &mut deltas);
        store.add(&self.period.key(), &deltas)?;
        *flushed = now;
        Ok(true)
    }
}

/// Loads a period's counters from the store, noting when counting began in it.
fn open_period(
    store: &dyn UsageStore,
    period: Period,
    now: Timestamp,
) -> Result<PeriodCounters, StoreError> {
    let mut totals = store.totals(&period.key())?;
    if !totals.contains_key(SINCE_KEY) {
        let since = now.clamp(period.start, period.end).as_second().max(0) as u64;
        let mut d = Counters::new();
        d.insert(SINCE_KEY.to_string(), since);
        totals = store.add(&period.key(), &d)?;
    }
    let mut counters = PeriodCounters::new(period);
    if let Some(&secs) = totals.get(SINCE_KEY)
        && let Ok(t) = Timestamp::from_second(secs as i64)
    {
        counters.since = t;
    }
    counters.load(&totals);
    Ok(counters)
}

/// Compare-and-add on `sent` against a cap on `used`.
fn reserve_in(c: &SignalCounters, items: u64, units: u64, cap: u64) -> bool {
    let fixed_up = c.adjust_up.units.load(Ordering::Relaxed);
    let fixed_down = c
        .adjust_down
        .units
        .load(Ordering::Relaxed)
        .saturating_add(c.rejected_units());
    let ok = c
        .sent
        .units
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |sent| {
            let used = sent.saturating_add(fixed_up).saturating_sub(fixed_down);
            (used.saturating_add(units) <= cap).then_some(sent.saturating_add(units))
        })
        .is_ok();
    if ok {
        saturating_add(&c.sent.items, items);
    }
    ok
}

/// One request's bytes, charged to the period that was current when it was reserved.
/// Each attempt to send it that may reach upstream is billed; one that certainly did not is
/// given back.
#[derive(Debug, Clone)]
pub struct Charge {
    counters: Arc<PeriodCounters>,
    signal: Signal,
    weight: Weight,
    /// The cap further attempts are held to (the limit), if the signal has a budget.
    cap: Option<u64>,
}

impl Charge {
    fn c(&self) -> &SignalCounters {
        &self.counters.signals[self.signal]
    }

    /// Bills another attempt; false when it would pass the cap (then it must not be sent).
    pub fn again(&self) -> bool {
        let Weight { items, units } = self.weight;
        match self.cap {
            Some(cap) => reserve_in(self.c(), items, units, cap),
            None => {
                self.c().sent.add(items, units);
                true
            }
        }
    }

    /// The last attempt certainly did not reach upstream: its units come back.
    pub fn not_arrived(&self, reason: RejectReason) {
        self.c().rejected[reason].add(self.weight.items, self.weight.units);
    }

    /// Upstream acknowledged; `rejected` items of a partial success keep their bytes
    /// counted (which ones is not known).
    pub fn acked(&self, rejected: u64) {
        let rejected = rejected.min(self.weight.items);
        self.c().acked.add(
            self.weight.items.saturating_sub(rejected),
            self.weight.units,
        );
        if rejected > 0 {
            self.c().rejected[RejectReason::Partial].add(rejected, 0);
        }
    }

    /// What one attempt bills.
    pub fn weight(&self) -> Weight {
        self.weight
    }

    /// The signal billed.
    pub fn signal(&self) -> Signal {
        self.signal
    }
}

/// A read-only view of one signal's counters, for the API, metrics and the controller.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SignalUsage {
    /// Billable units spent this period (`sent - rejected + adjustments`).
    pub used: u64,
    /// Offered (before sampling) per class.
    pub offered: PerClass<Weight>,
    /// Dropped by frugal, per reason.
    pub dropped: PerDropReason<Weight>,
    /// What shadow mode would have dropped, per reason.
    pub shadow_dropped: PerDropReason<Weight>,
    /// Every attempt that may have reached upstream.
    pub sent: Weight,
    /// Acknowledged by upstream.
    pub acked: Weight,
    /// Certainly refused by (or never sent to) upstream, per reason.
    pub rejected: PerRejectReason<Weight>,
    /// Net adjustment made with `frugal usage set` (may be negative).
    pub adjustment: i64,
}

impl SignalUsage {
    /// Everything offered, all classes together.
    pub fn offered_total(&self) -> Weight {
        let mut w = Weight::default();
        for o in self.offered.values() {
            w.add(*o);
        }
        w
    }
}

/// The usage ledger: this period's counters and their persistence.
pub struct Ledger {
    store: Arc<dyn UsageStore>,
    spec: PeriodSpec,
    current: ArcSwap<PeriodCounters>,
    /// The period just finished, flushed until quiet.
    previous: Mutex<Option<Arc<PeriodCounters>>>,
}

impl Ledger {
    /// Opens the ledger at `now`, loading the current period's counters from the store.
    pub fn open(
        store: Arc<dyn UsageStore>,
        spec: PeriodSpec,
        now: Timestamp,
    ) -> Result<Self, StoreError> {
        let period = spec.period_at(now);
        let counters = open_period(store.as_ref(), period, now)?;
        Ok(Self {
            store,
            spec,
            current: ArcSwap::from_pointee(counters),
            previous: Mutex::new(None),
        })
    }

    /// The current period.
    pub fn period(&self) -> Period {
        self.current.load().period
    }

    /// When frugal began counting in the current period.
    pub fn counting_since(&self) -> Timestamp {
        self.current.load().since
    }

    /// How periods are cut.
    pub fn period_spec(&self) -> &PeriodSpec {
        &self.spec
    }

    /// The store the counters persist in. Others may keep counters of their own in a
    /// period (the notifier's `alerts/...`): the ledger reads only its own names.
    pub fn store(&self) -> &Arc<dyn UsageStore> {
        &self.store
    }

    /// Starts the next period if `now` has passed the current one's end. Returns the new
    /// period when it changed.
    pub fn roll(&self, now: Timestamp) -> Result<Option<Period>, StoreError> {
        let cur = self.current.load_full();
        if now < cur.period.end {
            return Ok(None);
        }
        let period = self.spec.period_at(now);
        let next = open_period(self.store.as_ref(), period, now)?;
        self.current.store(Arc::new(next));
        // Whatever the finished period still holds is written now and on the next flushes
        // (kept as `previous` first, so a failed flush here is retried, not lost).
        *self.previous.lock().unwrap_or_else(|e| e.into_inner()) = Some(cur.clone());
        cur.flush(self.store.as_ref(), now)?;
        Ok(Some(period))
    }

    /// Writes every change since the last flush to the store, durably; `now` says which
    /// hour of the history the changes fall in.
    pub fn flush(&self, now: Timestamp) -> Result<(), StoreError> {
        let prev = self
            .previous
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(prev) = prev
            && !prev.flush(self.store.as_ref(), now)?
        {
            *self.previous.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
        self.current.load().flush(self.store.as_ref(), now)?;
        Ok(())
    }

    /// The current period's history as stored (reads the store), ending with each
    /// signal's `used` at `now`, flushed or not.
    pub fn history(&self, now: Timestamp) -> Result<History, StoreError> {
        let cur = self.current.load();
        let totals = self.store.totals(&cur.period.key())?;
        let total = PerSignal::from_fn(|s| movement(&totals, s));
        let live = cur.signals.map(|_, c| c.used());
        Ok(crate::history::read(
            &cur.period,
            &totals,
            &total,
            now,
            &live,
        ))
    }

    /// Counts what was offered (before sampling).
    pub fn offered(&self, signal: Signal, class: Class, w: Weight) {
        self.current.load().signals[signal].offered[class].add(w.items, w.units);
    }

    /// Counts what frugal dropped.
    pub fn dropped(&self, signal: Signal, reason: DropReason, w: Weight) {
        self.current.load().signals[signal].dropped[reason].add(w.items, w.units);
    }

    /// Counts what shadow mode would have dropped.
    pub fn shadow_dropped(&self, signal: Signal, reason: DropReason, w: Weight) {
        self.current.load().signals[signal].shadow_dropped[reason].add(w.items, w.units);
    }

    /// Reserves `w.units` for sending if `used + units <= cap`, counting them as sent, in
    /// the current period. The returned [`Charge`] settles the request against that same
    /// period, even if a new one begins while it is in flight.
    pub fn reserve(&self, signal: Signal, w: Weight, cap: u64) -> Option<Charge> {
        let counters = self.current.load_full();
        if !reserve_in(&counters.signals[signal], w.items, w.units, cap) {
            return None;
        }
        Some(Charge {
            counters,
            signal,
            weight: w,
            cap: Some(cap),
        })
    }

    /// Counts units as sent without a cap (signals without a budget, shadow mode).
    pub fn charge(&self, signal: Signal, w: Weight) -> Charge {
        let counters = self.current.load_full();
        counters.signals[signal].sent.add(w.items, w.units);
        Charge {
            counters,
            signal,
            weight: w,
            cap: None,
        }
    }

    /// Billable units used this period.
    pub fn used(&self, signal: Signal) -> u64 {
        self.current.load().signals[signal].used()
    }

    /// Sets the period's usage to `units` (`frugal usage set`): records the difference as
    /// an adjustment, so every counter stays monotonic.
    pub fn set_used(&self, signal: Signal, units: u64) {
        let cur = self.current.load();
        let c = &cur.signals[signal];
        let used = c.used();
        match units.checked_sub(used) {
            Some(up) => c.adjust_up.add(0, up),
            None => c.adjust_down.add(0, used.saturating_sub(units)),
        }
    }

    /// The period before the current one and what each signal used in it, as stored
    /// (reads the store); `None` if frugal stored nothing for it.
    pub fn previous(&self) -> Result<Option<(Period, PerSignal<u64>)>, StoreError> {
        let cur = self.period();
        let before = cur
            .start
            .checked_sub(jiff::SignedDuration::from_nanos(1))
            .unwrap_or(cur.start);
        let period = self.spec.period_at(before);
        let totals = self.store.totals(&period.key())?;
        if totals.is_empty() {
            return Ok(None);
        }
        let counters = PeriodCounters::new(period);
        counters.load(&totals);
        Ok(Some((period, counters.signals.map(|_, c| c.used()))))
    }

    /// A snapshot of one signal's counters.
    pub fn usage(&self, signal: Signal) -> SignalUsage {
        let cur = self.current.load();
        let c = &cur.signals[signal];
        let up = c.adjust_up.get().units;
        let down = c.adjust_down.get().units;
        SignalUsage {
            used: c.used(),
            offered: c.offered.map(|_, p| p.get()),
            dropped: c.dropped.map(|_, p| p.get()),
            shadow_dropped: c.shadow_dropped.map(|_, p| p.get()),
            sent: c.sent.get(),
            acked: c.acked.get(),
            rejected: c.rejected.map(|_, p| p.get()),
            adjustment: i64::try_from(up)
                .unwrap_or(i64::MAX)
                .saturating_sub(i64::try_from(down).unwrap_or(i64::MAX)),
        }
    }
}

/// The most `frugal usage set` (and `PUT /api/v1/usage`) accepts for any signal: 1 PB, or
/// 10^15 data points. Far past any period's real usage, and far below where a `u64`
/// counter could saturate.
pub const MAX_SET_USED: u64 = 1_000_000_000_000_000;

/// For a signal with a budget, `usage set` accepts at most this many times its limit:
/// usage at the limit already stops sending, so a larger figure changes nothing but is
/// likely a slip of the unit (`50TB` for `50GB`).
pub const MAX_SET_USED_PER_LIMIT: u64 = 1000;

/// Whether `units` is a usage `frugal usage set` may record for `signal`, whose period
/// limit is `limit` (if it has a budget); the error is a sentence for the user.
pub fn check_set_used(signal: Signal, units: u64, limit: Option<u64>) -> Result<(), String> {
    let show = |v: u64| match signal.budget_unit() {
        crate::model::Unit::Bytes => crate::units::format_size(v),
        crate::model::Unit::DataPoints => format!("{v} data points"),
    };
    let relative = limit
        .filter(|l| *l > 0)
        .map(|l| l.saturating_mul(MAX_SET_USED_PER_LIMIT));
    match relative {
        Some(max) if units > max && max < MAX_SET_USED => Err(format!(
            "{} is more than {MAX_SET_USED_PER_LIMIT} times the {signal} limit of {}: check the unit (at most {} is accepted; usage at the limit already stops sending)",
            show(units),
            show(limit.unwrap_or_default()),
            show(max),
        )),
        _ if units > MAX_SET_USED => Err(format!(
            "{} is more than one period's usage of {signal} can be: check the unit (at most {} is accepted)",
            show(units),
            show(MAX_SET_USED),
        )),
        _ => Ok(()),
    }
}

/// Sets a signal's usage directly in a store (the server is not running): `frugal usage
/// set` without `--admin`.
pub fn set_used_offline(
    store: Arc<dyn UsageStore>,
    spec: PeriodSpec,
    now: Timestamp,
    signal: Signal,
    units: u64,
) -> Result<(u64, u64), StoreError> {
    let ledger = Ledger::open(store, spec, now)?;
    let before = ledger.used(signal);
    ledger.set_used(signal, units);
    ledger.flush(now)?;
    Ok((before, ledger.used(signal)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn w(items: u64, units: u64) -> Weight {
        Weight { items, units }
    }

    fn ledger(store: Arc<MemoryStore>, now: &str) -> Ledger {
        Ledger::open(store, PeriodSpec::utc_month(), ts(now)).unwrap()
    }

    #[test]
    fn reservations_never_pass_the_cap() {
        let l = ledger(Arc::default(), "2026-11-25T00:00:00Z");
        assert!(l.reserve(Signal::Traces, w(1, 600), 1000).is_some());
        assert!(l.reserve(Signal::Traces, w(1, 401), 1000).is_none());
        let last = l.reserve(Signal::Traces, w(1, 400), 1000).unwrap();
        assert_eq!(l.used(Signal::Traces), 1000);
        // A definite rejection gives the bytes back.
        last.not_arrived(RejectReason::BadRequest);
        assert_eq!(l.used(Signal::Traces), 600);
        assert!(l.reserve(Signal::Traces, w(1, 400), 1000).is_some());
        let u = l.usage(Signal::Traces);
        assert_eq!(u.sent, w(3, 1400));
    }

    #[test]
    fn a_charge_settles_in_the_period_it_was_made() {
        let store = Arc::new(MemoryStore::default());
        let l = ledger(store, "2026-11-30T23:59:59Z");
        let charge = l.reserve(Signal::Traces, w(2, 500), 1000).unwrap();
        l.roll(ts("2026-12-01T00:00:01Z")).unwrap();
        // The request was in flight across the boundary; its refusal is November's.
        charge.not_arrived(RejectReason::Unreachable);
        assert_eq!(l.used(Signal::Traces), 0);
        let nov = l.previous().unwrap();
        l.flush(ts("2026-12-01T00:00:02Z")).unwrap();
        let (_, nov_after) = l.previous().unwrap().unwrap();
        assert_eq!(nov_after[Signal::Traces], 0, "{nov:?}");
        // Retries are held to the cap.
        let c = l.reserve(Signal::Logs, w(1, 600), 1000).unwrap();
        assert!(!c.again(), "a second attempt would pass the limit");
        c.acked(0);
        assert_eq!(l.usage(Signal::Logs).acked.units, 600);
    }

    #[test]
    fn racing_reservations_stay_under_the_cap() {
        let l = Arc::new(ledger(Arc::default(), "2026-11-25T00:00:00Z"));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let l = l.clone();
                std::thread::spawn(move || {
                    let mut won = 0u64;
                    for _ in 0..10_000 {
                        if l.reserve(Signal::Logs, w(1, 7), 100_003).is_some() {
                            won += 7;
                        }
                    }
                    won
                })
            })
            .collect();
        let total: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(total, l.used(Signal::Logs));
        assert!(total <= 100_003 && total > 100_003 - 7);
    }

    #[test]
    fn counters_persist_and_resume() {
        let store = Arc::new(MemoryStore::default());
        let l = ledger(store.clone(), "2026-11-25T00:00:00Z");
        l.offered(Signal::Traces, Class::Normal, w(10, 5000));
        l.offered(Signal::Traces, Class::Priority, w(1, 300));
        l.dropped(Signal::Traces, DropReason::Sampled, w(5, 2500));
        l.charge(Signal::Traces, w(6, 2800)).acked(0);
        l.flush(ts("2026-11-25T00:30:00Z")).unwrap();
        l.charge(Signal::Traces, w(1, 100)); // not flushed: lost in a crash
        drop(l);
        let l = ledger(store, "2026-11-25T01:00:00Z");
        assert_eq!(
            l.counting_since(),
            ts("2026-11-25T00:00:00Z"),
            "installed on the 25th"
        );
        let u = l.usage(Signal::Traces);
        assert_eq!(u.used, 2800);
        assert_eq!(u.offered.map(|_, w| w.units), PerClass::new([300, 5000, 0]));
        assert_eq!(u.dropped[DropReason::Sampled].units, 2500);
    }

    fn points(h: &History, s: Signal) -> Vec<(String, u64)> {
        h.points[s]
            .iter()
            .map(|p| {
                let t = Timestamp::from_second(p.t).unwrap().to_string();
                (t, p.used)
            })
            .collect()
    }

    fn p(t: &str, used: u64) -> (String, u64) {
        (t.to_string(), used)
    }

    #[test]
    fn history_is_written_with_each_flush_and_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let open = |now: &str| {
            let store = crate::store::SledStore::open(dir.path(), 1 << 20).unwrap();
            Ledger::open(Arc::new(store), PeriodSpec::utc_month(), ts(now)).unwrap()
        };
        let l = open("2026-12-01T00:05:00Z");
        l.charge(Signal::Traces, w(1, 1000));
        l.flush(ts("2026-12-01T00:10:00Z")).unwrap();
        l.charge(Signal::Traces, w(1, 500))
            .not_arrived(RejectReason::BadRequest);
        l.charge(Signal::Logs, w(1, 70));
        l.flush(ts("2026-12-01T01:10:00Z")).unwrap();
        l.set_used(Signal::Traces, 300);
        l.flush(ts("2026-12-01T02:10:00Z")).unwrap();
        l.charge(Signal::Traces, w(1, 1)); // not flushed: in the last point only
        let h = l.history(ts("2026-12-01T03:30:00Z")).unwrap();
        assert_eq!(h.step_seconds, 3600);
        assert_eq!(
            points(&h, Signal::Traces),
            [
                p("2026-12-01T00:00:00Z", 0),
                p("2026-12-01T01:00:00Z", 1000),
                p("2026-12-01T02:00:00Z", 1000),
                p("2026-12-01T03:00:00Z", 300),
                p("2026-12-01T03:30:00Z", 301),
            ]
        );
        assert_eq!(points(&h, Signal::Logs)[2], p("2026-12-01T02:00:00Z", 70));
        drop(l);
        // Restarted (the unflushed byte is lost, as a crash loses it).
        let l = open("2026-12-01T04:00:00Z");
        assert_eq!(
            l.used(Signal::Traces),
            300,
            "history keys leave the counters alone"
        );
        assert_eq!(l.used(Signal::Logs), 70);
        let h = l.history(ts("2026-12-01T04:00:00Z")).unwrap();
        let t = points(&h, Signal::Traces);
        assert_eq!(t[3], p("2026-12-01T03:00:00Z", 300));
        assert_eq!(t[4], p("2026-12-01T04:00:00Z", 300));
        assert_eq!(t.last(), Some(&p("2026-12-01T04:00:00Z", 300)));
    }

    #[test]
    fn the_history_of_a_busy_period_ends_at_what_the_counters_say() {
        let store = Arc::new(MemoryStore::default());
        let l = ledger(store.clone(), "2026-11-01T00:00:00Z");
        let mut now = ts("2026-11-01T00:00:00Z");
        for i in 0..2000u64 {
            now += jiff::SignedDuration::from_secs(1234);
            let c = l.charge(Signal::Traces, w(1, 100 + i % 7));
            if i % 5 == 0 {
                c.not_arrived(RejectReason::Unreachable);
            }
            if i % 400 == 0 {
                l.set_used(Signal::Traces, l.used(Signal::Traces) / 2);
            }
            l.flush(now).unwrap();
        }
        // An hour on, the last step's point is what was flushed in it.
        let h = l
            .history(now + jiff::SignedDuration::from_hours(1))
            .unwrap();
        let t = &h.points[Signal::Traces];
        assert!(t.len() <= 746, "{}", t.len());
        let at_last_step = t[t.len() - 2];
        assert_eq!(at_last_step.used, t[t.len() - 1].used, "all flushed");
        assert_eq!(at_last_step.used, l.used(Signal::Traces));
        // The next period begins empty; the late flush of the old one lands in its last hour.
        l.charge(Signal::Traces, w(1, 9));
        l.roll(ts("2026-12-01T00:00:01Z")).unwrap();
        let dec = l.history(ts("2026-12-01T00:00:01Z")).unwrap();
        assert_eq!(
            points(&dec, Signal::Traces),
            [p("2026-12-01T00:00:00Z", 0), p("2026-12-01T00:00:01Z", 0)]
        );
        let nov = store.totals("2026-11-01T00:00:00Z").unwrap();
        assert!(nov.contains_key("history/2026-11-30T23:00:00Z/traces/added_units"));
    }

    #[test]
    fn a_new_period_starts_on_its_own_and_late_counts_land_in_the_old_one() {
        let store = Arc::new(MemoryStore::default());
        let l = ledger(store.clone(), "2026-11-30T23:59:59Z");
        l.charge(Signal::Logs, w(1, 100));
        assert_eq!(l.roll(ts("2026-11-30T23:59:59.5Z")).unwrap(), None);
        let next = l.roll(ts("2026-12-01T00:00:01Z")).unwrap().unwrap();
        assert_eq!(next.start, ts("2026-12-01T00:00:00Z"));
        assert_eq!(l.used(Signal::Logs), 0);
        l.charge(Signal::Logs, w(1, 5));
        l.flush(ts("2026-12-01T00:00:02Z")).unwrap();
        assert_eq!(
            store.totals("2026-11-01T00:00:00Z").unwrap()["logs/sent_units"],
            100
        );
        assert_eq!(
            store.totals("2026-12-01T00:00:00Z").unwrap()["logs/sent_units"],
            5
        );
        let (prev, used) = l.previous().unwrap().unwrap();
        assert_eq!(prev.start, ts("2026-11-01T00:00:00Z"));
        assert_eq!(used[Signal::Logs], 100);
        assert_eq!(l.counting_since(), ts("2026-12-01T00:00:01Z"));
    }

    #[test]
    fn counters_saturate_instead_of_wrapping() {
        let store = Arc::new(MemoryStore::default());
        let l = ledger(store.clone(), "2026-11-15T00:00:00Z");
        l.charge(Signal::Traces, w(u64::MAX - 1, u64::MAX - 10));
        l.charge(Signal::Traces, w(5, 100));
        let u = l.usage(Signal::Traces);
        assert_eq!(u.sent, w(u64::MAX, u64::MAX));
        assert_eq!(u.used, u64::MAX);
        assert!(
            l.reserve(Signal::Traces, w(1, 1), 50_000_000_000).is_none(),
            "a counter at the top is over any limit"
        );
        l.offered(Signal::Logs, Class::Normal, w(u64::MAX, u64::MAX));
        l.offered(Signal::Logs, Class::Normal, w(1, 1));
        l.dropped(Signal::Logs, DropReason::Sampled, w(u64::MAX, 3));
        l.dropped(Signal::Logs, DropReason::Sampled, w(u64::MAX, 3));
        let u = l.usage(Signal::Logs);
        assert_eq!(u.offered[Class::Normal], w(u64::MAX, u64::MAX));
        assert_eq!(u.dropped[DropReason::Sampled], w(u64::MAX, 6));
        // Set near the top and charged more: still the top, never a small number.
        l.set_used(Signal::Metrics, u64::MAX - 2);
        let c = l.reserve(Signal::Metrics, w(1, 1), u64::MAX - 1).unwrap();
        assert!(!c.again(), "a second attempt would pass the cap");
        l.charge(Signal::Metrics, w(1, 1000));
        assert_eq!(l.used(Signal::Metrics), u64::MAX);
        l.set_used(Signal::Metrics, 7);
        assert_eq!(l.used(Signal::Metrics), 7);
        // What is flushed and read back is the same.
        l.flush(ts("2026-11-15T00:30:00Z")).unwrap();
        drop(l);
        let l = ledger(store, "2026-11-15T01:00:00Z");
        assert_eq!(l.used(Signal::Traces), u64::MAX);
        assert_eq!(l.used(Signal::Metrics), 7);
    }

    #[test]
    fn usage_set_refuses_what_cannot_be_right() {
        let gb = 1_000_000_000;
        assert!(check_set_used(Signal::Traces, 50_000 * gb, Some(50 * gb)).is_ok());
        let e = check_set_used(Signal::Traces, 50_000 * gb + 1, Some(50 * gb)).unwrap_err();
        assert!(
            e.starts_with("50TB is more than 1000 times the traces limit of 50GB"),
            "{e}"
        );
        // A limit so large that 1000 times it passes 1 PB: 1 PB is the most.
        assert!(check_set_used(Signal::Logs, MAX_SET_USED, Some(10_000 * gb)).is_ok());
        let e = check_set_used(Signal::Logs, MAX_SET_USED + 1, Some(10_000 * gb)).unwrap_err();
        assert!(e.contains("at most 1000TB is accepted"), "{e}");
        assert!(check_set_used(Signal::Metrics, MAX_SET_USED, None).is_ok());
        let e = check_set_used(Signal::Metrics, u64::MAX, None).unwrap_err();
        assert!(
            e.starts_with("18446744073709551615 data points is more"),
            "{e}"
        );
    }

    #[test]
    fn usage_set_adjusts_without_going_backwards() {
        let store = Arc::new(MemoryStore::default());
        let l = ledger(store.clone(), "2026-11-15T00:00:00Z");
        l.charge(Signal::Traces, w(1, 1000));
        l.set_used(Signal::Traces, 12_000_000_000);
        assert_eq!(l.used(Signal::Traces), 12_000_000_000);
        l.set_used(Signal::Traces, 500);
        assert_eq!(l.used(Signal::Traces), 500);
        assert_eq!(l.usage(Signal::Traces).adjustment, -500);
        l.flush(ts("2026-11-15T00:30:00Z")).unwrap();
        let (before, after) = set_used_offline(
            store,
            PeriodSpec::utc_month(),
            ts("2026-11-15T01:00:00Z"),
            Signal::Traces,
            7,
        )
        .unwrap();
        assert_eq!((before, after), (500, 7));
    }
}
