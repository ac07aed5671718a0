"""Starting mid-month and restarting: usage comes from what was said or persisted, and
pacing picks up from it, not from zero."""

from __future__ import annotations

import random
import subprocess
import threading
import time
from datetime import datetime, timezone

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

import payloads
from conftest import BIN, policy_for, wait_for
from standin import tempo_size


def test_usage_set_before_start_and_while_running(standin, frugal_factory, tmp_path):
    policy = policy_for(standin.url, budgets="budgets: {traces: {limit: 50GB}}")
    policy_file = tmp_path / "p.yaml"
    policy_file.write_text(policy)
    data = tmp_path / "data"
    r = subprocess.run([str(BIN), "usage", "set", "traces", "12GB", "--policy", str(policy_file),
                        "--data-dir", str(data)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "0B -> 12GB" in r.stdout
    f = frugal_factory(policy, data_dir=data)
    assert f.used("traces") == 12_000_000_000
    assert f.usage()["signals"]["traces"]["fraction"] == 0.24
    r = subprocess.run([str(BIN), "usage", "set", "traces", "13GB", "--admin", f.admin_url],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert f.used("traces") == 13_000_000_000
    # Traffic adds to it.
    batch = payloads.spans(random.Random(1), 10)
    OTLPSpanExporter(endpoint=f"{f.http_url}/v1/traces").export(batch)
    assert f.used("traces") == 13_000_000_000 + standin.of("traces")[-1].billed
    # Offline, a running frugal's store is refused with a hint.
    r = subprocess.run([str(BIN), "usage", "set", "traces", "1GB", "--policy", str(policy_file),
                        "--data-dir", str(data)], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "--admin" in r.stderr
    r = subprocess.run([str(BIN), "usage", "show", "--admin", f.admin_url, "--json"], capture_output=True, text=True,
                       timeout=60)
    assert '"used": 13' in r.stdout


def test_restarting_resumes_pacing_from_persisted_usage(standin, frugal_factory, tmp_path):
    """After `kill -9`, usage resumes from disk — no lower than one flush interval short of
    what upstream billed, and no higher than it — and pacing resumes from the persisted
    usage, not from zero."""
    rng = random.Random(11)
    sample = encode_spans(payloads.spans(rng, 200))
    per_span = tempo_size(sample) / 200
    spans_per_second = 150
    period = 600
    limit = int(per_span * spans_per_second * period / 3)  # three times the budget's pace
    start = datetime.fromtimestamp(int(time.time()) - 5, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    policy = policy_for(standin.url, budgets=f"""
period: {{every: 10m, start: "{start}"}}
pacing: {{recompute_every: 1s}}
budgets:
  traces: {{limit: {limit}, target: 95%}}
""")
    data = tmp_path / "data"
    f = frugal_factory(policy, data_dir=data)

    def load(url, seconds):
        exporter = OTLPSpanExporter(endpoint=f"{url}/v1/traces")
        end = time.time() + seconds
        while time.time() < end:
            t = time.time()
            exporter.export(payloads.spans(rng, spans_per_second // 5, error_rate=0, slow_rate=0))
            time.sleep(max(0.0, 0.2 - (time.time() - t)))

    load(f.http_url, 25)
    before = f.usage()["signals"]["traces"]
    p_before = before["pacing"]["keep_probability"]["normal"]
    assert before["pacing"]["state"] == "pacing" and p_before < 0.7, before["pacing"]
    # What frugal counted is what upstream billed, attempt for attempt.
    reached = sum(r.billed for r in standin.attempts_of("traces"))
    assert before["used"] == reached
    f.kill9()
    f.start()
    after = f.usage()["signals"]["traces"]
    # Usage resumes from disk: at most one flush interval of metering lost, and nothing
    # counted that upstream did not receive.
    assert before["used"] - per_span * spans_per_second * 0.5 <= after["used"] <= reached
    # ...and pacing starts from what is on disk: with 80% of the limit already spent (say,
    # by the first weeks of the month), the keep probability right after the restart is
    # far below what a fresh start at this demand gives.
    f.kill9()
    policy_file = tmp_path / "p.yaml"
    policy_file.write_text(policy)
    r = subprocess.run([str(BIN), "usage", "set", "traces", str(int(0.8 * limit)), "--policy", str(policy_file),
                        "--data-dir", str(data)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    f.start()
    assert f.used("traces") == int(0.8 * limit)
    standin.clear()
    t = threading.Thread(target=load, args=(f.http_url, 8))
    t.start()
    resumed = wait_for(lambda: (lambda u: u if u["pacing"]["state"] == "pacing"
                                and u["pacing"]["keep_probability"]["normal"] < p_before / 2 else None)(
                           f.usage()["signals"]["traces"]), timeout=8, interval=0.2,
                       what=f"pacing from the persisted usage below {p_before / 2}")
    t.join()
    assert resumed["used"] >= int(0.8 * limit)
    used = f.used("traces")
    assert used == int(0.8 * limit) + sum(r.billed for r in standin.attempts_of("traces")) <= limit
