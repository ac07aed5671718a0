"""frugal's peak memory with its in-flight budget full: many clients send the largest
requests frugal accepts while upstream holds every export, so requests pile up inside
frugal until `ingest.max_in_flight` turns the rest away with 503.

    .venv/bin/python tests/bench/memory.py [--in-flight 256MiB] [--clients 32]
                                           [--seconds 15] [--mib 15] [--gzip]

Uses the release binary (FRUGAL_BIN, default target/release/frugal) and the end-to-end
tests' stand-in upstream. Prints frugal's peak resident set (VmHWM) and how many requests
were taken (200) or turned away (503); BENCHMARKS.md keeps the figures. Asserts nothing
about them."""

from __future__ import annotations

import argparse
import gzip
import random
import re
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

import payloads  # noqa: E402
from conftest import Frugal, policy_for  # noqa: E402
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans  # noqa: E402
from standin import StandIn  # noqa: E402


def status(pid: int, field: str) -> float:
    text = open(f"/proc/{pid}/status").read()
    return int(re.search(rf"{field}:\s+(\d+) kB", text).group(1)) / 1024


def big_body(mib: float) -> tuple[bytes, int]:
    """A trace request of real-looking SDK spans, about `mib` MiB encoded."""
    req = encode_spans(payloads.spans(random.Random(7), 400))
    one = len(req.SerializeToString())
    base = list(req.resource_spans)
    while len(req.SerializeToString()) + one < mib * 1024 * 1024:
        req.resource_spans.extend(base)
    spans = sum(len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans)
    return req.SerializeToString(), spans


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--in-flight", default="256MiB")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--mib", type=float, default=15)
    ap.add_argument("--gzip", action="store_true")
    ap.add_argument("--env", action="append", default=[], help="NAME=VALUE for frugal")
    a = ap.parse_args()

    body, spans = big_body(a.mib)
    headers = {"Content-Type": "application/x-protobuf"}
    if a.gzip:
        body = gzip.compress(body, 1)
        headers["Content-Encoding"] = "gzip"
    print(f"body: {len(body) / 2**20:.1f} MiB on the wire, {spans} spans; "
          f"{a.clients} clients for {a.seconds:.0f} s; max_in_flight {a.in_flight}")

    upstream = StandIn()
    upstream.hold()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        policy = policy_for(upstream.url, budgets="budgets: {traces: {limit: 10TB}}",
                            extra=f"pacing: {{enabled: false}}\ningest: {{max_in_flight: {a.in_flight}}}",
                            timeout="20s", max_elapsed="20s")
        f = Frugal(policy, data, env=dict(e.split("=", 1) for e in a.env))
        pid = f.proc.pid
        idle = status(pid, "VmRSS")
        codes: dict[int, int] = {}
        lock = threading.Lock()
        stop = time.monotonic() + a.seconds

        def client() -> None:
            s = requests.Session()
            while time.monotonic() < stop:
                try:
                    r = s.post(f"{f.http_url}/v1/traces", data=body, headers=headers, timeout=120)
                    code = r.status_code
                except requests.RequestException:
                    code = 0
                with lock:
                    codes[code] = codes.get(code, 0) + 1
                if code == 503:
                    time.sleep(0.2)

        threads = [threading.Thread(target=client, daemon=True) for _ in range(a.clients)]
        for t in threads:
            t.start()
        peak_held = 0.0
        ready_worst = 0.0
        while time.monotonic() < stop:
            t0 = time.monotonic()
            f.readyz()
            ready_worst = max(ready_worst, time.monotonic() - t0)
            held = f.metric("frugal_ingest_in_flight_bytes") or 0
            peak_held = max(peak_held, held / 2**20)
            time.sleep(0.1)
        upstream.release()
        for t in threads:
            t.join()
        peak = status(pid, "VmHWM")
        f.stop()
    upstream.stop()
    print(f"idle RSS {idle:.0f} MB; peak RSS {peak:.0f} MB; in-flight budget held at most "
          f"{peak_held:.0f} MiB; slowest /readyz {ready_worst * 1000:.0f} ms")
    print("answers: " + ", ".join(f"{c}: {n}" for c, n in sorted(codes.items())))


if __name__ == "__main__":
    main()
