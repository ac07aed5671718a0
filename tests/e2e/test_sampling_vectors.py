"""frugal's trace sampling decisions against an independent implementation, written here
in Python from the published algorithms (the OpenTelemetry Collector's probabilistic
sampler and the consistent probability sampling specification), on 100,000 random trace
IDs each."""

from __future__ import annotations

import random
import subprocess

from conftest import BIN
from sampling_spec import MAX, hash_seed, threshold, tvalue


def frugal_sample(args: list[str], ids: list[bytes]) -> list[tuple[str, str, str]]:
    r = subprocess.run([str(BIN), "sample", *args], input="\n".join(i.hex() for i in ids),
                       capture_output=True, text=True, check=True, timeout=60)
    return [tuple(line.split(" ")) for line in r.stdout.strip().splitlines()]


def test_hash_seed_matches_the_collector_on_100k_trace_ids():
    rng = random.Random(20261125)
    cases = [(22, 15.3), (0, 50.0), (4312, 10.0), (653, 33.33), (rng.getrandbits(32), 1.0), (99, 0.03)]
    per_case = 100_000 // len(cases) + 1
    checked = kept = 0
    for seed, pct in cases:
        ids = [rng.getrandbits(128).to_bytes(16, "big") for _ in range(per_case)]
        got = frugal_sample(["--mode", "hash_seed", "--seed", str(seed), "--probability", f"{pct}%"], ids)
        assert len(got) == len(ids)
        for tid, (hex_id, decision, ts) in zip(ids, got):
            keep, rnd, th = hash_seed(tid, seed, pct)
            assert hex_id == tid.hex()
            assert decision == ("keep" if keep else "drop"), (seed, pct, hex_id)
            assert ts == f"ot=rv:{rnd:014x};th:{tvalue(th)}", (seed, pct, hex_id)
            checked += 1
            kept += keep
    assert checked >= 100_000
    assert 0.05 < kept / checked < 0.25


def test_proportional_follows_the_specification_on_100k_trace_ids():
    rng = random.Random(42)
    probabilities = [0.5, 0.25, 0.1, 1 / 3, 0.01, 0.9, 0.001, 0.75]
    per = 100_000 // len(probabilities) + 1
    checked = 0
    for p in probabilities:
        for precision in (4,):
            ids = [rng.getrandbits(128).to_bytes(16, "big") for _ in range(per)]
            got = frugal_sample(["--mode", "proportional", "--probability", repr(p),
                                 "--precision", str(precision)], ids)
            t = threshold(p, precision)
            for tid, (_, decision, ts) in zip(ids, got):
                r = int.from_bytes(tid[8:], "big") & (MAX - 1)
                assert decision == ("keep" if r >= t else "drop"), (p, tid.hex())
                assert ts == f"ot=th:{tvalue(t)}"
                checked += 1
    assert checked >= 100_000
    # The specification's examples.
    assert tvalue(threshold(0.5, 4)) == "8"
    assert tvalue(threshold(0.01, 4)) == "fd70a"
    assert tvalue(threshold(1 / 3, 4)) == "aaab"
