"""Fixtures for the end-to-end tests: the real frugal binary on free ports, an upstream
stand-in, and helpers to read frugal's admin API."""

from __future__ import annotations

import os
import re
import signal
import socket
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

    def __init__(self, policy: str | None, data_dir: Path, env: dict | None = None, extra_args=(),
                 listen_admin: str = "127.0.0.1:0", policy_path: Path | None = None):
        """`policy` is written to a file of its own; or, with `policy_path`, that file (which
        the test writes and changes itself) is the policy."""
        if policy_path is None:
            policy_path = data_dir.parent / f"policy-{id(self)}.yaml"
            policy_path.write_text(policy)
        self.policy_path = policy_path
        self.data_dir = data_dir
        self.env = env or {}
        self.extra_args = list(extra_args)
        self.listen_admin = listen_admin
        self.log: list[str] = []
        self.proc = None
        self.start()

    def start(self, timeout: float = 30.0):
        args = [
            str(BIN), "serve", "--policy", str(self.policy_path),
            "--listen-http", "127.0.0.1:0", "--listen-grpc", "127.0.0.1:0",
            "--listen-admin", self.listen_admin, "--data-dir", str(self.data_dir),
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
    def admin_port(self) -> int:
        return int(self.admin.rsplit(":", 1)[1])

    @property
    def admin_url(self) -> str:
        """The admin API, over loopback when it listens on every address."""
        host = self.admin.rsplit(":", 1)[0]
        host = {"0.0.0.0": "127.0.0.1", "[::]": "[::1]"}.get(host, host)
        return f"http://{host}:{self.admin_port}"

    def usage(self) -> dict:
        return requests.get(f"{self.admin_url}/api/v1/usage", timeout=5).json()

    def used(self, signal: str) -> int:
        return self.usage()["signals"][signal]["used"]

    def metrics(self) -> str:
        return requests.get(f"{self.admin_url}/metrics", timeout=5).text

    def metric(self, name: str, **labels) -> float | None:
        """The value of one sample of /metrics (labels in any order), or None if absent."""
        return metric_value(self.metrics(), name, **labels)

    def readyz(self) -> int:
        return requests.get(f"{self.admin_url}/readyz", timeout=5).status_code

    def set_usage(self, signal: str, used, token: str | None = None) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return requests.put(f"{self.admin_url}/api/v1/usage/{signal}", json={"used": used},
                            headers=headers, timeout=5)

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


def policy_for(upstream: str, extra: str = "", budgets: str = "", upstream_extra: str = "",
               timeout: str = "2s", max_elapsed: str = "4s", flush_interval: str = "200ms") -> str:
    """A policy forwarding to `upstream`; `upstream_extra` is one more line (a YAML flow
    mapping entry, e.g. "pass_through_auth: true") under `upstream.otlp`; `timeout` is
    one attempt's, `max_elapsed` all of a request's attempts'."""
    more = f"\n    {upstream_extra}" if upstream_extra else ""
    return f"""
upstream:
  otlp:
    endpoint: {upstream}
    compression: gzip{more}
    timeout: {timeout}
    retry: {{initial_backoff: 100ms, max_backoff: 500ms, max_elapsed: {max_elapsed}}}
store: {{flush_interval: {flush_interval}}}
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

    def make(policy: str | None, data_dir: Path | None = None, **kw) -> Frugal:
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


def metric_value(text: str, name: str, **labels) -> float | None:
    """The value of the sample `name{labels}` in a Prometheus text exposition."""
    for line in text.splitlines():
        m = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)", line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        if got == {k: str(v) for k, v in labels.items()}:
            return float(m.group(3))
    return None


class Lines:
    """A process's stderr, read on a thread, so a test waits for a line with a deadline
    instead of blocking on `readline()`."""

    def __init__(self, stream):
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._eof = False
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream):
        for line in stream:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def wait_for(self, pattern: str, timeout: float = 20.0) -> re.Match:
        """The first line matching `pattern`; fails after `timeout` seconds or at EOF."""
        deadline = time.time() + timeout
        seen = 0
        with self._cond:
            while True:
                for line in self.lines[seen:]:
                    m = re.search(pattern, line)
                    if m:
                        return m
                seen = len(self.lines)
                left = deadline - time.time()
                if left <= 0 or self._eof:
                    raise AssertionError(f"no line matching {pattern!r} within {timeout}s:\n"
                                         + "\n".join(self.lines[-30:]))
                self._cond.wait(left)

    def text(self) -> str:
        with self._cond:
            return "\n".join(self.lines)


def free_port() -> int:
    """A TCP port nothing listens on right now (for a process that must be told its port)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
