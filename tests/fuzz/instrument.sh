#!/usr/bin/env bash
# RUSTC_WRAPPER used by run.sh: compiles frugal and the fuzz targets with libFuzzer's
# coverage instrumentation (the flags `cargo fuzz build --sanitizer none` puts in
# RUSTFLAGS, given here in FUZZ_INSTRUMENT_FLAGS) and every other crate exactly as the
# rest of the build (libFuzzer needs no more to be coverage-guided, and it costs less
# to compile and to run).
rustc=$1
shift
name=
prev=
for arg in "$@"; do
  if [ "$prev" = --crate-name ]; then
    name=$arg
    break
  fi
  prev=$arg
done
case " ${FUZZ_INSTRUMENT_CRATES:-} " in
  *" $name "*)
    # shellcheck disable=SC2086 # the flags are words
    exec "$rustc" "$@" ${FUZZ_INSTRUMENT_FLAGS:-}
    ;;
esac
exec "$rustc" "$@"
