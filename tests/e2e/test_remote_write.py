"""Prometheus remote write 1.0 in and out, against real Prometheus servers (Debian's
`prometheus`): a sender A scraping a Python target and remote-writing to frugal, and a
receiver B (`--web.enable-remote-write-receiver`) as frugal's upstream. The series budget
(`budgets.metrics.active_series`) holds at B, admitted series survive `kill -9`, the
minimum sample interval thins points without changing what `increase()` says, malformed
requests get their answer, and OTLP metrics are counted as the Prometheus series Grafana
Cloud's OTLP gateway turns them into."""

from __future__ import annotations

import re
import subprocess
import time

import pytest
import requests
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource

import promstack
from conftest import BIN, policy_for, wait_for
from promstack import SCRAPE_SERIES, Peers, exposition

LIMIT = 200
TARGET = 0.95
GAUGES = 400
COUNTERS = 20
# What A sends: the target's series plus the ones Prometheus adds per scrape target.
SENT_SERIES = GAUGES + COUNTERS + len(SCRAPE_SERIES)

BUDGET = f"""
budgets:
  metrics: {{active_series: {LIMIT}, target: {TARGET:.0%}}}
"""
PRIORITY_UP = """
metrics:
  priority:
    - {name: up, selector: '{__name__="up"}'}
"""


def many_series() -> str:
    t = time.time()
    return exposition([
        ("rw_gauge", "gauge", [({"id": str(i)}, float(i % 7) + t % 1) for i in range(GAUGES)]),
        ("rw_requests_total", "counter", [({"code": str(200 + i)}, float(int(t) * (i + 1))) for i in range(COUNTERS)]),
    ])


def metrics_usage(f) -> dict:
    return f.usage()["signals"]["metrics"]


@pytest.fixture
def peers(tmp_path):
    """Prometheus servers, scrape targets and relays for one test, all stopped after it."""
    p = Peers(tmp_path)
    yield p
    p.stop()


def budget_stack(peers, frugal_factory, standin, relay: bool = False):
    """Target (425 series as A sends them) -> A -> frugal (series budget 200) -> B.
    With `relay`, A writes to a fixed address relayed to frugal's current port, so frugal
    can be restarted on a new port while A keeps sending."""
    b = peers.prometheus("B", receiver=True)
    b.wait_ready()
    f = frugal_factory(policy_for(standin.url, budgets=BUDGET, extra=PRIORITY_UP),
                       extra_args=["--upstream-remote-write", b.write_url])
    target = peers.target(many_series)
    front = None
    address = f.http
    if relay:
        front = peers.relay()
        front.target = f.http
        address = front.address
    a = peers.prometheus("A", scrape=[target.address], remote_write=[f"http://{address}/api/v1/push"])
    a.wait_ready()
    return a, b, f, front


def poll_within_budget(b, f, seconds: float) -> list[int]:
    """B's head series, every 0.5 s for `seconds`: none of them above the limit, and frugal's
    count of series in memory never above it either."""
    seen = []
    end = time.time() + seconds
    while time.time() < end:
        n = b.num_series()
        m = metrics_usage(f)
        assert n <= LIMIT, f"B holds {n} series, over the budget of {LIMIT} (after {seen[-5:]})"
        assert m["series_in_memory"] <= LIMIT, m
        seen.append(n)
        time.sleep(0.5)
    return seen


def stable(read, settle: float = 3.0, timeout: float = 40.0, what: str = "a stable value",
           accept=lambda v: True):
    """The value `read()` returns once it stays the same for `settle` seconds (and
    `accept(value)` holds: a lagging reading is waited out, not taken)."""
    last, since = object(), time.time()
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = read()
        if v != last:
            last, since = v, time.time()
        elif time.time() - since >= settle and accept(v):
            return v
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what} (last {last!r})")


def test_series_budget_holds_at_the_receiver(peers, frugal_factory, standin):
    a, b, f, _ = budget_stack(peers, frugal_factory, standin)
    wait_for(lambda: metrics_usage(f)["series_refused"] > 0, timeout=30, interval=0.2,
             what="frugal refusing a new series")
    assert metrics_usage(f)["series_limit"] == LIMIT

    seen = poll_within_budget(b, f, 30)
    assert max(seen) > 0

    # `up` is priority: admitted though it arrives after the normal series filled the target.
    assert b.query('up{job="target"}'), "up did not reach B"

    # Once both are stable, what frugal counts is what B holds (within 1%), and it filled
    # the budget to its target: series were refused only past target x active_series.
    n_b, mem = stable(lambda: (b.num_series(), metrics_usage(f)["series_in_memory"]),
                      accept=lambda v: abs(v[0] - v[1]) <= 0.01 * max(v),
                      what="B's and frugal's series counts settling within 1% of each other")
    assert int(TARGET * LIMIT) <= n_b <= LIMIT, n_b
    # Every series A sends and frugal did not admit was refused (each at least once).
    assert metrics_usage(f)["series_refused"] >= SENT_SERIES - mem

    # The per-metric view adds up and says where the refusals were.
    listing = requests.get(f"{f.admin_url}/api/v1/series", timeout=5).json()
    assert listing["total_series"] == sum(m["series"] for m in listing["metrics"]) == mem
    counts = [m["series"] for m in listing["metrics"]]
    assert counts == sorted(counts, reverse=True), "sorted by series, descending"
    by_name = {m["name"]: m for m in listing["metrics"]}
    assert by_name["up"]["series"] == 1
    assert sum(m["refused"] for m in listing["metrics"]) > 0
    assert all("relabel" in m for m in listing["metrics"])
    # The first name's rule drops exactly that metric at the source, as Alloy writes it.
    first = listing["metrics"][0]
    assert f'regex         = "{re.escape(first["name"])}"' in first["relabel"]
    assert 'action        = "drop"' in first["relabel"]

    # `frugal top` prints the same list, and the rule for the costliest metric.
    out = subprocess.run([str(BIN), "top", "--admin", f.admin_url, "--top", "3"],
                         capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert f"series in memory {mem} (limit {LIMIT})" in lines[0], out.stdout
    assert lines[2].split()[-1] == first["name"] and int(lines[2].split()[0]) == first["series"], out.stdout
    assert f"To drop {first['name']} at the source" in out.stdout


def test_admitted_series_survive_kill_9(peers, frugal_factory, standin):
    a, b, f, front = budget_stack(peers, frugal_factory, standin, relay=True)
    wait_for(lambda: metrics_usage(f)["series_refused"] > 0, timeout=30, interval=0.2,
             what="frugal refusing a new series")
    # Saturated: B's series stop changing (and frugal has persisted them: the store flushes
    # every 200 ms, far inside the settle time).
    stable(b.num_series, what="B's series count settling")
    before = b.series()
    assert 0 < len(before) <= LIMIT
    mem_before = metrics_usage(f)["series_in_memory"]
    assert mem_before >= len(before) * 0.99

    f.kill9()
    f.start()
    front.target = f.http  # A keeps writing to the same address
    mem_after = metrics_usage(f)["series_in_memory"]
    assert mem_after >= mem_before, f"series count reset by the restart: {mem_before} -> {mem_after}"
    restarted = time.time()

    # Every series admitted before the kill gets samples scraped after the restart, while B
    # never holds more than the budget.
    deadline = time.time() + 40
    stale = before
    while time.time() < deadline:
        assert b.num_series() <= LIMIT
        latest = b.latest(window="1m")
        stale = {s for s in before if latest.get(s, 0) <= restarted}
        if not stale:
            break
        time.sleep(0.5)
    assert not stale, f"{len(stale)} admitted series got nothing after the restart, e.g. {sorted(stale)[:3]}"
    poll_within_budget(b, f, 5)
    # The budget was full before the kill and the admitted set was persisted, so the restart
    # admitted nothing new: B holds exactly the series it held before.
    after = b.series()
    assert after == before, f"new after restart: {sorted(after - before)[:5]}; lost: {sorted(before - after)[:5]}"


SLOPES = {"a": 10.0, "b": 20.0, "c": 5.0}  # per second
COUNTER = "rw_linear_total"


def test_min_sample_interval_one_point_per_5s_and_increase_agrees(peers, frugal_factory, standin):
    t0 = time.time()
    target = peers.target(lambda: exposition([
        (COUNTER, "counter", [({"lane": lane}, 1000.0 + slope * (time.time() - t0))
                              for lane, slope in SLOPES.items()])]))
    b = peers.prometheus("B", receiver=True)
    c = peers.prometheus("C", receiver=True)
    b.wait_ready()
    c.wait_ready()
    f = frugal_factory(policy_for(standin.url, extra="metrics: {min_sample_interval: 5s}"),
                       extra_args=["--upstream-remote-write", b.write_url])
    a = peers.prometheus("A", scrape=[target.address],
                         remote_write=[f"{f.http_url}/api/v1/push", c.write_url])
    a.wait_ready()

    def samples(p, window="60s") -> dict[str, list[tuple[float, float]]]:
        return {r["metric"]["lane"]: [(float(t), float(v)) for t, v in r["values"]]
                for r in p.query(f"{COUNTER}[{window}]")}

    def covered():
        on_b = samples(b)
        if set(on_b) != set(SLOPES):
            return None
        if all(s[-1][0] - s[0][0] >= 31 for s in on_b.values()):
            return on_b
        return None

    on_b = wait_for(covered, timeout=90, interval=1, what="B holding more than 30 s of the counter")

    # At most one point per series per 5 s reached B (the scrape timestamps, unchanged).
    for lane, s in on_b.items():
        gaps = [t2 - t1 for (t1, _), (t2, _) in zip(s, s[1:])]
        assert min(gaps) >= 4.99, f"{lane}: points closer than 5 s: {gaps}"

    # Evaluate at one of B's sample times, a time C has a sample too (the same scrape).
    at = min(s[-1][0] for s in on_b.values())
    wait_for(lambda: all(s and s[-1][0] >= at for s in samples(c).values()), timeout=10,
             what="C holding the same scrape")
    for lane in SLOPES:
        sel = f'{COUNTER}{{lane="{lane}"}}'
        n_b = b.scalar(f"count_over_time({sel}[30s])", at)
        n_c = c.scalar(f"count_over_time({sel}[30s])", at)
        assert 5 <= n_b <= 7, f"{lane}: {n_b} points in 30 s through frugal (one per 5 s: 6, ±1)"
        assert 28 <= n_c <= 32, f"{lane}: {n_c} points in 30 s straight from A (one per second: ~30)"

        # increase() over the same range on B and C. A plain `[30s]` ending at `at` does not
        # make a meaningful 1% comparison: Prometheus extrapolates to the range's start only
        # when the first sample is within 1.1 average intervals of it, otherwise by half an
        # interval; with B's 5-6 s spacing the first sample can be 6 s past the start while
        # the average is 5 s, and B's increase comes out ~10% low through no fault of frugal.
        # So the range runs exactly from one of B's samples to another (both scraped by A,
        # so C has the same two samples): neither side extrapolates, and both say what the
        # counter did between those two scrapes.
        pts = [t for t, _ in on_b[lane] if at - 30.5 <= t <= at]
        first = pts[0]
        span_ms = round((at - first) * 1000)
        assert span_ms >= 24_000, pts
        inc_b = b.scalar(f"increase({sel}[{span_ms}ms])", at)
        inc_c = c.scalar(f"increase({sel}[{span_ms}ms])", at)
        assert inc_b is not None and inc_c is not None
        assert abs(inc_b - inc_c) <= 0.01 * inc_c, f"{lane}: increase through frugal {inc_b}, direct {inc_c}"
        # ...and it is what the target's clock said: slope x span (scrape timestamps and the
        # value's computation differ by milliseconds).
        expected = SLOPES[lane] * span_ms / 1000
        assert abs(inc_c - expected) <= 0.02 * expected, (lane, inc_c, expected)

        # The plain 30 s increase, for the record: same order as the direct one (within the
        # extrapolation difference explained above).
        plain_b = b.scalar(f"increase({sel}[30s])", at)
        plain_c = c.scalar(f"increase({sel}[30s])", at)
        assert abs(plain_b - plain_c) <= 0.2 * plain_c, (lane, plain_b, plain_c)

    # Frugal counts the points it sent (what reached B), not the ones it received; read
    # between two equal readings of its count, as A keeps sending.
    def points_on_b():
        return b.points(window="10m")

    def counted_as_sent():
        u1 = metrics_usage(f)["used"]
        on_b = points_on_b()
        u2 = metrics_usage(f)["used"]
        return (u1, on_b) if u1 == on_b == u2 else None

    wait_for(counted_as_sent, timeout=20, interval=0.2, what="frugal's points sent equal to B's points")
    assert metrics_usage(f)["dpm"] > 0


def test_bad_remote_write_requests_get_their_answer_and_harm_nothing(peers, frugal_factory, standin):
    b = peers.prometheus("B", receiver=True)
    b.wait_ready()
    f = frugal_factory(policy_for(standin.url), extra_args=["--upstream-remote-write", b.write_url])
    push = f"{f.http_url}/api/v1/push"
    now = int(time.time() * 1000)
    one = promstack.write_request([({"__name__": "rw_hand_total", "job": "hand", "n": "1"}, [(1.0, now)])])

    # Remote write 2.0: not spoken, and the answer says which version is.
    r = promstack.push(push, one, headers={
        "Content-Type": "application/x-protobuf;proto=io.prometheus.write.v2.Request",
        "X-Prometheus-Remote-Write-Version": "2.0.0"})
    assert r.status_code == 415, (r.status_code, r.text)
    assert "1.0" in r.text

    used = metrics_usage(f)["used"]
    mem = metrics_usage(f)["series_in_memory"]
    # Metadata only (as Prometheus sends every metadata_config.send_interval): fine, and
    # neither a series nor a point.
    r = promstack.push(push, promstack.write_request(metadata=[
        promstack.pb_metadata("rw_hand_total", 1, "Hand-made requests.", ""),
        promstack.pb_metadata("rw_hand_bytes", 2, "Hand-made bytes.", "bytes")]))
    assert r.status_code == 200, (r.status_code, r.text)
    assert r.content == b""

    # Not Snappy (a length of 100 and a 2-byte literal), and Snappy of broken protobuf.
    bad_snappy = b"\x64\x04ab"
    with pytest.raises(ValueError):
        promstack.snappy_decode(bad_snappy)
    r = requests.post(push, data=bad_snappy, headers=promstack.RW1_HEADERS, timeout=10)
    assert r.status_code == 400, (r.status_code, r.text)
    for broken in (b"\x0a\x64abc",  # field 1, 100 bytes long, 3 there
                   b"\x0f\x00\x00"):  # field 1 with wire type 7, which does not exist
        r = requests.post(push, data=promstack.snappy_encode(broken), headers=promstack.RW1_HEADERS, timeout=10)
        assert r.status_code == 400, (broken, r.status_code, r.text)

    m = metrics_usage(f)
    assert (m["used"], m["series_in_memory"]) == (used, mem), m

    # Then a good one on each path reaches B, and counts one point and one series each.
    r = promstack.push(push, one)
    assert r.status_code == 200 and r.content == b"", (r.status_code, r.text)
    two = promstack.write_request([({"__name__": "rw_hand_total", "job": "hand", "n": "2"}, [(2.0, now)])])
    r = promstack.push(f"{f.http_url}/api/prom/push", two)
    assert r.status_code == 200 and r.content == b"", (r.status_code, r.text)
    got = wait_for(lambda: (lambda res: res if len(res) == 2 else None)(b.query("rw_hand_total", now / 1000)),
                   timeout=10, what="both series on B")
    assert {(s["metric"]["n"], s["value"][1]) for s in got} == {("1", "1"), ("2", "2")}
    assert b.num_series() == 2, "nothing else reached B"
    wait_for(lambda: metrics_usage(f)["used"] == used + 2, timeout=10, what="two points counted")
    assert metrics_usage(f)["series_in_memory"] == mem + 2


def test_remote_write_without_a_remote_write_upstream_is_404(frugal_factory, standin):
    f = frugal_factory(policy_for(standin.url))
    body = promstack.write_request([({"__name__": "x", "job": "j"}, [(1.0, int(time.time() * 1000))])])
    r = promstack.push(f"{f.http_url}/api/v1/push", body)
    assert r.status_code == 404, (r.status_code, r.text)
    assert "upstream.remote_write" in r.text
    assert standin.of("metrics") == []


# --- OTLP metrics as Prometheus series ------------------------------------------------------
# The translation Grafana Cloud's OTLP gateway applies (Prometheus' OTLP translation with
# suffixes added, "UnderscoreEscapingWithSuffixes"): https://prometheus.io/docs/guides/opentelemetry/
# and https://github.com/prometheus/otlptranslator (README, metric_namer.go, unit_namer.go):
# - the name's non-alphanumeric characters become `_` (runs collapsed);
# - the unit: `{...}` annotations are dropped; known units map to Prometheus words
#   (ms -> milliseconds, s -> seconds, By -> bytes, ...), `a/b` -> `a_per_b`, "1" on a gauge
#   -> `ratio`; the unit is appended unless the name already ends in it;
# - a monotonic sum gets `_total`; a histogram becomes `_bucket` (one series per bucket
#   boundary plus `+Inf`), `_sum` and `_count`;
# - `service.namespace`/`service.name` -> `job`, `service.instance.id` -> `instance`, and
#   one `target_info` series per resource carries the other resource attributes.
UNIT_WORDS = {"ms": "milliseconds", "s": "seconds", "By": "bytes", "KiBy": "kibibytes", "m": "meters",
              "min": "minutes", "h": "hours", "d": "days", "us": "microseconds", "ns": "nanoseconds",
              "%": "percent", "Hz": "hertz", "V": "volts", "W": "watts", "Cel": "celsius"}
PER_UNIT_WORDS = {"s": "second", "m": "minute", "h": "hour", "d": "day", "w": "week", "mo": "month", "y": "year"}


def prom_base_name(name: str, unit: str, kind: str) -> str:
    tokens = [t for t in re.split(r"[^a-zA-Z0-9]+", name) if t]
    unit = re.sub(r"\{[^}]*\}", "", unit).strip()
    if unit == "1" and kind == "gauge":
        words = ["ratio"]
    elif "/" in unit:
        num, den = unit.split("/", 1)
        words = ([UNIT_WORDS.get(num, num)] if num else []) + (["per", PER_UNIT_WORDS.get(den, den)] if den else [])
    else:
        words = [UNIT_WORDS.get(unit, unit)] if unit and unit != "1" else []
    for w in words:
        if tokens[-len(w.split("_")):] != w.split("_"):
            tokens.append(w)
    if kind == "counter":
        tokens.append("total")
    return "_".join(tokens)


def expected_series(instruments: list[tuple[str, str, str, int, int]]) -> dict[str, int]:
    """Prometheus metric names -> series counts for (name, unit, kind, attribute sets,
    bucket boundaries) instruments, plus one `target_info` for the one resource."""
    out: dict[str, int] = {}
    for name, unit, kind, attr_sets, bounds in instruments:
        base = prom_base_name(name, unit, kind)
        if kind == "histogram":
            out[f"{base}_bucket"] = attr_sets * (bounds + 1)
            out[f"{base}_sum"] = attr_sets
            out[f"{base}_count"] = attr_sets
        else:
            out[base] = attr_sets
    out["target_info"] = 1
    return out


def test_otlp_sdk_metrics_counted_as_prometheus_translates_them(frugal_factory, standin):
    f = frugal_factory(policy_for(standin.url))
    bounds = [5.0, 10.0, 50.0]
    resource = Resource.create({"service.name": "web", "service.namespace": "shop",
                                "service.instance.id": "i-1", "deployment.environment": "test"})
    exporter = OTLPMetricExporter(endpoint=f"{f.http_url}/v1/metrics")
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    provider = MeterProvider(resource=resource, metric_readers=[reader], views=[
        View(instrument_name="http.server.duration", aggregation=ExplicitBucketHistogramAggregation(bounds))])
    meter = provider.get_meter("frugal-e2e")
    requests_counter = meter.create_counter("http.server.requests", unit="{request}")
    duration = meter.create_histogram("http.server.duration", unit="ms")

    def memory(_options: CallbackOptions):
        yield Observation(123456.0, {"pool": "heap"})

    meter.create_observable_gauge("process.memory.usage", callbacks=[memory], unit="By")
    routes = [{"http.route": "/a", "http.method": "GET"}, {"http.route": "/b", "http.method": "POST"}]
    for i, attrs in enumerate(routes):
        requests_counter.add(3 + i, attrs)
        for v in (1, 7, 20, 70):
            duration.record(v * (i + 1), attrs)
    try:
        assert provider.force_flush(10_000)
    finally:
        provider.shutdown()

    want = expected_series([
        ("http.server.requests", "{request}", "counter", len(routes), 0),
        ("http.server.duration", "ms", "histogram", len(routes), len(bounds)),
        ("process.memory.usage", "By", "gauge", 1, 0),
    ])
    # The rules above give the documented names (a check on this test's own translation).
    assert set(want) == {"http_server_requests_total", "http_server_duration_milliseconds_bucket",
                         "http_server_duration_milliseconds_sum", "http_server_duration_milliseconds_count",
                         "process_memory_usage_bytes", "target_info"}
    wait_for(lambda: standin.of("metrics"), timeout=10, what="the metrics reaching the upstream")

    last = {}

    def listing():
        r = requests.get(f"{f.admin_url}/api/v1/series", timeout=5)
        assert r.status_code == 200, (r.status_code, r.text)
        last["body"] = r.json()
        return last["body"] if last["body"]["total_series"] == sum(want.values()) else None

    try:
        body = wait_for(listing, timeout=10, what=f"{sum(want.values())} series listed")
    except AssertionError as e:
        raise AssertionError(f"{e}: want {want}, frugal lists {last.get('body')}") from None
    got = {m["name"]: m["series"] for m in body["metrics"]}
    assert got == want
    assert metrics_usage(f)["active_series"] == sum(want.values())
