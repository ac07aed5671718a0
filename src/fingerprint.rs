//! A series' identity as a stable 64-bit number: the key of the active-series tracker and
//! of its store. It must not change between releases or restarts, since it is persisted.
//!
//! The algorithm is 64-bit FNV-1a (offset basis `0xcbf29ce484222325`, prime
//! `0x100000001b3`, as published by Fowler, Noll and Vo) over each label of the sorted set
//! as `name 0xFF value 0xFF`. `0xFF` never occurs in UTF-8 text, so the boundaries are
//! unambiguous (`a="bc"` and `ab="c"` differ). FNV-1a is written out here rather than taken
//! from a crate so that nothing a dependency update does can change a stored key; its low
//! bits are weak, so hash tables mix it again before use.

const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const PRIME: u64 = 0x0000_0100_0000_01b3;
const SEPARATOR: u8 = 0xFF;

/// The stable identity of a series (a label set sorted by name, `__name__` included).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(pub u64);

impl Fingerprint {
    /// The fingerprint of `labels`, which must be sorted by name (as
    /// [`crate::metering::series::LabelSet`]s are).
    pub fn of(labels: &[(String, String)]) -> Fingerprint {
        Self::of_pairs(labels.iter().map(|(n, v)| (n.as_str(), v.as_str())))
    }

    /// The fingerprint of labels given in order (sorted by name), as borrowed pairs.
    pub fn of_pairs<'a>(labels: impl IntoIterator<Item = (&'a str, &'a str)>) -> Fingerprint {
        let mut h = OFFSET_BASIS;
        let mut eat = |bytes: &[u8]| {
            for &b in bytes {
                h ^= u64::from(b);
                h = h.wrapping_mul(PRIME);
            }
        };
        for (name, value) in labels {
            eat(name.as_bytes());
            eat(&[SEPARATOR]);
            eat(value.as_bytes());
            eat(&[SEPARATOR]);
        }
        Fingerprint(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(pairs: &[(&str, &str)]) -> u64 {
        let labels: Vec<(String, String)> = pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        Fingerprint::of(&labels).0
    }

    // Expected values computed independently (a few lines of Python implementing FNV-1a
    // 64 over the same bytes); a change here breaks every stored series.
    #[test]
    fn fingerprints_are_stable() {
        assert_eq!(
            fp(&[]),
            0xcbf2_9ce4_8422_2325,
            "the empty set is the offset basis"
        );
        assert_eq!(
            fp(&[
                ("__name__", "up"),
                ("instance", "localhost:9090"),
                ("job", "prometheus")
            ]),
            0x14a8_0682_733d_2f46
        );
        assert_eq!(fp(&[("a", "bc")]), 0xa0a3_542c_19b9_00ab);
        assert_eq!(fp(&[("ab", "c")]), 0x20ba_9b30_25a8_b421);
    }

    #[test]
    fn boundaries_and_order_matter() {
        assert_ne!(fp(&[("a", "bc")]), fp(&[("ab", "c")]));
        assert_ne!(fp(&[("a", "b"), ("c", "d")]), fp(&[("a", "bc"), ("", "d")]));
        assert_ne!(fp(&[("a", "1"), ("b", "2")]), fp(&[("b", "2"), ("a", "1")]));
        assert_ne!(fp(&[("a", "")]), fp(&[]), "an empty value still counts");
        assert_eq!(
            Fingerprint::of_pairs([("a", "1"), ("b", "2")]).0,
            fp(&[("a", "1"), ("b", "2")])
        );
    }
}
