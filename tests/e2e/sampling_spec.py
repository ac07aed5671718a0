"""The published sampling algorithms, written here in Python independently of frugal's Rust
code: the OpenTelemetry Collector probabilistic sampler's `hash_seed` mode, and consistent
probability sampling (W3C tracestate `ot=th:...;rv:...`, tracestate-probability-sampling.md,
with the collector's `pkg/sampling` precision rules and its `proportional` mode)."""

from __future__ import annotations

import math
import struct

MAX = 1 << 56


def f32(x: float) -> float:
    return struct.unpack("f", struct.pack("f", x))[0]


def fnv1a32(data: bytes) -> int:
    h = 0x811C9DC5
    for b in data:
        h ^= b
        h = (h * 0x01000193) & 0xFFFFFFFF
    return h


def hash_seed(trace_id: bytes, seed: int, percent: float):
    """The collector's hash_seed mode: keep decision, rv, th."""
    h = fnv1a32(struct.pack("<I", seed) + trace_id)
    hashed = h & 0x3FFF
    pct = min(f32(percent), 100.0)
    scaled = int(f32(pct * f32(163.84))) if pct > 0 else 0
    rprime14 = 0x3FFF - hashed
    unused18 = h >> 18
    mixed28 = unused18 ^ (unused18 << 10)
    rnd = ((rprime14 << 42) | (mixed28 << 14) | hashed) & (MAX - 1)
    th = (0x4000 - scaled) << 42
    return hashed < scaled, rnd, th


def tvalue(t: int) -> str:
    if t == 0:
        return "0"
    return f"{t:014x}".rstrip("0")


def parse_tvalue(s: str) -> int:
    return int(s, 16) << (4 * (14 - len(s)))


def threshold(p: float, precision: int) -> int:
    """ProbabilityToThresholdWithPrecision, as pkg/sampling computes it."""
    if p == 1.0:
        return 0
    _, exp_f = math.frexp(p)
    _, exp_r = math.frexp(1 - p)
    trunc = lambda a, b: int(a / b)  # Go integer division truncates toward zero
    precision = min(14, max(precision + trunc(exp_f, -4), precision + trunc(exp_r, -4)))
    scaled = math.floor(p * MAX + 0.5)
    t = MAX - scaled
    shift = 4 * (14 - precision)
    if shift:
        t += 1 << (shift - 1)
        t >>= shift
        t <<= shift
    return t


def adjusted_count(t: int) -> float:
    """1/p of a threshold: how many items each kept one stands for."""
    return MAX / (MAX - t)


def trace_id_randomness(trace_id: bytes) -> int:
    return int.from_bytes(trace_id[8:], "big") & (MAX - 1)


def split_tracestate(ts: str):
    """The `ot` entry's sub-keys (in order) and the other vendors' entries, as the W3C
    tracestate and OpenTelemetry's `ot` entry define them (well-formed input only)."""
    ot: list[tuple[str, str]] = []
    others: list[str] = []
    for member in (m.strip() for m in ts.split(",")):
        if not member:
            continue
        key, _, value = member.partition("=")
        if key == "ot":
            ot.extend(tuple(part.split(":", 1)) for part in value.split(";"))
        else:
            others.append(member)
    return ot, others


def proportional(trace_id: bytes, tracestate: str, p: float, precision: int):
    """A consistent probability sampler in the collector's `proportional` mode at
    probability `p`: (kept, tracestate written, adjusted count), or (False, None, None).

    Randomness from `rv`, else the trace ID's low 56 bits; an arriving `th` the randomness
    contradicts is erased; the arriving probability and `p` multiply; a threshold is never
    lowered; `rv` and other entries pass untouched, `ot` first."""
    ot, others = split_tracestate(tracestate)
    sub = dict(ot)
    r = int(sub["rv"], 16) if "rv" in sub else trace_id_randomness(trace_id)
    t_in = parse_tvalue(sub["th"]) if "th" in sub else 0
    if "th" in sub and r < t_in:
        ot = [(k, v) for k, v in ot if k != "th"]
        t_in = 0
        sub.pop("th")
    t_out = threshold((MAX - t_in) / MAX * p, precision)
    if r < t_out:
        return False, None, None
    written = max(t_out, t_in)
    th_text = tvalue(t_out) if t_out >= t_in else sub["th"]
    parts = [f"rv:{sub['rv']}"] if "rv" in sub else []
    parts.append(f"th:{th_text}")
    parts += [f"{k}:{v}" for k, v in ot if k not in ("rv", "th")]
    return True, ",".join([f"ot={';'.join(parts)}", *others]), adjusted_count(written)
