//! Prometheus remote write and Loki push bodies (decompressed): the first byte picks which.
//! Invariants: counting before decoding never panics, never calls malformed what decodes,
//! and never counts fewer items than decode (samples and histograms; entries); what
//! frugal derives from a decoded push (labels, severity, trace IDs, fingerprints) never
//! panics.

#![no_main]

use frugal::proto::loki::PushRequest;
use frugal::proto::remote_write::WriteRequest;
use frugal::receivers::scan;
use frugal::sampling::{loki_push, series};
use libfuzzer_sys::fuzz_target;
use prost::Message as _;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    if selector % 2 == 0 {
        let census = scan::remote_write(body);
        if let Ok(req) = WriteRequest::decode(body) {
            let census = census.expect("the census refused a body that decodes");
            let items: u64 = req.timeseries.iter().map(series::points).sum();
            assert!(census.items >= items, "{} < {items}", census.items);
            assert!(census.resources >= req.timeseries.len() as u64);
            for ts in &req.timeseries {
                let _ = series::fingerprint(&ts.labels);
                let _ = series::name_of(&ts.labels);
            }
        }
    } else {
        let census = scan::loki(body);
        if let Ok(req) = PushRequest::decode(body) {
            let census = census.expect("the census refused a body that decodes");
            let entries: usize = req.streams.iter().map(|s| s.entries.len()).sum();
            assert!(census.items >= entries as u64, "{} < {entries}", census.items);
            for s in &req.streams {
                let labels = loki_push::parse_labels(&s.labels).unwrap_or_default();
                for e in &s.entries {
                    let _ = loki_push::severity(&e.line, &e.structured_metadata, &labels);
                    let _ = loki_push::trace_id(&e.line, &e.structured_metadata);
                    let _ = loki_push::entry_bytes(e);
                }
            }
        }
    }
});
