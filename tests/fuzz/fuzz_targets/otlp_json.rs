//! OTLP/JSON: the first byte picks the `Content-Encoding` (mostly none) and the signal;
//! the rest is the body. Besides the path in `common.rs`, the normalisation frugal applies
//! before the serde mapping must be idempotent.

#![no_main]

mod common;

use frugal::receivers::codec::{Format, normalize_json};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Some((selector, body)) = common::decompress(data) else {
        return;
    };
    if let Ok(mut v) = serde_json::from_slice::<Value>(&body) {
        normalize_json(&mut v);
        let once = v.clone();
        normalize_json(&mut v);
        assert_eq!(v, once, "normalising twice changes nothing more");
    }
    common::exercise(selector, Format::Json, &body);
});
