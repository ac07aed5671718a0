//! The ingest credential: what a client must present when the policy sets `ingest.auth`,
//! checked in one place for OTLP/HTTP, OTLP/gRPC and the admin API's writes.
//!
//! The comparison takes the same time whatever the bytes and lengths given, so timing
//! tells an attacker nothing about the credential.

use http::HeaderValue;

use crate::policy::IngestAuth;

/// The `Authorization` value a client must send for `expected`.
fn wanted(expected: &IngestAuth) -> String {
    match expected {
        IngestAuth::Bearer(t) => format!("Bearer {t}"),
        IngestAuth::Basic { username, password } => {
            use base64::Engine as _;
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
            )
        }
    }
}

/// Whether `given` (an `Authorization` header) satisfies the policy's credential; always
/// true when the policy sets none.
pub fn authorized(expected: Option<&IngestAuth>, given: Option<&HeaderValue>) -> bool {
    let Some(expected) = expected else {
        return true;
    };
    let given = given.map(|v| v.as_bytes()).unwrap_or_default();
    constant_time_eq(wanted(expected).as_bytes(), trim(given))
}

fn trim(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    &b[start..end.max(start)]
}

/// Compares every byte position up to the longer length, so the time depends on neither
/// where the first difference is nor whether the lengths match.
fn constant_time_eq(want: &[u8], given: &[u8]) -> bool {
    compare(want, given).0
}

/// The comparison, and how many byte positions it looked at: always the longer length
/// (there is no early return, which the tests check through this count).
fn compare(want: &[u8], given: &[u8]) -> (bool, usize) {
    let n = want.len().max(given.len());
    let mut diff = u8::from(want.len() != given.len());
    let mut looked = 0;
    for i in 0..n {
        let a = want.get(i).copied().unwrap_or(0);
        let b = given.get(i).copied().unwrap_or(0xff);
        // Kept opaque so the compiler cannot turn the loop into one that stops early.
        diff |= std::hint::black_box(a ^ b);
        looked += 1;
    }
    (diff == 0, looked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ingest_credentials() {
        let bearer = IngestAuth::Bearer("s3cret-ingest-token".into());
        assert!(authorized(None, None));
        assert!(!authorized(Some(&bearer), None));
        assert!(authorized(
            Some(&bearer),
            Some(&HeaderValue::from_static("Bearer s3cret-ingest-token"))
        ));
        assert!(authorized(
            Some(&bearer),
            Some(&HeaderValue::from_static("  Bearer s3cret-ingest-token "))
        ));
        assert!(!authorized(
            Some(&bearer),
            Some(&HeaderValue::from_static("Bearer s3cret-ingest-toke7"))
        ));
        assert!(!authorized(
            Some(&bearer),
            Some(&HeaderValue::from_static("Bearer s3cret-ingest-token2"))
        ));
        assert!(!authorized(
            Some(&bearer),
            Some(&HeaderValue::from_static("Bearer s3cret-ingest-toke"))
        ));
        let basic = IngestAuth::Basic {
            username: "alloy".into(),
            password: "correct-horse-battery".into(),
        };
        assert!(authorized(
            Some(&basic),
            Some(&HeaderValue::from_static(
                "Basic YWxsb3k6Y29ycmVjdC1ob3JzZS1iYXR0ZXJ5"
            ))
        ));
    }

    #[test]
    fn a_prefix_or_an_extension_is_not_equal() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"ab", b"abc"));
        assert!(!constant_time_eq(b"", b"\xff"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn every_position_of_the_longer_is_compared_whatever_the_lengths() {
        let want = b"Bearer 0123456789abcdef0123456789abcdef";
        for given in [
            &b""[..],
            b"B",
            b"X",
            b"Bearer",
            b"Bearer 0123456789abcdef0123456789abcdeX",
            b"Xearer 0123456789abcdef0123456789abcdef",
            b"Bearer 0123456789abcdef0123456789abcdef",
            b"Bearer 0123456789abcdef0123456789abcdef and much more than that",
        ] {
            let (same, looked) = compare(want, given);
            assert_eq!(same, given == want, "{given:?}");
            assert_eq!(looked, want.len().max(given.len()), "{given:?}");
        }
    }
}
