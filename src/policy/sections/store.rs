//! The `store` section: where and how often the usage counters are persisted.

use std::path::PathBuf;

use crate::policy::Store;
use crate::policy::defaults::{
    DEFAULT_CACHE_BYTES, DEFAULT_DATA_DIR, DEFAULT_FLUSH_INTERVAL, FLUSH_INTERVAL_RANGE,
};
use crate::policy::problem::must_be_between;
use crate::policy::tree::{Node, with};
use crate::units::{parse_duration, parse_size};

/// Reads `store`; `None` when it is not a mapping.
pub(in crate::policy) fn build(n: Node<'_>) -> Option<Store> {
    let mut o = n.map()?;
    let data_dir =
        with(&mut o, "data_dir", |n| n.text()).unwrap_or_else(|| DEFAULT_DATA_DIR.into());
    let flush_interval = with(&mut o, "flush_interval", |n| n.parse(parse_duration))
        .unwrap_or(DEFAULT_FLUSH_INTERVAL);
    if !FLUSH_INTERVAL_RANGE.contains(&flush_interval) {
        o.problems().push(
            &o.child_path("flush_interval"),
            must_be_between(&FLUSH_INTERVAL_RANGE),
        );
    }
    let cache_bytes =
        with(&mut o, "cache_size", |n| n.parse(parse_size)).unwrap_or(DEFAULT_CACHE_BYTES);
    o.finish();
    Some(Store {
        data_dir: PathBuf::from(data_dir),
        flush_interval,
        cache_bytes,
    })
}
