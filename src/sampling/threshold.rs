//! OpenTelemetry consistent probability sampling: 56-bit randomness `R`, rejection
//! threshold `T`, keep iff `R >= T`, and the `th`/`rv` encodings of the W3C tracestate `ot`
//! entry (opentelemetry-specification `tracestate-probability-sampling.md`; precision
//! handling as the collector's `pkg/sampling`).

/// 2^56: thresholds and randomness are 56-bit.
pub const MAX_ADJUSTED_COUNT: u64 = 1 << 56;
const NUM_HEX_DIGITS: u32 = 14;
/// The smallest probability a threshold can express: 2^-56.
pub const MIN_PROBABILITY: f64 = 1.0 / MAX_ADJUSTED_COUNT as f64;

/// A rejection threshold: items with randomness below it are dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Threshold(u64);

/// 56 bits of randomness belonging to a trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Randomness(u64);

/// Why a `th` or `rv` value does not parse, or a probability has no threshold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodingError {
    /// A `th` longer than 14 hex digits.
    #[error("t-value exceeds 14 hex digits")]
    TValueSize,
    /// An empty `th`.
    #[error("t-value is empty")]
    TValueEmpty,
    /// An `rv` that is not exactly 14 hex digits.
    #[error("r-value must have 14 hex digits")]
    RValueSize,
    /// A character that is not a hex digit.
    #[error("invalid syntax")]
    Syntax,
    /// A probability outside [2^-56, 1] (or NaN), which no threshold expresses.
    #[error("sampling probability out of the range [2^-56, 1]")]
    ProbabilityRange,
}

impl Threshold {
    /// Keep everything (`th:0`).
    pub const ALWAYS: Threshold = Threshold(0);
    /// Keep nothing (no `th` can express it).
    pub const NEVER: Threshold = Threshold(MAX_ADJUSTED_COUNT);

    /// The threshold of 56-bit value `t` (capped at [`Threshold::NEVER`]).
    pub fn from_unsigned(t: u64) -> Threshold {
        Threshold(t.min(MAX_ADJUSTED_COUNT))
    }

    /// The threshold's 56-bit value (2^56 for [`Threshold::NEVER`]).
    pub fn unsigned(self) -> u64 {
        self.0
    }

    /// The threshold for probability `p`, rounded to `precision` hex digits (more digits
    /// are used near 0 and 1, where fewer would change the probability a lot).
    pub fn from_probability(p: f64, precision: u8) -> Result<Threshold, EncodingError> {
        let mut precision = if precision == 0 {
            NUM_HEX_DIGITS as i32
        } else {
            i32::from(precision)
        };
        if !(MIN_PROBABILITY..=1.0).contains(&p) {
            return Err(EncodingError::ProbabilityRange);
        }
        if p == 1.0 {
            return Ok(Threshold::ALWAYS);
        }
        let exp_f = frexp_exponent(p);
        let exp_r = frexp_exponent(1.0 - p);
        precision =
            (NUM_HEX_DIGITS as i32).min((precision + exp_f / -4).max(precision + exp_r / -4));
        let scaled = (p * MAX_ADJUSTED_COUNT as f64).round() as u64;
        let mut threshold = MAX_ADJUSTED_COUNT - scaled;
        let shift = 4 * (NUM_HEX_DIGITS as i32 - precision);
        if shift > 0 {
            threshold += 1 << (shift - 1);
            threshold >>= shift;
            threshold <<= shift;
        }
        Ok(Threshold(threshold.min(MAX_ADJUSTED_COUNT)))
    }

    /// The keep probability this threshold stands for.
    pub fn probability(self) -> f64 {
        (MAX_ADJUSTED_COUNT - self.0) as f64 / MAX_ADJUSTED_COUNT as f64
    }

    /// How many items each kept item represents (1/p); 0 for [`Threshold::NEVER`].
    pub fn adjusted_count(self) -> f64 {
        if self == Threshold::NEVER {
            0.0
        } else {
            1.0 / self.probability()
        }
    }

    /// Whether an item with randomness `r` is kept: `R >= T`.
    pub fn should_sample(self, r: Randomness) -> bool {
        self.0 <= r.0
    }

    /// The `th` value: lowercase hex, trailing zeros removed, `0` for always, empty for
    /// never.
    pub fn tvalue(self) -> String {
        if self.0 == 0 {
            return "0".into();
        }
        if self.0 >= MAX_ADJUSTED_COUNT {
            return String::new();
        }
        let s = format!("{:014x}", self.0);
        s.trim_end_matches('0').to_string()
    }

    /// Parses a `th` value (1 to 14 hex digits, padded on the right with zeros).
    pub fn parse_tvalue(s: &str) -> Result<Threshold, EncodingError> {
        if s.len() > NUM_HEX_DIGITS as usize {
            return Err(EncodingError::TValueSize);
        }
        if s.is_empty() {
            return Err(EncodingError::TValueEmpty);
        }
        if !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(EncodingError::Syntax);
        }
        let v = u64::from_str_radix(s, 16).map_err(|_| EncodingError::Syntax)?;
        Ok(Threshold(v << (4 * (NUM_HEX_DIGITS - s.len() as u32))))
    }
}

impl Randomness {
    /// Randomness from the low 56 bits of `r`.
    pub fn from_unsigned(r: u64) -> Randomness {
        Randomness(r & (MAX_ADJUSTED_COUNT - 1))
    }

    /// The randomness as a 56-bit value.
    pub fn unsigned(self) -> u64 {
        self.0
    }

    /// The low 56 bits of a 16-byte trace ID; `None` for an empty or all-zero ID.
    pub fn from_trace_id(id: &[u8]) -> Option<Randomness> {
        let bytes: &[u8; 16] = id.try_into().ok()?;
        if bytes.iter().all(|&b| b == 0) {
            return None;
        }
        let mut low = [0u8; 8];
        low.copy_from_slice(&bytes[8..]);
        Some(Randomness(
            u64::from_be_bytes(low) & (MAX_ADJUSTED_COUNT - 1),
        ))
    }

    /// Parses an `rv` value: exactly 14 hex digits.
    pub fn parse_rvalue(s: &str) -> Result<Randomness, EncodingError> {
        if s.len() != NUM_HEX_DIGITS as usize {
            return Err(EncodingError::RValueSize);
        }
        if !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(EncodingError::Syntax);
        }
        u64::from_str_radix(s, 16)
            .map(Randomness)
            .map_err(|_| EncodingError::Syntax)
    }

    /// The `rv` value: 14 lowercase hex digits.
    pub fn rvalue(self) -> String {
        format!("{:014x}", self.0)
    }
}

/// The binary exponent `e` of `f = m * 2^e` with `m` in [0.5, 1), as C's `frexp`.
fn frexp_exponent(f: f64) -> i32 {
    if f == 0.0 || !f.is_finite() {
        return 0;
    }
    let bits = f.to_bits();
    let exp = ((bits >> 52) & 0x7ff) as i32;
    if exp == 0 {
        // Subnormal: normalise first.
        return frexp_exponent(f * 2f64.powi(64)) - 64;
    }
    exp - 1022
}

/// The threshold for keeping items with probability `p_in * p`, as proportional sampling
/// combines an arriving probability with its own. `None` when the product is below 2^-56
/// (the item is dropped).
pub fn proportional(incoming: Threshold, p: f64, precision: u8) -> Option<Threshold> {
    let product = incoming.probability() * p;
    Threshold::from_probability(product, precision).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn th(p: f64, precision: u8) -> String {
        Threshold::from_probability(p, precision).unwrap().tvalue()
    }

    /// `pkg/sampling` encoding_test.go TestValidProbabilityToTValue (full precision).
    #[test]
    fn collector_full_precision_vectors() {
        for (p, want) in [
            (1.0, "0"),
            (0.5, "8"),
            (MIN_PROBABILITY, "ffffffffffffff"),
            (1.0 / 3.0, "aaaaaaaaaaaaac"),
            (2.0 / 3.0, "55555555555558"),
            (1.0 - 84.0 / 256.0, "54"),
            (1.0 - 1.0 / 256.0, "01"),
        ] {
            assert_eq!(th(p, 14), want, "p = {p}");
            assert_eq!(th(p, 0), want, "precision 0 means full, p = {p}");
        }
        assert_eq!(
            Threshold::from_probability(2f64.powi(-57), 4),
            Err(EncodingError::ProbabilityRange)
        );
        assert_eq!(
            Threshold::from_probability(1.1, 4),
            Err(EncodingError::ProbabilityRange)
        );
        assert_eq!(
            Threshold::from_probability(0.0, 4),
            Err(EncodingError::ProbabilityRange)
        );
    }

    /// The specification's 1-in-N table at precisions 3, 4 and 5.
    #[test]
    fn spec_one_in_n_table() {
        let rows: [(f64, [&str; 3]); 13] = [
            (1.0, ["0", "0", "0"]),
            (2.0, ["8", "8", "8"]),
            (3.0, ["aab", "aaab", "aaaab"]),
            (4.0, ["c", "c", "c"]),
            (5.0, ["ccd", "cccd", "ccccd"]),
            (8.0, ["e", "e", "e"]),
            (10.0, ["e66", "e666", "e6666"]),
            (16.0, ["f", "f", "f"]),
            (100.0, ["fd71", "fd70a", "fd70a4"]),
            (1000.0, ["ffbe7", "ffbe77", "ffbe76d"]),
            (10000.0, ["fff972", "fff9724", "fff97247"]),
            (100000.0, ["ffff584", "ffff583a", "ffff583a5"]),
            (1000000.0, ["ffffef4", "ffffef39", "ffffef391"]),
        ];
        for (n, want) in rows {
            for (i, prec) in [3u8, 4, 5].into_iter().enumerate() {
                assert_eq!(th(1.0 / n, prec), want[i], "1 in {n} at precision {prec}");
            }
        }
    }

    /// probability_test.go: rounding at limited precision and very small probabilities.
    #[test]
    fn collector_precision_vectors() {
        assert_eq!(th(1.0 / 3.0, 3), "aab");
        assert_eq!(th(2.0 / 3.0, 3), "555");
        assert_eq!(th(1.0, 3), "0");
        for (p, want) in [
            (MIN_PROBABILITY, "ffffffffffffff"),
            (2.0 * MIN_PROBABILITY, "fffffffffffffe"),
            (3.0 * MIN_PROBABILITY, "fffffffffffffd"),
            (8.0 * MIN_PROBABILITY, "fffffffffffff8"),
            (16.0 * MIN_PROBABILITY, "fffffffffffff"),
        ] {
            assert_eq!(th(p, 3), want);
        }
        // TestProbabilityToThresholdWithPrecision: 1 - 0x456789a p-28 at decreasing precision.
        let p = 1.0 - f64::from(0x456789a) / 2f64.powi(28);
        let got: Vec<String> = (1..=7).rev().map(|prec| th(p, prec)).collect();
        assert_eq!(
            got,
            ["456789a", "45678a", "45679", "4568", "456", "45", "4"]
        );
        let p = 1.0 - f64::from(0x12345678u32) / 2f64.powi(32);
        let got: Vec<String> = (1..=7).rev().map(|prec| th(p, prec)).collect();
        assert_eq!(
            got,
            ["1234568", "123456", "12345", "1234", "123", "12", "1"]
        );
        // 40% at precision 3 and 6 (tracesprocessor_test.go).
        assert_eq!(th(0.4, 3), "99a");
        assert_eq!(th(0.4, 6), "99999a");
        assert_eq!(th(0.2, 6), "cccccd");
    }

    #[test]
    fn tvalue_and_rvalue_syntax() {
        assert_eq!(
            Threshold::parse_tvalue("8").unwrap().unsigned(),
            0x80000000000000
        );
        assert_eq!(
            Threshold::parse_tvalue("08").unwrap().unsigned(),
            0x08000000000000
        );
        assert_eq!(Threshold::parse_tvalue("0").unwrap(), Threshold::ALWAYS);
        assert_eq!(Threshold::parse_tvalue("8").unwrap().probability(), 0.5);
        assert_eq!(Threshold::parse_tvalue("c").unwrap().adjusted_count(), 4.0);
        assert_eq!(
            Threshold::parse_tvalue("80000000000000").unwrap().tvalue(),
            "8"
        );
        assert_eq!(Threshold::parse_tvalue(""), Err(EncodingError::TValueEmpty));
        assert_eq!(Threshold::parse_tvalue("g"), Err(EncodingError::Syntax));
        assert_eq!(Threshold::parse_tvalue("-1"), Err(EncodingError::Syntax));
        assert_eq!(
            Threshold::parse_tvalue("ffffffffffffffff"),
            Err(EncodingError::TValueSize)
        );
        assert!(Randomness::parse_rvalue("12341234123412").is_ok());
        assert_eq!(
            Randomness::parse_rvalue("FD70A3D70A3D71").unwrap().rvalue(),
            "fd70a3d70a3d71"
        );
        for bad in ["123412341234120", "1234123412341", ""] {
            assert_eq!(
                Randomness::parse_rvalue(bad),
                Err(EncodingError::RValueSize)
            );
        }
        assert_eq!(
            Randomness::parse_rvalue("abcdefgabcdefg"),
            Err(EncodingError::Syntax)
        );
        let id = hex::decode("abababababababababd29d6a7215ced0").unwrap();
        assert_eq!(
            Randomness::from_trace_id(&id).unwrap().rvalue(),
            "d29d6a7215ced0"
        );
        assert!(
            Threshold::parse_tvalue("c")
                .unwrap()
                .should_sample(Randomness::from_trace_id(&id).unwrap())
        );
        assert_eq!(Randomness::from_trace_id(&[0; 16]), None);
        assert_eq!(Randomness::from_trace_id(&[1; 8]), None);
        assert_eq!(Threshold::NEVER.tvalue(), "");
    }

    /// TestShouldSample: 50% against randomness at the boundary.
    #[test]
    fn keep_iff_randomness_at_least_threshold() {
        let half = Threshold::from_probability(0.5, 4).unwrap();
        for (low7, want) in [
            ("00000000000000", false),
            ("7fffffffffffff", false),
            ("80000000000000", true),
            ("ffffffffffffff", true),
        ] {
            let id = hex::decode(format!("eeeeeeeeeeeeeeeeee{low7}")).unwrap();
            assert_eq!(
                half.should_sample(Randomness::from_trace_id(&id).unwrap()),
                want,
                "{low7}"
            );
        }
    }

    /// Probabilities multiply: th:8 at 50% leaves as th:c; the collector's table.
    #[test]
    fn proportional_thresholds_multiply() {
        let t = |s: &str| Threshold::parse_tvalue(s).unwrap();
        assert_eq!(proportional(t("8"), 0.5, 4).unwrap().tvalue(), "c");
        assert_eq!(proportional(t("c"), 0.5, 4).unwrap().tvalue(), "e");
        assert_eq!(proportional(t("8"), 0.25, 4).unwrap().tvalue(), "e");
        assert_eq!(proportional(t("e"), 0.5, 4).unwrap().tvalue(), "f");
        assert_eq!(proportional(t("8"), 0.4, 6).unwrap().tvalue(), "cccccd");
        assert_eq!(
            proportional(t("fffc"), 2f64.powi(-14), 4).unwrap().tvalue(),
            "fffffff"
        );
        // Underflow below 2^-56 drops.
        assert_eq!(
            proportional(t("fffffffffffff8"), 2f64.powi(-4) / 100.0, 4),
            None
        );
        // Multiplying never lowers the threshold.
        for tin in ["0", "1", "8", "abc", "fffff"] {
            for p in [1.0, 0.9, 0.5, 0.01] {
                let out = proportional(t(tin), p, 4).unwrap();
                assert!(out >= t(tin) || p == 1.0, "{tin} x {p}");
            }
        }
    }
}
