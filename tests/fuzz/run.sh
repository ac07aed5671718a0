#!/usr/bin/env bash
# Builds every fuzz target and runs each for a bounded time; fails on a crash.
#   tests/fuzz/run.sh [seconds-per-target]          (default 30; 0 only builds)
# FUZZ_TARGETS picks targets (default: all of them); FUZZ_ARGS adds libFuzzer options
# (e.g. FUZZ_ARGS=-runs=3000000 to stop after a number of executions instead).
#
# The targets are built as `cargo fuzz build --sanitizer none` would build them (libFuzzer,
# coverage-guided), without installing cargo-fuzz, in target/fuzz, with the cheap `ci`
# profile of tests/fuzz/Cargo.toml; only frugal, its decoders and the targets are
# instrumented (see instrument.sh). Inputs found are kept in target/fuzz/corpus/<target>
# (the committed seeds are tests/fuzz/corpus/<target>/seed-*), crashes are written to
# target/fuzz/artifacts/<target>.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
secs=${1:-30}
targets=${FUZZ_TARGETS:-otlp_protobuf otlp_json policy push_protocols}
out="$root/target/fuzz"

# The same versions as the main build (so this lock file is not committed).
cp "$root/Cargo.lock" "$here/Cargo.lock"

export CARGO_TARGET_DIR="$out"
export RUSTC_WRAPPER="$here/instrument.sh"
export FUZZ_INSTRUMENT_CRATES="frugal opentelemetry_proto serde_saphyr granit_parser $targets"
export FUZZ_INSTRUMENT_FLAGS="--cfg fuzzing -Cpasses=sancov-module
 -Cllvm-args=-sanitizer-coverage-level=4
 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters
 -Cllvm-args=-sanitizer-coverage-pc-table
 -Cllvm-args=-sanitizer-coverage-trace-compares
 -Cllvm-args=-sanitizer-coverage-stack-depth
 -Cllvm-args=-simplifycfg-branch-fold-threshold=0"
bins=()
for t in $targets; do bins+=(--bin "$t"); done
started=$SECONDS
cargo build --profile ci --manifest-path "$here/Cargo.toml" "${bins[@]}"
echo "fuzz targets built in $((SECONDS - started)) s"
[ "$secs" -gt 0 ] || exit 0

failed=()
for t in $targets; do
  corpus="$out/corpus/$t" artifacts="$out/artifacts/$t" log="$out/$t.log"
  mkdir -p "$corpus" "$artifacts"
  extra=()
  [ -f "$here/$t.dict" ] && extra+=("-dict=$here/$t.dict")
  began=$SECONDS
  # shellcheck disable=SC2086 # FUZZ_ARGS are words
  if "$out/ci/$t" -max_total_time="$secs" -timeout=10 -print_final_stats=1 \
    -artifact_prefix="$artifacts/" "${extra[@]}" ${FUZZ_ARGS:-} \
    "$corpus" "$here/corpus/$t" >"$log" 2>&1; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
    echo "fuzz $t: $runs runs in $((SECONDS - began)) s, $cov, no crash"
  else
    failed+=("$t")
    tail -n 40 "$log" >&2
    echo "fuzz $t FAILED: the input is in $artifacts/ (rerun it with" \
      "target/fuzz/ci/$t <file>; keep it as a unit test when fixed); log: $log" >&2
  fi
done
[ ${#failed[@]} -eq 0 ] || { echo "fuzz targets failed: ${failed[*]}" >&2; exit 1; }
