"""Requests built to cost frugal far more than they cost the sender: refused before they are
decoded, billed nothing, and never enough to slow down /readyz or the requests beside them.

The amplification request is the issue's: gzip of `0a 00` repeated 8.3 million times, 16 KB
that unpack to 16.6 MB of empty `ResourceSpans` (1.5 GB decoded by a naive receiver); its
JSON twin is 5.5 million `{}`. Peak memory is frugal's VmHWM, bounded by PEAK_RSS_MB
(BENCHMARKS.md has the measured figures)."""

from __future__ import annotations

import gzip
import random
import re
import socket
import threading
import time

import grpc
import requests
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace.export import SpanExportResult

import payloads
from conftest import policy_for, wait_for

PB = {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"}
JSON = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
BUDGET = "budgets: {traces: {limit: 200MB}}"

# frugal's peak resident set while it refuses these requests (about 55 MB idle; each
# bomb holds its 16.6 MB decompressed body until it is counted and refused).
PEAK_RSS_MB = 250

RAW_BOMB = b"\x0a\x00" * 8_300_000
PB_BOMB = gzip.compress(RAW_BOMB, 9)
JSON_BOMB = gzip.compress(b'{"resourceSpans":[' + b"{}," * 5_499_999 + b"{}]}", 9)


def peak_rss_mb(f) -> float:
    status = open(f"/proc/{f.proc.pid}/status").read()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024


def rss_mb(f) -> float:
    status = open(f"/proc/{f.proc.pid}/status").read()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024


def grpc_export(f, body: bytes, metadata=(), timeout=20):
    """The bytes `body` as a trace Export call, gzipped by the client: (error or None, seconds)."""
    with grpc.insecure_channel(f.grpc) as channel:
        call = channel.unary_unary(EXPORT, request_serializer=lambda b: b,
                                   response_deserializer=lambda b: b)
        t = time.monotonic()
        try:
            call(body, metadata=metadata, compression=grpc.Compression.Gzip, timeout=timeout)
            return None, time.monotonic() - t
        except grpc.RpcError as e:
            return e, time.monotonic() - t


def send_valid(f, rng) -> None:
    exporter = OTLPSpanExporter(endpoint=f"{f.http_url}/v1/traces")
    assert exporter.export(payloads.spans(rng, 5)) == SpanExportResult.SUCCESS


def test_the_amplification_request_is_refused_over_http_json_and_grpc(standin, frugal_factory):
    assert len(PB_BOMB) < 20_000 and len(JSON_BOMB) < 20_000
    f = frugal_factory(policy_for(standin.url, budgets=BUDGET))

    r = requests.post(f"{f.http_url}/v1/traces", data=PB_BOMB, headers=PB, timeout=20)
    assert r.status_code == 413, r.text
    assert "8300000 resources" in r.text and "ingest.max_per_request.resources" in r.text

    r = requests.post(f"{f.http_url}/v1/traces", data=JSON_BOMB, headers=JSON, timeout=20)
    assert r.status_code == 413, r.text
    assert "5500000 resources" in r.json()["message"]

    err, _ = grpc_export(f, RAW_BOMB)
    assert err is not None and err.code() == grpc.StatusCode.INVALID_ARGUMENT, err
    assert "8300000 resources" in err.details()

    # Nothing went upstream, nothing was billed, and memory stayed small.
    assert standin.attempts == []
    assert f.used("traces") == 0
    assert peak_rss_mb(f) < PEAK_RSS_MB, f"peak RSS {peak_rss_mb(f):.0f} MB"
    send_valid(f, random.Random(1))
    assert len(standin.of("traces")) == 1


def test_eight_at_once_leave_readyz_and_a_valid_request_answering(standin, frugal_factory):
    f = frugal_factory(policy_for(standin.url, budgets=BUDGET))
    codes: list[int] = []

    def bomb(i: int):
        body, headers = (PB_BOMB, PB) if i % 2 == 0 else (JSON_BOMB, JSON)
        r = requests.post(f"{f.http_url}/v1/traces", data=body, headers=headers, timeout=30)
        codes.append(r.status_code)

    threads = [threading.Thread(target=bomb, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    ready_times = []
    sent_valid = False
    while any(t.is_alive() for t in threads) or not sent_valid:
        t0 = time.monotonic()
        assert f.readyz() == 200
        ready_times.append(time.monotonic() - t0)
        if not sent_valid:
            send_valid(f, random.Random(2))
            sent_valid = True
    for t in threads:
        t.join()
    assert sorted(codes) == [413] * 8, codes
    assert max(ready_times) < 1.0, ready_times
    # The valid request went through; the bombs billed nothing beyond it.
    got = standin.of("traces")
    assert len(got) == 1
    assert f.used("traces") == got[0].billed
    assert peak_rss_mb(f) < PEAK_RSS_MB, f"peak RSS {peak_rss_mb(f):.0f} MB"


def test_grpc_without_the_credential_is_refused_before_its_body_is_read(standin, frugal_factory):
    f = frugal_factory(policy_for(standin.url, extra='ingest: {auth: {bearer_token: "${TOKEN}"}}'),
                       env={"TOKEN": "letmein-0123456789"})
    before = rss_mb(f)
    err, took = grpc_export(f, RAW_BOMB)
    assert err is not None and err.code() == grpc.StatusCode.UNAUTHENTICATED, err
    assert took < 0.5, f"answered in {took:.2f} s"
    # The body was never decompressed or decoded (16.6 MB, 1.5 GB): no growth.
    assert rss_mb(f) - before < 8, f"{before:.0f} -> {rss_mb(f):.0f} MB"
    err, _ = grpc_export(f, RAW_BOMB, metadata=(("authorization", "Bearer letmein-0123456789"),))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "8300000 resources" in err.details()
    assert standin.attempts == []


def test_past_the_in_flight_budget_new_requests_are_told_to_retry(standin, frugal_factory):
    f = frugal_factory(policy_for(standin.url, extra="ingest: {max_in_flight: 32MiB}"))
    # Two bodies of just under 16 MiB each, sent but never finished, hold all 32 MiB.
    n = 16 * 1024 * 1024 - 200
    host, port = f.http.rsplit(":", 1)
    held = []
    for _ in range(2):
        s = socket.create_connection((host, int(port)))
        s.sendall(f"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                  f"Content-Length: {n + 1}\r\n\r\n".encode() + b"\x00" * n)
        held.append(s)
    wait_for(lambda: f.metric("frugal_ingest_in_flight_bytes") == 32 * 1024 * 1024,
             what="both bodies held")
    body = encode_spans(payloads.spans(random.Random(3), 5)).SerializeToString()
    r = requests.post(f"{f.http_url}/v1/traces", data=body,
                      headers={"Content-Type": "application/x-protobuf"}, timeout=10)
    assert r.status_code == 503 and int(r.headers["Retry-After"]) >= 1, r.text
    assert "ingest.max_in_flight" in r.text
    err, _ = grpc_export(f, body)
    assert err is not None and err.code() == grpc.StatusCode.UNAVAILABLE, err
    assert f.metric("frugal_requests_shed_total", signal="traces", transport="http") == 1
    assert f.metric("frugal_requests_shed_total", signal="traces", transport="grpc") == 1
    for s in held:
        s.close()
    wait_for(lambda: f.metric("frugal_ingest_in_flight_bytes") == 0, what="the budget given back")
    send_valid(f, random.Random(4))
