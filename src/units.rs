//! Quantities as users write them in a policy: sizes (`50GB`, `512MiB`), durations
//! (`10s`, `2m`, `1d`), ratios (`95%`, `0.95`) and byte rates (`500kB/s`).
//!
//! Sizes follow Grafana's billing: `GB` is 10^9 bytes; `GiB` is 2^30. Parsing returns a
//! message that says what would have been accepted, because these messages end up in
//! `frugal check` output.

use std::time::Duration;

const SIZE_HINT: &str = "try 50GB, 50GiB, 500MB or a number of bytes";
const DURATION_HINT: &str = "try 500ms, 10s, 2m, 1h or 1d";
const RATIO_HINT: &str = "try 95% or 0.95";
const RATE_HINT: &str = "try 500kB/s or 5MB/s";

/// Parses a byte size: a number followed by an optional unit (B, kB, MB, GB, TB, KiB, MiB,
/// GiB, TiB; case-insensitive, a space allowed between).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let (num, unit) = split_number(s).ok_or_else(|| not_a("size", s, SIZE_HINT))?;
    let mult: f64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" | "k" => 1e3,
        "mb" | "m" => 1e6,
        "gb" | "g" => 1e9,
        "tb" | "t" => 1e12,
        "kib" | "ki" => 1024.0,
        "mib" | "mi" => 1024.0 * 1024.0,
        "gib" | "gi" => 1024.0 * 1024.0 * 1024.0,
        "tib" | "ti" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return Err(not_a("size", s, SIZE_HINT)),
    };
    let v = num * mult;
    if !v.is_finite() || v < 0.0 || v > u64::MAX as f64 {
        return Err(not_a("size", s, SIZE_HINT));
    }
    Ok(v.round() as u64)
}

/// Formats a byte count with decimal units, as Grafana's invoices do.
pub fn format_size(bytes: u64) -> String {
    let b = bytes as f64;
    let (v, unit) = if b >= 1e12 {
        (b / 1e12, "TB")
    } else if b >= 1e9 {
        (b / 1e9, "GB")
    } else if b >= 1e6 {
        (b / 1e6, "MB")
    } else if b >= 1e3 {
        (b / 1e3, "kB")
    } else {
        return format!("{bytes}B");
    };
    let s = format!("{v:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s}{unit}")
}

/// Parses a duration: a number and a unit among ms, s, m, h, d, w (`1.5h` is allowed).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = split_number(s).ok_or_else(|| not_a("duration", s, DURATION_HINT))?;
    let secs = match unit.to_ascii_lowercase().as_str() {
        "ms" => num / 1e3,
        "s" | "sec" | "secs" => num,
        "m" | "min" | "mins" => num * 60.0,
        "h" => num * 3600.0,
        "d" => num * 86400.0,
        "w" => num * 7.0 * 86400.0,
        _ => return Err(not_a("duration", s, DURATION_HINT)),
    };
    if !secs.is_finite() || !(0.0..=1e12).contains(&secs) {
        return Err(not_a("duration", s, DURATION_HINT));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Formats a duration the way [`parse_duration`] reads it.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 86_400_000 == 0 && ms > 0 {
        format!("{}d", ms / 86_400_000)
    } else if ms % 3_600_000 == 0 && ms > 0 {
        format!("{}h", ms / 3_600_000)
    } else if ms % 60_000 == 0 && ms > 0 {
        format!("{}m", ms / 60_000)
    } else if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// Parses a ratio in [0, 1]: `95%` or `0.95`.
pub fn parse_ratio(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let v = if let Some(p) = t.strip_suffix('%') {
        p.trim()
            .parse::<f64>()
            .map_err(|_| not_a("ratio", s, RATIO_HINT))?
            / 100.0
    } else {
        t.parse::<f64>()
            .map_err(|_| not_a("ratio", s, RATIO_HINT))?
    };
    if !(0.0..=1.0).contains(&v) {
        return Err(format!("{s:?} is not between 0% and 100%"));
    }
    Ok(v)
}

/// Parses a byte rate such as `500kB/s` into bytes per second.
pub fn parse_rate(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let size = t
        .strip_suffix("/s")
        .or_else(|| t.strip_suffix("/sec"))
        .ok_or_else(|| not_a("byte rate", s, RATE_HINT))?;
    parse_size(size).map_err(|_| not_a("byte rate", s, RATE_HINT))
}

fn split_number(s: &str) -> Option<(f64, &str)> {
    let t = s.trim();
    let end = t
        .char_indices()
        .find(|&(_, c)| !(c.is_ascii_digit() || c == '.' || c == '_'))
        .map_or(t.len(), |(i, _)| i);
    let num: String = t[..end].chars().filter(|&c| c != '_').collect();
    if num.is_empty() {
        return None;
    }
    let v = num.parse::<f64>().ok()?;
    Some((v, t[end..].trim()))
}

fn not_a(what: &str, s: &str, hint: &str) -> String {
    format!("{s:?} is not a {what} ({hint})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_use_decimal_units_as_grafana_bills() {
        let check = |s: &str, want: u64| assert_eq!(parse_size(s), Ok(want), "{s}");
        check("50GB", 50_000_000_000);
        check("50 GB", 50_000_000_000);
        check("50gb", 50_000_000_000);
        check("1.5GB", 1_500_000_000);
        check("500kB", 500_000);
        check("16MiB", 16 * 1024 * 1024);
        check("2GiB", 2 * 1024 * 1024 * 1024);
        check("10000", 10_000);
        check("1_000B", 1000);
        assert!(parse_size("50 GiBs").unwrap_err().contains("is not a size"));
        assert!(parse_size("").is_err());
        assert!(parse_size("GB").is_err());
        assert_eq!(format_size(50_000_000_000), "50GB");
        assert_eq!(format_size(1_234_567), "1.23MB");
        assert_eq!(format_size(999), "999B");
    }

    #[test]
    fn durations_ratios_and_rates() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86400)));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("ten seconds").is_err());
        assert_eq!(format_duration(Duration::from_secs(600)), "10m");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(parse_ratio("95%"), Ok(0.95));
        assert_eq!(parse_ratio("0.5"), Ok(0.5));
        assert!(parse_ratio("120%").is_err());
        assert_eq!(parse_rate("500kB/s"), Ok(500_000));
        assert_eq!(parse_rate("5MB/s"), Ok(5_000_000));
        assert!(parse_rate("5MB").is_err());
    }
}
