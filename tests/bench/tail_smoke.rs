//! The tail-sampling benchmark's flood as a test of the test suite: eight clients send
//! 4× an 8 MB `traces.tail.max_buffer` and one trace over `max_trace_size`; it fails
//! unless every trace received is decided and delivered, the big trace is decided early,
//! frugal's peak resident set stays within its documented bound, and nothing panics.
//! `cargo bench --bench tail` runs the whole benchmark; so does this target given
//! `-- --full`, with the benchmark's other arguments.

#[path = "tail.rs"]
#[allow(dead_code)]
mod tail;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let failed = tail::run(!args.iter().any(|a| a == "--full"), &args);
    if !failed.is_empty() {
        eprintln!("tail-sampling flood failed: {failed:?}");
        std::process::exit(1);
    }
}
