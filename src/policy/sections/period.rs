//! The `period` section: what a budget is per (a month from a reset day, a day, a week, or
//! a fixed length), and in which time zone it turns over.

use jiff::Timestamp;
use jiff::civil::Weekday;
use jiff::tz::TimeZone;

use crate::period::PeriodSpec;
use crate::policy::defaults::{
    DEFAULT_PERIOD_START, DEFAULT_RESET_DAY, DEFAULT_TIMEZONE, DEFAULT_WEEKDAY, MIN_PERIOD,
    RESET_DAY_RANGE,
};
use crate::policy::problem::must_be_at_least;
use crate::policy::tree::{Node, with};
use crate::units::parse_duration;

const WEEKDAYS: [(&str, Weekday); 7] = [
    ("monday", Weekday::Monday),
    ("tuesday", Weekday::Tuesday),
    ("wednesday", Weekday::Wednesday),
    ("thursday", Weekday::Thursday),
    ("friday", Weekday::Friday),
    ("saturday", Weekday::Saturday),
    ("sunday", Weekday::Sunday),
];

/// Reads `period`; `None` when it is not a mapping or `every` is not a period.
pub(in crate::policy) fn build(n: Node<'_>) -> Option<PeriodSpec> {
    let mut o = n.map()?;
    let every = with(&mut o, "every", |n| n.text());
    let reset_day = with(&mut o, "reset_day", |n| {
        let d = n.u64()?;
        if RESET_DAY_RANGE.contains(&d) {
            Some(d as i8)
        } else {
            n.problem(format!(
                "{d} is not a day of the month ({} to {})",
                RESET_DAY_RANGE.start(),
                RESET_DAY_RANGE.end()
            ));
            None
        }
    });
    let tz = with(&mut o, "timezone", timezone);
    let weekday = with(&mut o, "weekday", |n| n.choice(&WEEKDAYS));
    let start = with(&mut o, "start", |n| {
        n.parse(|s| {
            s.parse::<Timestamp>()
                .map_err(|_| format!("{s:?} is not a time (try 2026-11-01T00:00:00Z)"))
        })
    });
    let path = o.path.clone();
    let problems = o.problems();
    let given = [
        ("reset_day", reset_day.is_some()),
        ("timezone", tz.is_some()),
        ("weekday", weekday.is_some()),
        ("start", start.is_some()),
    ];
    // Reports the keys given that a kind of period does not take.
    let takes_only = |kind: &str, takes: &[&str]| {
        for (key, _) in given.iter().filter(|(k, g)| *g && !takes.contains(k)) {
            problems.push(
                &format!("{path}.{key}"),
                format!("does not apply to a {kind} period"),
            );
        }
    };
    let tz = tz.unwrap_or(DEFAULT_TIMEZONE);
    let spec = match every.as_deref().map(str::trim) {
        None | Some("month") => {
            takes_only("monthly", &["reset_day", "timezone"]);
            Some(PeriodSpec::Monthly {
                reset_day: reset_day.unwrap_or(DEFAULT_RESET_DAY),
                tz,
            })
        }
        Some("day") => {
            takes_only("daily", &["timezone"]);
            Some(PeriodSpec::Daily { tz })
        }
        Some("week") => {
            takes_only("weekly", &["weekday", "timezone"]);
            Some(PeriodSpec::Weekly {
                weekday: weekday.unwrap_or(DEFAULT_WEEKDAY),
                tz,
            })
        }
        Some(d) => match parse_duration(d) {
            Ok(every) if every >= MIN_PERIOD => {
                takes_only("fixed-length", &["start"]);
                Some(PeriodSpec::Every {
                    every,
                    anchor: start.unwrap_or(DEFAULT_PERIOD_START),
                })
            }
            Ok(_) => {
                problems.push(&format!("{path}.every"), must_be_at_least(MIN_PERIOD));
                None
            }
            Err(_) => {
                problems.push(
                    &format!("{path}.every"),
                    format!("{d:?} is not a period (try month, week, day or a duration like 10m)"),
                );
                None
            }
        },
    };
    o.finish();
    spec
}

fn timezone(n: Node<'_>) -> Option<TimeZone> {
    n.parse(|s| {
        TimeZone::get(s).map_err(|_| format!("{s:?} is not a time zone (try UTC or Asia/Tokyo)"))
    })
}
