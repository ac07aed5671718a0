"""The admin API's usage setting as an operator meets it: what was set survives a crash,
and only those allowed may set it — with the ingest credential when the policy sets one,
otherwise only from the same host (a loopback peer: 127.0.0.0/8 or ::1)."""

from __future__ import annotations

import http.client
import json
import os
import subprocess

import pytest

from conftest import BIN, policy_for


def put_usage(host: str, port: int, source: str, signal: str, used, token: str | None = None):
    """PUT /api/v1/usage/{signal} from the local address `source`: (status, JSON body)."""
    conn = http.client.HTTPConnection(host, port, timeout=5, source_address=(source, 0))
    try:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        conn.request("PUT", f"/api/v1/usage/{signal}", body=json.dumps({"used": used}), headers=headers)
        r = conn.getresponse()
        return r.status, json.loads(r.read() or b"null")
    finally:
        conn.close()


def test_usage_set_survives_kill_9(standin, frugal_factory):
    """What `PUT /api/v1/usage` and `frugal usage set --admin` set is on disk when they
    answer: a SIGKILL right after loses none of it."""
    f = frugal_factory(policy_for(standin.url))
    r = f.set_usage("traces", 12_345_678_901)
    assert r.status_code == 200 and r.json()["used"] == 12_345_678_901
    cli = subprocess.run([str(BIN), "usage", "set", "logs", "7.5GB", "--admin", f.admin_url],
                         capture_output=True, text=True, timeout=30)
    assert cli.returncode == 0, cli.stderr
    r = f.set_usage("metrics", 4321)
    assert r.status_code == 200
    f.kill9()
    f.start()
    assert f.used("traces") == 12_345_678_901
    assert f.used("logs") == 7_500_000_000
    assert f.used("metrics") == 4321
    # And setting it lower is kept exactly too.
    assert f.set_usage("traces", "1GB").status_code == 200
    f.kill9()
    f.start()
    assert f.used("traces") == 1_000_000_000


def test_setting_usage_needs_the_ingest_credential_when_the_policy_sets_one(standin, frugal_factory):
    """With `ingest.auth`, a PUT without the credential, or with a wrong one, is refused
    with 401 and changes nothing; with it (or `frugal usage set --token`) it is applied."""
    f = frugal_factory(policy_for(standin.url, extra='ingest: {auth: {bearer_token: "${FRUGAL_TEST_TOKEN}"}}'),
                       env={"FRUGAL_TEST_TOKEN": "letmein-0123456789abcdef"})
    without_token = {k: v for k, v in os.environ.items() if k != "FRUGAL_ADMIN_TOKEN"}
    assert f.set_usage("traces", "5GB").status_code == 401
    assert f.set_usage("traces", "5GB", token="wrong").status_code == 401
    cli = subprocess.run([str(BIN), "usage", "set", "traces", "5GB", "--admin", f.admin_url],
                         capture_output=True, text=True, timeout=30, env=without_token)
    assert cli.returncode != 0 and "401" in cli.stderr
    assert f.used("traces") == 0
    assert f.set_usage("traces", "5GB", token="letmein-0123456789abcdef").status_code == 200
    assert f.used("traces") == 5_000_000_000
    cli = subprocess.run([str(BIN), "usage", "set", "traces", "6GB", "--admin", f.admin_url, "--token", "letmein-0123456789abcdef"],
                         capture_output=True, text=True, timeout=30)
    assert cli.returncode == 0, cli.stderr
    assert f.used("traces") == 6_000_000_000


def test_without_a_credential_only_the_same_host_may_set_usage(standin, frugal_factory):
    """With no `ingest.auth`, a PUT from another host (a non-loopback peer, 192.0.2.2) is
    refused with 403 and changes nothing; from a loopback address it is applied."""
    f = frugal_factory(policy_for(standin.url), listen_admin="0.0.0.0:0")
    port = f.admin_port
    status, body = put_usage("192.0.2.2", port, "192.0.2.2", "traces", "5GB")
    assert status == 403, body
    assert "same host" in body["error"]
    assert f.used("traces") == 0
    for source, amount in (("127.0.0.1", 1_000), ("127.0.0.2", 2_000)):
        status, body = put_usage("127.0.0.1", port, source, "traces", amount)
        assert status == 200, (source, body)
        assert f.used("traces") == amount


@pytest.mark.parametrize("source, host, allowed", [
    ("::1", "::1", True),
    # An IPv4 client of a dual-stack listener is seen as ::ffff:127.0.0.1: still loopback.
    ("127.0.0.1", "127.0.0.1", True),
    ("fd00::2", "fd00::2", False),
    ("192.0.2.2", "192.0.2.2", False),
], ids=["::1", "127.0.0.1 via [::]", "fd00::2", "192.0.2.2 via [::]"])
def test_same_host_on_a_dual_stack_admin_port(standin, frugal_factory, source, host, allowed):
    """Listening on `[::]` (IPv6 and IPv4), a loopback client — ::1, or 127.0.0.1 seen as
    the IPv4-mapped ::ffff:127.0.0.1 — is the same host and may set usage; a client from
    another address, IPv6 or IPv4, may not."""
    f = frugal_factory(policy_for(standin.url), listen_admin="[::]:0")
    status, body = put_usage(host, f.admin_port, source, "traces", 3_000)
    assert status == (200 if allowed else 403), body
    assert f.used("traces") == (3_000 if allowed else 0)
