//! Memory and CPU of the active-series tracker with many series (BENCHMARKS.md):
//! `cargo bench --bench active_series -- [series]` (default 1,000,000).
//!
//! Prints the resident set added by the tracked series (VmRSS from /proc/self/status,
//! Linux), nanoseconds per `observe` (new series, then known ones), per `counts`, the
//! expiry scan, and a batch of every series written to a sled store and read back.

use std::time::Duration;

use frugal::budget::active_series::{ActiveSeries, Windows};
use frugal::fingerprint::Fingerprint;
use frugal::store::SledStore;
use jiff::{SignedDuration, Timestamp};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Wall time of `f`, for measuring only (the crate's own code reads time via `Clock`).
#[allow(clippy::disallowed_methods)]
fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = std::time::Instant::now();
    let out = f();
    (out, start.elapsed())
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn ns_per(d: Duration, n: usize) -> f64 {
    d.as_nanos() as f64 / n as f64
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` adds `--bench`: the count is the first argument that is a number.
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    // Label sets like a scrape's: a metric name, job, instance and three more labels.
    let labels = |i: usize| {
        [
            ("__name__".to_string(), format!("node_metric_{}", i % 500)),
            ("cpu".to_string(), (i % 16).to_string()),
            (
                "instance".to_string(),
                format!("10.0.{}.{}:9100", i / 65_536 % 256, i / 256 % 256),
            ),
            ("job".to_string(), "node".to_string()),
            ("mode".to_string(), format!("m{}", i % 7)),
            ("series".to_string(), i.to_string()),
        ]
    };
    let sets: Vec<_> = (0..10_000).map(labels).collect();
    let (_, d) = timed(|| {
        for _ in 0..10 {
            for s in &sets {
                std::hint::black_box(Fingerprint::of_pairs(
                    s.iter().map(|(a, b)| (a.as_str(), b.as_str())),
                ));
            }
        }
    });
    println!("fingerprint of a 6-label set: {:.0} ns", ns_per(d, 100_000));
    drop(sets);

    let fps: Vec<Fingerprint> = (0..n)
        .map(|i| {
            let s = labels(i);
            Fingerprint::of_pairs(s.iter().map(|(a, b)| (a.as_str(), b.as_str())))
        })
        .collect();
    let t0: Timestamp = "2026-12-01T10:00:00Z".parse()?;
    let before = rss_bytes();
    let tracker = ActiveSeries::new(Windows::DEFAULT);
    let (_, d) = timed(|| {
        for &fp in &fps {
            tracker.observe(fp, t0);
        }
    });
    println!("observe, new series: {:.0} ns", ns_per(d, n));
    let t1 = t0 + SignedDuration::from_secs(60);
    let (_, d) = timed(|| {
        for &fp in &fps {
            tracker.observe(fp, t1);
        }
    });
    println!("observe, known series, next minute: {:.0} ns", ns_per(d, n));
    let (_, d) = timed(|| {
        for &fp in &fps {
            tracker.observe(fp, t1);
        }
    });
    println!("observe, known series, same minute: {:.0} ns", ns_per(d, n));
    let with_batch = rss_bytes();
    let batch = tracker.take_batch();
    drop(batch);
    let after = rss_bytes();
    println!(
        "RSS added by {n} series: {:.1} MB ({:.0} bytes a series) with the first batch still queued; \
         {:.1} MB ({:.0} bytes a series) after it was taken and dropped (the allocator keeps its pages)",
        with_batch.saturating_sub(before) as f64 / 1e6,
        with_batch.saturating_sub(before) as f64 / n as f64,
        after.saturating_sub(before) as f64 / 1e6,
        after.saturating_sub(before) as f64 / n as f64,
    );
    let (c, d) = timed(|| tracker.counts(t1));
    println!(
        "counts: {} µs (billing {}, admission {})",
        d.as_micros(),
        c.billing,
        c.admission
    );
    let (gone, d) = timed(|| tracker.expire(t1));
    println!(
        "expire scan, nothing to forget: {} ms ({gone} gone)",
        d.as_millis()
    );

    let dir = tempfile::tempdir()?;
    let store = SledStore::open(dir.path(), 16 * 1024 * 1024)?;
    let series = store.series_store()?;
    let fresh = ActiveSeries::new(Windows::DEFAULT);
    for &fp in &fps {
        fresh.observe(fp, t0);
    }
    let (written, d) = timed(|| fresh.persist(&series));
    println!(
        "persist a batch of {} new series to sled: {} ms",
        written?,
        d.as_millis()
    );
    let restored = ActiveSeries::new(Windows::DEFAULT);
    let (loaded, d) = timed(|| restored.restore(&series));
    println!("restore {} series from sled: {} ms", loaded?, d.as_millis());
    Ok(())
}
