//! The throughput benchmark as a smoke test of the test suite: every case for a second,
//! every request answered 200, no figures asserted (`cargo bench` runs it in full).

#[path = "throughput.rs"]
#[allow(dead_code)]
mod throughput;

fn main() {
    throughput::run(true, &[]);
}
