"""Tail sampling (`traces.tail`, issue 12) on the real server: traces whose spans arrive over
several OTLP/HTTP requests from the OpenTelemetry Python SDK exporter are decided whole;
error and slow traces are kept complete while the rest is paced, trace by trace, at the
keep probability frugal reports; late spans follow their trace's decision; what frugal
acknowledged survives `kill -9`; the collector's policy shapes load and unknown types are
refused with their YAML path.

Everything is judged on what reached the upstream stand-in, by span ID, against what the
client sent (or, after a crash, what it was answered 2xx for).

To sample at a known probability, a policy floor (`min_probability`) holds the normal
class's keep probability while the filler traffic of test_sampling_marks keeps demand far
above the budget (see its docstring)."""

from __future__ import annotations

import math
import random
import subprocess
import threading
import time
from datetime import datetime, timezone

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from conftest import BIN, metric_value, policy_for, wait_for
from sampling_spec import MAX, parse_tvalue, split_tracestate, trace_id_randomness
from test_sampling_marks import Filler, pacing_at

T0 = 1_764_000_000_000_000_000  # synthetic timestamps: nothing here waits for a span to "take" time
MS = 1_000_000
WEB = Resource.create({"service.name": "mastodon-prod/web", "k8s.pod.name": "web-0"})
SIDEKIQ = Resource.create({"service.name": "mastodon-prod/sidekiq", "k8s.pod.name": "sidekiq-0"})
SCOPE = InstrumentationScope("rack", "3.1.0")
MARK = "frugal.tail.policy"

# Collector-shaped policies, one of each type the issue lists (shapes of the collector-contrib
# tail_sampling processor's README example; /work/notes/tailsampling-facts.md).
ALL_POLICY_TYPES = """
      - {name: always, type: always_sample}
      - {name: slow, type: latency, latency: {threshold_ms: 5000, upper_threshold_ms: 10000}}
      - {name: errors, type: status_code, status_code: {status_codes: [ERROR, UNSET]}, class: priority}
      - {name: tenants, type: string_attribute, string_attribute: {key: key2, values: [value1, value2]}}
      - name: tenants-regex
        type: string_attribute
        string_attribute: {key: key2, values: [value1, val*], enabled_regex_matching: true, cache_max_size: 10}
      - {name: numbers, type: numeric_attribute, numeric_attribute: {key: key1, min_value: 50, max_value: 100}}
      - {name: flags, type: boolean_attribute, boolean_attribute: {key: key4, value: true}}
      - {name: sizes, type: span_count, span_count: {min_spans: 2, max_spans: 20}}
      - {name: states, type: trace_state, trace_state: {key: key3, values: [value1, value2]}}
      - {name: rate, type: rate_limiting, rate_limiting: {spans_per_second: 35}}
      - {name: bytes, type: bytes_limiting, bytes_limiting: {bytes_per_second: 100000, burst_capacity: 200000}}
      - {name: tenth, type: probabilistic, probabilistic: {hash_salt: frugal, sampling_percentage: 10}, class: bulk}
      - name: both
        type: and
        and:
          and_sub_policy:
            - {name: both-numbers, type: numeric_attribute, numeric_attribute: {key: key1, min_value: 50, max_value: 100}}
            - {name: both-tenants, type: string_attribute, string_attribute: {key: key2, values: [value1, value2]}}
      - name: not-health
        type: not
        not:
          not_sub_policy: {name: health-route, type: string_attribute, string_attribute: {key: http.route, values: [/health]}}
      - name: health
        type: drop
        drop:
          drop_sub_policy:
            - {name: health-paths, type: string_attribute,
               string_attribute: {key: url.path, values: [\\/health, \\/metrics], enabled_regex_matching: true}}
      - name: mixed
        type: composite
        composite:
          max_total_spans_per_second: 1000
          policy_order: [mixed-numbers, mixed-tenants, mixed-rest]
          composite_sub_policy:
            - {name: mixed-numbers, type: numeric_attribute, numeric_attribute: {key: key1, min_value: 50}}
            - {name: mixed-tenants, type: string_attribute, string_attribute: {key: key2, values: [value1, value2]}}
            - {name: mixed-rest, type: always_sample}
          rate_allocation:
            - {policy: mixed-numbers, percent: 50}
            - {policy: mixed-tenants, percent: 25}
"""


# --- building and sending traces -------------------------------------------------------------

def span(tid: int, sid: int, parent: int | None, name: str, start: int, end: int, attrs=None,
         error: bool = False, resource=WEB) -> ReadableSpan:
    """A finished SDK span, built directly (no tracer: cheap, and any timestamps)."""
    return ReadableSpan(
        name, SpanContext(tid, sid, False, TraceFlags(1)),
        SpanContext(tid, parent, False, TraceFlags(1)) if parent else None,
        resource, attrs or {}, kind=SpanKind.SERVER if parent is None else SpanKind.INTERNAL,
        status=Status(StatusCode.ERROR, "boom") if error else Status(StatusCode.UNSET),
        start_time=start, end_time=end, instrumentation_scope=SCOPE)


def web_trace(rng: random.Random, kind: str = "normal", route: str = "/api/v1/timelines/home",
              root_attrs=None) -> list[ReadableSpan]:
    """[SQL child, Sidekiq child, root]: `error` puts the ERROR on a child (never on the root),
    `slow` makes the root last 2.5 to 8 s; others last 10 to 900 ms."""
    tid, root = rng.getrandbits(128) | 1, rng.getrandbits(64) | 1
    start = T0 + rng.randrange(10**12)
    duration = rng.randint(2500, 8000) * MS if kind == "slow" else rng.randint(10, 900) * MS
    err_child = rng.randrange(2) if kind == "error" else -1
    return [
        span(tid, rng.getrandbits(64) | 1, root, "SELECT statuses", start + MS, start + 5 * MS,
             {"db.system": "postgresql"}, error=err_child == 0),
        span(tid, rng.getrandbits(64) | 1, root, "PushUpdateWorker perform", start + 6 * MS, start + 8 * MS,
             {"messaging.system": "sidekiq"}, error=err_child == 1, resource=SIDEKIQ),
        span(tid, root, None, f"GET {route}", start, start + duration,
             {"http.route": route, "http.request.method": "GET", **(root_attrs or {})}),
    ]


def interleaved(traces: list[list[ReadableSpan]], group: int, rng: random.Random) -> list[list[ReadableSpan]]:
    """Export batches in which each trace's k spans land in k consecutive batches, batch i
    holding the first span of group i's traces, the second of group i-1's, ... (so batches
    interleave many traces); the order of a trace's spans rotates with its group, so the
    root comes first, in the middle or last."""
    groups = [traces[i:i + group] for i in range(0, len(traces), group)]
    k = max(len(t) for t in traces)
    batches = []
    for i in range(len(groups) + k - 1):
        batch = []
        for j in range(k):
            g = i - j
            if 0 <= g < len(groups):
                for t in groups[g]:
                    r = g % len(t)
                    rotated = t[r:] + t[:r]
                    if j < len(rotated):
                        batch.append(rotated[j])
        rng.shuffle(batch)
        batches.append(batch)
    return batches


def trace_key(t: list[ReadableSpan]) -> bytes:
    return t[0].context.trace_id.to_bytes(16, "big")


def span_ids(t: list[ReadableSpan]) -> set[bytes]:
    return {s.context.span_id.to_bytes(8, "big") for s in t}


class Arrivals:
    """What reached the stand-in of some traces, read incrementally (the stand-in's list only
    grows): trace ID -> span ID -> the span (protobuf)."""

    def __init__(self, standin, trace_ids):
        self.standin, self.wanted = standin, set(trace_ids)
        self.seen = 0
        self.requests = 0  # requests that brought any of them
        self.by_trace: dict[bytes, dict[bytes, object]] = {}

    def update(self) -> dict[bytes, dict[bytes, object]]:
        received = self.standin.of("traces")
        for r in received[self.seen:]:
            hit = False
            for rs in r.message.resource_spans:
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        if s.trace_id in self.wanted:
                            self.by_trace.setdefault(s.trace_id, {})[s.span_id] = s
                            hit = True
            self.requests += hit
        self.seen = len(received)
        return self.by_trace


def attr(s, key: str):
    return next((kv.value.string_value for kv in s.attributes if kv.key == key), None)


def th_of(s) -> str | None:
    """The `th` of a span's tracestate `ot` entry, if any."""
    return dict(split_tracestate(s.trace_state)[0]).get("th")


def export(exporter, batch) -> None:
    assert exporter.export(batch) == SpanExportResult.SUCCESS


def settled(arrivals: Arrivals, complete: dict, not_before: float, timeout: float, quiet: float = 1.5):
    """What arrived, once every trace of `complete` (trace ID -> span IDs) arrived whole, it
    is past `not_before`, and the count of arrived spans held still, with no request in the
    stand-in's hands, for `quiet` seconds (a dropped trace leaves nothing to wait for, and
    frugal sends what it decided every 200 ms, so "nothing more comes" is a quiet spell); or,
    after `timeout` seconds, what arrived by then (the caller's assertions say what is
    missing)."""
    deadline = time.time() + timeout
    n, since = -1, time.time()
    while True:
        busy = arrivals.standin.busy()
        got = arrivals.update()
        count = sum(len(v) for v in got.values())
        if count != n or busy:
            n, since = count, time.time()
        now = time.time()
        if now >= deadline:
            return got
        if (now >= not_before and now - since >= quiet
                and all(set(got.get(tid, {})) == want for tid, want in complete.items())):
            return got
        time.sleep(0.25)


# --- frugal --------------------------------------------------------------------------------------

def tail_frugal(frugal_factory, standin, tail: dict, policies: str = "", sampling: str = "{mode: proportional}",
                budgets: str | None = None, **kw):
    """frugal with `traces.tail` set to `tail` and these policies (YAML list items indented
    by six); unless `budgets` is given, a 1-hour period whose 20 MB budget is far below the
    filler's demand, so the floor (`min_probability`) sets the normal class's probability."""
    if budgets is None:
        start = datetime.fromtimestamp(int(time.time()) - 1, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        budgets = f"""
period: {{every: 1h, start: "{start}"}}
pacing: {{recompute_every: 200ms}}
budgets:
  traces: {{limit: 20MB, target: 95%}}
"""
    settings = "\n".join(f"    {k}: {v}" for k, v in tail.items())
    extra = f"""
traces:
  sampling: {sampling}
  tail:
{settings}
    policies:{policies or " []"}
"""
    return frugal_factory(policy_for(standin.url, budgets=budgets, extra=extra, timeout="10s", max_elapsed="20s"),
                          **kw)


def sigma_band(n: int, p: float) -> tuple[float, float]:
    s = math.sqrt(n * p * (1 - p))
    return n * p - 3 * s, n * p + 3 * s


# --- the tests ------------------------------------------------------------------------------------

def test_errors_and_slow_kept_whole_rest_sampled_as_whole_traces(standin, frugal_factory):
    """20,000 traces of 3 spans (a root and two children, from two services), each spread over
    3 export requests (of 600 spans from 600 traces each: requests interleave traces); 2 % with an ERROR on a child,
    5 % with a root over 2 s; the normal class held at 10 % by the policy floor. Upstream
    gets every error and slow trace complete (span-ID sets equal), every other trace whole
    or not at all, their kept share within 3σ of the probability written in their `th`
    (all the same, that of frugal's reported 10 %), and exactly the traces whose trace-ID
    randomness is at or above it (consistent sampling); kept spans marked with the policy
    that kept them; the kept traces came in batches."""
    f = tail_frugal(frugal_factory, standin,
                    tail=dict(decision_wait="2s", root_grace="1s", max_buffer="64MB", max_trace_size="8MB",
                              decision_cache=500000, decision_ttl="10m", mark_attribute=MARK),
                    policies="""
      - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}, class: priority}
      - {name: slow, type: latency, latency: {threshold_ms: 2000}, class: priority}""",
                    sampling="{mode: proportional, min_probability: 10%}")
    rng = random.Random(20)
    n = 20_000
    kinds = ["error"] * 400 + ["slow"] * 1000 + ["normal"] * (n - 1400)
    rng.shuffle(kinds)
    traces = [web_trace(rng, kind) for kind in kinds]
    batches = interleaved(traces, 200, rng)
    assert len(batches) == 102 and all(len(b) <= 600 for b in batches)

    filler = Filler(f)
    try:
        wait_for(lambda: pacing_at(f, 0.1), timeout=30, what="pacing at keep probability 0.1")
        exporter = OTLPSpanExporter(endpoint=f"{f.http_url}/v1/traces", timeout=30)
        t = time.time()
        for b in batches:
            export(exporter, b)
        sent_in = time.time() - t
        print(f"sent {n} traces ({sum(map(len, batches))} spans) in {sent_in:.1f} s")
        keep = {trace_key(tr): span_ids(tr) for tr, k in zip(traces, kinds) if k != "normal"}
        arrivals = Arrivals(standin, map(trace_key, traces))
        got = settled(arrivals, keep, not_before=time.time() + 2, timeout=30)
        assert pacing_at(f, 0.1), "the reported keep probability moved while the traces were decided"
    finally:
        filler.stop()

    incomplete, partial, kept_normal, ths = [], [], [], set()
    for tr, kind in zip(traces, kinds):
        tid, want = trace_key(tr), span_ids(tr)
        have = got.get(tid, {})
        if kind != "normal":
            if set(have) != want:
                incomplete.append(f"{kind} {tid.hex()}: {len(have)} of {len(want)} spans")
            elif {attr(s, MARK) for s in have.values()} != {{"error": "errors", "slow": "slow"}[kind]}:
                incomplete.append(f"{kind} {tid.hex()} marked {[attr(s, MARK) for s in have.values()]}")
            continue
        if not have:
            continue
        if set(have) != want:
            partial.append(tid.hex())
            continue
        kept_normal.append(tid)
        ths |= {th_of(s) for s in have.values()}
        assert all(attr(s, MARK) is None for s in have.values()), "only keep policies mark what they kept"
    assert not incomplete, f"{len(incomplete)} of 1400 error and slow traces arrived incomplete or unmarked, " \
        f"e.g. {incomplete[:5]}"
    assert not partial, f"{len(partial)} partial normal traces arrived, e.g. {partial[:5]}"
    assert len(ths) == 1 and None not in ths, f"kept normal traces carry th {ths}: one steady probability"
    th = parse_tvalue(ths.pop())
    p = (MAX - th) / MAX
    assert abs(p - 0.1) < 1e-3, f"the th written ({p}) is the probability frugal reports (0.1)"
    behind = [tid.hex() for tid in kept_normal if trace_id_randomness(tid) < th]
    assert not behind, f"kept although their randomness is under th: {behind[:5]}"
    # ...and, the probability steady, exactly the traces a probabilistic sampler at that
    # threshold keeps (a replica sampling by trace ID agrees with this one).
    kept_set = set(kept_normal)
    missed = [trace_key(tr).hex() for tr, kind in zip(traces, kinds) if kind == "normal"
              and trace_key(tr) not in kept_set and trace_id_randomness(trace_key(tr)) >= th]
    assert not missed, f"{len(missed)} normal traces dropped although their randomness is at or above th"
    others = n - 1400
    lo, hi = sigma_band(others, p)
    print(f"kept {len(kept_normal)} of {others} normal traces; 3σ band at p={p:.6f}: [{lo:.0f}, {hi:.0f}]")
    assert lo <= len(kept_normal) <= hi
    kept = len(kept_normal) + 1400
    assert arrivals.requests * 10 < kept, f"{kept} kept traces came in {arrivals.requests} requests: not in batches"

    m = f.metrics()
    assert metric_value(m, "frugal_tail_decisions_total", policy="errors", decision="kept") == 400
    assert metric_value(m, "frugal_tail_decisions_total", policy="slow", decision="kept") == 1000
    assert metric_value(m, "frugal_tail_traces_received_total") >= n
    assert metric_value(m, "frugal_tail_decision_seconds_count") >= n


def test_late_spans_follow_their_trace_decision(standin, frugal_factory):
    """decision_wait 1s; 200 traces whose 17 spans arrive one per trace every 1.5 s (25 s,
    over 20x decision_wait), in two requests a round, the normal class held at 50 %:
    60 traces with an ERROR on their first span only are kept whole; 60 whose first span
    matches a drop policy are dropped whole, their later ERROR spans too; 80 plain traces
    whose last span has an ERROR arrive whole or not at all, some of each (a late span gets
    its trace's decision, not one of its own, and leaves with its trace's `th`). Late spans
    are counted."""
    f = tail_frugal(frugal_factory, standin, tail=dict(decision_wait="1s", root_grace="1s"),
                    policies="""
      - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}, class: priority}
      - name: spam
        type: drop
        drop:
          drop_sub_policy:
            - {name: spam-tenant, type: string_attribute, string_attribute: {key: tenant, values: [spam]}}""",
                    sampling="{mode: proportional, min_probability: 50%}")
    rng = random.Random(21)
    rounds, every = 17, 1.5
    kinds = ["first-error"] * 60 + ["first-spam"] * 60 + ["plain"] * 80
    rng.shuffle(kinds)
    traces = []  # per trace: its spans in the order they are sent
    for i, kind in enumerate(kinds):
        tid, root = rng.getrandbits(128) | 1, rng.getrandbits(64) | 1
        start = T0 + rng.randrange(10**12)
        spans = []
        for k in range(rounds):
            is_root = k == (0 if i % 2 else rounds - 1)  # the root first, or last
            attrs = {"tenant": "spam"} if kind == "first-spam" and k == 0 else {}
            error = (kind == "first-error" and k == 0) or (kind != "first-error" and k == rounds - 1)
            spans.append(span(tid, root if is_root else rng.getrandbits(64) | 1, None if is_root else root,
                              "GET /api/v1/statuses" if is_root else f"step {k}", start + k * MS,
                              start + (k + 1) * MS + (rounds * MS if is_root else 0), attrs, error=error))
        traces.append(spans)

    filler = Filler(f)
    try:
        wait_for(lambda: pacing_at(f, 0.5), timeout=30, what="pacing at keep probability 0.5")
        exporter = OTLPSpanExporter(endpoint=f"{f.http_url}/v1/traces", timeout=30)
        t0 = time.time()
        for k in range(rounds):
            wait_for(lambda: time.time() >= t0 + k * every, timeout=every + 1, interval=0.02,
                     what=f"round {k}'s time")
            batch = [t[k] for t in traces]
            rng.shuffle(batch)
            export(exporter, batch[:100])
            export(exporter, batch[100:])
        assert time.time() - t0 > 20 * 1.0, "the spans of each trace arrived over more than 20x decision_wait"
        keep = {trace_key(t): span_ids(t) for t, k in zip(traces, kinds) if k == "first-error"}
        got = settled(Arrivals(standin, map(trace_key, traces)), keep, not_before=time.time() + 1.5, timeout=30)
        assert pacing_at(f, 0.5), "the reported keep probability moved during the test"
    finally:
        filler.stop()

    outcome = {"kept": 0, "dropped": 0}
    for t, kind in zip(traces, kinds):
        spans = got.get(trace_key(t), {})
        have, want = set(spans), span_ids(t)
        ths = {th_of(s) for s in spans.values()}
        if kind == "first-error":
            assert have == want, f"kept by its first span's error: {len(have)} of {len(want)} spans arrived"
            assert ths <= {None, "0"}, f"kept by a policy, at p=1, late spans too: th {ths}"
        elif kind == "first-spam":
            assert not have, f"dropped by its first span: {len(have)} of its spans arrived"
        else:
            assert have in (set(), want), f"plain trace: {len(have)} of {len(want)} spans arrived"
            assert ths in (set(), {"8"}), f"paced at 50 %, late spans too: th {ths}"
            outcome["kept" if have else "dropped"] += 1
    assert outcome["kept"] >= 10 and outcome["dropped"] >= 10, outcome
    m = f.metrics()
    late = metric_value(m, "frugal_tail_late_spans_total")
    print(f"plain traces {outcome}; {late} late spans counted of {200 * (rounds - 1)} sent after the first round")
    assert late is not None and late >= 200 * (rounds - 2), f"{late} late spans counted"
    assert metric_value(m, "frugal_tail_late_span_age_seconds_count") == late


def test_kill_9_acknowledged_spans_are_delivered(standin, frugal_factory):
    """decision_wait 30s holds every trace in the buffer; two SDK exporters (OTLP/HTTP and
    OTLP/gRPC) send traces spread over interleaved requests (a trace's spans reach frugal
    over both) and note which requests were answered with success; frugal is
    killed (-9) mid-send, before any of them was decided (upstream has none of them), and
    restarted on the same data directory with decision_wait 1s: every acknowledged span
    reaches upstream (pacing off, so every trace is kept)."""
    policy_args = dict(policies="""
      - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}, class: priority}""",
                       budgets="budgets: {traces: {limit: 50GB}}\npacing: {enabled: false}")
    f = tail_frugal(frugal_factory, standin, tail=dict(decision_wait="30s", root_grace="30s"), **policy_args)
    rng = random.Random(22)
    traces = [web_trace(rng, "error" if i % 50 == 0 else "normal") for i in range(6000)]
    batches = interleaved(traces, 50, rng)
    acked: set[bytes] = set()
    acked_by = [0, 0]  # requests answered with success, per exporter
    lock = threading.Lock()
    stop = threading.Event()

    def send(i, exporter):
        for b in batches[i::2]:
            if stop.is_set():
                return
            if exporter.export(b) == SpanExportResult.SUCCESS:
                with lock:
                    acked.update(s.context.span_id.to_bytes(8, "big") for s in b)
                    acked_by[i] += 1

    exporters = [OTLPSpanExporter(endpoint=f"{f.http_url}/v1/traces", timeout=3),
                 GrpcSpanExporter(endpoint=f.grpc, insecure=True, timeout=3)]
    senders = [threading.Thread(target=send, args=(i, e), daemon=True) for i, e in enumerate(exporters)]
    for s in senders:
        s.start()
    try:
        wait_for(lambda: len(acked) >= 6000, timeout=60, interval=0.01, what="6000 spans acknowledged")
        assert all(s.is_alive() for s in senders), "frugal is killed while the clients are still sending"
        assert (f.data_dir / "tail-spool").is_dir() and any((f.data_dir / "tail-spool").iterdir())
        m = f.metrics()
        assert (metric_value(m, "frugal_tail_buffered_traces") or 0) > 0, "traces sit in the buffer"
        assert (metric_value(m, "frugal_tail_spool_bytes") or 0) > 0, "...and in the spool"
        assert not standin.of("traces"), "nothing is decided before decision_wait"
        f.kill9()
    finally:
        stop.set()
        for s in senders:
            s.join(30)
    answered = set(acked)  # every 2xx, the last ones included (none can come after the kill)
    assert not standin.of("traces"), "nothing reached upstream before the crash"
    total = sum(map(len, batches))
    print(f"{len(answered)} of {total} spans acknowledged before kill -9 (requests over HTTP, gRPC: {acked_by})")
    assert len(answered) < total, "killed before the clients had sent everything"
    assert min(acked_by) > 0

    text = f.policy_path.read_text()
    assert "decision_wait: 30s" in text and "root_grace: 30s" in text
    f.policy_path.write_text(text.replace("decision_wait: 30s", "decision_wait: 1s").replace("root_grace: 30s",
                                                                                            "root_grace: 500ms"))
    f.start()
    sent = {sid: trace_key(t) for t in traces for sid in span_ids(t)}

    arrivals = Arrivals(standin, set(sent.values()))
    last = {}

    def all_there():
        have = {sid for v in arrivals.update().values() for sid in v}
        last["missing"] = answered - have
        return have if not last["missing"] else None

    try:
        have = wait_for(all_there, timeout=30, interval=0.25, what="every acknowledged span upstream")
    except AssertionError:
        raise AssertionError(f"{len(last['missing'])} of {len(answered)} acknowledged spans never arrived "
                             f"after the restart") from None
    assert have <= set(sent), "only spans the clients sent"


def check(tmp_path, name: str, text: str) -> subprocess.CompletedProcess:
    path = tmp_path / name
    path.write_text(text)
    return subprocess.run([str(BIN), "check", "--policy", str(path)], capture_output=True, text=True, timeout=30)


def tail_check_policy(policies: str) -> str:
    return policy_for("http://127.0.0.1:9", extra=f"""
traces:
  sampling: {{mode: proportional}}
  tail:
    decision_wait: 10s
    root_grace: 1s
    max_buffer: 256MB
    max_trace_size: 8MB
    decision_cache: 500000
    decision_ttl: 10m
    mark_attribute: {MARK}
    policies:{policies}
""")


def test_collector_policies_load_and_unknown_types_are_refused(tmp_path):
    """`frugal check` accepts a policy with one of each collector policy type, in the
    collector's shapes; it refuses `type: ottl_condition` by name and a misspelled
    `status_cod`, each with its YAML path, at the top level and inside an `and`;
    `invert_match` is accepted as documented or refused with a pointer to `drop`."""
    r = check(tmp_path, "all.yaml", tail_check_policy(ALL_POLICY_TYPES))
    assert r.returncode == 0, r.stdout + r.stderr
    assert ": ok" in r.stdout, r.stdout

    first = "\n      - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}"
    ottl = first + """
      - name: attrs
        type: ottl_condition
        ottl_condition: {error_mode: ignore, span: ['attributes["test_attr_key_1"] == "test_attr_val_1"']}"""
    r = check(tmp_path, "ottl.yaml", tail_check_policy(ottl))
    assert r.returncode != 0, r.stdout
    assert "traces.tail.policies[1].type" in r.stdout and "ottl_condition" in r.stdout, r.stdout + r.stderr

    typo = first + "\n      - {name: errors2, type: status_cod, status_code: {status_codes: [ERROR]}}"
    r = check(tmp_path, "typo.yaml", tail_check_policy(typo))
    assert r.returncode != 0, r.stdout
    assert "traces.tail.policies[1].type" in r.stdout and "status_cod" in r.stdout, r.stdout + r.stderr

    nested = first + """
      - name: both
        type: and
        and:
          and_sub_policy:
            - {name: a, type: always_sample}
            - {name: b, type: status_cod, status_code: {status_codes: [ERROR]}}"""
    r = check(tmp_path, "nested.yaml", tail_check_policy(nested))
    assert r.returncode != 0, r.stdout
    assert "traces.tail.policies[1].and.and_sub_policy[1].type" in r.stdout, r.stdout + r.stderr

    inverted = first + """
      - {name: not-vip, type: string_attribute, string_attribute: {key: tenant, values: [vip], invert_match: true}}"""
    r = check(tmp_path, "invert.yaml", tail_check_policy(inverted))
    assert r.returncode == 0 or ("invert_match" in r.stdout and "drop" in r.stdout), r.stdout + r.stderr


def test_drop_policy_wins_and_keep_policy_keeps(standin, frugal_factory):
    """With the normal class held at 50 %: traces on `http.route=/health` are dropped by a
    `drop` policy even though they carry errors (any drop wins); a string_attribute policy
    keeps every `tenant=vip` trace whole, at p=1 (no `th` but 0) and marked `vip`; error
    traces are kept and marked `errors`; plain traces are paced: some kept (th of 50 %),
    some dropped, each whole."""
    f = tail_frugal(frugal_factory, standin, tail=dict(decision_wait="1s", root_grace="500ms", mark_attribute=MARK),
                    policies="""
      - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}, class: priority}
      - name: health
        type: drop
        drop:
          drop_sub_policy:
            - {name: health-route, type: string_attribute, string_attribute: {key: http.route, values: [/health]}}
      - {name: vip, type: string_attribute, string_attribute: {key: tenant, values: [vip]}}""",
                    sampling="{mode: proportional, min_probability: 50%}")
    rng = random.Random(23)
    health = [web_trace(rng, "error", route="/health") for _ in range(40)]
    vip = [web_trace(rng, "normal", root_attrs={"tenant": "vip"}) for _ in range(100)]
    errors = [web_trace(rng, "error") for _ in range(30)]
    plain = [web_trace(rng, "normal") for _ in range(200)]
    everything = health + vip + errors + plain
    filler = Filler(f)
    try:
        wait_for(lambda: pacing_at(f, 0.5), timeout=30, what="pacing at keep probability 0.5")
        exporter = OTLPSpanExporter(endpoint=f"{f.http_url}/v1/traces", timeout=30)
        for b in interleaved(everything, 60, rng):
            export(exporter, b)
        keep = {trace_key(t): span_ids(t) for t in vip + errors}
        got = settled(Arrivals(standin, map(trace_key, everything)), keep, not_before=time.time() + 1, timeout=30)
        assert pacing_at(f, 0.5)
    finally:
        filler.stop()

    assert not [t for t in health if trace_key(t) in got], "a drop policy wins over the errors policy"
    for group, name in ((vip, "vip"), (errors, "errors")):
        for t in group:
            spans = got[trace_key(t)].values()
            assert {attr(s, MARK) for s in spans} == {name}
            assert {th_of(s) for s in spans} <= {None, "0"}, "kept by a policy: at p=1"
    kept = [t for t in plain if trace_key(t) in got]
    assert all(set(got[trace_key(t)]) == span_ids(t) for t in kept), "paced traces arrive whole"
    assert all(th_of(s) == "8" for t in kept for s in got[trace_key(t)].values())
    lo, hi = sigma_band(len(plain), 0.5)
    assert lo <= len(kept) <= hi, f"{len(kept)} of {len(plain)} plain traces kept at 50 %"
    m = f.metrics()
    assert metric_value(m, "frugal_tail_decisions_total", policy="health", decision="dropped") == len(health)
    assert metric_value(m, "frugal_tail_decisions_total", policy="vip", decision="kept") == len(vip)
