"""Policy features as a user meets them: shadow mode, and the shipped Mastodon policy's
rules (health checks dropped, errors and slow requests kept, Sidekiq sampled first)."""

from __future__ import annotations

import random
import time


from opentelemetry import trace as trace_api
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.trace import Status, StatusCode

import payloads
from conftest import ROOT, policy_for, wait_for

T0 = 1_764_000_000_000_000_000


def spans_of(service: str, make) -> list:
    exporter = InMemorySpanExporter()
    tp = TracerProvider(resource=Resource.create({"service.name": service}))
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    make(tp.get_tracer("rack"))
    return exporter.get_finished_spans()


def test_shadow_mode_forwards_everything_and_reports_what_would_be_dropped(standin, frugal_factory):
    """Shadow mode forwards every span, so upstream bills past the budget, and reports what
    it would have dropped."""
    start = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 1))
    f = frugal_factory(policy_for(standin.url, budgets=f"""
shadow: true
period: {{every: 10m, start: "{start}"}}
pacing: {{recompute_every: 1s}}
budgets:
  traces: {{limit: 20kB, target: 95%}}
"""))
    exporter = OTLPSpanExporter(endpoint=f"{f.http_url}/v1/traces")
    rng = random.Random(3)
    sent = 0
    for _ in range(40):
        time.sleep(0.1)  # paces the load over a few recomputes
        batch = payloads.spans(rng, 20, error_rate=0)
        assert exporter.export(batch) == SpanExportResult.SUCCESS
        sent += len(batch)
    arrived = sum(r.items for r in standin.of("traces"))
    assert arrived == sent, "shadow mode forwards everything"
    t = f.usage()
    assert t["shadow"] is True
    traces = t["signals"]["traces"]
    billed = sum(a.billed for a in standin.attempts_of("traces"))
    assert traces["used"] == billed, "frugal counts what upstream bills"
    assert billed > traces["limit"], "and so can go over the budget, as asked"
    would = traces["would_drop"]
    assert would["at_limit"]["items"] > 0 or would.get("sampled", {}).get("items", 0) > 0
    assert "dropped" not in traces or traces["dropped"] == {}


def test_the_mastodon_policy(standin, frugal_factory):
    text = (ROOT / "policies" / "mastodon.yaml").read_text()
    text = text.replace("${GRAFANA_CLOUD_OTLP_ENDPOINT}", standin.url)
    text = text.replace('basic_auth: {username: "${GRAFANA_CLOUD_INSTANCE_ID}", password: "${GRAFANA_CLOUD_API_TOKEN}"}',
                        "compression: gzip")
    f = frugal_factory(text)

    def web(tracer):
        for path, status, dur in [("/health", None, 1), ("/api/v1/timelines/home", None, 10),
                                  ("/api/v1/statuses", StatusCode.ERROR, 10), ("/api/v2/search", None, 2500)]:
            s = tracer.start_span(f"GET {path}", kind=trace_api.SpanKind.SERVER,
                                  attributes={"url.path": path, "http.route": path}, start_time=T0)
            if status:
                s.set_status(Status(status))
            s.end(end_time=T0 + dur * 1_000_000)

    def sidekiq(tracer):
        s = tracer.start_span("ActivityPub::DeliveryWorker process", kind=trace_api.SpanKind.CONSUMER,
                              start_time=T0)
        s.end(end_time=T0 + 5_000_000)

    batch = spans_of("mastodon-prod/web", web) + spans_of("mastodon-prod/sidekiq", sidekiq)
    assert OTLPSpanExporter(endpoint=f"{f.http_url}/otlp/v1/traces").export(batch) == SpanExportResult.SUCCESS

    def names():
        return {s.name for r in standin.of("traces") for rs in r.message.resource_spans
                for ss in rs.scope_spans for s in ss.spans}

    # The policy tail-samples: each trace is decided a second after its root span.
    wanted = {"GET /api/v1/timelines/home", "GET /api/v1/statuses", "GET /api/v2/search",
              "ActivityPub::DeliveryWorker process"}
    wait_for(lambda: wanted <= names(), what="the four traces upstream")
    assert "GET /health" not in names(), "health checks are never worth a byte"
    kept = [s for r in standin.of("traces") for rs in r.message.resource_spans
            for ss in rs.scope_spans for s in ss.spans]
    marks = {s.name: a.value.string_value for s in kept for a in s.attributes
             if a.key == "frugal.tail.policy"}
    assert marks == {"GET /api/v1/statuses": "errors", "GET /api/v2/search": "slow-requests"}
    u = f.usage()["signals"]["traces"]
    assert u["dropped"]["drop_rule"]["items"] == 1
    by_class = u["offered"]["by_class"]
    assert by_class["priority"]["items"] == 2  # the error and the 2.5 s request
    assert by_class["bulk"]["items"] == 1  # Sidekiq's federation job
    assert by_class["normal"]["items"] == 1

