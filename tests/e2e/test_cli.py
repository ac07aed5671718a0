"""The command line against a running frugal: `frugal usage show` asks the frugal that
holds the data directory instead of failing on its locked store."""

from __future__ import annotations

import json
import random
import subprocess

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace.export import SpanExportResult

import payloads
from conftest import BIN, policy_for


def usage_show(f, *extra) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN), "usage", "show", "--policy", str(f.policy_path), "--data-dir", str(f.data_dir), *extra],
        capture_output=True, text=True, timeout=30,
    )


def test_usage_show_asks_the_running_frugal_then_reads_the_store(standin, frugal_factory):
    """While frugal runs its store is locked: `usage show` finds it through the data
    directory (it listens on a random port here) and prints what the API says; once it has
    stopped, the same command reads the store."""
    f = frugal_factory(policy_for(standin.url, budgets="budgets: {traces: {limit: 50GB}}"))
    exporter = OTLPSpanExporter(endpoint=f"{f.http_url}/v1/traces")
    assert exporter.export(payloads.spans(random.Random(3), 40)) == SpanExportResult.SUCCESS
    billed = sum(r.billed for r in standin.of("traces"))
    assert billed > 0

    r = usage_show(f, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["signals"]["traces"]["used"] == billed

    r = usage_show(f)
    assert r.returncode == 0, r.stderr
    assert f"frugal at http://{f.admin}" in r.stdout
    traces = next(line for line in r.stdout.splitlines() if line.startswith("traces"))
    assert "of 50GB" in traces

    assert f.terminate() == 0
    r = usage_show(f, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["signals"]["traces"]["used"] == billed, "read from the store"
    r = usage_show(f)
    assert str(f.data_dir) in r.stdout
