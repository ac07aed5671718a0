"""Built-in notifications (the policy's `alerts`) with a real Alertmanager (Debian's
`prometheus-alertmanager`; tests/run.sh installs it) and a generic webhook: one
notification per threshold per period, across a `kill -9` of frugal and its restart;
nothing below a threshold; a failed generic POST retried with the same idempotency key;
alerts resolved at the period's end, and nothing carried into the next period."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from conftest import free_port, policy_for, wait_for

SECRET = "s3cr3t-hook-token"
# frugal checks every recompute: a thousandth of the 10-minute period (0.6 s). It re-posts
# to Alertmanager every hundredth of it (6 s), with endsAt four re-posts ahead.
CHECK_S = 0.6
REPOST_S = 6.0
# Alertmanager's routing: each threshold its own group, sent 1 s after it forms, a changed
# group at most every 2 s, an unchanged one again only after a day.
GROUP_WAIT_S, GROUP_INTERVAL_S = 1, 2


def alertmanager_binary() -> str | None:
    return shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")


class Recorder:
    """An HTTP server recording every POST (path, headers with lower-case names, JSON body); `fail_first` POSTs
    to the generic webhook's path are answered 500."""

    def __init__(self, fail_first: int = 0):
        self.posts: list[tuple[str, dict, object]] = []
        self.fail_left = fail_first
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with outer.lock:
                    outer.posts.append((self.path, {k.lower(): v for k, v in self.headers.items()}, json.loads(body)))
                    fail = self.path.startswith("/hook") and outer.fail_left > 0
                    if fail:
                        outer.fail_left -= 1
                self.send_response(500 if fail else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def of(self, prefix: str) -> list[tuple[str, dict, object]]:
        with self.lock:
            return [p for p in self.posts if p[0].startswith(prefix)]

    def stop(self):
        self.server.shutdown()


class Alertmanager:
    def __init__(self, exe: str, receiver_url: str, tmp):
        config = tmp / "alertmanager.yml"
        config.write_text(f"""
route:
  receiver: recorder
  group_by: [alertname, signal, threshold, period_start]
  group_wait: {GROUP_WAIT_S}s
  group_interval: {GROUP_INTERVAL_S}s
  repeat_interval: 24h
receivers:
  - name: recorder
    webhook_configs:
      - url: {receiver_url}/am
        send_resolved: true
""")
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.log = tmp / "alertmanager.log"
        self.proc = subprocess.Popen(
            [exe, f"--config.file={config}", f"--storage.path={tmp / 'am-data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
            stdout=subprocess.DEVNULL, stderr=self.log.open("w"))

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError("alertmanager exited:\n" + self.log.read_text())
            try:
                return requests.get(f"{self.url}/-/ready", timeout=1).status_code == 200
            except requests.ConnectionError:
                return False

        wait_for(ready, timeout=30, what="alertmanager ready")

    def alerts(self) -> list[dict]:
        return requests.get(f"{self.url}/api/v2/alerts", timeout=5).json()

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def alertmanager_exe():
    exe = alertmanager_binary()
    if exe is None:
        msg = "prometheus-alertmanager is missing: apt-get install prometheus-alertmanager (tests/run.sh does)"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return exe


def stays(pred, seconds: float, what: str):
    """Asserts `pred` holds throughout the next `seconds` (checked every 0.2 s)."""
    end = time.time() + seconds
    while time.time() < end:
        assert pred(), what
        time.sleep(0.2)


def firing_notifications(recorder: Recorder) -> dict[str, int]:
    """Alertmanager's firing notifications, counted per threshold label."""
    counts: dict[str, int] = {}
    for _, _, body in recorder.of("/am"):
        if body["status"] != "firing":
            continue
        for a in body["alerts"]:
            t = a["labels"]["threshold"]
            counts[t] = counts.get(t, 0) + 1
    return counts


def test_one_notification_per_threshold_per_period_across_kill_9(alertmanager_exe, standin, frugal_factory,
                                                                   tmp_path):
    recorder = Recorder(fail_first=1)
    am = Alertmanager(alertmanager_exe, recorder.url, tmp_path)
    try:
        start = datetime.fromtimestamp(int(time.time()) - 30, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        policy = policy_for(standin.url, budgets=f"""
period: {{every: 10m, start: "{start}"}}
budgets:
  traces: {{limit: 1GB}}
alerts:
  thresholds: [50%, 80%]
  projected_overage: false
  webhooks:
    - {{url: "${{TEST_AM_URL}}", format: alertmanager}}
    - {{url: "${{TEST_HOOK_URL}}", format: generic}}
""")
        env = {"TEST_AM_URL": am.url, "TEST_HOOK_URL": f"{recorder.url}/hook/{SECRET}"}
        data = tmp_path / "data"
        f = frugal_factory(policy, data_dir=data, env=env)

        # Below every threshold nothing fires: frugal checks every 0.6 s and Alertmanager
        # would group within 1 s, so 3 s (five checks, three group waits) is ample.
        assert f.set_usage("traces", "490MB").status_code == 200
        stays(lambda: recorder.posts == [] and am.alerts() == [], 3, "nothing below 50%")

        # 50%: Alertmanager notifies once; the generic webhook's first attempt fails (500)
        # and the retry carries the same idempotency key.
        assert f.set_usage("traces", "550MB").status_code == 200
        wait_for(lambda: firing_notifications(recorder).get("50%") == 1, timeout=20,
                 what="Alertmanager's notification for 50%")
        wait_for(lambda: len(recorder.of("/hook")) == 2, timeout=20, what="the generic webhook's retry")
        first, retry = recorder.of("/hook")
        key = first[1]["idempotency-key"]
        assert key.endswith(":traces:used_50") and retry[1]["idempotency-key"] == key
        assert first[2]["threshold"] == "50%" and first[2]["signal"] == "traces"
        assert first[2]["idempotency_key"] == key and first[2]["used"] == 550_000_000
        assert first[0] == f"/hook/{SECRET}"

        # 80%: one more of each.
        assert f.set_usage("traces", "850MB").status_code == 200
        wait_for(lambda: firing_notifications(recorder).get("80%") == 1, timeout=20,
                 what="Alertmanager's notification for 80%")
        wait_for(lambda: len(recorder.of("/hook")) == 3, timeout=20, what="the generic POST for 80%")
        assert recorder.of("/hook")[2][1]["idempotency-key"].endswith(":traces:used_80")
        # The delivery is persisted once frugal logs it; the kill comes after.
        wait_for(lambda: sum("notification delivered" in line for line in f.log) == 2, timeout=10,
                 what="both generic deliveries marked")
        starts = {a["labels"]["threshold"]: a["startsAt"] for a in am.alerts()}
        assert set(starts) == {"50%", "80%"}

        first_log = list(f.log)
        f.kill9()
        f.start()
        # Alertmanager hears both alerts again at once and every 6 s; wait for the post
        # after the restart and one re-post.
        wait_for(lambda: (f.metric("frugal_notifications_total", format="alertmanager",
                                   outcome="delivered") or 0) >= 2,
                 timeout=3 * REPOST_S, interval=0.2, what="re-posts to Alertmanager after the restart")
        # Any notification those posts caused would go out within a group interval (2 s)
        # of their arrival: watch three intervals for a second one.
        stays(lambda: firing_notifications(recorder) == {"50%": 1, "80%": 1}, 3 * GROUP_INTERVAL_S,
              "one Alertmanager notification per threshold")
        # The re-posted alerts kept their first startsAt; the generic webhook heard nothing
        # again; the webhook's secret never reached the log.
        assert {a["labels"]["threshold"]: a["startsAt"] for a in am.alerts()} == starts
        assert len(recorder.of("/hook")) == 3
        labels = [a["labels"] for _, _, b in recorder.of("/am") for a in b["alerts"]]
        assert all(set(lab) == {"alertname", "signal", "threshold", "period_start"} for lab in labels), labels
        assert all(SECRET not in line for line in first_log + f.log)
    finally:
        am.stop()
        recorder.stop()


def test_alerts_resolve_at_the_period_end_and_the_next_period_starts_afresh(alertmanager_exe, standin,
                                                                             frugal_factory, tmp_path):
    recorder = Recorder()
    am = Alertmanager(alertmanager_exe, recorder.url, tmp_path)
    try:
        # A one-minute period with about 40 s left: frugal re-posts every second, endsAt
        # four seconds ahead but never past the period's end.
        start = int(time.time()) - 20
        policy = policy_for(standin.url, budgets=f"""
period: {{every: 1m, start: "{datetime.fromtimestamp(start, timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')}"}}
budgets:
  traces: {{limit: 1GB}}
alerts:
  thresholds: [50%]
  projected_overage: false
  webhooks: [{{url: "{am.url}/api/v2/alerts", format: alertmanager}}]
""")
        f = frugal_factory(policy)
        first_period = f.usage()["period"]["start"]
        assert f.set_usage("traces", "600MB").status_code == 200
        wait_for(lambda: firing_notifications(recorder).get("50%") == 1, timeout=15,
                 what="Alertmanager's notification for 50%")
        # At the period's end the alert's endsAt passes: Alertmanager resolves it and says
        # so within a group interval.
        end = start + 60
        wait_for(lambda: any(b["status"] == "resolved" and b["alerts"][0]["labels"]["period_start"] == first_period
                             for _, _, b in recorder.of("/am")),
                 timeout=max(0.0, end - time.time()) + 15, interval=0.2, what="the alert resolved at the period's end")
        wait_for(lambda: f.usage()["period"]["start"] != first_period, timeout=5, what="the next period")
        assert f.used("traces") == 0
        # The new period has used nothing: nothing fires in it (a check every 100 ms, a
        # group wait of 1 s: three group intervals are ample).
        stays(lambda: firing_notifications(recorder) == {"50%": 1}, 3 * GROUP_INTERVAL_S,
              "nothing fires in the new period")
    finally:
        am.stop()
        recorder.stop()
