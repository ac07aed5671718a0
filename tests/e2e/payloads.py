"""Randomised telemetry made with the OpenTelemetry Python SDK: spans with varied
attributes, events, links, kinds and statuses from several resources; log records with
string and non-string bodies; metrics of every kind."""

from __future__ import annotations

import random
import string

from opentelemetry import trace as trace_api
from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags


def word(rng: random.Random, lo=3, hi=12) -> str:
    alphabet = string.ascii_letters + string.digits + "._-/ "
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(lo, hi)))


def unicode_word(rng: random.Random) -> str:
    return rng.choice(["héllo", "日本語のログ", "emoji 🚀", "<tag>&amp;", "tab\there", "line\nbreak", "quote\"d"])


def value(rng: random.Random):
    kind = rng.randrange(7)
    if kind == 0:
        return word(rng, 0, 40)
    if kind == 1:
        return rng.randint(-(2**62), 2**62)
    if kind == 2:
        return rng.choice([0.0, 1.5, -3.25, 1e-7, 123456.789, 1e21, rng.uniform(-1e6, 1e6)])
    if kind == 3:
        return rng.random() < 0.5
    if kind == 4:
        return [word(rng) for _ in range(rng.randint(0, 4))]
    if kind == 5:
        return [rng.randint(0, 1000) for _ in range(rng.randint(1, 4))]
    return unicode_word(rng)


def attributes(rng: random.Random, lo=0, hi=8) -> dict:
    return {f"attr.{word(rng, 2, 8)}": value(rng) for _ in range(rng.randint(lo, hi))}


def resources(rng: random.Random, n=3) -> list[Resource]:
    out = []
    for i in range(n):
        attrs = {"service.name": f"mastodon-prod/{rng.choice(['web', 'sidekiq', 'streaming'])}-{i}",
                 "service.version": "4.3.2", "host.name": f"node-{rng.randint(1, 9)}",
                 "k8s.pod.name": word(rng, 8, 20)}
        attrs.update(attributes(rng, 0, 3))
        out.append(Resource.create(attrs))
    return out


def spans(rng: random.Random, n: int, error_rate=0.1, slow_rate=0.1):
    """`n` finished SDK spans from a few resources, in traces of varied sizes."""
    finished = []
    for res in resources(rng, rng.randint(1, 3)):
        exporter = InMemorySpanExporter()
        provider = TracerProvider(resource=res)
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        tracer = provider.get_tracer(word(rng, 4, 10), "1." + str(rng.randint(0, 9)))
        per = max(1, n // 2)
        made = 0
        while made < per:
            start = 1_700_000_000_000_000_000 + rng.randint(0, 10**12)
            duration = 2_500_000_000 if rng.random() < slow_rate else rng.randint(10_000, 900_000_000)
            links = [Link(SpanContext(rng.getrandbits(128) or 1, rng.getrandbits(64) or 1, False,
                                      TraceFlags(1)), attributes(rng, 0, 2))
                     for _ in range(rng.randint(0, 2))]
            root = tracer.start_span(word(rng), kind=rng.choice(list(SpanKind)), attributes=attributes(rng),
                                     links=links, start_time=start)
            children = rng.randint(0, 6)
            ctx = trace_api.set_span_in_context(root)
            for _ in range(children):
                child = tracer.start_span(word(rng), context=ctx, kind=rng.choice(list(SpanKind)),
                                          attributes=attributes(rng, 0, 4), start_time=start + 1000)
                for _ in range(rng.randint(0, 2)):
                    child.add_event(word(rng), attributes(rng, 0, 3), timestamp=start + 2000)
                if rng.random() < error_rate:
                    child.set_status(Status(StatusCode.ERROR, word(rng)))
                child.end(end_time=start + 1000 + rng.randint(1, 10**6))
            if rng.random() < error_rate:
                root.set_status(Status(StatusCode.ERROR, word(rng)))
            elif rng.random() < 0.3:
                root.set_status(Status(StatusCode.OK))
            root.end(end_time=start + duration)
            made += 1 + children
        finished.extend(exporter.get_finished_spans())
        provider.shutdown()
    rng.shuffle(finished)
    return finished[: max(n, 1)]


def body(rng: random.Random):
    kind = rng.randrange(8)
    if kind == 0:
        return rng.randint(-1000, 10**12)
    if kind == 1:
        return rng.choice([3.0, 1.5, 1e-7, 1e21, -0.25])
    if kind == 2:
        return rng.random() < 0.5
    if kind == 3:
        return {"msg": word(rng), "n": rng.randint(0, 99), "nested": {"z": [1, "two", 3.5], "a": unicode_word(rng)}}
    if kind == 4:
        return [word(rng), rng.randint(0, 9), {"k": "v"}]
    if kind == 5:
        return unicode_word(rng)
    if kind == 6:
        return None
    return "method=GET path=/api/v1/timelines/home status=200 duration=" + str(rng.randint(1, 900))


def log_records(rng: random.Random, n: int, trace_ids: list[int] | None = None):
    out = []
    scopes = [InstrumentationScope(word(rng, 4, 10), "0." + str(i)) for i in range(2)]
    for res in resources(rng, rng.randint(1, 3)):
        for _ in range(max(1, n // 2)):
            sev = rng.choice(list(SeverityNumber))
            tid = rng.choice(trace_ids) if trace_ids and rng.random() < 0.9 else (
                rng.getrandbits(128) if rng.random() < 0.5 else 0)
            rec = LogRecord(
                timestamp=1_700_000_000_000_000_000 + rng.randint(0, 10**12) if rng.random() < 0.8 else None,
                observed_timestamp=1_700_000_000_000_000_000 + rng.randint(0, 10**12),
                trace_id=tid,
                span_id=rng.getrandbits(64) if tid else 0,
                trace_flags=TraceFlags(1),
                severity_text=sev.name if sev != SeverityNumber.UNSPECIFIED else None,
                severity_number=sev,
                body=body(rng),
                attributes=attributes(rng, 0, 6),
            )
            out.append(ReadableLogRecord(log_record=rec, resource=res,
                                         instrumentation_scope=rng.choice(scopes)))
    rng.shuffle(out)
    return out[: max(n, 1)]


def metrics(rng: random.Random):
    """A MetricsData with counters, up-down counters, histograms and gauges."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(resource=resources(rng, 1)[0], metric_readers=[reader])
    meter = provider.get_meter(word(rng, 4, 8))
    c = meter.create_counter("requests", unit="1")
    h = meter.create_histogram("request.duration", unit="s")
    u = meter.create_up_down_counter("queue.depth")
    g = meter.create_gauge("temperature", unit="Cel")
    for _ in range(rng.randint(1, 20)):
        a = {"route": rng.choice(["/a", "/b", "/c"]), "code": rng.choice([200, 500])}
        c.add(rng.randint(1, 5), a)
        h.record(rng.uniform(0, 3), a)
        u.add(rng.randint(-3, 3), a)
        g.set(rng.uniform(-10, 40), a)
    data = reader.get_metrics_data()
    provider.shutdown()
    return data


def canonical(msg) -> bytes:
    """A request as the backend sees it (for traces, absent messages present), for
    comparing what was sent with what arrived."""
    from standin import canonical_traces

    if hasattr(msg, "resource_spans"):
        msg = canonical_traces(msg)[0]
    return msg.SerializeToString(deterministic=True)
