//! The period's usage, counted in memory and persisted through a [`UsageStore`].
//!
//! Every outcome of every item is counted here: offered (per priority class), dropped (per
//! reason), sent, acknowledged and rejected (per reason). The budget's *used* figure is
//! `sent - rejected + adjustments`: a request that may have reached upstream counts, and
//! only a definite rejection is taken back, so usage is never under-counted.
//!
//! Sending reserves first ([`Ledger::try_reserve`]): the reservation succeeds only while
//! `used + units <= cap`, atomically, which is what keeps a period from ever going over its
//! limit however many requests race for the last bytes.
//!
//! [`Ledger::flush`] writes the deltas since the last flush to the store (the app calls it
//! every `flush_interval`; at most that much metering is lost on a crash). When the clock
//! passes the period's end, [`Ledger::roll`] starts the next period from the store's
//! counters for it; the finished period keeps being flushed until it is quiet, so late
//! increments are not lost. No I/O happens on the request path.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use jiff::Timestamp;

use crate::model::{Class, DropReason, RejectReason, Signal};
use crate::period::{Period, PeriodSpec};
use crate::store::{Counters, StoreError, UsageStore};

/// An item count and its billable units (bytes; data points for metrics).
#[derive(Debug, Default)]
struct Pair {
    items: AtomicU64,
    units: AtomicU64,
}

impl Pair {
    fn add(&self, items: u64, units: u64) {
        self.items.fetch_add(items, Ordering::Relaxed);
        self.units.fetch_add(units, Ordering::Relaxed);
    }

    fn get(&self) -> (u64, u64) {
        (
            self.items.load(Ordering::Relaxed),
            self.units.load(Ordering::Relaxed),
        )
    }

    fn set(&self, items: u64, units: u64) {
        self.items.store(items, Ordering::Relaxed);
        self.units.store(units, Ordering::Relaxed);
    }
}

/// One signal's counters for one period.
#[derive(Debug, Default)]
struct SignalCounters {
    offered: [Pair; 3],
    dropped: [Pair; 5],
    /// Drops shadow mode would have made (everything was forwarded).
    shadow_dropped: [Pair; 5],
    sent: Pair,
    acked: Pair,
    rejected: [Pair; 6],
    adjust_up: AtomicU64,
    adjust_down: AtomicU64,
}

impl SignalCounters {
    fn rejected_units(&self) -> u64 {
        self.rejected
            .iter()
            .map(|p| p.units.load(Ordering::Relaxed))
            .sum()
    }

    fn used(&self) -> u64 {
        let sent = self.sent.units.load(Ordering::Relaxed);
        let up = self.adjust_up.load(Ordering::Relaxed);
        let down = self.adjust_down.load(Ordering::Relaxed);
        (sent + up).saturating_sub(down + self.rejected_units())
    }
}

/// The counters of one period.
#[derive(Debug)]
struct PeriodCounters {
    period: Period,
    signals: [SignalCounters; 3],
    /// What the store holds for this period (as of the last successful flush).
    flushed: Mutex<Counters>,
}

fn pair_names(signal: Signal, what: &str, label: Option<&str>) -> (String, String) {
    match label {
        Some(l) => (
            format!("{signal}/{what}_items/{l}"),
            format!("{signal}/{what}_units/{l}"),
        ),
        None => (
            format!("{signal}/{what}_items"),
            format!("{signal}/{what}_units"),
        ),
    }
}

impl PeriodCounters {
    fn new(period: Period) -> Self {
        Self {
            period,
            signals: Default::default(),
            flushed: Mutex::new(Counters::new()),
        }
    }

    fn signal(&self, s: Signal) -> &SignalCounters {
        &self.signals[s as usize]
    }

    /// Every counter as a name -> value map (the store's form).
    fn snapshot(&self) -> Counters {
        let mut out = Counters::new();
        let mut put = |(ni, nu): (String, String), p: &Pair| {
            let (i, u) = p.get();
            out.insert(ni, i);
            out.insert(nu, u);
        };
        for s in Signal::ALL {
            let c = self.signal(s);
            for class in Class::ALL {
                put(
                    pair_names(s, "offered", Some(class.as_str())),
                    &c.offered[class.index()],
                );
            }
            for r in DropReason::ALL {
                put(
                    pair_names(s, "dropped", Some(r.as_str())),
                    &c.dropped[r as usize],
                );
                put(
                    pair_names(s, "shadow_dropped", Some(r.as_str())),
                    &c.shadow_dropped[r as usize],
                );
            }
            put(pair_names(s, "sent", None), &c.sent);
            put(pair_names(s, "acked", None), &c.acked);
            for r in RejectReason::ALL {
                put(
                    pair_names(s, "rejected", Some(r.as_str())),
                    &c.rejected[r as usize],
                );
            }
            let up = Pair::default();
            up.units
                .store(c.adjust_up.load(Ordering::Relaxed), Ordering::Relaxed);
            put(pair_names(s, "adjust_up", None), &up);
            let down = Pair::default();
            down.units
                .store(c.adjust_down.load(Ordering::Relaxed), Ordering::Relaxed);
            put(pair_names(s, "adjust_down", None), &down);
        }
        out.retain(|_, v| *v != 0);
        out
    }

    /// Sets every counter from stored totals (at start-up or when a period begins).
    fn load(&self, totals: &Counters) {
        let get = |k: &str| totals.get(k).copied().unwrap_or(0);
        let set = |(ni, nu): (String, String), p: &Pair| p.set(get(&ni), get(&nu));
        for s in Signal::ALL {
            let c = self.signal(s);
            for class in Class::ALL {
                set(
                    pair_names(s, "offered", Some(class.as_str())),
                    &c.offered[class.index()],
                );
            }
            for r in DropReason::ALL {
                set(
                    pair_names(s, "dropped", Some(r.as_str())),
                    &c.dropped[r as usize],
                );
                set(
                    pair_names(s, "shadow_dropped", Some(r.as_str())),
                    &c.shadow_dropped[r as usize],
                );
            }
            set(pair_names(s, "sent", None), &c.sent);
            set(pair_names(s, "acked", None), &c.acked);
            for r in RejectReason::ALL {
                set(
                    pair_names(s, "rejected", Some(r.as_str())),
                    &c.rejected[r as usize],
                );
            }
            c.adjust_up
                .store(get(&format!("{s}/adjust_up_units")), Ordering::Relaxed);
            c.adjust_down
                .store(get(&format!("{s}/adjust_down_units")), Ordering::Relaxed);
        }
        *self.flushed.lock().unwrap_or_else(|e| e.into_inner()) = totals.clone();
    }

    /// Writes what changed since the last flush. Returns whether anything was written.
    fn flush(&self, store: &dyn UsageStore) -> Result<bool, StoreError> {
        let now = self.snapshot();
        let mut flushed = self.flushed.lock().unwrap_or_else(|e| e.into_inner());
        let deltas: Counters = now
            .iter()
            .filter_map(|(k, v)| {
                let old = flushed.get(k).copied().unwrap_or(0);
                (*v > old).then(|| (k.clone(), v - old))
            })
            .collect();
        if deltas.is_empty() {
            return Ok(false);
        }
        store.add(&self.period.key(), &deltas)?;
        *flushed = now;
        Ok(true)
    }
}

/// A read-only view of one signal's counters, for the API, metrics and the controller.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SignalUsage {
    /// Billable units spent this period (`sent - rejected + adjustments`).
    pub used: u64,
    pub offered_items: u64,
    pub offered_units: u64,
    /// Offered units per class: priority, normal, bulk.
    pub offered_units_by_class: [u64; 3],
    pub offered_items_by_class: [u64; 3],
    pub dropped_items: Vec<(DropReason, u64)>,
    pub dropped_units: Vec<(DropReason, u64)>,
    pub shadow_dropped_items: Vec<(DropReason, u64)>,
    pub shadow_dropped_units: Vec<(DropReason, u64)>,
    pub sent_items: u64,
    pub sent_units: u64,
    pub acked_items: u64,
    pub acked_units: u64,
    pub rejected_items: Vec<(RejectReason, u64)>,
    pub rejected_units: Vec<(RejectReason, u64)>,
    /// Net adjustment made with `frugal usage set` (may be negative).
    pub adjustment: i64,
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
        let counters = PeriodCounters::new(period);
        counters.load(&store.totals(&period.key())?);
        Ok(Self {
            store,
            spec,
            current: ArcSwap::from_pointee(counters),
            previous: Mutex::new(None),
        })
    }

    pub fn period(&self) -> Period {
        self.current.load().period
    }

    pub fn period_spec(&self) -> &PeriodSpec {
        &self.spec
    }

    /// Starts the next period if `now` has passed the current one's end. Returns the new
    /// period when it changed.
    pub fn roll(&self, now: Timestamp) -> Result<Option<Period>, StoreError> {
        let cur = self.current.load_full();
        if now < cur.period.end {
            return Ok(None);
        }
        let period = self.spec.period_at(now);
        let next = PeriodCounters::new(period);
        next.load(&self.store.totals(&period.key())?);
        self.current.store(Arc::new(next));
        // Whatever the finished period still holds is written now and on the next flushes.
        cur.flush(self.store.as_ref())?;
        *self.previous.lock().unwrap_or_else(|e| e.into_inner()) = Some(cur);
        Ok(Some(period))
    }

    /// Writes every change since the last flush to the store, durably.
    pub fn flush(&self) -> Result<(), StoreError> {
        let prev = self
            .previous
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(prev) = prev
            && !prev.flush(self.store.as_ref())?
        {
            *self.previous.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
        self.current.load().flush(self.store.as_ref())?;
        Ok(())
    }

    pub fn offered(&self, signal: Signal, class: Class, items: u64, units: u64) {
        self.current.load().signal(signal).offered[class.index()].add(items, units);
    }

    pub fn dropped(&self, signal: Signal, reason: DropReason, items: u64, units: u64) {
        self.current.load().signal(signal).dropped[reason as usize].add(items, units);
    }

    pub fn shadow_dropped(&self, signal: Signal, reason: DropReason, items: u64, units: u64) {
        self.current.load().signal(signal).shadow_dropped[reason as usize].add(items, units);
    }

    /// Reserves `units` for sending if `used + units <= cap`; counts them as sent.
    pub fn try_reserve(&self, signal: Signal, items: u64, units: u64, cap: u64) -> bool {
        let cur = self.current.load();
        let c = cur.signal(signal);
        let fixed_up = c.adjust_up.load(Ordering::Relaxed);
        let fixed_down = c.adjust_down.load(Ordering::Relaxed) + c.rejected_units();
        let ok = c
            .sent
            .units
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |sent| {
                let used = (sent + fixed_up).saturating_sub(fixed_down);
                (used.saturating_add(units) <= cap).then_some(sent + units)
            })
            .is_ok();
        if ok {
            c.sent.items.fetch_add(items, Ordering::Relaxed);
        }
        ok
    }

    /// Counts units as sent without a cap (signals without a budget, shadow mode).
    pub fn sent(&self, signal: Signal, items: u64, units: u64) {
        self.current.load().signal(signal).sent.add(items, units);
    }

    pub fn acked(&self, signal: Signal, items: u64, units: u64) {
        self.current.load().signal(signal).acked.add(items, units);
    }

    /// A definite rejection: `units` are taken back from the period's usage.
    pub fn rejected(&self, signal: Signal, reason: RejectReason, items: u64, units: u64) {
        self.current.load().signal(signal).rejected[reason as usize].add(items, units);
    }

    /// Billable units used this period.
    pub fn used(&self, signal: Signal) -> u64 {
        self.current.load().signal(signal).used()
    }

    /// Sets the period's usage to `units` (`frugal usage set`): records the difference as
    /// an adjustment, so every counter stays monotonic.
    pub fn set_used(&self, signal: Signal, units: u64) {
        let cur = self.current.load();
        let c = cur.signal(signal);
        let used = c.used();
        if units > used {
            c.adjust_up.fetch_add(units - used, Ordering::Relaxed);
        } else {
            c.adjust_down.fetch_add(used - units, Ordering::Relaxed);
        }
    }

    pub fn usage(&self, signal: Signal) -> SignalUsage {
        let cur = self.current.load();
        let c = cur.signal(signal);
        let by_class = |f: fn(&Pair) -> u64| -> [u64; 3] {
            [f(&c.offered[0]), f(&c.offered[1]), f(&c.offered[2])]
        };
        let drops = |ps: &[Pair; 5], units: bool| -> Vec<(DropReason, u64)> {
            DropReason::ALL
                .iter()
                .map(|r| {
                    let (i, u) = ps[*r as usize].get();
                    (*r, if units { u } else { i })
                })
                .collect()
        };
        let rejects = |units: bool| -> Vec<(RejectReason, u64)> {
            RejectReason::ALL
                .iter()
                .map(|r| {
                    let (i, u) = c.rejected[*r as usize].get();
                    (*r, if units { u } else { i })
                })
                .collect()
        };
        let offered_units_by_class = by_class(|p| p.units.load(Ordering::Relaxed));
        let offered_items_by_class = by_class(|p| p.items.load(Ordering::Relaxed));
        let (sent_items, sent_units) = c.sent.get();
        let (acked_items, acked_units) = c.acked.get();
        let up = c.adjust_up.load(Ordering::Relaxed) as i64;
        let down = c.adjust_down.load(Ordering::Relaxed) as i64;
        SignalUsage {
            used: c.used(),
            offered_items: offered_items_by_class.iter().sum(),
            offered_units: offered_units_by_class.iter().sum(),
            offered_units_by_class,
            offered_items_by_class,
            dropped_items: drops(&c.dropped, false),
            dropped_units: drops(&c.dropped, true),
            shadow_dropped_items: drops(&c.shadow_dropped, false),
            shadow_dropped_units: drops(&c.shadow_dropped, true),
            sent_items,
            sent_units,
            acked_items,
            acked_units,
            rejected_items: rejects(false),
            rejected_units: rejects(true),
            adjustment: up - down,
        }
    }
}

/// Billable units used by `signal`, from a period's stored counters.
pub fn used_from(counters: &Counters, signal: Signal) -> u64 {
    let get = |k: String| counters.get(&k).copied().unwrap_or(0);
    let rejected: u64 = RejectReason::ALL
        .iter()
        .map(|r| get(format!("{signal}/rejected_units/{}", r.as_str())))
        .sum();
    (get(format!("{signal}/sent_units")) + get(format!("{signal}/adjust_up_units")))
        .saturating_sub(get(format!("{signal}/adjust_down_units")) + rejected)
}

impl Ledger {
    /// The period before the current one, and its counters as stored (reads the store).
    pub fn previous(&self) -> Result<(Period, Counters), StoreError> {
        let cur = self.period();
        let before = cur
            .start
            .checked_sub(jiff::SignedDuration::from_nanos(1))
            .unwrap_or(cur.start);
        let period = self.spec.period_at(before);
        Ok((period, self.store.totals(&period.key())?))
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
    ledger.flush()?;
    Ok((before, ledger.used(signal)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn ledger(store: Arc<MemoryStore>, now: &str) -> Ledger {
        Ledger::open(store, PeriodSpec::utc_month(), ts(now)).unwrap()
    }

    #[test]
    fn reservations_never_pass_the_cap() {
        let l = ledger(Arc::default(), "2026-11-25T00:00:00Z");
        assert!(l.try_reserve(Signal::Traces, 1, 600, 1000));
        assert!(!l.try_reserve(Signal::Traces, 1, 401, 1000));
        assert!(l.try_reserve(Signal::Traces, 1, 400, 1000));
        assert_eq!(l.used(Signal::Traces), 1000);
        // A definite rejection gives the bytes back.
        l.rejected(Signal::Traces, RejectReason::BadRequest, 1, 400);
        assert_eq!(l.used(Signal::Traces), 600);
        assert!(l.try_reserve(Signal::Traces, 1, 400, 1000));
        let u = l.usage(Signal::Traces);
        assert_eq!((u.sent_items, u.sent_units), (3, 1400));
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
                        if l.try_reserve(Signal::Logs, 1, 7, 100_003) {
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
        l.offered(Signal::Traces, Class::Normal, 10, 5000);
        l.offered(Signal::Traces, Class::Priority, 1, 300);
        l.dropped(Signal::Traces, DropReason::Sampled, 5, 2500);
        l.sent(Signal::Traces, 6, 2800);
        l.acked(Signal::Traces, 6, 2800);
        l.flush().unwrap();
        l.sent(Signal::Traces, 1, 100); // not flushed: lost in a crash
        drop(l);
        let l = ledger(store, "2026-11-25T01:00:00Z");
        let u = l.usage(Signal::Traces);
        assert_eq!(u.used, 2800);
        assert_eq!(u.offered_units_by_class, [300, 5000, 0]);
        assert_eq!(u.dropped_units[1], (DropReason::Sampled, 2500));
    }

    #[test]
    fn a_new_period_starts_on_its_own_and_late_counts_land_in_the_old_one() {
        let store = Arc::new(MemoryStore::default());
        let l = ledger(store.clone(), "2026-11-30T23:59:59Z");
        l.sent(Signal::Logs, 1, 100);
        assert_eq!(l.roll(ts("2026-11-30T23:59:59.5Z")).unwrap(), None);
        let next = l.roll(ts("2026-12-01T00:00:01Z")).unwrap().unwrap();
        assert_eq!(next.start, ts("2026-12-01T00:00:00Z"));
        assert_eq!(l.used(Signal::Logs), 0);
        l.sent(Signal::Logs, 1, 5);
        l.flush().unwrap();
        assert_eq!(
            store.totals("2026-11-01T00:00:00Z").unwrap()["logs/sent_units"],
            100
        );
        assert_eq!(
            store.totals("2026-12-01T00:00:00Z").unwrap()["logs/sent_units"],
            5
        );
        let (prev, counters) = l.previous().unwrap();
        assert_eq!(prev.start, ts("2026-11-01T00:00:00Z"));
        assert_eq!(used_from(&counters, Signal::Logs), 100);
    }

    #[test]
    fn usage_set_adjusts_without_going_backwards() {
        let store = Arc::new(MemoryStore::default());
        let l = ledger(store.clone(), "2026-11-15T00:00:00Z");
        l.sent(Signal::Traces, 1, 1000);
        l.set_used(Signal::Traces, 12_000_000_000);
        assert_eq!(l.used(Signal::Traces), 12_000_000_000);
        l.set_used(Signal::Traces, 500);
        assert_eq!(l.used(Signal::Traces), 500);
        assert_eq!(l.usage(Signal::Traces).adjustment, -500);
        l.flush().unwrap();
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
