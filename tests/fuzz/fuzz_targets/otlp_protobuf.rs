//! OTLP/HTTP protobuf: the first byte picks the `Content-Encoding` (mostly none) and the
//! signal; the rest is the body. See `common.rs` for the path and its invariants.

#![no_main]

mod common;

use frugal::receivers::codec::Format;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some((selector, body)) = common::decompress(data) {
        common::exercise(selector, Format::Protobuf, &body);
    }
});
