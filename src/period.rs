//! Billing periods: the UTC calendar month Grafana bills by, or a day, a week, or any
//! fixed duration (`every: 10m`) anchored at a stated start.
//!
//! Pure calendar arithmetic on timestamps handed in; this module never reads the clock.

use std::time::Duration;

use jiff::civil::{Date, Weekday};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

/// How the budget's period is laid out in time.
#[derive(Debug, Clone, PartialEq)]
pub enum PeriodSpec {
    /// A calendar month starting on `reset_day` (clamped to the month's last day) at
    /// midnight in `tz`. Grafana Cloud bills the UTC month starting on the 1st.
    Monthly {
        /// Day of the month the period starts on (1 to 31).
        reset_day: i8,
        /// Time zone whose midnight starts the period.
        tz: TimeZone,
    },
    /// A calendar day from midnight in `tz`.
    Daily {
        /// Time zone whose midnight starts the day.
        tz: TimeZone,
    },
    /// A week starting at midnight on `weekday` in `tz`.
    Weekly {
        /// Day the week starts on.
        weekday: Weekday,
        /// Time zone whose midnight starts the week.
        tz: TimeZone,
    },
    /// Back-to-back periods of a fixed length, the first starting at `anchor`.
    Every {
        /// Length of each period.
        every: Duration,
        /// Start of one period (the policy's `start`); the others follow back to back,
        /// before and after it.
        anchor: Timestamp,
    },
}

/// One period: `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    /// First instant of the period (inclusive).
    pub start: Timestamp,
    /// First instant after the period (exclusive): the next period's start.
    pub end: Timestamp,
}

impl Period {
    /// Length of the period in seconds.
    pub fn length_seconds(&self) -> f64 {
        crate::clock::seconds_between(self.start, self.end)
    }

    /// Seconds from `now` to the end of the period (never negative).
    pub fn remaining_seconds(&self, now: Timestamp) -> f64 {
        crate::clock::seconds_between(now, self.end).max(0.0)
    }

    /// Seconds since the start (never negative).
    pub fn elapsed_seconds(&self, now: Timestamp) -> f64 {
        crate::clock::seconds_between(self.start, now).max(0.0)
    }

    /// Whether `t` falls within `[start, end)`.
    pub fn contains(&self, t: Timestamp) -> bool {
        self.start <= t && t < self.end
    }

    /// The key under which this period's counters are stored.
    pub fn key(&self) -> String {
        self.start.to_string()
    }
}

impl PeriodSpec {
    /// Grafana Cloud's billing period: the UTC calendar month.
    pub fn utc_month() -> Self {
        PeriodSpec::Monthly {
            reset_day: 1,
            tz: TimeZone::UTC,
        }
    }

    /// The period that contains `now`.
    pub fn period_at(&self, now: Timestamp) -> Period {
        match self {
            PeriodSpec::Monthly { reset_day, tz } => monthly(now, *reset_day, tz),
            PeriodSpec::Daily { tz } => {
                let day = now.to_zoned(tz.clone()).date();
                let start = midnight(day, tz);
                let end = midnight(day.tomorrow().unwrap_or(day), tz);
                Period { start, end }
            }
            PeriodSpec::Weekly { weekday, tz } => {
                let today = now.to_zoned(tz.clone()).date();
                let back = i64::from(today.weekday().since(*weekday));
                let first = today.checked_sub(back.days()).unwrap_or(today);
                let start = midnight(first, tz);
                let end = midnight(first.checked_add(7.days()).unwrap_or(first), tz);
                Period { start, end }
            }
            PeriodSpec::Every { every, anchor } => {
                let len = every.as_nanos().max(1) as i128;
                let since = now.as_nanosecond() - anchor.as_nanosecond();
                let n = since.div_euclid(len);
                let start = anchor.as_nanosecond() + n * len;
                let ts = |ns: i128| Timestamp::from_nanosecond(ns).unwrap_or(Timestamp::MAX);
                Period {
                    start: ts(start),
                    end: ts(start + len),
                }
            }
        }
    }

    /// The shortest a period of this kind can be (February, for months), for checks.
    pub fn shortest_length(&self) -> Duration {
        match self {
            PeriodSpec::Monthly { .. } => Duration::from_secs(28 * 86400),
            PeriodSpec::Daily { .. } => Duration::from_secs(23 * 3600),
            PeriodSpec::Weekly { .. } => Duration::from_secs(7 * 86400 - 3600),
            PeriodSpec::Every { every, .. } => *every,
        }
    }

    /// A short human description, for logs and the usage API.
    pub fn describe(&self) -> String {
        match self {
            PeriodSpec::Monthly { reset_day, tz } => format!(
                "monthly from day {reset_day}, {}",
                tz.iana_name().unwrap_or("UTC")
            ),
            PeriodSpec::Daily { tz } => format!("daily, {}", tz.iana_name().unwrap_or("UTC")),
            PeriodSpec::Weekly { weekday, tz } => {
                format!(
                    "weekly from {weekday:?}, {}",
                    tz.iana_name().unwrap_or("UTC")
                )
            }
            PeriodSpec::Every { every, anchor } => format!(
                "every {} from {anchor}",
                crate::units::format_duration(*every)
            ),
        }
    }
}

fn midnight(day: Date, tz: &TimeZone) -> Timestamp {
    day.to_zoned(tz.clone())
        .map(|z| z.timestamp())
        .unwrap_or(Timestamp::UNIX_EPOCH)
}

fn month_start(year: i16, month: i8, reset_day: i8, tz: &TimeZone) -> Timestamp {
    let first = Date::new(year, month, 1).unwrap_or(Date::ZERO);
    let day = reset_day.clamp(1, first.days_in_month());
    midnight(Date::new(year, month, day).unwrap_or(first), tz)
}

fn shift_month(year: i16, month: i8, by: i8) -> (i16, i8) {
    let m0 = i32::from(month) - 1 + i32::from(by);
    let y = i32::from(year) + m0.div_euclid(12);
    (y as i16, (m0.rem_euclid(12) + 1) as i8)
}

fn monthly(now: Timestamp, reset_day: i8, tz: &TimeZone) -> Period {
    let local = now.to_zoned(tz.clone());
    let (y, m) = (local.year(), local.month());
    let this = month_start(y, m, reset_day, tz);
    let (sy, sm) = if this <= now {
        (y, m)
    } else {
        shift_month(y, m, -1)
    };
    let (ey, em) = shift_month(sy, sm, 1);
    Period {
        start: month_start(sy, sm, reset_day, tz),
        end: month_start(ey, em, reset_day, tz),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn check(spec: &PeriodSpec, now: &str, start: &str, end: &str) {
        let p = spec.period_at(ts(now));
        assert_eq!((p.start, p.end), (ts(start), ts(end)), "at {now}");
    }

    #[test]
    fn utc_month_is_the_billing_period() {
        let spec = PeriodSpec::utc_month();
        check(
            &spec,
            "2026-11-25T10:00:00Z",
            "2026-11-01T00:00:00Z",
            "2026-12-01T00:00:00Z",
        );
        check(
            &spec,
            "2026-12-31T23:59:59Z",
            "2026-12-01T00:00:00Z",
            "2027-01-01T00:00:00Z",
        );
        check(
            &spec,
            "2026-12-01T00:00:00Z",
            "2026-12-01T00:00:00Z",
            "2027-01-01T00:00:00Z",
        );
        check(
            &spec,
            "2028-02-29T12:00:00Z",
            "2028-02-01T00:00:00Z",
            "2028-03-01T00:00:00Z",
        );
    }

    #[test]
    fn reset_day_and_time_zone() {
        let tokyo = TimeZone::get("Asia/Tokyo").unwrap();
        let spec = PeriodSpec::Monthly {
            reset_day: 15,
            tz: tokyo,
        };
        // 2026-11-14T20:00Z is the 15th in Tokyo already.
        check(
            &spec,
            "2026-11-14T20:00:00Z",
            "2026-11-14T15:00:00Z",
            "2026-12-14T15:00:00Z",
        );
        check(
            &spec,
            "2026-11-14T14:00:00Z",
            "2026-10-14T15:00:00Z",
            "2026-11-14T15:00:00Z",
        );
        // Day 31 clamps to the month's last day.
        let spec = PeriodSpec::Monthly {
            reset_day: 31,
            tz: TimeZone::UTC,
        };
        check(
            &spec,
            "2026-02-28T12:00:00Z",
            "2026-02-28T00:00:00Z",
            "2026-03-31T00:00:00Z",
        );
        check(
            &spec,
            "2026-02-27T12:00:00Z",
            "2026-01-31T00:00:00Z",
            "2026-02-28T00:00:00Z",
        );
    }

    #[test]
    fn days_weeks_and_fixed_durations() {
        let spec = PeriodSpec::Daily { tz: TimeZone::UTC };
        check(
            &spec,
            "2026-11-25T10:00:00Z",
            "2026-11-25T00:00:00Z",
            "2026-11-26T00:00:00Z",
        );
        let spec = PeriodSpec::Weekly {
            weekday: Weekday::Monday,
            tz: TimeZone::UTC,
        };
        // 2026-11-25 is a Wednesday.
        check(
            &spec,
            "2026-11-25T10:00:00Z",
            "2026-11-23T00:00:00Z",
            "2026-11-30T00:00:00Z",
        );
        check(
            &spec,
            "2026-11-23T00:00:00Z",
            "2026-11-23T00:00:00Z",
            "2026-11-30T00:00:00Z",
        );
        let spec = PeriodSpec::Every {
            every: Duration::from_secs(600),
            anchor: ts("2026-11-25T00:00:00Z"),
        };
        check(
            &spec,
            "2026-11-25T10:05:00Z",
            "2026-11-25T10:00:00Z",
            "2026-11-25T10:10:00Z",
        );
        check(
            &spec,
            "2026-11-24T23:55:00Z",
            "2026-11-24T23:50:00Z",
            "2026-11-25T00:00:00Z",
        );
        let p = spec.period_at(ts("2026-11-25T10:05:00Z"));
        assert_eq!(p.length_seconds(), 600.0);
        assert_eq!(p.remaining_seconds(ts("2026-11-25T10:05:00Z")), 300.0);
        assert!(p.contains(ts("2026-11-25T10:00:00Z")));
        assert!(!p.contains(ts("2026-11-25T10:10:00Z")));
    }
}
