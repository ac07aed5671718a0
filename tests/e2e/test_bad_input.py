"""Bad input gets a clear error and harms nothing else; credentials stay where they belong."""

from __future__ import annotations

import gzip
import json
import random
import re
import subprocess

import pytest
import requests
from google.rpc import status_pb2
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace.export import SpanExportResult

import payloads
from conftest import BIN, policy_for

PB = {"Content-Type": "application/x-protobuf"}


def good_request(rng) -> bytes:
    return encode_spans(payloads.spans(rng, 5)).SerializeToString()


def assert_still_works(f, standin, rng) -> bytes:
    """A good request still goes through; returns it as upstream sees it."""
    n = len(standin.of("traces"))
    body = good_request(rng)
    r = requests.post(f"{f.http_url}/v1/traces", data=body, headers=PB, timeout=10)
    assert r.status_code == 200, r.text
    assert len(standin.of("traces")) == n + 1
    return payloads.canonical(ExportTraceServiceRequest.FromString(body))


def test_malformed_and_unsupported_requests_get_clear_errors(standin, frugal_factory):
    f = frugal_factory(policy_for(standin.url, extra="ingest: {max_request_size: 1MiB}"))
    rng = random.Random(7)
    url = f"{f.http_url}/v1/traces"

    r = requests.post(url, data=b"\x0a\xff\xff\xff", headers=PB, timeout=10)
    assert r.status_code == 400
    assert r.headers["Content-Type"] == "application/x-protobuf"
    st = status_pb2.Status()
    st.ParseFromString(r.content)
    assert st.code == 3 and "malformed OTLP protobuf" in st.message
    good = [assert_still_works(f, standin, rng)]

    r = requests.post(url, data=b'{"resourceSpans": [', headers={"Content-Type": "application/json"}, timeout=10)
    assert r.status_code == 400 and r.headers["Content-Type"] == "application/json"
    assert "malformed OTLP JSON" in r.json()["message"]

    bad_id = json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [
        {"traceId": "0102", "spanId": "0102030405060708", "name": "x"}]}]}]})
    r = requests.post(url, data=bad_id, headers={"Content-Type": "application/json"}, timeout=10)
    assert r.status_code == 400 and "trace ID of 2 bytes" in r.json()["message"]

    r = requests.post(url, data=good_request(rng), headers={"Content-Type": "text/plain"}, timeout=10)
    assert r.status_code == 415 and "application/x-protobuf" in r.text

    r = requests.post(url, data=good_request(rng), headers={**PB, "Content-Encoding": "br"}, timeout=10)
    assert r.status_code == 415

    r = requests.post(url, data=b"\0" * (2 * 1024 * 1024), headers=PB, timeout=10)
    assert r.status_code == 413

    r = requests.get(url, timeout=10)
    assert r.status_code == 405 and r.headers["Allow"] == "POST"
    r = requests.post(f"{f.http_url}/v1/profiles", data=b"", headers=PB, timeout=10)
    assert r.status_code == 404

    good.append(assert_still_works(f, standin, rng))
    # Nothing bad reached upstream: the only requests it saw are the two good ones.
    assert [payloads.canonical(a.message) for a in standin.attempts_of("traces")] == good


def test_gzip_bomb_is_refused_without_exhausting_memory(standin, frugal_factory):
    f = frugal_factory(policy_for(standin.url, extra="ingest: {max_request_size: 4MiB}"))
    bomb = gzip.compress(b"\0" * (1024 * 1024 * 1024), compresslevel=9)  # 1 GiB in ~1 MB
    assert len(bomb) < 2 * 1024 * 1024
    r = requests.post(f"{f.http_url}/v1/traces", data=bomb,
                      headers={**PB, "Content-Encoding": "gzip"}, timeout=30)
    assert r.status_code == 413
    peak_kb = int(re.search(r"VmHWM:\s+(\d+) kB", open(f"/proc/{f.proc.pid}/status").read()).group(1))
    assert peak_kb < 256 * 1024, f"frugal's peak memory reached {peak_kb} kB"
    assert_still_works(f, standin, random.Random(8))


def test_ingest_credentials_and_no_open_relay(standin, frugal_factory):
    policy = policy_for(standin.url, extra="""
ingest:
  auth: {bearer_token: "${FRUGAL_TEST_TOKEN}"}
""", upstream_extra="basic_auth: {username: '123456', password: glc_upstream}")
    f = frugal_factory(policy, env={"FRUGAL_TEST_TOKEN": "letmein-0123456789abcdef"})
    rng = random.Random(9)
    anon = OTLPSpanExporter(endpoint=f"{f.http_url}/v1/traces")
    assert anon.export(payloads.spans(rng, 3)) == SpanExportResult.FAILURE
    r = requests.post(f"{f.http_url}/v1/traces", data=good_request(rng), headers=PB, timeout=10)
    assert r.status_code == 401
    assert standin.attempts == []
    ok = OTLPSpanExporter(endpoint=f"{f.http_url}/v1/traces", headers={"Authorization": "Bearer letmein-0123456789abcdef"})
    assert ok.export(payloads.spans(rng, 3)) == SpanExportResult.SUCCESS
    got = standin.of("traces")[-1]
    # Upstream sees frugal's own credentials, never the client's.
    assert got.headers["authorization"] == "Basic MTIzNDU2OmdsY191cHN0cmVhbQ=="
    assert "letmein-0123456789abcdef" not in " ".join(f.log)
    assert "glc_upstream" not in " ".join(f.log)


@pytest.mark.parametrize("upstream_auth, seen_upstream", [
    # A client's own Grafana credentials (Alloy's, when only the host was swapped) are
    # replaced by frugal's...
    ("basic_auth: {username: '42', password: frugal}", "Basic NDI6ZnJ1Z2Fs"),
    # ...unless the policy asks for them to pass through.
    ("pass_through_auth: true", "Basic Y2xpZW50OnNlY3JldA=="),
], ids=["frugal's own", "pass-through"])
def test_which_credentials_upstream_sees(standin, frugal_factory, upstream_auth, seen_upstream):
    f = frugal_factory(policy_for(standin.url, upstream_extra=upstream_auth))
    exporter = OTLPSpanExporter(endpoint=f"{f.http_url}/otlp/v1/traces",
                                headers={"Authorization": "Basic Y2xpZW50OnNlY3JldA=="})
    assert exporter.export(payloads.spans(random.Random(10), 3)) == SpanExportResult.SUCCESS
    assert standin.of("traces")[-1].headers["authorization"] == seen_upstream


def test_permanent_upstream_refusals_are_reported_not_retried(standin, frugal_factory):
    f = frugal_factory(policy_for(standin.url))
    standin.fail(400, times=1)
    r = requests.post(f"{f.http_url}/v1/traces", data=good_request(random.Random(12)), headers=PB, timeout=10)
    assert r.status_code == 400
    standin.idle()
    [attempt] = standin.attempts_of("traces")
    assert attempt.answered and attempt.status == 400, "refused once, not retried"
    assert f.used("traces") == 0, "a definite rejection is taken back (Tempo bills after its checks)"
    assert 'frugal_upstream_attempts_total{destination="otlp_traces",outcome="rejected"} 1' in f.metrics()
    rejected = f.usage()["signals"]["traces"]["rejected"]
    assert rejected["bad_request"]["items"] == 5


def test_upstream_refusing_frugal_itself_keeps_the_data_with_the_client(standin, frugal_factory):
    # A wrong or expired Grafana token is frugal's problem, not the client's data: the client
    # is told to retry (and keeps the data) while the operator fixes it.
    f = frugal_factory(policy_for(standin.url))
    standin.fail(401, times=1)
    body = good_request(random.Random(13))
    r = requests.post(f"{f.http_url}/v1/traces", data=body, headers=PB, timeout=10)
    assert r.status_code == 503 and int(r.headers["Retry-After"]) >= 1
    assert "credentials" in r.text
    assert f.used("traces") == 0, "a refusal before billing is taken back"
    assert f.usage()["signals"]["traces"]["rejected"]["unauthorized"]["items"] == 5
    assert any("upstream refused frugal's request" in line for line in f.log)
    # Fixed: the client's retry goes through.
    r = requests.post(f"{f.http_url}/v1/traces", data=body, headers=PB, timeout=10)
    assert r.status_code == 200


def test_log_refusals_that_loki_still_bills_stay_counted(standin, frugal_factory):
    from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
    f = frugal_factory(policy_for(standin.url))
    standin.fail(400, times=1)
    body = encode_logs(payloads.log_records(random.Random(14), 5)).SerializeToString()
    r = requests.post(f"{f.http_url}/v1/logs", data=body, headers=PB, timeout=10)
    assert r.status_code == 400
    standin.idle()
    [attempt] = standin.attempts_of("logs")
    assert attempt.answered and attempt.status == 400, "refused once, not retried"
    assert f.used("logs") == attempt.billed > 0, "Loki counts a log request's bytes before validating it"


def test_a_password_in_the_endpoint_is_refused_and_never_printed(standin, tmp_path):
    """A user:password in the upstream URL would be printed wherever the URL is: `frugal
    check` refuses it, saying to use basic_auth, and `serve` does not start; the password
    is in neither output. An empty ingest token is refused the same way."""
    host = standin.url.split("://", 1)[1]
    policy = tmp_path / "policy.yaml"
    policy.write_text(policy_for(f"http://123456:secret@{host}/otlp"))
    r = subprocess.run([str(BIN), "check", "--policy", str(policy)], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert "upstream.otlp.endpoint: must not contain a user name or password" in r.stdout
    assert "basic_auth" in r.stdout
    assert "secret" not in r.stdout + r.stderr

    args = [str(BIN), "serve", "--listen-http", "127.0.0.1:0", "--listen-grpc", "off",
            "--listen-admin", "127.0.0.1:0", "--data-dir", str(tmp_path / "data")]
    r = subprocess.run([*args, "--policy", str(policy)], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert "must not contain a user name or password" in r.stderr
    assert "secret" not in r.stdout + r.stderr
    # The same from the command line's --upstream-otlp.
    ok = tmp_path / "ok.yaml"
    ok.write_text(policy_for(standin.url))
    r = subprocess.run([*args, "--policy", str(ok), "--upstream-otlp", f"https://secret@{host}"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert "must not contain a user name or password" in r.stderr
    assert "secret" not in r.stdout + r.stderr

    empty = tmp_path / "empty.yaml"
    empty.write_text(policy_for(standin.url, extra='ingest: {auth: {bearer_token: ""}}'))
    r = subprocess.run([str(BIN), "check", "--policy", str(empty)], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert "ingest.auth.bearer_token: is empty" in r.stdout
