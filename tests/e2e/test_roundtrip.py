"""Data sent by the OpenTelemetry Python SDK's exporters arrives at upstream intact, and
frugal's metered usage equals what upstream counted, request by request."""

from __future__ import annotations

import base64
import json
import random

import requests
from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from grpc import Compression as GrpcCompression
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics.export import MetricExportResult
from opentelemetry.sdk.trace.export import SpanExportResult

import payloads
from conftest import policy_for


def check_request(f, standin, signal, export, sent_message):
    """Runs one export; the stand-in must have received exactly it, and frugal's usage
    must have grown by exactly what the stand-in counted."""
    before_used = f.used(signal)
    before_n = len(standin.of(signal))
    export()
    got = standin.of(signal)[before_n:]
    assert len(got) == 1, f"expected one upstream request, got {len(got)}"
    if signal == "traces":
        assert payloads.canonical(got[0].message) == payloads.canonical(sent_message)
    else:
        assert got[0].message == sent_message
    assert f.used(signal) - before_used == got[0].billed
    return got[0]


def test_http_protobuf_traces_from_the_sdk(standin, frugal_factory):
    f = frugal_factory(policy_for(standin.url))
    rng = random.Random(1)
    plain = OTLPSpanExporter(endpoint=f"{f.http_url}/v1/traces")
    zipped = OTLPSpanExporter(endpoint=f"{f.http_url}/otlp/v1/traces", compression=Compression.Gzip)
    total_spans = total_billed = 0
    for i in range(30):
        batch = payloads.spans(rng, rng.randint(1, 80))
        exporter = zipped if i % 2 else plain

        def export():
            assert exporter.export(batch) == SpanExportResult.SUCCESS

        rec = check_request(f, standin, "traces", export, encode_spans(batch))
        total_spans += rec.items
        total_billed += rec.billed
    t = f.usage()["signals"]["traces"]
    assert t["used"] == total_billed
    assert t["sent"]["items"] == total_spans
    assert t["acknowledged"]["items"] == total_spans
    assert t["offered"]["items"] == total_spans
    assert t["unit"] == "bytes"


def test_grpc_traces_logs_and_metrics_from_the_sdk(standin, frugal_factory):
    f = frugal_factory(policy_for(standin.url))
    rng = random.Random(2)
    spans = GrpcSpanExporter(endpoint=f.grpc, insecure=True, compression=GrpcCompression.Gzip)
    logs = GrpcLogExporter(endpoint=f.grpc, insecure=True)
    metrics = GrpcMetricExporter(endpoint=f.grpc, insecure=True)
    for _ in range(10):
        batch = payloads.spans(rng, rng.randint(1, 50))
        check_request(f, standin, "traces", lambda: spans.export(batch), encode_spans(batch))
        records = payloads.log_records(rng, rng.randint(1, 30))
        check_request(f, standin, "logs", lambda: logs.export(records), encode_logs(records))
        data = payloads.metrics(rng)
        check_request(f, standin, "metrics", lambda: metrics.export(data), encode_metrics(data))


def test_http_logs_with_non_string_bodies_are_metered_as_loki_counts(standin, frugal_factory):
    f = frugal_factory(policy_for(standin.url))
    rng = random.Random(3)
    exporter = OTLPLogExporter(endpoint=f"{f.http_url}/v1/logs", compression=Compression.Gzip)
    billed = 0
    for _ in range(30):
        records = payloads.log_records(rng, rng.randint(1, 40))
        rec = check_request(f, standin, "logs", lambda: exporter.export(records), encode_logs(records))
        billed += rec.billed
    assert f.used("logs") == billed


def test_http_metrics_count_data_points(standin, frugal_factory):
    f = frugal_factory(policy_for(standin.url))
    rng = random.Random(4)
    exporter = OTLPMetricExporter(endpoint=f"{f.http_url}/v1/metrics")
    points = 0
    for _ in range(10):
        data = payloads.metrics(rng)

        def export():
            assert exporter.export(data) == MetricExportResult.SUCCESS

        points += check_request(f, standin, "metrics", export, encode_metrics(data)).items
    m = f.usage()["signals"]["metrics"]
    assert m["used"] == points and m["unit"] == "data_points"


def hexify(obj, rng):
    """OTLP/JSON from protobuf's JSON: IDs as hex (randomly upper case), integers randomly as
    numbers or strings, and unknown fields sprinkled in."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if k in ("traceId", "spanId", "parentSpanId") and isinstance(v, str):
                h = base64.b64decode(v).hex()
                out[k] = h.upper() if rng.random() < 0.5 else h
            elif isinstance(v, str) and v.lstrip("-").isdigit() and k not in ("stringValue", "name", "key"):
                out[k] = int(v) if rng.random() < 0.5 else v
            else:
                out[k] = hexify(v, rng)
        if rng.random() < 0.2:
            out["someFutureField"] = {"x": [1, "y"]}
        return out
    if isinstance(obj, list):
        return [hexify(x, rng) for x in obj]
    return obj


def test_otlp_json_requests(standin, frugal_factory):
    f = frugal_factory(policy_for(standin.url))
    rng = random.Random(5)
    for i in range(20):
        if i % 2:
            msg = encode_spans(payloads.spans(rng, rng.randint(1, 30)))
            signal = "traces"
        else:
            msg = encode_logs(payloads.log_records(rng, rng.randint(1, 20)))
            signal = "logs"
        doc = hexify(json_format.MessageToDict(msg, use_integers_for_enums=True), rng)

        def export():
            r = requests.post(f"{f.http_url}/v1/{signal}", data=json.dumps(doc),
                              headers={"Content-Type": "application/json"}, timeout=10)
            assert r.status_code == 200, r.text
            assert r.headers["Content-Type"] == "application/json"
            assert r.json() == {}

        check_request(f, standin, signal, export, msg)


def test_protobuf_with_fields_unknown_to_frugal_is_billed_as_forwarded(standin, frugal_factory):
    """A newer SDK may send protobuf fields frugal's types do not know. frugal forwards the
    request re-encoded without them, so what it meters is what upstream receives and bills —
    never less."""
    f = frugal_factory(policy_for(standin.url))
    rng = random.Random(6)
    for signal in ("traces", "logs"):
        if signal == "traces":
            msg = encode_spans(payloads.spans(rng, 5))
        else:
            msg = encode_logs(payloads.log_records(rng, 5))
        # Field 4000, wire type 2 (length-delimited), 64 bytes: tag varint 0x82 0xfa 0x01.
        unknown = bytes([0x82, 0xFA, 0x01, 64]) + bytes(range(64))
        body = msg.SerializeToString() + unknown

        def export():
            r = requests.post(f"{f.http_url}/v1/{signal}", data=body,
                              headers={"Content-Type": "application/x-protobuf"}, timeout=10)
            assert r.status_code == 200, r.text

        rec = check_request(f, standin, signal, export, msg)
        # What arrived upstream is the request without the unknown field.
        assert rec.body_len == len(msg.SerializeToString()) < len(body)
