"""Sampling marks on spans frugal forwards while pacing samples, checked on what arrives
upstream against the published algorithms (tests/e2e/sampling_spec.py): the `th` written
in the tracestate's `ot` entry is the threshold of the keep probability frugal reports,
multiplied with an arriving one; `rv` decides when present; hash_seed mode keeps what the
collector keeps and drops spans an earlier sampler decided; the multiplier attribute is
1/p.

To sample at a known probability, a policy floor (`min_probability`) holds the keep
probability while demand far exceeds the budget: the controller wants less, the floor
gives exactly that probability, and /api/v1/usage reports it."""

from __future__ import annotations

import random
import threading
import time
from datetime import datetime, timezone

import pytest
import requests
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from conftest import policy_for, wait_for
from sampling_spec import MAX, adjusted_count, hash_seed, proportional, tvalue

MULTIPLIER = "sampling.multiplier"
PAD = "x" * 300  # makes the filler traffic's demand far exceed the budget


def request(spans) -> trace_service_pb2.ExportTraceServiceRequest:
    return trace_service_pb2.ExportTraceServiceRequest(resource_spans=[trace_pb2.ResourceSpans(
        resource=resource_pb2.Resource(attributes=[common_pb2.KeyValue(
            key="service.name", value=common_pb2.AnyValue(string_value="mastodon-prod/web"))]),
        scope_spans=[trace_pb2.ScopeSpans(scope=common_pb2.InstrumentationScope(name="rack"), spans=spans)])])


def span(trace_id: bytes, span_id: bytes, tracestate: str = "", pad: str = "") -> trace_pb2.Span:
    attrs = [common_pb2.KeyValue(key="pad", value=common_pb2.AnyValue(string_value=pad))] if pad else []
    return trace_pb2.Span(trace_id=trace_id, span_id=span_id, trace_state=tracestate, name="GET /",
                          kind=trace_pb2.Span.SPAN_KIND_SERVER, start_time_unix_nano=1_764_000_000_000_000_000,
                          end_time_unix_nano=1_764_000_000_010_000_000, attributes=attrs)


def post(f, req) -> None:
    r = requests.post(f"{f.http_url}/v1/traces", data=req.SerializeToString(),
                      headers={"Content-Type": "application/x-protobuf"}, timeout=10)
    assert r.status_code == 200, r.text


class Filler:
    """Traffic far above the budget's pace, so pacing samples for as long as it runs."""

    def __init__(self, f):
        self.f = f
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        rng = random.Random(1)
        while not self.stop_flag.is_set():
            spans = [span(rng.getrandbits(128).to_bytes(16, "big"), rng.getrandbits(64).to_bytes(8, "big"),
                          pad=PAD) for _ in range(40)]
            try:
                post(self.f, request(spans))
            except (AssertionError, requests.RequestException):
                pass
            self.stop_flag.wait(0.1)  # paces the load

    def stop(self):
        self.stop_flag.set()
        self.thread.join(10)


def paced_frugal(frugal_factory, standin, sampling: str):
    start = datetime.fromtimestamp(int(time.time()) - 1, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return frugal_factory(policy_for(standin.url, budgets=f"""
period: {{every: 1h, start: "{start}"}}
pacing: {{recompute_every: 200ms}}
budgets:
  traces: {{limit: 20MB, target: 95%}}
""", extra=f"""
traces:
  sampling: {sampling}
"""))


def pacing_at(f, p: float):
    """True when frugal reports it samples the normal class at exactly `p`."""
    t = f.usage()["signals"]["traces"]["pacing"]
    return t["state"] == "pacing" and t["keep_probability"]["normal"] == p


def send_at_reported_probability(f, standin, spans, p: float):
    """Sends `spans` in one request while frugal reports keeping at `p` before and after
    it; returns what arrived upstream of them, by span ID."""
    wait_for(lambda: pacing_at(f, p), timeout=30, what=f"pacing at keep probability {p}")
    n = len(standin.of("traces"))
    post(f, request(spans))
    assert pacing_at(f, p), "the probability did not move while the request was decided"
    ids = {s.span_id for s in spans}
    return {s.span_id: s for r in standin.of("traces")[n:] for rs in r.message.resource_spans
            for ss in rs.scope_spans for s in ss.spans if s.span_id in ids}


def multiplier(s) -> float | None:
    return next((kv.value.double_value for kv in s.attributes if kv.key == MULTIPLIER), None)


def test_spans_forwarded_while_pacing_carry_the_threshold_of_the_reported_probability(standin, frugal_factory):
    """A span kept at the reported keep probability p leaves with `ot=th:` the threshold of
    p (th:8 at 50%); one that arrived sampled (th:8) leaves with the product (th:c); `rv`,
    not the trace ID, decides when present; other tracestate entries pass; a `th` its
    randomness contradicts is erased; the multiplier attribute is 1/p of what was written.
    The set of spans kept is exactly the specification's."""
    f = paced_frugal(frugal_factory, standin,
                     f"{{min_probability: 50%, multiplier_attribute: {MULTIPLIER}}}")
    filler = Filler(f)
    try:
        rng = random.Random(7)
        cases = []  # (trace ID, tracestate)
        for _ in range(60):
            tid = rng.getrandbits(128).to_bytes(16, "big")
            cases += [(tid, ""), (tid, "ot=th:8"), (tid, "ot=th:8,vendor=abc")]
            cases.append((rng.getrandbits(128).to_bytes(16, "big"), f"ot=rv:{rng.getrandbits(56):014x}"))
        # rv against the trace ID: the ID alone would decide the opposite.
        low, high = bytes(8) + b"\x00\x00\x00\x00\x00\x00\x00\x01", bytes(8) + b"\xff" * 8
        cases += [(low, "ot=rv:ffffffffffffff"), (high, "ot=rv:00000000000001"), (high, "ot=rv:7fffffffffffff"),
                  (low, "ot=rv:80000000000000;th:8"),
                  # rv 9.. < th c: the arriving th is erased and the span judged at 50% alone
                  # (kept, th:8), not at 25% x 50% (dropped).
                  (high, "ot=rv:90000000000000;th:c"), (low, "ot=rv:c0000000000000;th:8")]
        spans = [span(tid, i.to_bytes(8, "big"), ts) for i, (tid, ts) in enumerate(cases, 1)]
        arrived = send_at_reported_probability(f, standin, spans, 0.5)
    finally:
        filler.stop()

    kept = dropped = 0
    for s, (tid, ts) in zip(spans, cases):
        keep, want_ts, want_count = proportional(tid, ts, 0.5, 4)
        if not keep:
            assert s.span_id not in arrived, (tid.hex(), ts)
            dropped += 1
            continue
        got = arrived.get(s.span_id)
        assert got is not None, f"{tid.hex()} {ts!r} should have been kept"
        assert got.trace_state == want_ts, (tid.hex(), ts)
        assert multiplier(got) == pytest.approx(want_count, rel=1e-12)
        kept += 1
    assert kept > 50 and dropped > 50
    by_ts = {(tid, ts): arrived.get(s.span_id) for s, (tid, ts) in zip(spans, cases)}
    # The specification's own examples, spelled out.
    assert by_ts[(low, "ot=rv:ffffffffffffff")].trace_state == "ot=rv:ffffffffffffff;th:8"
    assert by_ts[(high, "ot=rv:00000000000001")] is None
    assert by_ts[(high, "ot=rv:7fffffffffffff")] is None
    assert by_ts[(low, "ot=rv:c0000000000000;th:8")].trace_state == "ot=rv:c0000000000000;th:c"
    assert multiplier(by_ts[(low, "ot=rv:c0000000000000;th:8")]) == 4.0
    assert by_ts[(low, "ot=rv:80000000000000;th:8")] is None, "th:8 at 50% keeps only rv >= c"
    assert by_ts[(high, "ot=rv:90000000000000;th:c")].trace_state == "ot=rv:90000000000000;th:8"
    for tid, ts in cases[:180]:
        got = by_ts[(tid, ts)]
        if got is not None and ts == "":
            assert got.trace_state == "ot=th:8" and multiplier(got) == 2.0
        if got is not None and ts.startswith("ot=th:8"):
            assert got.trace_state == "ot=th:c" + ts[len("ot=th:8"):] and multiplier(got) == 4.0


def test_precision_6_writes_six_hex_digits_of_the_product(standin, frugal_factory):
    """With `precision: 6` the `th` written carries six hex digits: at 30% a fresh span
    leaves with th:b33333 (not the default's b333), one arriving with th:8 with the
    product's th:d9999a; the multiplier is 1/p of the threshold written."""
    f = paced_frugal(frugal_factory, standin,
                     f"{{precision: 6, min_probability: 30%, multiplier_attribute: {MULTIPLIER}}}")
    filler = Filler(f)
    try:
        rng = random.Random(8)
        cases = []
        for _ in range(80):
            tid = rng.getrandbits(128).to_bytes(16, "big")
            cases += [(tid, ""), (tid, "ot=th:8")]
        spans = [span(tid, i.to_bytes(8, "big"), ts) for i, (tid, ts) in enumerate(cases, 1)]
        arrived = send_at_reported_probability(f, standin, spans, 0.3)
    finally:
        filler.stop()
    kept = 0
    for s, (tid, ts) in zip(spans, cases):
        keep, want_ts, want_count = proportional(tid, ts, 0.3, 6)
        got = arrived.get(s.span_id)
        assert (got is not None) == keep, (tid.hex(), ts)
        if keep:
            assert got.trace_state == want_ts
            assert got.trace_state == ("ot=th:b33333" if ts == "" else "ot=th:d9999a")
            assert multiplier(got) == pytest.approx(want_count, rel=1e-12)
            kept += 1
    assert kept > 20


def test_hash_seed_mode_keeps_what_the_collector_keeps_and_fails_closed(standin, frugal_factory):
    """In hash_seed mode (fail_closed, the default) a span is kept exactly when the
    collector's probabilistic_sampler with that seed would keep it, and leaves with its
    `rv` and `th`; spans already carrying `th` or `rv` are dropped and counted as an
    upstream decision, not as sampling."""
    f = paced_frugal(frugal_factory, standin, "{hash_seed: 22, min_probability: 50%}")
    filler = Filler(f)
    try:
        rng = random.Random(9)
        fresh = [rng.getrandbits(128).to_bytes(16, "big") for _ in range(150)]
        decided = [(rng.getrandbits(128).to_bytes(16, "big"), ts)
                   for ts in ["ot=th:8", "ot=rv:ffffffffffffff", "ot=rv:c0000000000000;th:8", "ot=th:0"] * 10]
        cases = [(tid, "") for tid in fresh] + decided
        spans = [span(tid, i.to_bytes(8, "big"), ts) for i, (tid, ts) in enumerate(cases, 1)]
        before = f.usage()["signals"]["traces"]["dropped"].get("upstream_decision", {}).get("items", 0)
        arrived = send_at_reported_probability(f, standin, spans, 0.5)
    finally:
        filler.stop()
    assert before == 0
    kept = 0
    for s, (tid, ts) in zip(spans, cases):
        got = arrived.get(s.span_id)
        if ts:
            assert got is None, f"{ts!r}: decided upstream, dropped (fail_closed)"
            continue
        keep, rnd, th = hash_seed(tid, 22, 50.0)
        assert (got is not None) == keep, tid.hex()
        if keep:
            assert got.trace_state == f"ot=rv:{rnd:014x};th:{tvalue(th)}" == f"ot=rv:{rnd:014x};th:8"
            kept += 1
    assert 40 < kept < 110
    dropped = f.usage()["signals"]["traces"]["dropped"]
    assert dropped["upstream_decision"]["items"] == len(decided)


def test_thresholds_helpers_agree_with_the_specification_examples():
    """The Python implementation the tests above compare with gives the specification's
    own examples (so a wrong helper cannot make them pass)."""
    assert proportional(bytes(8) + b"\xff" * 8, "", 0.5, 4)[1] == "ot=th:8"
    assert proportional(bytes(8) + b"\xff" * 8, "ot=th:8", 0.5, 4)[1] == "ot=th:c"
    assert proportional(bytes(16), "ot=rv:c0000000000000;th:8", 0.5, 14)[1] == "ot=rv:c0000000000000;th:c"
    assert proportional(bytes(16), "ot=rv:90000000000000;th:80000000000000", 0.5, 14)[0] is False
    assert proportional(bytes(8) + b"\xff" * 8, "ot=th:8", 0.4, 6)[1] == "ot=th:cccccd"
    assert proportional(bytes(16), "ot=rv:a0000000000000", 0.4, 3)[1] == "ot=rv:a0000000000000;th:99a"
    assert adjusted_count(0x8 << 52) == 2.0 and MAX == 2 ** 56
