"""The status page on the admin port, as a person's browser meets it: Debian's headless
Chromium, driven by playwright-core (tests/e2e/browser), opens it while real OTLP traffic
has been metered, and finds no console error, no request to another origin, charts whose
points are exactly the history it was served, and a change of usage on the chart within
5 s. `frugal status` renders the same running frugal's usage as text."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

import payloads
from conftest import BIN, ROOT, policy_for, wait_for

BROWSER_DIR = Path(__file__).parent / "browser"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
SCREENSHOT = ROOT / "target" / "status-page.png"


def need(ok, why: str):
    """In CI a missing browser or node is a failure; elsewhere the test is skipped, saying why."""
    if ok:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(why)
    pytest.skip(why)


def test_the_status_page_draws_the_history_and_follows_it_live(standin, frugal_factory):
    need(Path(CHROMIUM).exists(), f"no Chromium at {CHROMIUM} (Debian package chromium; tests/run.sh installs it)")
    need(shutil.which("node"), "no node (Node 20)")
    need((BROWSER_DIR / "node_modules" / "playwright-core").is_dir(),
         f"playwright-core is not installed: npm ci in {BROWSER_DIR} (tests/run.sh does)")
    # A 3-minute period that began seconds ago, so a step is a second and the traffic
    # below draws a curve; the test ends long before the period does.
    start = (datetime.now(timezone.utc) - timedelta(seconds=4)).replace(microsecond=0)
    period = f'period: {{every: 3m, start: "{start.isoformat().replace("+00:00", "Z")}"}}'
    f = frugal_factory(policy_for(standin.url, extra=period,
                                  budgets="budgets: {traces: {limit: 400kB}, logs: {limit: 300kB}}"))
    rng = random.Random(9)
    spans = OTLPSpanExporter(endpoint=f"{f.http_url}/v1/traces")
    logs = OTLPLogExporter(endpoint=f"{f.http_url}/v1/logs")
    for i in range(12):
        spans.export(payloads.spans(rng, 20 + 10 * i, error_rate=0, slow_rate=0))
        logs.export(payloads.log_records(rng, 10 + 5 * i))
        time.sleep(0.5)
    used = wait_for(lambda: f.used("traces"), what="traces metered")

    # The history's last point is the usage the API reports; its steps only grow here.
    h = requests.get(f"{f.admin_url}/api/v1/usage/history", timeout=5).json()
    assert h["period"]["step_seconds"] == 1
    pts = h["signals"]["traces"]["points"]
    assert pts[0] == {"t": h["period"]["start_seconds"], "used": 0}
    assert pts[-1]["used"] >= used > 0
    assert all(a["used"] <= b["used"] for a, b in zip(pts, pts[1:])), pts

    new_logs = f.used("logs") + 123_456
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["node", str(BROWSER_DIR / "status_page.mjs"), f.admin_url, str(SCREENSHOT),
                        "logs", str(new_logs)],
                       capture_output=True, text=True, timeout=120,
                       env={**os.environ, "CHROMIUM": CHROMIUM})
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert report["console_errors"] == []
    assert report["foreign"] == []
    assert report["mismatch"] is None, report["mismatch"]
    assert set(report["compared"]) == {"traces", "logs", "metrics"}
    assert report["compared"]["traces"] >= 10, "a point a second since the period began"
    assert report["live_ms"] is not None and report["live_ms"] <= 5000, report
    assert f.used("logs") == new_logs
    assert SCREENSHOT.stat().st_size > 10_000

    # `frugal status` on the same frugal: the bar, the pace mark and the projection.
    out = subprocess.run([str(BIN), "status", "--admin", f.admin_url],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    (ROOT / "target" / "frugal-status.txt").write_text(out.stdout)
    lines = out.stdout.splitlines()
    assert lines[0].startswith(f"frugal at {f.admin_url}: period ")
    traces = next(line for line in lines if line.startswith("traces "))
    assert "|" in traces.split("]")[0] and "of 400kB" in traces, out.stdout
    assert any(line.strip().startswith("projected ") for line in lines), out.stdout
    assert any(line.strip().startswith("keep priority ") for line in lines), out.stdout
    assert "metrics  0 data points (no budget)" in lines, out.stdout


def test_the_history_survives_kill_9(standin, frugal_factory):
    """The history is in the store with the counters: after `kill -9` and a restart, every
    step that had passed reads as it did, and traffic goes on from there."""
    start = (datetime.now(timezone.utc) - timedelta(seconds=2)).replace(microsecond=0)
    period = f'period: {{every: 3m, start: "{start.isoformat().replace("+00:00", "Z")}"}}'
    f = frugal_factory(policy_for(standin.url, extra=period, budgets="budgets: {traces: {limit: 50MB}}"))
    rng = random.Random(3)
    spans = OTLPSpanExporter(endpoint=f"{f.http_url}/v1/traces")

    def history():
        return requests.get(f"{f.admin_url}/api/v1/usage/history", timeout=5).json()

    for _ in range(4):
        spans.export(payloads.spans(rng, 30))
        time.sleep(0.7)
    used = f.used("traces")
    # Once a step after the last export has passed (and been flushed), the steps hold it all.
    before = wait_for(lambda: (h := history())["signals"]["traces"]["points"][-2]["used"] == used and h,
                      what="the traffic in a passed step")
    passed = before["signals"]["traces"]["points"][:-1]
    f.kill9()
    f.start()
    after = history()["signals"]["traces"]["points"]
    assert after[:len(passed)] == passed
    assert after[-1]["used"] == used
    OTLPSpanExporter(endpoint=f"{f.http_url}/v1/traces").export(payloads.spans(rng, 30))  # new ports
    assert f.used("traces") > used
    assert history()["signals"]["traces"]["points"][-1]["used"] == f.used("traces")
