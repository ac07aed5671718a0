"""Upstream failing, end to end: what the client is answered, how long it waits, and what
frugal bills for every attempt the stand-in saw (or did not see).

The billing rules, as the README states them ("What frugal counts, and how"): every attempt
that may have reached upstream counts — an answer, a 5xx, a timeout after the body was
sent; only one certainly refused is taken back — a request that never left (a refused
connection), or a 4xx before the backend bills: for traces any 4xx (Tempo counts after its
checks), for logs not 400 or 429 (Loki counts a request's bytes while parsing it). The
stand-in records every request that reached it and its answer; frugal's usage must be what
it was plus exactly the attempts these rules bill."""

from __future__ import annotations

import random
import time

import grpc
import pytest
import requests
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

import payloads
from conftest import policy_for, wait_for
from standin import loki_bytes, tempo_size

MAX_ELAPSED = 2.0  # seconds: the policy's retry max_elapsed
ATTEMPT_TIMEOUT = 0.7  # seconds: the policy's timeout of one attempt
MARGIN = 1.5  # seconds the client may wait beyond max_elapsed (a loaded 2-core machine)
BASELINE = 1_000_000  # usage before the failing request


def billed_by_the_rules(signal: str, attempt) -> bool:
    """Whether an attempt that reached the stand-in counts as usage (see the module doc)."""
    if not attempt.answered:
        return True  # no answer within the attempt's timeout, the body sent: it may have arrived
    if attempt.status >= 500 or 200 <= attempt.status < 300:
        return True
    return signal == "logs" and attempt.status in (400, 429)


def export_http(f, signal, body):
    t = time.monotonic()
    r = requests.post(f"{f.http_url}/v1/{signal}", data=body,
                      headers={"Content-Type": "application/x-protobuf"}, timeout=20)
    return r, time.monotonic() - t


def export_grpc(f, signal, msg):
    stub = {"traces": trace_service_pb2_grpc.TraceServiceStub,
            "logs": logs_service_pb2_grpc.LogsServiceStub}[signal]
    with grpc.insecure_channel(f.grpc) as channel:
        t = time.monotonic()
        try:
            stub(channel).Export(msg, timeout=20)
            return None, time.monotonic() - t
        except grpc.RpcError as e:
            return e, time.monotonic() - t


def retry_info(err: grpc.RpcError):
    """The google.rpc.RetryInfo detail of a gRPC error status, if any."""
    raw = dict(err.trailing_metadata() or ()).get("grpc-status-details-bin")
    if raw is None:
        return None
    st = status_pb2.Status.FromString(raw)
    assert st.code == err.code().value[0]
    for d in st.details:
        if d.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            d.Unpack(info)
            return info
    return None


CASES = [
    # signal, what upstream does, transport
    ("traces", 503, "http"), ("traces", 503, "grpc"),
    ("traces", 500, "http"), ("traces", 500, "grpc"),
    ("traces", 429, "http"), ("traces", 429, "grpc"),
    ("traces", "refused", "http"), ("traces", "refused", "grpc"),
    ("traces", "no answer", "http"), ("traces", "no answer", "grpc"),
    ("logs", 429, "http"), ("logs", 429, "grpc"),
    ("logs", 503, "http"),
    ("logs", "refused", "http"),
    ("logs", "no answer", "http"),
]


@pytest.mark.parametrize("signal, failure, transport", CASES,
                         ids=[f"{s}-{str(f).replace(' ', '_')}-{t}" for s, f, t in CASES])
def test_an_unavailable_upstream_is_answered_503_in_time_and_billed_by_the_rules(
        standin, frugal_factory, signal, failure, transport):
    """Whatever makes upstream unavailable (5xx, 429, a refused connection, no answer), the
    client hears 503 with Retry-After (gRPC: UNAVAILABLE with RetryInfo), never 429, within
    the retry policy's max_elapsed; and usage grows by exactly the attempts that may have
    been billed: 5xx and unanswered attempts count, refused connections and (for traces)
    429s are given back, 429s to logs count."""
    f = frugal_factory(policy_for(standin.url, timeout=f"{int(ATTEMPT_TIMEOUT * 1000)}ms",
                                  max_elapsed=f"{MAX_ELAPSED}s"))
    assert f.set_usage(signal, BASELINE).status_code == 200
    rng = random.Random(f"{signal}{failure}{transport}")
    if signal == "traces":
        msg = encode_spans(payloads.spans(rng, 20))
        size = tempo_size(msg)
    else:
        msg = encode_logs(payloads.log_records(rng, 20))
        size = loki_bytes(msg)
    if failure == "refused":
        standin.stop()
    elif failure == "no answer":
        standin.hang = True
    else:
        standin.fail(failure)

    if transport == "http":
        r, elapsed = export_http(f, signal, msg.SerializeToString())
        assert r.status_code == 503, (r.status_code, r.text)
        assert int(r.headers["Retry-After"]) >= 1
    else:
        err, elapsed = export_grpc(f, signal, msg)
        assert err is not None and err.code() == grpc.StatusCode.UNAVAILABLE, err
        info = retry_info(err)
        assert info is not None, "UNAVAILABLE carries a google.rpc.RetryInfo"
        assert info.retry_delay.seconds >= 1
    assert elapsed <= MAX_ELAPSED + MARGIN, f"the client waited {elapsed:.2f}s"

    # Every attempt frugal made is one the stand-in saw (none when it was down).
    made = lambda: sum(f.metric("frugal_upstream_attempts_total", destination=f"otlp_{signal}", outcome=o) or 0
                       for o in ("server_error", "rate_limited", "timeout", "connect_error",
                                 "broken_connection", "rejected", "success"))
    attempts = standin.attempts_of(signal)
    if failure == "refused":
        assert attempts == []
        assert made() >= 2, "frugal retried the refused connection"
    else:
        wait_for(lambda: len(standin.attempts_of(signal)) == made(), timeout=5,
                 what="the stand-in to have seen every attempt frugal made")
        standin.idle()
        attempts = standin.attempts_of(signal)
        assert len(attempts) >= 2, f"frugal retried: {attempts}"
        assert all(a.billed == size for a in attempts), "each attempt is the request as sent"
        if failure == "no answer":
            assert not any(a.answered for a in attempts)
        else:
            assert all(a.answered and a.status == failure for a in attempts)
    billed = sum(a.billed for a in attempts if billed_by_the_rules(signal, a))
    assert f.used(signal) == BASELINE + billed, attempts
    if failure == "refused" or (signal == "traces" and failure == 429):
        assert billed == 0, "nothing that certainly did not arrive is billed"
    else:
        assert billed == len(attempts) * size > 0
