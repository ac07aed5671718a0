"""Real Prometheus peers for the remote-write end-to-end tests: Debian's `prometheus` binary
started as a scraping sender (remote_write to a URL) or as a remote-write receiver
(`--web.enable-remote-write-receiver`), a Python scrape target, a TCP relay that keeps one
address for a process whose port changes on restart, and the two wire formats the tests
build by hand: a Snappy block (literal-only, which is valid Snappy) and Prometheus remote
write 1.0 protobuf (`prometheus.WriteRequest`, field numbers from prometheus/prompb
types.proto and remote.proto)."""

from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

import pytest
import requests
import yaml

from conftest import free_port


def prometheus_binary() -> str:
    """Debian's prometheus; in CI a missing one fails the test, elsewhere it skips."""
    exe = shutil.which("prometheus")
    if not exe:
        if os.environ.get("CI"):
            pytest.fail("prometheus is missing: apt-get install prometheus (tests/run.sh does)")
        pytest.skip("prometheus is missing (apt-get install prometheus); CI=true makes this a failure")
    return exe


# --- Snappy (block format) -------------------------------------------------------------------

def _uvarint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def snappy_encode(data: bytes) -> bytes:
    """A Snappy block of `data`: its length as a varint, then literal elements only (no
    copies). Valid Snappy that any decoder reads; it just does not compress."""
    out = bytearray(_uvarint(len(data)))
    for i in range(0, len(data), 65536):
        chunk = data[i:i + 65536]
        n = len(chunk) - 1
        if n < 60:
            out.append(n << 2)
        elif n < 256:
            out += bytes([60 << 2, n])
        else:
            out += bytes([61 << 2]) + struct.pack("<H", n)
        out += chunk
    return bytes(out)


def snappy_decode(data: bytes) -> bytes:
    """A Snappy block decoded (literals and copies), for the Python receiver stand-in."""
    pos, length, shift = 0, 0, 0
    while True:
        b = data[pos]
        pos += 1
        length |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            break
    out = bytearray()
    while pos < len(data):
        tag = data[pos]
        pos += 1
        kind = tag & 3
        if kind == 0:
            n = tag >> 2
            if n >= 60:
                extra = n - 59
                n = int.from_bytes(data[pos:pos + extra], "little")
                pos += extra
            n += 1
            if pos + n > len(data):
                raise ValueError("snappy: literal past the end")
            out += data[pos:pos + n]
            pos += n
            continue
        if kind == 1:
            n = ((tag >> 2) & 7) + 4
            off = ((tag >> 5) << 8) | data[pos]
            pos += 1
        elif kind == 2:
            n = (tag >> 2) + 1
            off = int.from_bytes(data[pos:pos + 2], "little")
            pos += 2
        else:
            n = (tag >> 2) + 1
            off = int.from_bytes(data[pos:pos + 4], "little")
            pos += 4
        if off == 0 or off > len(out):
            raise ValueError("snappy: bad copy offset")
        for _ in range(n):
            out.append(out[-off])
    if len(out) != length:
        raise ValueError(f"snappy: {len(out)} bytes, header says {length}")
    return bytes(out)


# --- Remote write 1.0 protobuf, by hand ------------------------------------------------------
# prompb/remote.proto: WriteRequest{repeated TimeSeries timeseries = 1; reserved 2;
#   repeated MetricMetadata metadata = 3}
# prompb/types.proto: TimeSeries{repeated Label labels = 1; repeated Sample samples = 2},
#   Label{string name = 1; string value = 2}, Sample{double value = 1; int64 timestamp = 2},
#   MetricMetadata{MetricType type = 1; string metric_family_name = 2; string help = 4;
#   string unit = 5}, MetricType COUNTER = 1, GAUGE = 2, ...

def _key(field: int, wire: int) -> bytes:
    return _uvarint(field << 3 | wire)


def _len_field(field: int, payload: bytes) -> bytes:
    return _key(field, 2) + _uvarint(len(payload)) + payload


def pb_label(name: str, value: str) -> bytes:
    return _len_field(1, name.encode()) + _len_field(2, value.encode())


def pb_sample(value: float, timestamp_ms: int) -> bytes:
    return _key(1, 1) + struct.pack("<d", value) + _key(2, 0) + _uvarint(timestamp_ms & ((1 << 64) - 1))


def pb_timeseries(labels: dict[str, str], samples: list[tuple[float, int]]) -> bytes:
    body = b"".join(_len_field(1, pb_label(k, v)) for k, v in sorted(labels.items()))
    body += b"".join(_len_field(2, pb_sample(v, t)) for v, t in samples)
    return body


def pb_metadata(family: str, mtype: int = 1, help_: str = "", unit: str = "") -> bytes:
    body = _key(1, 0) + _uvarint(mtype) + _len_field(2, family.encode())
    if help_:
        body += _len_field(4, help_.encode())
    if unit:
        body += _len_field(5, unit.encode())
    return body


def write_request(series: list[tuple[dict[str, str], list[tuple[float, int]]]] = (),
                  metadata: list[bytes] = ()) -> bytes:
    """A `prometheus.WriteRequest`, serialized."""
    return (b"".join(_len_field(1, pb_timeseries(labels, samples)) for labels, samples in series)
            + b"".join(_len_field(3, m) for m in metadata))


RW1_HEADERS = {
    "Content-Type": "application/x-protobuf",
    "Content-Encoding": "snappy",
    "X-Prometheus-Remote-Write-Version": "0.1.0",
}


def push(url: str, body: bytes, headers: dict | None = None, timeout: float = 10) -> requests.Response:
    """POST a serialized WriteRequest, Snappy-encoded, as Prometheus sends remote write 1.0."""
    return requests.post(url, data=snappy_encode(body), headers={**RW1_HEADERS, **(headers or {})},
                         timeout=timeout)


# --- A scrape target -------------------------------------------------------------------------

class ScrapeTarget:
    """An HTTP server answering /metrics with the text `render()` returns at that moment."""

    def __init__(self, render: Callable[[], str]):
        self.render = render
        self.scrapes = 0
        target = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                body = target.render().encode()
                target.scrapes += 1
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def exposition(families: list[tuple[str, str, list[tuple[dict[str, str], float]]]]) -> str:
    """Prometheus text format for (name, type, [(labels, value)]) families."""
    lines = []
    for name, mtype, samples in families:
        lines += [f"# HELP {name} {name} for the remote-write tests.", f"# TYPE {name} {mtype}"]
        for labels, value in samples:
            ls = ",".join(f'{k}="{v}"' for k, v in labels.items())
            lines.append(f"{name}{{{ls}}} {value!r}" if ls else f"{name} {value!r}")
    return "\n".join(lines) + "\n"


# The series Prometheus adds for every scrape target (per target, beside what it exposes).
SCRAPE_SERIES = ["up", "scrape_duration_seconds", "scrape_samples_scraped", "scrape_series_added",
                 "scrape_samples_post_metric_relabeling"]


# --- A TCP relay -----------------------------------------------------------------------------

class Relay:
    """Listens on one port and relays each connection to `target` (host:port), which can be
    changed: a fixed address for a process that gets a new port when restarted."""

    def __init__(self, target: str | None = None):
        self.target = target
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self._stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _accept(self):
        while not self._stopped:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket):
        host, port = (self.target or "127.0.0.1:1").rsplit(":", 1)
        try:
            upstream = socket.create_connection((host, int(port)), timeout=5)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)

        def pipe(src, dst):
            try:
                while True:
                    data = src.recv(65536)
                    if not data:
                        break
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                for s in (src, dst):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        t = threading.Thread(target=pipe, args=(upstream, client), daemon=True)
        t.start()
        pipe(client, upstream)
        t.join(30)
        client.close()
        upstream.close()

    def stop(self):
        self._stopped = True
        self.sock.close()


# --- Prometheus ------------------------------------------------------------------------------

class Prometheus:
    """Debian's prometheus on a free port with its own TSDB under `tmp/name`: a sender when
    given scrape targets and remote_write URLs, a receiver with `receiver=True`."""

    def __init__(self, tmp: Path, name: str, scrape: list[str] = (), remote_write: list[str] = (),
                 receiver: bool = False, scrape_interval: str = "1s", queue_config: dict | None = None,
                 metadata_interval: str = "5s"):
        self.name = name
        self.dir = tmp / f"prom-{name}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        config: dict = {"global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval}}
        if scrape:
            config["scrape_configs"] = [{"job_name": "target", "static_configs": [{"targets": list(scrape)}]}]
        if remote_write:
            config["remote_write"] = [{
                "url": url, "name": f"rw{i}",
                "queue_config": queue_config or {"batch_send_deadline": "1s", "max_shards": 2,
                                                 "min_backoff": "100ms", "max_backoff": "1s"},
                "metadata_config": {"send": True, "send_interval": metadata_interval},
            } for i, url in enumerate(remote_write)]
        cfg = self.dir / "prometheus.yml"
        cfg.write_text(yaml.safe_dump(config))
        args = [prometheus_binary(), f"--config.file={cfg}", f"--storage.tsdb.path={self.dir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}"]
        if receiver:
            args.append("--web.enable-remote-write-receiver")
        self.log = self.dir / "prometheus.log"
        self._stderr = open(self.log, "w")
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=self._stderr)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def write_url(self) -> str:
        return f"{self.url}/api/v1/write"

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"prometheus {self.name} exited:\n" + self.log.read_text()[-3000:])
        try:
            return requests.get(f"{self.url}/-/ready", timeout=1).status_code == 200
        except requests.ConnectionError:
            return False

    def wait_ready(self, timeout: float = 30):
        deadline = time.time() + timeout
        while not self.ready():
            if time.time() > deadline:
                raise AssertionError(f"prometheus {self.name} not ready in {timeout}s:\n"
                                     + self.log.read_text()[-3000:])
            time.sleep(0.1)

    def _api(self, path: str, **params):
        r = requests.get(f"{self.url}{path}", params=params, timeout=10)
        body = r.json()
        assert r.status_code == 200 and body["status"] == "success", f"{path} {params}\n{body}"
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict]:
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        return self._api("/api/v1/query", **params)["result"]

    def scalar(self, expr: str, at: float | None = None) -> float | None:
        """The value of a one-element instant vector, or None when it is empty."""
        result = self.query(expr, at)
        if not result:
            return None
        assert len(result) == 1, f"{expr}: {result}"
        return float(result[0]["value"][1])

    def num_series(self) -> int:
        """Series in the head block (`/api/v1/status/tsdb`, headStats.numSeries)."""
        return int(self._api("/api/v1/status/tsdb")["headStats"]["numSeries"])

    def series(self, match: str = '{__name__=~".+"}', start: float | None = None) -> set[tuple]:
        """Every series matching `match` (since `start`, default the last hour) as sorted
        (label, value) tuples."""
        params = {"match[]": match, "start": f"{start if start is not None else time.time() - 3600:.3f}",
                  "end": f"{time.time() + 60:.3f}"}
        return {tuple(sorted(s.items())) for s in self._api("/api/v1/series", **params)}

    def latest(self, match: str = '{__name__=~".+"}', window: str = "2m") -> dict[tuple, float]:
        """Each matching series' latest sample time (Unix seconds) within `window`: a range
        selector keeps the metric names and the samples' own timestamps (`timestamp()` would
        drop the names)."""
        return {_series_key(r["metric"]): max(float(t) for t, _ in r["values"])
                for r in self.query(f"{match}[{window}]") if r["values"]}

    def points(self, match: str = '{__name__=~".+"}', window: str = "10m") -> int:
        """How many samples the matching series hold within `window` (counted here:
        `count_over_time` drops the names, and series differing only by name collide)."""
        return sum(len(r["values"]) for r in self.query(f"{match}[{window}]"))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)  # a sender waits out its remote-write flush deadline (1m)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._stderr.close()


def _series_key(metric: dict) -> tuple:
    return tuple(sorted(metric.items()))


class Peers:
    """What one test starts (Prometheus servers, scrape targets, relays), stopped together,
    last started first."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.started: list = []

    def prometheus(self, name: str, **kw) -> Prometheus:
        return self._keep(Prometheus(self.tmp, name, **kw))

    def target(self, render: Callable[[], str]) -> ScrapeTarget:
        return self._keep(ScrapeTarget(render))

    def relay(self) -> Relay:
        return self._keep(Relay())

    def _keep(self, thing):
        self.started.append(thing)
        return thing

    def stop(self):
        errors = []
        for thing in reversed(self.started):
            try:
                thing.stop()
            except Exception as e:  # stop the rest, then say what failed
                errors.append(e)
        if errors:
            raise errors[0]
