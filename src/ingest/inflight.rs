//! The memory all requests in flight may hold together (`ingest.max_in_flight`): a
//! semaphore of KiB permits. Beside it, a semaphore of one permit per core for the costly
//! steps (decompressing, decoding, encoding a large request), so that however many arrive
//! at once, the async workers keep their share of the CPU and `/readyz` answers.
//!
//! Each request takes a [`Ticket`] and adds to it as it grows — each body frame as it is
//! read, the decompressed body, the decoded messages' estimated
//! size — without ever waiting: when the budget cannot cover the next step, the request is
//! answered 503 with `Retry-After` (gRPC: UNAVAILABLE with `RetryInfo`) instead of taking
//! more memory. The ticket gives everything back when the last of its clones is dropped,
//! after the response is produced.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{IngestError, Transport};
use crate::model::Signal;
use crate::stats::{Stats, inc};
use crate::units::format_size;

const KIB: u64 = 1024;

/// How long a client is asked to wait when the budget is spent.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The in-flight byte budget, shared by every receiver.
pub struct InFlight {
    permits: Arc<Semaphore>,
    limit_kib: u32,
    heavy: Arc<Semaphore>,
    stats: Arc<Stats>,
}

impl InFlight {
    /// A budget of `limit_bytes` (rounded down to KiB, at most 4 TiB).
    pub fn new(limit_bytes: u64, stats: Arc<Stats>) -> Self {
        let limit_kib = u32::try_from(limit_bytes / KIB).unwrap_or(u32::MAX);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            permits: Arc::new(Semaphore::new(limit_kib as usize)),
            limit_kib,
            heavy: Arc::new(Semaphore::new(cores)),
            stats,
        }
    }

    /// The budget, in bytes.
    pub fn limit_bytes(&self) -> u64 {
        u64::from(self.limit_kib) * KIB
    }

    /// Bytes held by requests in flight now (in KiB steps).
    pub fn held_bytes(&self) -> u64 {
        let free = self.permits.available_permits() as u64;
        u64::from(self.limit_kib).saturating_sub(free) * KIB
    }

    /// A ticket for one request of `signal` arriving over `transport`, holding nothing yet.
    pub fn ticket(&self, signal: Signal, transport: Transport) -> Ticket {
        Ticket {
            inner: Arc::new(Mutex::new(Held {
                permits: self.permits.clone(),
                limit_kib: self.limit_kib,
                bytes: 0,
                held: None,
            })),
            heavy: self.heavy.clone(),
            stats: self.stats.clone(),
            signal,
            transport,
        }
    }
}

/// What one request holds of the budget. Clones share it; it is given back when the last
/// clone is dropped.
#[derive(Clone)]
pub struct Ticket {
    inner: Arc<Mutex<Held>>,
    heavy: Arc<Semaphore>,
    stats: Arc<Stats>,
    signal: Signal,
    transport: Transport,
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ticket({} bytes)", self.bytes())
    }
}

struct Held {
    permits: Arc<Semaphore>,
    limit_kib: u32,
    /// Bytes asked for so far.
    bytes: u64,
    held: Option<OwnedSemaphorePermit>,
}

impl Ticket {
    /// Adds `bytes` (what the request holds for `what`, e.g. "decoded") to what it holds.
    /// 413 when the request alone would pass the whole budget (it never fits); 503 with
    /// `Retry-After` when the budget is spent by the requests in flight now.
    pub fn take(&self, bytes: u64, what: &str) -> Result<(), IngestError> {
        let mut h = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let total = h.bytes.saturating_add(bytes);
        let want = total.div_ceil(KIB);
        let have = h.held.as_ref().map_or(0, |p| p.num_permits() as u64);
        if want > u64::from(h.limit_kib) {
            return Err(IngestError::TooLarge(format!(
                "the request would take about {} of memory once {what}, more than frugal holds \
                 for all requests in flight (ingest.max_in_flight, {}): send smaller batches",
                format_size(total),
                format_size(u64::from(h.limit_kib) * KIB)
            )));
        }
        if want > have {
            // Fits in u32: at most limit_kib.
            let more = u32::try_from(want - have).unwrap_or(u32::MAX);
            match h.permits.clone().try_acquire_many_owned(more) {
                Ok(p) => match h.held.as_mut() {
                    Some(held) => held.merge(p),
                    None => h.held = Some(p),
                },
                Err(_) => {
                    let limit = u64::from(h.limit_kib) * KIB;
                    drop(h);
                    inc(
                        &self.stats.requests_shed,
                        &[self.signal.as_str(), self.transport.as_str()],
                        1,
                    );
                    return Err(IngestError::Unavailable {
                        retry_after: RETRY_AFTER,
                        message: format!(
                            "frugal is holding as much as it may for requests in flight \
                             (ingest.max_in_flight, {}); retry shortly",
                            format_size(limit)
                        ),
                    });
                }
            }
        }
        h.bytes = total;
        Ok(())
    }

    /// Gives back all but `bytes`: once the decoded request is encoded for upstream and
    /// dropped, what it holds while upstream answers is the body it sends.
    pub fn shrink_to(&self, bytes: u64) {
        let mut h = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if bytes >= h.bytes {
            return;
        }
        h.bytes = bytes;
        let keep = usize::try_from(bytes.div_ceil(KIB)).unwrap_or(usize::MAX);
        if let Some(held) = h.held.as_mut() {
            let over = held.num_permits().saturating_sub(keep);
            drop(held.split(over));
        }
    }

    /// Waits for a turn at a costly step (one at a time per core); the step runs while the
    /// returned permit is held.
    pub async fn heavy_turn(&self) -> Option<OwnedSemaphorePermit> {
        self.heavy.clone().acquire_owned().await.ok()
    }

    /// Bytes this request holds (what it asked for).
    pub fn bytes(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(bytes: u64) -> InFlight {
        InFlight::new(bytes, Arc::new(Stats::new().unwrap()))
    }

    #[test]
    fn tickets_hold_what_they_take_until_dropped() {
        let b = budget(100 * KIB);
        let t = b.ticket(Signal::Traces, Transport::Http);
        t.take(1, "received").unwrap();
        t.take(1023, "received").unwrap();
        assert_eq!(b.held_bytes(), KIB);
        t.take(40 * KIB, "decoded").unwrap();
        assert_eq!(b.held_bytes(), 41 * KIB);
        assert_eq!(t.bytes(), 41 * KIB);
        let other = b.ticket(Signal::Logs, Transport::Grpc);
        other.take(59 * KIB, "received").unwrap();
        // Spent: the next step of either is shed, and counted.
        let err = t.take(1, "decoded").unwrap_err();
        assert!(
            matches!(err, IngestError::Unavailable { retry_after, .. } if retry_after == RETRY_AFTER)
        );
        assert!(err.to_string().contains("ingest.max_in_flight"), "{err}");
        assert_eq!(
            b.stats
                .requests_shed
                .with_label_values(&["traces", "http"])
                .get(),
            1
        );
        let clone = other.clone();
        drop(other);
        assert_eq!(b.held_bytes(), 100 * KIB);
        drop(clone);
        assert_eq!(b.held_bytes(), 41 * KIB);
        // Shrunk to what it sends, it gives the rest back.
        t.shrink_to(3 * KIB + 1);
        assert_eq!((b.held_bytes(), t.bytes()), (4 * KIB, 3 * KIB + 1));
        t.shrink_to(100 * KIB);
        assert_eq!(b.held_bytes(), 4 * KIB, "never grows");
        drop(t);
        assert_eq!(b.held_bytes(), 0);
    }

    #[test]
    fn a_request_larger_than_the_whole_budget_is_too_large_not_unavailable() {
        let b = budget(10 * KIB);
        let t = b.ticket(Signal::Traces, Transport::Http);
        t.take(4 * KIB, "received").unwrap();
        let err = t.take(7 * KIB, "decoded").unwrap_err();
        assert!(matches!(err, IngestError::TooLarge(_)), "{err}");
        assert!(err.to_string().contains("once decoded"), "{err}");
        assert_eq!(b.held_bytes(), 4 * KIB);
    }
}
