"""Policy reload without a restart, on the real binary: the policy file is a ConfigMap
volume as the kubelet writes it (`policy.yaml -> ..data/policy.yaml`, `..data -> ..<stamp>`,
an update swapping `..data` by rename), changed under continuous load."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import requests
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

import payloads
from conftest import BIN, Lines, metric_value, policy_for, wait_for

RECOMPUTE = 1.0  # pacing.recompute_every below
POLL = 1.0  # how often frugal looks at the policy file (reload.rs POLL_EVERY)


class ConfigMapVolume:
    """A directory laid out as the kubelet lays out a ConfigMap volume."""

    def __init__(self, root: Path):
        self.root = root
        root.mkdir()
        self.version = 0
        (root / "policy.yaml").symlink_to("..data/policy.yaml")

    @property
    def path(self) -> Path:
        return self.root / "policy.yaml"

    def publish(self, text: str) -> None:
        """A new version: written to a new timestamped directory, then `..data` swapped to
        it in one rename, and the old directory removed (as the kubelet's AtomicWriter)."""
        self.version += 1
        stamp = f"..2026_12_03_04_00_{self.version:02d}.{os.getpid()}"
        d = self.root / stamp
        d.mkdir()
        (d / "policy.yaml").write_text(text)
        tmp = self.root / "..data_tmp"
        tmp.symlink_to(stamp)
        old = os.readlink(self.root / "..data") if (self.root / "..data").is_symlink() else None
        os.replace(tmp, self.root / "..data")
        if old:
            for f in (self.root / old).iterdir():
                f.unlink()
            (self.root / old).rmdir()


class Load:
    """Trace requests (the OpenTelemetry SDK's encoding, as its exporter sends them) every
    50 ms on a thread, each answer's status kept."""

    def __init__(self, url: str):
        self.url = f"{url}/v1/traces"
        self.statuses: list[int] = []
        self.stop = threading.Event()
        self.rng = random.Random(13)
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        s = requests.Session()
        while not self.stop.is_set():
            body = encode_spans(payloads.spans(self.rng, 20, error_rate=0, slow_rate=0)).SerializeToString()
            try:
                r = s.post(self.url, data=body, headers={"Content-Type": "application/x-protobuf"}, timeout=10)
                self.statuses.append(r.status_code)
            except requests.RequestException as e:  # a failure, counted as one
                self.statuses.append(-1)
                print("request failed:", e)
            time.sleep(0.05)

    def finish(self):
        self.stop.set()
        self.thread.join(15)


def policy(standin, start: str, limit: str, extra: str = "") -> str:
    return policy_for(standin.url, budgets=f"""
period: {{every: 10m, start: "{start}"}}
pacing: {{recompute_every: 1s}}
budgets:
  traces: {{limit: {limit}, target: 95%}}
{extra}
""")


def reloads(f, result: str) -> float:
    return metric_value(f.metrics(), "frugal_policy_reload_total", result=result)


def traces(f) -> dict:
    return f.usage()["signals"]["traces"]


def follows_within_one_recompute(f, result: str, count: int, want, what: str) -> dict:
    """Waits for frugal to take the file (the reload counter), then for the pacing `want`
    accepts: within one recompute of it."""
    published = time.time()
    wait_for(lambda: reloads(f, result) == count, timeout=POLL + 5, interval=0.02, what=f"reload {result} #{count}")
    taken = time.time()
    t = wait_for(lambda: (lambda t: t if want(t) else None)(traces(f)), timeout=RECOMPUTE + 0.5, interval=0.02,
                 what=what)
    followed = time.time()
    assert followed - taken <= RECOMPUTE + 0.5
    print(f"{what}: file taken {taken - published:.2f}s after the swap, pacing followed {followed - taken:.2f}s later")
    return t


def test_a_configmap_swap_under_load_changes_pacing_at_once_and_keeps_the_counters(standin, frugal_factory,
                                                                                   tmp_path):
    start = datetime.fromtimestamp(int(time.time()) - 5, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    vol = ConfigMapVolume(tmp_path / "policy")
    vol.publish(policy(standin, start, "10GB"))
    f = frugal_factory(None, policy_path=vol.path)
    assert reloads(f, "ok") == 0 and reloads(f, "error") == 0
    load = Load(f.http_url)
    try:
        wait_for(lambda: traces(f)["used"] > 50_000, timeout=20, what="traffic to be billed")
        period = f.usage()["period"]["start"]
        before = traces(f)
        assert before["pacing"]["state"] == "unconstrained", before["pacing"]
        assert before["pacing"]["keep_probability"]["normal"] == 1.0

        # 1. The limit lowered below what is used: no more normal spans, at once.
        used = before["used"]
        low = used // 2
        vol.publish(policy(standin, start, str(low)))
        after = follows_within_one_recompute(
            f, "ok", 1, lambda t: t["limit"] == low and t["pacing"]["state"] in ("priority_only", "stopped"),
            "pacing to follow the lowered limit")
        assert after["pacing"]["keep_probability"]["normal"] == 0.0, after["pacing"]
        # The period's counters went on from where they were: nothing reset.
        assert after["used"] >= used, (after["used"], used)
        assert f.usage()["period"]["start"] == period

        # 2. An invalid policy: refused, every problem logged with its path, the old one stays.
        vol.publish(policy(standin, start, '"50 GiBs"', extra="traces: {priority: [{name: slow, latncy_over: 2s}]}"))
        wait_for(lambda: reloads(f, "error") == 1, timeout=POLL + 5, what="the refusal")
        time.sleep(RECOMPUTE + 0.2)
        kept = traces(f)
        assert kept["limit"] == low and kept["pacing"]["state"] in ("priority_only", "stopped"), kept["pacing"]
        assert reloads(f, "ok") == 1
        log = "\n".join(f.log)
        assert "budgets.traces.limit" in log and "traces.priority[0].latncy_over" in log, log[-3000:]
        assert "the running one stays in force" in log

        # 3. Fixed, and a restart-only setting changed with it: the limit raised is in force
        # (sampling off again), the flush interval is named and left as it is.
        vol.publish(policy(standin, start, "10GB").replace("flush_interval: 200ms", "flush_interval: 300ms"))
        raised = follows_within_one_recompute(
            f, "ok", 2, lambda t: t["limit"] == 10_000_000_000 and t["pacing"]["state"] == "unconstrained",
            "pacing to follow the raised limit")
        assert raised["pacing"]["keep_probability"]["normal"] == 1.0
        assert any("store.flush_interval" in line and "until frugal restarts" in line for line in f.log), f.log[-20:]

        # 4. SIGHUP loads the file again, unchanged.
        f.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: reloads(f, "ok") == 3, timeout=5, what="the SIGHUP reload")
        assert f.proc.poll() is None
    finally:
        load.finish()

    # No request failed: every one answered 2xx, through three reloads and a refusal.
    assert len(load.statuses) > 50
    assert set(load.statuses) == {200}, {s: load.statuses.count(s) for s in set(load.statuses)}
    # And the period's usage is exactly what upstream received: nothing lost or counted
    # twice across the reloads.
    billed = sum(r.billed for r in standin.of("traces"))
    wait_for(lambda: traces(f)["used"] == billed, timeout=5, what=f"used == billed upstream ({billed})")



def test_sighup_without_a_policy_file_is_logged_and_frugal_keeps_running(tmp_path):
    """With the embedded policy there is nothing to reload; SIGHUP's default action (the
    end of the process, without the drain and the final flush) must not happen either."""
    env = {**os.environ, "GRAFANA_CLOUD_OTLP_ENDPOINT": "http://127.0.0.1:9/otlp",
           "GRAFANA_CLOUD_INSTANCE_ID": "123456", "GRAFANA_CLOUD_API_TOKEN": "glc_test"}
    proc = subprocess.Popen([str(BIN), "serve", "--data-dir", str(tmp_path / "data"), "--listen-http", "127.0.0.1:0",
                             "--listen-grpc", "127.0.0.1:0", "--listen-admin", "127.0.0.1:0"],
                            env=env, stderr=subprocess.PIPE, text=True)
    try:
        lines = Lines(proc.stderr)
        lines.wait_for(r"frugal listening", timeout=20)
        proc.send_signal(signal.SIGHUP)
        lines.wait_for(r"SIGHUP: the embedded policy runs, nothing to reload", timeout=5)
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert any("usage counters flushed" in line for line in lines.lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
