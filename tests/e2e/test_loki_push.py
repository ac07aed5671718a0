"""Loki push in and out: real Loki clients (winston-loki from Node, protobuf + Snappy;
python-logging-loki, JSON) and raw pushes reach frugal's `/loki/api/v1/push`, leave for a
Loki stand-in (loki_standin.py: decodes with its own protobuf classes and Snappy decoder,
counts bytes as Loki bills them), and frugal meters exactly what Loki would bill; under a
logs budget, warnings are kept first, the rest sampled at the keep probability frugal
reports, trace-carrying entries follow their trace; bad pushes get a clear 400."""

from __future__ import annotations

import gzip
import json
import logging
import os
import random
import re
import shutil
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
import requests
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.sdk._logs.export import LogRecordExportResult

import logging_loki
import payloads
from conftest import policy_for, wait_for
from loki_standin import LokiStandIn, encode_protobuf, format_labels
from promstack import snappy_encode
from sampling_spec import threshold, trace_id_randomness, tvalue

CLIENTS = Path(__file__).parent / "loki-clients"
MAX_LINE = 262144  # Grafana Cloud's max_line_size (256 KB); frugal truncates to it
PRECISION = 4  # traces.sampling.precision's default: the `th` frugal writes


def need(ok, why: str):
    """In CI a missing peer is a failure; elsewhere the test is skipped, saying why."""
    if ok:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(why)
    pytest.skip(why)


@pytest.fixture
def loki():
    s = LokiStandIn()
    yield s
    s.stop()


def loki_frugal(frugal_factory, standin, loki, **policy):
    return frugal_factory(policy_for(standin.url, **policy), extra_args=["--upstream-loki", loki.push_url])


def push_json(f, streams, gzipped=False, timeout=15) -> requests.Response:
    """A push in Loki's JSON: streams as [(labels dict, [(ts ns, line, metadata dict or None)])]."""
    doc = {"streams": [{"stream": labels,
                        "values": [[str(ts), line] + ([meta] if meta else []) for ts, line, meta in entries]}
                       for labels, entries in streams]}
    body = json.dumps(doc).encode()
    headers = {"Content-Type": "application/json"}
    if gzipped:
        body = gzip.compress(body)
        headers["Content-Encoding"] = "gzip"
    return requests.post(f"{f.http_url}/loki/api/v1/push", data=body, headers=headers, timeout=timeout)


def push_proto(f, streams, timeout=15) -> requests.Response:
    """The same push in protobuf + Snappy, encoded with the stand-in's own classes."""
    body = encode_protobuf([(format_labels(labels), [(ts, line, list((meta or {}).items())) for ts, line, meta in entries])
                            for labels, entries in streams])
    return push_raw(f, body, "application/x-protobuf", timeout)


def push_raw(f, body: bytes, content_type: str, timeout=15) -> requests.Response:
    return requests.post(f"{f.http_url}/loki/api/v1/push", data=body,
                         headers={"Content-Type": content_type}, timeout=timeout)


def otlp_log_bytes(standin) -> int:
    return sum(r.billed for r in standin.of("logs"))


def settled_usage(f, expected, what: str, timeout: float = 10.0):
    """frugal's logs `used` once it equals `expected()` (both re-read until the deadline);
    fails with both figures otherwise."""
    last = {}

    def same():
        last["used"], last["billed"] = f.used("logs"), expected()
        return last["used"] == last["billed"]

    try:
        wait_for(same, timeout=timeout, interval=0.1, what=what)
    except AssertionError:
        pytest.fail(f"{what}: frugal counted {last['used']} logs bytes, upstream billed {last['billed']}")
    return last["used"]


def test_loki_clients_and_otlp_logs_metered_as_loki_counts(standin, loki, frugal_factory):
    """winston-loki (protobuf + Snappy) and python-logging-loki (JSON) push 200 lines each,
    the OpenTelemetry SDK exports ~100 log records over OTLP/HTTP: every line arrives at
    the Loki stand-in with its labels (forwarded as protobuf + Snappy), every record at the
    OTLP one, and frugal's logs `used` is exactly Loki's bill of both."""
    need(shutil.which("node"), "no node (Node 20)")
    need((CLIENTS / "node_modules" / "winston-loki").is_dir(),
         f"winston-loki is not installed: npm ci in {CLIENTS} (tests/run.sh does)")
    f = loki_frugal(frugal_factory, standin, loki)
    rng = random.Random(41)
    run = f"{rng.getrandbits(32):08x}"

    # winston-loki, from Node: the level becomes the stream's `level` label.
    levels = ["info", "warn", "error", "debug", "http", "verbose"]
    winston_lines = [[levels[i % len(levels)], f"winston {run} #{i} GET /api/v1/timelines/home {payloads.unicode_word(rng)}"]
                     for i in range(200)]
    spec = {"host": f.http_url, "labels": {"app": "mastodon-web", "source": "winston"}, "lines": winston_lines}
    r = subprocess.run(["node", str(CLIENTS / "send_winston.mjs"), json.dumps(spec)],
                       capture_output=True, text=True, timeout=90)
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert report == {"sent": 200, "format": "protobuf", "errors": []}, "winston-loki pushed protobuf + Snappy"

    # python-logging-loki: one JSON push per record; a failed push would land in handleError.
    errors = []

    class Handler(logging_loki.LokiHandler):
        def handleError(self, record):  # noqa: N802
            errors.append(f"{record.getMessage()}: {sys.exc_info()[1]}")

    handler = Handler(url=f"{f.http_url}/loki/api/v1/push", tags={"app": "mastodon-sidekiq", "source": "python"},
                      version="1")
    logger = logging.getLogger(f"e2e.loki.{run}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    py_levels = [logging.INFO, logging.WARNING, logging.ERROR, logging.DEBUG]
    py_lines = []
    try:
        for i in range(200):
            msg = f"python {run} #{i} job=ActivityPub::DeliveryWorker {payloads.unicode_word(rng)}"
            py_lines.append((logging.getLevelName(py_levels[i % 4]).lower(), msg))
            logger.log(py_levels[i % 4], msg)
    finally:
        logger.removeHandler(handler)
        handler.emitter.close()
    assert errors == []

    # The OpenTelemetry SDK's OTLP/HTTP log exporter.
    records = payloads.log_records(rng, 100)
    assert OTLPLogExporter(endpoint=f"{f.http_url}/v1/logs").export(records) == LogRecordExportResult.SUCCESS

    wait_for(lambda: len(loki.entries()) >= 400, timeout=15, what="400 Loki lines upstream")
    wait_for(lambda: sum(r.items for r in standin.of("logs")) >= len(records), timeout=15, what="OTLP records upstream")
    loki.idle()
    entries = loki.entries()
    assert len(entries) == 400, f"{len(entries)} lines arrived for 400 sent"
    winston = sorted((e.labels.get("level"), e.line) for e in entries if e.labels.get("source") == "winston")
    assert winston == sorted(map(tuple, winston_lines))
    assert all(e.labels == {"level": e.labels["level"], "app": "mastodon-web", "source": "winston"}
               for e in entries if e.labels.get("source") == "winston")
    py = sorted((e.labels.get("severity"), e.line) for e in entries if e.labels.get("source") == "python")
    assert py == sorted(py_lines)
    assert all(e.labels.get("logger") == logger.name and e.labels.get("app") == "mastodon-sidekiq"
               for e in entries if e.labels.get("source") == "python")
    assert all(e.metadata == [] for e in entries), "nothing sampled, no metadata added"
    assert not loki.rejected
    assert all(p.headers.get("content-type") == "application/x-protobuf" for p in loki.pushes), \
        "forwarded as protobuf + Snappy"
    assert sum(r.items for r in standin.of("logs")) == len(records)
    assert standin.of("logs")[0].message.resource_logs, "the OTLP logs went to the OTLP upstream"

    used = settled_usage(f, lambda: loki.bytes + otlp_log_bytes(standin), "whole-run logs bytes")
    assert loki.bytes > 0 and otlp_log_bytes(standin) > 0 and used == loki.bytes + otlp_log_bytes(standin)


# --- under a budget -------------------------------------------------------------------------

BATCH_SECONDS = 0.2
INFO_PER_BATCH = 100
PAD = "x" * 120
WARN_FORMS = [  # (stream labels, line, metadata): severity WARN or above, every way frugal finds it
    ({"app": "web", "source": "raw"}, "warn-sm {id} disk nearly full", {"level": "warn"}),
    ({"app": "web", "source": "raw"}, "warn-dl {id} retrying delivery", {"detected_level": "warning"}),
    ({"app": "web", "level": "error"}, "error-label {id} upstream reset", None),
    ({"app": "web", "source": "raw"}, "level=error msg=\"job failed\" id={id}", None),
    ({"app": "web", "source": "raw"}, '{{"level":"warn","msg":"slow query","id":"{id}"}}', None),
    ({"app": "web", "source": "raw"}, "E, [2026-11-25T10:00:00.000000 #1] ERROR -- : boom {id}", None),
]
INFO_FORMS = [  # below WARN
    ({"app": "web", "source": "raw"}, "level=info msg=\"Completed 200 OK in 42ms\" id={id} " + PAD, None),
    ({"app": "web", "source": "raw"}, '{{"level":"debug","msg":"cache hit","id":"{id}","pad":"' + PAD + '"}}', None),
    ({"app": "web", "source": "raw"}, "I, [2026-11-25T10:00:00.000000 #1]  INFO -- : Started GET {id} " + PAD, None),
    ({"app": "web", "level": "info"}, "Completed 200 OK in 12ms {id} " + PAD, None),
    ({"app": "web", "source": "raw"}, "cache lookup {id} " + PAD, {"level": "debug"}),
]


def otlp_span(trace_id: bytes, span_id: bytes, pad: str = "") -> trace_pb2.Span:
    attrs = [common_pb2.KeyValue(key="pad", value=common_pb2.AnyValue(string_value=pad))] if pad else []
    return trace_pb2.Span(trace_id=trace_id, span_id=span_id, name="GET /", kind=trace_pb2.Span.SPAN_KIND_SERVER,
                          start_time_unix_nano=1_764_000_000_000_000_000,
                          end_time_unix_nano=1_764_000_000_010_000_000, attributes=attrs)


def post_spans(f, spans):
    req = trace_service_pb2.ExportTraceServiceRequest(resource_spans=[trace_pb2.ResourceSpans(
        resource=resource_pb2.Resource(attributes=[common_pb2.KeyValue(
            key="service.name", value=common_pb2.AnyValue(string_value="mastodon-prod/web"))]),
        scope_spans=[trace_pb2.ScopeSpans(scope=common_pb2.InstrumentationScope(name="rack"), spans=spans)])])
    r = requests.post(f"{f.http_url}/v1/traces", data=req.SerializeToString(),
                      headers={"Content-Type": "application/x-protobuf"}, timeout=10)
    assert r.status_code == 200, r.text


class SpanFiller:
    """Spans far above the traces budget's pace, so traces are paced (at the policy's
    50% floor) for as long as it runs."""

    def __init__(self, f):
        self.f, self.stop_flag = f, threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        rng = random.Random(5)
        while not self.stop_flag.is_set():
            try:
                post_spans(self.f, [otlp_span(rng.getrandbits(128).to_bytes(16, "big"),
                                              rng.getrandbits(64).to_bytes(8, "big"), "p" * 300) for _ in range(40)])
            except (AssertionError, requests.RequestException):
                pass
            self.stop_flag.wait(0.1)  # paces the load

    def stop(self):
        self.stop_flag.set()
        self.thread.join(10)


def logs_pacing(f):
    return f.usage()["signals"]["logs"]["pacing"]


def traces_at(f, p):
    t = f.usage()["signals"]["traces"]["pacing"]
    return t["state"] == "pacing" and t["keep_probability"]["normal"] == p


def line_id(e):
    m = re.search(r"\bb\d+-\d+\b", e.line)
    return m.group(0) if m else None


def test_budget_at_ten_percent_keeps_every_warning_and_samples_the_rest(standin, loki, frugal_factory):
    """A logs budget paced at about a tenth of what is offered: every warning or error
    (found in structured metadata, a stream label, logfmt, JSON or Ruby Logger lines)
    arrives; of the info/debug lines pushed while frugal reported one keep probability p
    (before and after the push), the number arriving is within 3 sigma of sum(n p), each
    with `sampling_threshold` the th of p; an entry carrying a trace_id arrives only if
    its trace's spans did, and then as the trace's randomness against p decides; frugal's
    `used` is exactly Loki's bill of what arrived."""
    offered = (INFO_PER_BATCH * (len(INFO_FORMS[0][1]) + 20) + 2 * 60) / BATCH_SECONDS  # bytes/s, about
    log_limit = int(offered * 3600 * 0.1 / 0.95)
    start = datetime.fromtimestamp(int(time.time()) - 1, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    f = loki_frugal(frugal_factory, standin, loki, budgets=f"""
period: {{every: 1h, start: "{start}"}}
pacing: {{recompute_every: 2s}}
budgets:
  traces: {{limit: 20MB, target: 95%}}
  logs: {{limit: {log_limit}, target: 95%}}
""", extra="""
traces:
  sampling: {min_probability: 50%}
logs:
  follow_traces: true
  priority: [{name: warnings, severity_at_least: WARN}]
""")
    rng = random.Random(77)
    filler = SpanFiller(f)
    try:
        wait_for(lambda: traces_at(f, 0.5), timeout=30, what="traces paced at the 50% floor")
        # The traces whose entries follow them, sent first, at the 50% floor: their spans are
        # kept exactly as consistent probability sampling at 50% decides.
        trace_ids = [rng.getrandbits(128).to_bytes(16, "big") for _ in range(240)]
        post_spans(f, [otlp_span(t, (i + 1).to_bytes(8, "big")) for i, t in enumerate(trace_ids)])
        assert traces_at(f, 0.5), "the traces probability moved while the spans were decided"
        kept_traces = {t for t in trace_ids if trace_id_randomness(t) >= threshold(0.5, PRECISION)}
        ours = set(trace_ids)

        def spans_upstream():
            return {s.trace_id for r in standin.of("traces") for rs in r.message.resource_spans
                    for ss in rs.scope_spans for s in ss.spans if s.trace_id in ours}

        wait_for(lambda: spans_upstream() >= kept_traces, timeout=10, what="the kept traces' spans upstream")
        assert spans_upstream() == kept_traces, "spans kept at 50% as the trace IDs decide"

        batches = []  # (p before, p after, state, info ids, warn ids, [(trace id, entry id)])
        pending = list(trace_ids)
        stable_sampled = 0
        deadline = time.time() + 75
        n = 0
        while time.time() < deadline and (stable_sampled < 30 or pending):
            n += 1
            streams: dict[tuple, list] = {}
            info, warn, traced = [], [], []
            ts = time.time_ns()

            def add(labels, line, meta, kind):
                nonlocal ts
                ts += 1
                eid = f"b{n}-{len(info) + len(warn) + len(traced)}"
                streams.setdefault(tuple(sorted(labels.items())), []).append((ts, line.format(id=eid), meta))
                kind.append(eid)
                return eid

            for i in range(INFO_PER_BATCH):
                add(*INFO_FORMS[i % len(INFO_FORMS)], info)
            for i in range(2):
                add(*WARN_FORMS[(2 * n + i) % len(WARN_FORMS)], warn)
            p0 = logs_pacing(f)
            if p0["state"] == "pacing" and pending:
                for t in pending[:20]:
                    eid = add({"app": "web", "source": "traced"}, "level=info msg=\"rendered\" id={id} " + PAD,
                              {"trace_id": t.hex()}, [])
                    traced.append((t, eid))
                pending = pending[20:]
            body = [(dict(k), v) for k, v in streams.items()]
            r = push_proto(f, body) if n % 2 else push_json(f, body, gzipped=n % 4 == 0)
            assert r.status_code == 204, r.text
            p1 = logs_pacing(f)
            batches.append((p0["keep_probability"], p1["keep_probability"], (p0["state"], p1["state"]),
                            info, warn, traced))
            if (p0["keep_probability"], p0["state"]) == (p1["keep_probability"], "pacing"):
                stable_sampled += 1
            time.sleep(max(0.0, BATCH_SECONDS - 0.05))  # paces the load
    finally:
        filler.stop()
    assert stable_sampled >= 30, f"only {stable_sampled} pushes while logs were paced at a steady probability"

    def arrived_now():
        return {line_id(e): e for e in loki.entries()}

    # Every warning and error, from every push (paced or not), arrives, unmarked (the last
    # push's warnings arriving also means every push before it was forwarded).
    warns = [w for b in batches for w in b[4]]
    try:
        wait_for(lambda: all(w in arrived_now() for w in batches[-1][4]), timeout=15,
                 what="the last push's warnings upstream")
    finally:
        loki.idle()
    arrived = arrived_now()
    assert not loki.rejected
    missing = [w for w in warns if w not in arrived]
    assert not missing, f"{len(missing)} of {len(warns)} warnings/errors were dropped: {missing[:5]}"
    assert all("sampling_threshold" not in arrived[w].meta for w in warns), "kept at p=1: no threshold"

    # Info/debug lines pushed at a steady reported probability: kept count within 3 sigma.
    stable = [b for b in batches if b[0] == b[1] and b[2] == ("pacing", "pacing")]
    expected = sum(len(b[3]) * b[0]["normal"] for b in stable)
    variance = sum(len(b[3]) * b[0]["normal"] * (1 - b[0]["normal"]) for b in stable)
    kept = sum(1 for b in stable for i in b[3] if i in arrived)
    mean_p = expected / sum(len(b[3]) for b in stable)
    print(f"info/debug: {kept} kept of {sum(len(b[3]) for b in stable)}, expected {expected:.1f} "
          f"(sigma {variance ** 0.5:.1f}, mean p {mean_p:.3f})")
    assert all(b[0]["priority"] == 1.0 for b in stable), "warnings are kept whole"
    assert mean_p < 0.5, f"the budget was meant to sample heavily; frugal kept {mean_p:.3f}"
    assert abs(kept - expected) <= 3 * variance ** 0.5, (kept, expected, variance ** 0.5)
    for b in stable:
        th = tvalue(threshold(b[0]["normal"], PRECISION))
        for i in b[3]:
            if i in arrived:
                assert arrived[i].meta.get("sampling_threshold") == th, (i, arrived[i].meta, b[0])

    # Trace-carrying entries: never one of a dropped trace; of a kept trace, as the trace's
    # randomness decides at the logs' probability (consistent sampling, one decision).
    traced = [(t, i, b) for b in batches for t, i in b[5]]
    assert len(traced) == len(trace_ids), "every trace's entry was pushed while pacing"
    assert 60 < len(kept_traces) < 180, f"{len(kept_traces)} of {len(trace_ids)} traces kept at 50%"
    orphans = [i for t, i, _ in traced if i in arrived and t not in kept_traces]
    assert not orphans, f"{len(orphans)} entries of dropped traces arrived"
    checked = 0
    for t, i, b in traced:
        if t not in kept_traces or not (b[0] == b[1] and b[2] == ("pacing", "pacing")):
            continue
        should = trace_id_randomness(t) >= threshold(b[0]["normal"], PRECISION)
        assert (i in arrived) == should, (t.hex(), b[0], i in arrived)
        if should:
            assert arrived[i].meta.get("trace_id") == t.hex()
        checked += 1
    assert checked > 30

    settled_usage(f, lambda: loki.bytes + otlp_log_bytes(standin), "logs bytes under a budget")


# --- bad input ------------------------------------------------------------------------------

def test_bad_loki_pushes_get_a_clear_400_and_harm_nothing(standin, loki, frugal_factory):
    """Malformed Snappy, protobuf and JSON: 400 with a message, nothing forwarded. A stream
    with 16 labels: 400 naming it, while the valid stream of the same push arrives. A line
    over 256 KB arrives truncated to 262144 bytes and is counted. A valid push afterwards
    gets 204 and arrives; frugal's `used` is Loki's bill of what arrived."""
    f = loki_frugal(frugal_factory, standin, loki)
    now = time.time_ns()
    bad = {
        "snappy: header says 100 bytes, 5 follow": (bytes([100, 4 << 2]) + b"hello", "application/x-protobuf"),
        "snappy: copy before any output": (bytes([10, 0x01, 0x05]) + b"\x00" * 8, "application/x-protobuf"),
        "protobuf: a field longer than the message": (snappy_encode(b"\x0a\x40\x0a\x05{a=\""), "application/x-protobuf"),
        "JSON: cut short": (b'{"streams": [{"stream": {"app": "web"}, "values": [["1", ', "application/json"),
        "JSON: not Loki's shape": (b'{"streams": "nope"}', "application/json"),
    }
    for what, (body, ctype) in bad.items():
        r = push_raw(f, body, ctype)
        assert r.status_code == 400, f"{what}: {r.status_code} {r.text}"
        assert r.text.strip(), f"{what}: a 400 says why"
    assert loki.pushes == [] and loki.rejected == [], "nothing of a malformed push was forwarded"

    too_many = {f"l{i:02d}": f"v{i}" for i in range(15)} | {"stream": "too-many-labels"}
    assert len(too_many) == 16
    for i, push in enumerate([push_json, push_proto]):
        r = push(f, [({"app": "web", "ok": f"yes{i}"}, [(now + i, f"valid line beside a bad stream {i}", None)]),
                     (too_many, [(now + i, f"line of a stream with 16 labels {i}", None)])])
        assert r.status_code == 400, r.text
        assert "too-many-labels" in r.text, f"the 400 names the stream: {r.text!r}"
        wait_for(lambda: f"valid line beside a bad stream {i}" in loki.lines(), timeout=10,
                 what="the valid stream of a push with a bad one")
    assert not any("16 labels" in line for line in loki.lines())

    long_line = "".join(random.Random(3).choice("abcdefghij ") for _ in range(300_000))
    before = f.metric("frugal_loki_truncated_lines_total") or 0
    r = push_proto(f, [({"app": "web", "what": "long"}, [(now + 10, long_line, {"request_id": "r-1"})])])
    assert r.status_code == 204, r.text
    r = push_json(f, [({"app": "web", "what": "long-json"}, [(now + 11, long_line, None)])], gzipped=True)
    assert r.status_code == 204, r.text
    longs = wait_for(lambda: (lambda ls: ls if len(ls) == 2 else None)(
        [e for e in loki.entries() if e.labels.get("what", "").startswith("long")]), timeout=10,
        what="the long lines upstream")
    for e in longs:
        assert len(e.line.encode()) == MAX_LINE and e.line == long_line[:MAX_LINE], len(e.line.encode())
    assert f.metric("frugal_loki_truncated_lines_total") >= before + 2

    r = push_json(f, [({"app": "web"}, [(now + 20, "all is well again", {"request_id": "42"})])])
    assert r.status_code == 204, r.text
    e = wait_for(lambda: next((e for e in loki.entries() if e.line == "all is well again"), None), timeout=10,
                 what="the valid push upstream")
    assert e.meta == {"request_id": "42"} and e.labels == {"app": "web"}
    assert not loki.rejected
    assert all(p.headers.get("content-type") == "application/x-protobuf" for p in loki.pushes)
    settled_usage(f, lambda: loki.bytes, "logs bytes after bad pushes")
    assert f.proc.poll() is None


def test_loki_push_without_a_loki_upstream_is_404(standin, loki, frugal_factory):
    """Without `upstream.loki` a push is answered 404 naming it, in either format, and
    nothing goes anywhere."""
    f = frugal_factory(policy_for(standin.url))
    entry = [({"app": "web"}, [(time.time_ns(), "no Loki upstream", None)])]
    for r in (push_json(f, entry), push_proto(f, entry)):
        assert r.status_code == 404, r.text
        assert "upstream.loki" in r.text
    assert loki.pushes == [] and standin.attempts == []
    assert f.used("logs") == 0


def test_a_runaway_stream_gets_its_share_and_the_others_keep_everything(standin, loki, frugal_factory):
    """`logs.stream_limit`: one stream sending 100x the others is cut to `max_rate` (a
    second's worth of burst on top), the others lose nothing, its warnings are never cut,
    and the drops are reported per stream."""
    rate = 20_000  # bytes a second per stream
    f = loki_frugal(frugal_factory, standin, loki, extra=f"""
logs:
  stream_limit: {{max_rate: {rate // 1000}kB/s, max_streams: 100}}
  priority: [{{name: warnings, severity_at_least: WARN}}]
""")
    heavy = {"app": "runaway", "pod": "crashloop-0"}
    quiet = [{"app": "web", "pod": f"web-{i}"} for i in range(3)]
    line = "level=info msg=" + "x" * 985  # 1,000 bytes billed
    sent_heavy = 0
    warn_lines = []
    start = time.time()
    i = 0
    # 10 pushes a second for 6 s: the heavy stream 100 kB/s (100 lines a push), each quiet
    # one 1 kB/s, under its share.
    while time.time() - start < 6.0:
        t_ns = time.time_ns()
        heavy_entries = [(t_ns + j, f"{line}{i:05d}{j:03d}"[:1000], None) for j in range(100)]
        warn = f"level=warn msg=heavy-warning-{i}"
        warn_lines.append(warn)
        heavy_entries.append((t_ns + 100, warn, None))
        streams = [(heavy, heavy_entries)] + [(q, [(t_ns, f"{line[:990]}{i:05d}", None)]) for q in quiet]
        r = push_proto(f, streams)
        assert r.status_code == 204, r.text
        sent_heavy += 100
        i += 1
        time.sleep(max(0.0, start + i * 0.1 - time.time()))
    elapsed = time.time() - start
    entries = loki.entries()
    got_heavy = [e for e in entries if e.labels.get("app") == "runaway" and "heavy-warning" not in e.line]
    got_warn = {e.line for e in entries if "heavy-warning" in e.line}
    # The share: the rate over the run plus a second's burst, within 20 %.
    share = (rate * elapsed + rate) / 1000
    assert abs(len(got_heavy) - share) <= 0.2 * share, (len(got_heavy), share, sent_heavy)
    assert got_warn == set(warn_lines), "a warning of the runaway stream was cut"
    for q in quiet:
        n = sum(1 for e in entries if e.labels == q)
        assert n == i, (q, n, i)
    dropped = f.usage()["signals"]["logs"]["streams_dropped"]
    assert dropped[0]["labels"] == '{app="runaway", pod="crashloop-0"}', dropped
    assert dropped[0]["entries"] == sent_heavy - len(got_heavy)
    assert len(dropped) == 1, "only the runaway stream lost entries"
    # Logged once for the stream, not per drop.
    assert sum(1 for l in f.log if "logs.stream_limit" in l) == 1
    assert f.metric("frugal_dropped_items_total", signal="logs", reason="stream_limit") == sent_heavy - len(got_heavy)
