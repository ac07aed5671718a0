//! The policy loader: any text is either a policy or a list of problems, each with a
//! message, never a panic. `${VAR}` references see a few variables (those the example
//! policies use among them, so the seeds load), one of them empty.

#![no_main]

use std::sync::LazyLock;

use frugal::policy::{Overrides, load_str};
use libfuzzer_sys::fuzz_target;

fn env(name: &str) -> Option<String> {
    let value = match name {
        "EMPTY" => "",
        "NUMBER" => "42",
        "GRAFANA_CLOUD_OTLP_ENDPOINT" => "https://otlp.example.net/otlp",
        "GRAFANA_CLOUD_INSTANCE_ID" => "123456",
        "GRAFANA_CLOUD_API_TOKEN" | "FRUGAL_INGEST_TOKEN" => "glc_fuzzing_token_0123456789",
        _ => return None,
    };
    Some(value.to_string())
}

/// With `FUZZ_VERBOSE` set (running single inputs, e.g. to check the seeds), says what
/// became of each.
static VERBOSE: LazyLock<bool> = LazyLock::new(|| std::env::var_os("FUZZ_VERBOSE").is_some());

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match load_str(&text, "fuzz.yaml", &Overrides::default(), &env) {
        Ok(policy) => {
            assert_eq!(policy.source, "fuzz.yaml");
            if *VERBOSE {
                eprintln!("a policy");
            }
        }
        Err(e) => {
            assert!(!e.problems.is_empty(), "an error says what is wrong");
            assert!(e.problems.iter().all(|p| !p.message.is_empty()));
            assert!(!e.to_string().is_empty());
            if *VERBOSE {
                eprintln!("{e}");
            }
        }
    }
});
