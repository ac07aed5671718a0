#!/usr/bin/env bash
# The whole test suite, on a fresh machine:
#   1. what the tests need: Python's venv module, util-linux, g++, Prometheus,
#      Alertmanager, Chromium, Node and kubectl (Debian packages, only if missing), a Python venv in
#      .venv with the OpenTelemetry SDK and exporters, and playwright-core in
#      tests/e2e/browser (npm ci, only when its lock file changed; it drives Debian's
#      Chromium, never a browser of its own), and winston-loki in tests/e2e/loki-clients
#      (npm ci likewise);
#   2. formatting and lints;
#   3. Rust unit and integration tests (release profile: the simulator runs months);
#   4. end-to-end tests: the real binary, real clients, an upstream stand-in; beside them,
#      the fuzz targets (tests/fuzz) run for FUZZ_SECONDS each (default 60), built at the
#      lowest priority from step 2 on.
# In CI (CI=true) a missing peer is a failure, never a skip.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n== %s\n' "$*"; }

need_apt=()
python3 -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3-venv)
command -v setpriv >/dev/null || need_apt+=(util-linux)
command -v c++ >/dev/null || need_apt+=(g++)   # libFuzzer, for the fuzz targets
command -v promtool >/dev/null || need_apt+=(prometheus)   # promtool checks the scrape
command -v chromium >/dev/null || need_apt+=(chromium)   # the status page's browser test
command -v node >/dev/null || need_apt+=(nodejs npm)     # ...driven by playwright-core
command -v prometheus-alertmanager >/dev/null || need_apt+=(prometheus-alertmanager)   # receives notifications
command -v kubectl >/dev/null || need_apt+=(kubernetes-client)   # renders deploy/kubernetes (kustomize)
if [ ${#need_apt[@]} -gt 0 ]; then
  say "installing Debian packages: ${need_apt[*]}"
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi

venv=.venv
stamp="$venv/.requirements.sha256"
want=$(sha256sum tests/e2e/requirements.txt | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  say "creating the Python venv ($venv)"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --upgrade pip
  "$venv/bin/pip" install --quiet -r tests/e2e/requirements.txt
  echo "$want" > "$stamp"
fi

browser=tests/e2e/browser
browser_stamp="$browser/node_modules/.package-lock.sha256"
want=$(sha256sum "$browser/package-lock.json" | cut -d' ' -f1)
if [ "$(cat "$browser_stamp" 2>/dev/null)" != "$want" ]; then
  say "installing playwright-core ($browser)"
  (cd "$browser" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
  echo "$want" > "$browser_stamp"
fi

loki_clients=tests/e2e/loki-clients
loki_stamp="$loki_clients/node_modules/.package-lock.sha256"
want=$(sha256sum "$loki_clients/package-lock.json" | cut -d' ' -f1)
if [ "$(cat "$loki_stamp" 2>/dev/null)" != "$want" ]; then
  say "installing winston and winston-loki ($loki_clients)"
  (cd "$loki_clients" && npm ci --no-audit --no-fund --loglevel=error)
  echo "$want" > "$loki_stamp"
fi

# The fuzz targets build at the lowest priority on one core from here on (they take what
# the Rust builds and tests leave idle), and run once the end-to-end tests start (those
# mostly wait on sockets and clocks): fuzzing then ends about when they do.
mkdir -p target/fuzz
fuzz_log=target/fuzz/run.log
fuzz_go=target/fuzz/.e2e-started
rm -f "$fuzz_go"
suite=$$
(
  CARGO_BUILD_JOBS=1 nice -n 19 bash tests/fuzz/run.sh 0
  while [ ! -e "$fuzz_go" ]; do
    kill -0 "$suite" 2>/dev/null || exit 1   # the suite ended before its end-to-end tests
    sleep 1
  done
  nice -n 19 bash tests/fuzz/run.sh "${FUZZ_SECONDS:-60}"
) >"$fuzz_log" 2>&1 &
fuzz_pid=$!

say "formatting and lints"
cargo fmt --all -- --check
cargo clippy --release --all-targets --locked -- -D warnings

say "building frugal"
cargo build --release --locked

say "unit and integration tests"
cargo test --release --locked

say "fuzzing (in the background: ${FUZZ_SECONDS:-60} s a target once built)"
touch "$fuzz_go"

# Three test files at a time (pytest-xdist; a file stays on one worker): the long ones
# (pacing a 3-minute period, Prometheus waiting out a `for: 1m`) are mostly waiting.
say "end-to-end tests"
e2e=0
CI="${CI:-}" FRUGAL_BIN="$PWD/target/release/frugal" "$venv/bin/python" -m pytest tests/e2e -q -p no:cacheprovider \
  -n 3 --dist loadfile "$@" || e2e=$?

say "fuzzing (waiting for it)"
fuzz=0
wait "$fuzz_pid" || fuzz=$?
grep -E '^fuzz ' "$fuzz_log" || tail -n 60 "$fuzz_log"
[ "$e2e" -eq 0 ] || { echo "end-to-end tests failed" >&2; exit "$e2e"; }
[ "$fuzz" -eq 0 ] || { echo "fuzzing failed (log: $fuzz_log)" >&2; exit "$fuzz"; }
