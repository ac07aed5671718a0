//! The throughput benchmark as a smoke test of the test suite: every case for a second,
//! every request answered 200, no figures asserted (`cargo bench` runs it in full; so does
//! this target given `-- --full`, with the benchmark's other arguments).

#[path = "throughput.rs"]
#[allow(dead_code)]
mod throughput;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    throughput::run(!args.iter().any(|a| a == "--full"), &args);
}
