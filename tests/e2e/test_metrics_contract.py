"""frugal's /metrics as Prometheus's own tooling reads it: `promtool check metrics` (Debian's
`prometheus` package; tests/run.sh installs it) finds nothing wrong with a scrape taken
after real traffic, drops and refusals — with tail sampling on too, whose families
(`frugal_tail_*`) are exported then and only then."""

from __future__ import annotations

import random
import shutil
import subprocess

import pytest
import requests
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace.export import SpanExportResult

import payloads
from conftest import policy_for, wait_for

TAIL = """
traces:
  tail: {decision_wait: 1s}
"""


@pytest.mark.parametrize("tail", [False, True], ids=["head", "tail"])
def test_promtool_finds_nothing_wrong_with_a_scrape(standin, frugal_factory, tail):
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: apt-get install prometheus (tests/run.sh does)"
    f = frugal_factory(policy_for(standin.url, budgets="budgets: {traces: {limit: 1GB}, logs: {limit: 1GB}}",
                                  extra=TAIL if tail else ""))
    exporter = OTLPSpanExporter(endpoint=f"{f.http_url}/v1/traces")
    assert exporter.export(payloads.spans(random.Random(5), 20)) == SpanExportResult.SUCCESS
    # A refusal and a bad request, so those series have values too.
    r = requests.post(f"{f.http_url}/v1/traces", data=b"\xff\xff", timeout=5,
                      headers={"Content-Type": "application/x-protobuf"})
    assert r.status_code == 400
    if tail:
        # Acknowledged once spooled; decided 1 s later: wait for the decision's series.
        wait_for(lambda: "frugal_tail_decisions_total{" in f.metrics(), timeout=20, what="a tail decision")
    text = f.metrics()
    assert "frugal_period_elapsed_ratio" in text
    assert ("# TYPE frugal_tail_decision_seconds histogram" in text) == tail, "frugal_tail_* only with traces.tail"
    assert 'frugal_budget_exhaustion_timestamp_seconds{signal="traces"}' in text
    checked = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                             text=True, timeout=30)
    assert checked.returncode == 0 and checked.stdout.strip() == "" and checked.stderr.strip() == "", \
        f"promtool: rc {checked.returncode}\n{checked.stdout}\n{checked.stderr}"
