"""Fixtures for the end-to-end tests: the real frugal binary on free ports, an upstream
stand-in, and helpers to read frugal's admin API."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

sys.path.insert(0, str(Path(__file__).parent))

from standin import StandIn  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("FRUGAL_BIN", ROOT / "target" / "release" / "frugal"))


def pytest_configure(config):
    if not BIN.exists():
        raise pytest.UsageError(f"the frugal binary is missing at {BIN}: run `cargo build --release` (tests/run.sh does)")


class Frugal:
    """A frugal process."""

    def __init__(self, policy: str, data_dir: Path, env: dict | None = None, extra_args=()):
        self.policy_path = data_dir.parent / f"policy-{id(self)}.yaml"
        self.policy_path.write_text(policy)
        self.data_dir = data_dir
        self.env = env or {}
        self.extra_args = list(extra_args)
        self.log: list[str] = []
        self.proc = None
        self.start()

    def start(self, timeout: float = 30.0):
        args = [
            str(BIN), "serve", "--policy", str(self.policy_path),
            "--listen-http", "127.0.0.1:0", "--listen-grpc", "127.0.0.1:0",
            "--listen-admin", "127.0.0.1:0", "--data-dir", str(self.data_dir),
            *self.extra_args,
        ]
        env = {**os.environ, "RUST_LOG": os.environ.get("FRUGAL_TEST_LOG", "info"), **self.env}
        self.proc = subprocess.Popen(args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env, text=True)
        self.log = []
        ready = threading.Event()

        def pump(proc, log):
            for line in proc.stderr:
                log.append(line.rstrip("\n"))
                m = re.search(r"frugal listening http=(\S+) grpc=(\S+) admin=(\S+)", line)
                if m:
                    self.http, self.grpc, self.admin = m.group(1), m.group(2), m.group(3)
                    ready.set()

        threading.Thread(target=pump, args=(self.proc, self.log), daemon=True).start()
        deadline = time.time() + timeout
        while not ready.wait(0.05):
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("frugal did not start:\n" + "\n".join(self.log[-30:]))

    @property
    def http_url(self) -> str:
        return f"http://{self.http}"

    @property
    def admin_url(self) -> str:
        return f"http://{self.admin}"

    def usage(self) -> dict:
        return requests.get(f"{self.admin_url}/api/v1/usage", timeout=5).json()

    def used(self, signal: str) -> int:
        return self.usage()["signals"][signal]["used"]

    def metrics(self) -> str:
        return requests.get(f"{self.admin_url}/metrics", timeout=5).text

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 30) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def policy_for(upstream: str, extra: str = "", budgets: str = "", upstream_extra: str = "") -> str:
    """A policy forwarding to `upstream`; `upstream_extra` is one more line (a YAML flow
    mapping entry, e.g. "pass_through_auth: true") under `upstream.otlp`."""
    more = f"\n    {upstream_extra}" if upstream_extra else ""
    return f"""
upstream:
  otlp:
    endpoint: {upstream}
    compression: gzip{more}
    timeout: 2s
    retry: {{initial_backoff: 100ms, max_backoff: 500ms, max_elapsed: 4s}}
store: {{flush_interval: 200ms}}
{budgets}
{extra}
"""


@pytest.fixture
def standin():
    s = StandIn()
    yield s
    s.stop()


@pytest.fixture
def frugal_factory(tmp_path):
    started: list[Frugal] = []

    def make(policy: str, data_dir: Path | None = None, **kw) -> Frugal:
        f = Frugal(policy, data_dir or (tmp_path / f"data{len(started)}"), **kw)
        started.append(f)
        return f

    yield make
    for f in started:
        f.stop()


def wait_for(pred, timeout=10.0, interval=0.05, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")
