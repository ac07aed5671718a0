//! The W3C `tracestate` header and its OpenTelemetry `ot` entry (`ot=th:c;rv:...`), read
//! and rewritten as the OpenTelemetry specification's `tracestate-handling.md` says.
//!
//! Only `th` and `rv` are interpreted; other `ot` sub-keys and other vendors' entries are
//! kept in order, with the `ot` entry written first. A tracestate that does not parse is
//! left exactly as it came.

use super::threshold::{EncodingError, Randomness, Threshold};

const MAX_W3C_LEN: usize = 1024;
const MAX_MEMBERS: usize = 32;
const MAX_OT_LEN: usize = 256;

/// A parsed tracestate.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TraceState {
    /// The `ot` entry's sub-keys other than `th` and `rv`, in order.
    ot_extra: Vec<(String, String)>,
    /// The arriving `rv`, verbatim (upper case passes through).
    rv_text: Option<String>,
    /// The `ot` entry's explicit randomness (`rv`), if any.
    pub rv: Option<Randomness>,
    /// The `ot` entry's threshold (`th`), if any.
    pub th: Option<Threshold>,
    /// The `th` as it arrived, kept when a rewrite would lower it.
    th_text: Option<String>,
    /// Other vendors' entries, verbatim, in order.
    others: Vec<String>,
}

/// Why a tracestate does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TraceStateError {
    /// A member, or an `ot` sub-key or value, that the W3C or OpenTelemetry syntax forbids.
    #[error("invalid tracestate syntax")]
    Syntax,
    /// Over 1024 characters or 32 members, or an `ot` value over 256 characters.
    #[error("invalid tracestate size")]
    Size,
    /// A `th` or `rv` that does not parse.
    #[error("invalid ot entry: {0}")]
    Value(#[from] EncodingError),
}

impl TraceState {
    /// Parses a W3C tracestate (empty is fine: no entries).
    pub fn parse(s: &str) -> Result<TraceState, TraceStateError> {
        if s.len() > MAX_W3C_LEN {
            return Err(TraceStateError::Size);
        }
        let mut ts = TraceState::default();
        let mut members = 0;
        for raw in s.split(',') {
            let member = raw.trim_matches(|c| c == ' ' || c == '\t');
            members += 1;
            if members > MAX_MEMBERS {
                return Err(TraceStateError::Size);
            }
            if member.is_empty() {
                continue;
            }
            let (key, value) = member.split_once('=').ok_or(TraceStateError::Syntax)?;
            if !valid_key(key) || !valid_value(value) {
                return Err(TraceStateError::Syntax);
            }
            if key == "ot" {
                ts.parse_ot(value)?;
            } else {
                ts.others.push(member.to_string());
            }
        }
        Ok(ts)
    }

    fn parse_ot(&mut self, value: &str) -> Result<(), TraceStateError> {
        if value.len() > MAX_OT_LEN {
            return Err(TraceStateError::Size);
        }
        for part in value.split(';') {
            let (k, v) = part.split_once(':').ok_or(TraceStateError::Syntax)?;
            let key_ok = k.starts_with(|c: char| c.is_ascii_lowercase())
                && k.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
            let value_ok = v
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-');
            if !key_ok || !value_ok {
                return Err(TraceStateError::Syntax);
            }
            match k {
                "th" => {
                    self.th = Some(Threshold::parse_tvalue(v)?);
                    self.th_text = Some(v.to_string());
                }
                "rv" => {
                    self.rv = Some(Randomness::parse_rvalue(v)?);
                    self.rv_text = Some(v.to_string());
                }
                _ => self.ot_extra.push((k.to_string(), v.to_string())),
            }
        }
        Ok(())
    }

    /// Sets `th`, unless that would lower an arriving threshold (a downstream sampler may
    /// only sample less). Returns whether the threshold written is `th`.
    pub fn set_threshold(&mut self, th: Threshold) -> bool {
        if let Some(old) = self.th
            && old > th
        {
            return false;
        }
        self.th = Some(th);
        self.th_text = None;
        true
    }

    /// Removes `th` (an arriving threshold inconsistent with the randomness).
    pub fn clear_threshold(&mut self) {
        self.th = None;
        self.th_text = None;
    }

    /// Sets an explicit `rv` (hash_seed mode).
    pub fn set_randomness(&mut self, rv: Randomness) {
        self.rv = Some(rv);
        self.rv_text = None;
    }

    /// Writes the tracestate back: `ot` first, then the other entries as they came.
    pub fn serialize(&self) -> String {
        let mut ot: Vec<String> = Vec::new();
        if let Some(rv) = self.rv {
            ot.push(format!(
                "rv:{}",
                self.rv_text.clone().unwrap_or_else(|| rv.rvalue())
            ));
        }
        if let Some(th) = self.th {
            let text = self.th_text.clone().unwrap_or_else(|| th.tvalue());
            if !text.is_empty() {
                ot.push(format!("th:{text}"));
            }
        }
        for (k, v) in &self.ot_extra {
            ot.push(format!("{k}:{v}"));
        }
        let mut out: Vec<String> = Vec::new();
        if !ot.is_empty() {
            out.push(format!("ot={}", ot.join(";")));
        }
        out.extend(self.others.iter().cloned());
        out.join(",")
    }
}

fn valid_key(k: &str) -> bool {
    let simple = |s: &str, max: usize| {
        !s.is_empty()
            && s.len() <= max
            && s.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && s.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-' | '*' | '/')
            })
    };
    match k.split_once('@') {
        None => simple(k, 256) && k.starts_with(|c: char| c.is_ascii_lowercase()),
        Some((tenant, system)) => simple(tenant, 241) && simple(system, 14),
    }
}

fn valid_value(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 256
        && !v.ends_with(' ')
        && v.bytes()
            .all(|b| (0x20..=0x7e).contains(&b) && b != b',' && b != b'=')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_round_trips() {
        let ts = TraceState::parse("ot=th:c;rv:d29d6a7215ced0;pn:abc,zz=vendorcontent").unwrap();
        assert_eq!(ts.th.unwrap().tvalue(), "c");
        assert_eq!(ts.rv.unwrap().rvalue(), "d29d6a7215ced0");
        assert_eq!(
            ts.serialize(),
            "ot=rv:d29d6a7215ced0;th:c;pn:abc,zz=vendorcontent"
        );
        for ok in [
            "ot=th:1",
            " ot=th:1 ",
            " ot=th:1,other=value ",
            ",,,",
            " , ot=th:1, , other=value ",
            "ot=th:100;rv:abcdabcdabcdff",
            "ot=rv:ffffffffffffff,unknown=value,other=something",
            "",
        ] {
            assert!(TraceState::parse(ok).is_ok(), "{ok:?}");
        }
        for bad in [
            "-1=2",
            "=",
            "ot=th:abababababababab",
            "ot=rv:abababababababab",
            "ot=th:-1",
            "ot=th:1;",
            "ot=th:",
            "ot=",
            "ot=x:1;",
        ] {
            assert!(TraceState::parse(bad).is_err(), "{bad:?}");
        }
        assert!(TraceState::parse(&format!("{}x=y", "x=y,".repeat(32))).is_err());
    }

    #[test]
    fn thresholds_are_rewritten_but_never_lowered() {
        let mut ts = TraceState::parse("ot=rv:FD70A3D70A3D71,a=b").unwrap();
        assert!(ts.set_threshold(Threshold::parse_tvalue("fd70a").unwrap()));
        // Upper-case rv passes through as it came.
        assert_eq!(ts.serialize(), "ot=rv:FD70A3D70A3D71;th:fd70a,a=b");
        let mut ts = TraceState::parse("ot=th:80000000000000").unwrap();
        assert!(ts.set_threshold(Threshold::parse_tvalue("8").unwrap()));
        assert_eq!(ts.serialize(), "ot=th:8", "extra zeros in th are erased");
        let mut ts = TraceState::parse("ot=th:8").unwrap();
        assert!(!ts.set_threshold(Threshold::parse_tvalue("4").unwrap()));
        assert_eq!(ts.serialize(), "ot=th:8");
        let mut ts = TraceState::parse("").unwrap();
        ts.set_threshold(Threshold::from_probability(0.25, 4).unwrap());
        assert_eq!(ts.serialize(), "ot=th:c");
    }
}
