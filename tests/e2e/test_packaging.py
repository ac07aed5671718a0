"""What can be checked of the container image without a Docker engine, and `frugal check`
as a user runs it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import requests

from conftest import BIN, ROOT, Frugal, Lines, free_port, policy_for, wait_for

DOCKERFILE = (ROOT / "Dockerfile").read_text()


def instruction(name: str) -> list[str]:
    return [m.group(1).strip() for m in re.finditer(rf"^{name}\s+(.+)$", DOCKERFILE, re.M)]


def test_the_image_runs_as_a_numeric_non_root_user_with_the_default_ports():
    user = instruction("USER")[-1]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0, f"USER must be a numeric non-root UID, got {user!r}"
    assert gid == "" or gid.isdigit()
    exposed = {int(p) for line in instruction("EXPOSE") for p in line.split()}
    assert exposed == {4317, 4318, 4319}
    assert json.loads(instruction("VOLUME")[-1]) == ["/data"]
    assert "AS build" in instruction("FROM")[0] and len(instruction("FROM")) == 2, "multi-stage"


def test_the_images_command_serves_the_embedded_policy_as_that_user(tmp_path):
    uid = instruction("USER")[-1].split(":")[0]
    entry = json.loads(instruction("ENTRYPOINT")[-1])
    cmd = json.loads(instruction("CMD")[-1])
    assert entry == ["/usr/local/bin/frugal"] and cmd[0] == "serve"
    # A directory the image's user can reach (pytest's own are private to root).
    base = Path(tempfile.mkdtemp(prefix="frugal-image-"))
    os.chmod(base, 0o755)
    data = base / "data"
    data.mkdir()
    os.chown(data, int(uid), int(uid))
    args = [str(BIN), *[str(data) if a == "/data" else a for a in cmd],
            "--listen-http", "127.0.0.1:0", "--listen-grpc", "127.0.0.1:0", "--listen-admin", "127.0.0.1:0"]
    env = {**os.environ, "GRAFANA_CLOUD_OTLP_ENDPOINT": "https://otlp-gateway-prod-eu-west-2.grafana.net/otlp",
           "GRAFANA_CLOUD_INSTANCE_ID": "123456", "GRAFANA_CLOUD_API_TOKEN": "glc_test"}
    os.chmod(BIN.parent, 0o755)
    proc = subprocess.Popen(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", *args],
                            env=env, stderr=subprocess.PIPE, text=True)
    try:
        admin = Lines(proc.stderr).wait_for(r"frugal listening .* admin=(\S+)", timeout=20).group(1)
        assert requests.get(f"http://{admin}/readyz", timeout=5).status_code == 200
        usage = requests.get(f"http://{admin}/api/v1/usage", timeout=5).json()
        assert usage["signals"]["traces"]["limit"] == 50_000_000_000
        status = Path(f"/proc/{proc.pid}/status").read_text()
        assert re.search(rf"^Uid:\s+{uid}\s", status, re.M), "the server runs as the image's user"
        assert any(p.stat().st_uid == int(uid) for p in data.iterdir()), "the store belongs to that user"
    finally:
        proc.terminate()
        proc.wait(20)
        shutil.rmtree(base, ignore_errors=True)


def test_check_reports_every_problem_with_its_path(tmp_path):
    bad = tmp_path / "mine.yaml"
    bad.write_text("""
upstream:
  otlp:
    endpoint: ${GRAFANA_CLOUD_OTLP_ENDPOINT}
budgets:
  traces: {limit: 50 GiBs}
traces:
  priority:
    - {name: errors, status_code: ERROR}
    - {name: slow, latncy_over: 2s}
""")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRAFANA_CLOUD")}
    r = subprocess.run([str(BIN), "check", "--policy", str(bad)], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 1
    lines = r.stdout.strip().splitlines()
    assert lines[0] == f"{bad}: 3 problems"
    assert sorted(lines[1:]) == sorted([
        "  upstream.otlp.endpoint: ${GRAFANA_CLOUD_OTLP_ENDPOINT} is not set in the environment",
        '  budgets.traces.limit: "50 GiBs" is not a size (try 50GB, 50GiB, 500MB or a number of bytes)',
        "  traces.priority[1].latncy_over: unknown key (did you mean latency_over?)",
    ])


def test_the_shipped_policies_check_clean():
    env = {**os.environ, "GRAFANA_CLOUD_OTLP_ENDPOINT": "https://otlp-gateway-prod-eu-west-2.grafana.net/otlp",
           "GRAFANA_CLOUD_INSTANCE_ID": "1", "GRAFANA_CLOUD_API_TOKEN": "glc_x"}
    files = sorted((ROOT / "policies").glob("*.yaml"))
    assert len(files) >= 3
    r = subprocess.run([str(BIN), "check", *[a for p in files for a in ("--policy", str(p))]],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count(": ok") == len(files)


def test_an_unopenable_store_keeps_frugal_unready_and_says_why(tmp_path, standin):
    """A second frugal on a data directory in use does not start the period from zero: it
    stays up and unready (/readyz 503 saying why, /healthz 200), and keeps retrying."""
    first = Frugal(policy_for(standin.url), tmp_path / "data")
    try:
        admin = f"127.0.0.1:{free_port()}"
        second = subprocess.Popen(
            [str(BIN), "serve", "--policy", str(first.policy_path), "--data-dir", str(tmp_path / "data"),
             "--listen-http", "127.0.0.1:0", "--listen-grpc", "off", "--listen-admin", admin],
            stderr=subprocess.PIPE, text=True)
        try:
            lines = Lines(second.stderr)
            assert "in use by another frugal" in lines.wait_for("cannot be opened", timeout=20).string
            # /readyz says why (the reason is noted just after the log line).
            def readyz():
                r = requests.get(f"http://{admin}/readyz", timeout=5)
                return (r.status_code, r.text) if "in use by another frugal" in r.text else None

            status, _ = wait_for(readyz, timeout=5, what="/readyz saying why")
            assert status == 503
            assert requests.get(f"http://{admin}/healthz", timeout=5).status_code == 200
            # It retries (every 5 s) and is still unready after the retry failed.
            wait_for(lambda: lines.text().count("cannot be opened") >= 2, timeout=15, what="a second attempt")
            assert second.poll() is None, "it stays up, unready, retrying"
            assert requests.get(f"http://{admin}/readyz", timeout=5).status_code == 503
        finally:
            second.kill()
            second.wait(10)
    finally:
        first.stop()
