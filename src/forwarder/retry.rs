//! Retry decisions: which upstream answers are worth another attempt, how long to wait
//! (exponential backoff with jitter, or the server's `Retry-After`), and whether the
//! attempt could have reached upstream (which decides whether it counts as usage).
//! Pure functions; time and randomness are arguments.

use std::time::Duration;

use jiff::Timestamp;

use crate::model::RejectReason;
use crate::policy::Retry;

/// When a backend counts what it receives, relative to refusing it: this decides which
/// failed attempts may still have been billed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BillsAt {
    /// After its checks (Tempo, Mimir's OTLP path): a 4xx (429 included) was not billed.
    AfterChecks,
    /// While parsing, before validating or rate limiting (Loki counts a push's bytes as it
    /// reads them): a 400, 422 or 429 may still have been billed; only refusals before
    /// parsing (401, 403, 404, 413, ...) certainly were not.
    WhileParsing,
}

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// 2xx.
    Success,
    /// A status worth retrying (429, 5xx), with the server's `Retry-After` if any.
    Retryable {
        /// The HTTP status upstream answered.
        status: u16,
        /// The server's `Retry-After`, if it sent one.
        retry_after: Option<Duration>,
    },
    /// A definite refusal (other 4xx).
    Rejected {
        /// The HTTP status upstream answered.
        status: u16,
    },
    /// No answer within the attempt's timeout, after the request began to be sent.
    Timeout,
    /// The request never left: the connection (or the TLS handshake) could not be made,
    /// or timed out before the body was sent.
    ConnectFailed,
    /// The connection broke after the body began to be sent: it may have arrived.
    Broken,
}

impl Attempt {
    /// Classifies an HTTP status.
    pub fn from_status(status: u16, retry_after: Option<Duration>) -> Attempt {
        match status {
            200..=299 => Attempt::Success,
            429 | 500..=599 => Attempt::Retryable {
                status,
                retry_after,
            },
            _ => Attempt::Rejected { status },
        }
    }

    /// Whether upstream may have billed what was sent, for a backend that bills at
    /// `bills`. A request that never left is certain not to have been.
    pub fn may_have_arrived(&self, bills: BillsAt) -> bool {
        let while_parsing = bills == BillsAt::WhileParsing;
        match self {
            Attempt::Success | Attempt::Timeout | Attempt::Broken => true,
            Attempt::Retryable { status, .. } => {
                *status >= 500 || (while_parsing && *status == 429)
            }
            Attempt::Rejected { status } => while_parsing && matches!(status, 400 | 422),
            Attempt::ConnectFailed => false,
        }
    }

    /// Why an attempt that did not arrive was refused, for the ledger.
    pub fn reject_reason(&self) -> RejectReason {
        match self {
            Attempt::Rejected { status } | Attempt::Retryable { status, .. } => {
                reject_reason(*status)
            }
            _ => RejectReason::Unreachable,
        }
    }

    /// Whether another attempt may succeed.
    pub fn should_retry(&self) -> bool {
        matches!(
            self,
            Attempt::Retryable { .. } | Attempt::Timeout | Attempt::ConnectFailed | Attempt::Broken
        )
    }

    /// Every value [`Attempt::label`] gives.
    pub const LABELS: [&'static str; 7] = [
        "success",
        "server_error",
        "rate_limited",
        "rejected",
        "timeout",
        "connect_error",
        "broken_connection",
    ];

    /// The bounded label of this outcome for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Attempt::Success => "success",
            Attempt::Retryable { status: 429, .. } => "rate_limited",
            Attempt::Retryable { .. } => "server_error",
            Attempt::Rejected { .. } => "rejected",
            Attempt::Timeout => "timeout",
            Attempt::ConnectFailed => "connect_error",
            Attempt::Broken => "broken_connection",
        }
    }
}

/// Why a definite refusal happened, for the ledger.
pub fn reject_reason(status: u16) -> RejectReason {
    match status {
        401 | 403 => RejectReason::Unauthorized,
        413 => RejectReason::TooLarge,
        429 => RejectReason::RateLimited,
        _ => RejectReason::BadRequest,
    }
}

/// The wait before attempt `n` (1 for the first retry): `initial * 2^(n-1)`, at most
/// `max_backoff`, times a jitter factor in [0.8, 1.2] (`jitter` in [0, 1)).
pub fn backoff(policy: &Retry, n: u32, jitter: f64) -> Duration {
    let base = policy.initial_backoff.as_secs_f64() * 2f64.powi(n.saturating_sub(1).min(30) as i32);
    let capped = base.min(policy.max_backoff.as_secs_f64());
    Duration::from_secs_f64(capped * (0.8 + 0.4 * jitter.clamp(0.0, 1.0)))
}

/// What to do after a failed attempt at `now`, given the request's `deadline`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Wait this long, then try again.
    RetryAfter(Duration),
    /// Stop: the deadline leaves no room. Tell the client to come back after this long.
    GiveUp {
        /// The client's wait: the server's `Retry-After` if any, at least 1 s, rounded up to
        /// whole seconds.
        client_retry_after: Duration,
    },
}

/// What to do after the `n`th failed attempt, at `now`: wait the server's `Retry-After` (or
/// [`backoff`] without one) and retry, if at least 100 ms would still be left before
/// `deadline`; otherwise give up.
pub fn next(
    attempt: &Attempt,
    policy: &Retry,
    n: u32,
    jitter: f64,
    now: Timestamp,
    deadline: Timestamp,
) -> Next {
    let server_wait = match attempt {
        Attempt::Retryable { retry_after, .. } => *retry_after,
        _ => None,
    };
    let wait = server_wait.unwrap_or_else(|| backoff(policy, n, jitter));
    let left = crate::clock::seconds_between(now, deadline);
    // Leave room for the next attempt itself: at least a short one must fit.
    if left - wait.as_secs_f64() < 0.1 {
        let after = server_wait
            .unwrap_or(Duration::from_secs(1))
            .max(Duration::from_secs(1));
        return Next::GiveUp {
            client_retry_after: Duration::from_secs(after.as_secs_f64().ceil() as u64),
        };
    }
    Next::RetryAfter(wait)
}

/// A response's `Retry-After`, if it has a readable one.
pub fn retry_after(headers: &http::HeaderMap, now: Timestamp) -> Option<Duration> {
    headers
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, now))
}

/// Parses `Retry-After`: delay seconds, or an HTTP date relative to `now`.
pub fn parse_retry_after(value: &str, now: Timestamp) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = jiff::fmt::rfc2822::parse(v).ok()?.timestamp();
    let secs = crate::clock::seconds_between(now, when);
    Some(Duration::from_secs_f64(secs.max(0.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Retry {
        Retry {
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(2),
            max_elapsed: Duration::from_secs(8),
        }
    }

    #[test]
    fn statuses_are_classified() {
        assert_eq!(Attempt::from_status(200, None), Attempt::Success);
        assert!(Attempt::from_status(503, None).should_retry());
        assert!(Attempt::from_status(429, None).should_retry());
        assert!(!Attempt::from_status(400, None).should_retry());
        assert!(!Attempt::from_status(401, None).should_retry());
        let (tempo, loki) = (BillsAt::AfterChecks, BillsAt::WhileParsing);
        assert!(Attempt::from_status(502, None).may_have_arrived(tempo));
        assert!(!Attempt::from_status(429, None).may_have_arrived(tempo));
        assert!(!Attempt::from_status(400, None).may_have_arrived(tempo));
        // Loki bills a log request's bytes before validating or rate limiting it.
        assert!(Attempt::from_status(400, None).may_have_arrived(loki));
        assert!(Attempt::from_status(429, None).may_have_arrived(loki));
        assert!(!Attempt::from_status(401, None).may_have_arrived(loki));
        assert!(!Attempt::ConnectFailed.may_have_arrived(loki));
        assert!(Attempt::Timeout.may_have_arrived(tempo));
        assert_eq!(reject_reason(403), RejectReason::Unauthorized);
        for a in [
            Attempt::Success,
            Attempt::from_status(503, None),
            Attempt::from_status(429, None),
            Attempt::from_status(400, None),
            Attempt::Timeout,
            Attempt::ConnectFailed,
            Attempt::Broken,
        ] {
            assert!(Attempt::LABELS.contains(&a.label()), "{a:?}");
        }
    }

    #[test]
    fn backoff_grows_caps_and_jitters() {
        let p = policy();
        assert_eq!(backoff(&p, 1, 0.5), Duration::from_millis(250));
        assert_eq!(backoff(&p, 2, 0.5), Duration::from_millis(500));
        assert_eq!(backoff(&p, 10, 0.5), Duration::from_secs(2));
        assert_eq!(backoff(&p, 1, 0.0), Duration::from_millis(200));
        assert_eq!(backoff(&p, 1, 1.0), Duration::from_millis(300));
    }

    #[test]
    fn retries_end_before_the_deadline_and_honour_retry_after() {
        let p = policy();
        let now: Timestamp = "2026-11-25T00:00:00Z".parse().unwrap();
        let deadline = crate::clock::add(now, Duration::from_secs(8));
        let busy = Attempt::Retryable {
            status: 503,
            retry_after: Some(Duration::from_secs(3)),
        };
        assert_eq!(
            next(&busy, &p, 1, 0.5, now, deadline),
            Next::RetryAfter(Duration::from_secs(3))
        );
        let late = crate::clock::add(now, Duration::from_secs(6));
        assert_eq!(
            next(&busy, &p, 1, 0.5, late, deadline),
            Next::GiveUp {
                client_retry_after: Duration::from_secs(3)
            }
        );
        assert_eq!(
            parse_retry_after("Wed, 25 Nov 2026 00:00:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
