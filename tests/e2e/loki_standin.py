"""A Loki stand-in: receives pushes on `/loki/api/v1/push` as Grafana Cloud's Loki would,
and decodes them independently of frugal's Rust code: protobuf with classes compiled at
test time (grpc_tools.protoc) from loki_push.proto, Loki's own field numbers; the Snappy
block with the pure-Python decoder in promstack.py; JSON as Loki's push API defines it.

It records every entry (the stream's labels, the line, structured metadata) of the pushes
it accepted (204), and counts their bytes as Loki bills them: per entry the line plus each
structured-metadata name and value, in UTF-8 bytes (the stream's labels are not billed).
A push it cannot decode is answered 400 and recorded in `rejected`."""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import re
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from promstack import snappy_decode, snappy_encode  # noqa: F401 (snappy_encode: for tests)

PROTO = Path(__file__).with_name("loki_push.proto")
_compiled = None
_compile_lock = threading.Lock()


def loki_pb2():
    """The module protoc generates from loki_push.proto, compiled once per process into a
    temporary directory."""
    global _compiled
    with _compile_lock:
        if _compiled is None:
            import grpc_tools
            from grpc_tools import protoc

            out = tempfile.mkdtemp(prefix="loki-proto-")
            include = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
            rc = protoc.main(["protoc", f"-I{PROTO.parent}", f"-I{include}", f"--python_out={out}", PROTO.name])
            if rc != 0:
                raise RuntimeError(f"protoc failed ({rc}) on {PROTO}")
            path = os.path.join(out, "loki_push_pb2.py")
            spec = importlib.util.spec_from_file_location("loki_push_pb2", path)
            mod = importlib.util.module_from_spec(spec)
            sys.modules["loki_push_pb2"] = mod
            spec.loader.exec_module(mod)
            _compiled = mod
        return _compiled


# --- Loki's label syntax: {name="value", ...} ----------------------------------------------

_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*')


def parse_labels(text: str) -> dict[str, str]:
    """A stream selector's labels (`{app="web", level="info"}`), strictly: anything else is
    a ValueError."""
    s = text.strip()
    if not (s.startswith("{") and s.endswith("}")):
        raise ValueError(f"labels {text!r} are not {{...}}")
    body, out, pos = s[1:-1], {}, 0
    while pos < len(body):
        m = _LABEL.match(body, pos)
        if not m:
            raise ValueError(f"labels {text!r}: cannot parse at {body[pos:]!r}")
        out[m.group(1)] = re.sub(r"\\(.)", lambda e: {"n": "\n"}.get(e.group(1), e.group(1)), m.group(2))
        pos = m.end()
        if pos < len(body):
            if body[pos] != ",":
                raise ValueError(f"labels {text!r}: expected ',' at {body[pos:]!r}")
            pos += 1
    return out


def format_labels(labels: dict[str, str]) -> str:
    esc = lambda v: v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")  # noqa: E731
    return "{" + ", ".join(f'{k}="{esc(v)}"' for k, v in labels.items()) + "}"


# --- what arrived ---------------------------------------------------------------------------

@dataclass
class Entry:
    labels: dict[str, str]
    timestamp_ns: int
    line: str
    metadata: list[tuple[str, str]] = field(default_factory=list)

    @property
    def meta(self) -> dict[str, str]:
        return dict(self.metadata)

    @property
    def billed(self) -> int:
        """Loki's bytes of the entry: line plus structured metadata names and values."""
        return len(self.line.encode()) + sum(len(n.encode()) + len(v.encode()) for n, v in self.metadata)


@dataclass
class Push:
    at: float
    headers: dict[str, str]
    entries: list[Entry]
    stream_labels: list[str]  # each stream's labels as sent (the protobuf's text)

    @property
    def billed(self) -> int:
        return sum(e.billed for e in self.entries)


def decode_protobuf(body: bytes) -> tuple[list[Entry], list[str]]:
    req = loki_pb2().PushRequest()
    req.ParseFromString(body)
    entries, texts = [], []
    for s in req.streams:
        labels = parse_labels(s.labels)
        texts.append(s.labels)
        for e in s.entries:
            ts = e.timestamp.seconds * 1_000_000_000 + e.timestamp.nanos
            entries.append(Entry(labels, ts, e.line, [(p.name, p.value) for p in e.structuredMetadata]))
    return entries, texts


def decode_json(body: bytes) -> tuple[list[Entry], list[str]]:
    doc = json.loads(body)
    entries, texts = [], []
    for s in doc["streams"]:
        labels = {str(k): str(v) for k, v in s["stream"].items()}
        texts.append(format_labels(labels))
        for v in s["values"]:
            if not isinstance(v, list) or len(v) not in (2, 3):
                raise ValueError(f"a value is [ts, line] or [ts, line, metadata]: {v!r}")
            meta = list(v[2].items()) if len(v) == 3 else []
            entries.append(Entry(labels, int(v[0]), str(v[1]), [(str(a), str(b)) for a, b in meta]))
    return entries, texts


def encode_protobuf(streams: list[tuple[str, list[tuple[int, str, list[tuple[str, str]]]]]]) -> bytes:
    """A Loki push (protobuf, Snappy block) from (labels text, [(ts ns, line, metadata)])."""
    pb = loki_pb2()
    req = pb.PushRequest()
    for labels, entries in streams:
        s = req.streams.add(labels=labels)
        for ts, line, meta in entries:
            e = s.entries.add(line=line)
            e.timestamp.seconds, e.timestamp.nanos = divmod(ts, 1_000_000_000)
            for n, v in meta:
                e.structuredMetadata.add(name=n, value=v)
    return snappy_encode(req.SerializeToString())


# --- the server -----------------------------------------------------------------------------

class LokiStandIn:
    """A threaded HTTP server standing in for Loki's push endpoint. `pushes` holds the
    accepted ones (204), `rejected` (status, reason, headers) the ones it could not decode."""

    PATH = "/loki/api/v1/push"

    def __init__(self, port: int = 0):
        self.pushes: list[Push] = []
        self.rejected: list[tuple[int, str, dict]] = []
        self.lock = threading.Lock()
        self.in_progress = 0
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def reply(self, status: int, text: str = ""):
                body = text.encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                if body:
                    self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.end_headers()
                if body:
                    self.wfile.write(body)

            def do_POST(self):
                with standin.lock:
                    standin.in_progress += 1
                try:
                    self.handle_push()
                finally:
                    with standin.lock:
                        standin.in_progress -= 1

            def handle_push(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                if self.path.split("?")[0] != LokiStandIn.PATH:
                    self.reply(404, "not a push path")
                    return
                ctype = headers.get("content-type", "").split(";")[0].strip().lower()
                try:
                    if headers.get("content-encoding", "").lower() == "gzip":
                        body = gzip.decompress(body)
                    if ctype == "application/json":
                        entries, texts = decode_json(body)
                    elif ctype in ("application/x-protobuf", ""):
                        entries, texts = decode_protobuf(snappy_decode(body))
                    else:
                        raise ValueError(f"unsupported Content-Type {ctype!r}")
                except Exception as e:  # noqa: BLE001 (whatever fails to decode is a 400)
                    with standin.lock:
                        standin.rejected.append((400, f"{type(e).__name__}: {e}", headers))
                    self.reply(400, f"stand-in could not decode the push: {e}")
                    return
                with standin.lock:
                    standin.pushes.append(Push(time.time(), headers, entries, texts))
                self.reply(204)

        class Server(ThreadingHTTPServer):
            allow_reuse_address = True
            daemon_threads = True

        self._server = Server(("127.0.0.1", port), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def push_url(self) -> str:
        return self.url + self.PATH

    def entries(self) -> list[Entry]:
        with self.lock:
            return [e for p in self.pushes for e in p.entries]

    def lines(self) -> list[str]:
        return [e.line for e in self.entries()]

    @property
    def bytes(self) -> int:
        """Loki's billed bytes of everything accepted."""
        with self.lock:
            return sum(p.billed for p in self.pushes)

    def idle(self, timeout: float = 5.0) -> None:
        deadline = time.time() + timeout
        while True:
            with self.lock:
                if not self.in_progress:
                    return
            if time.time() > deadline:
                raise AssertionError("the Loki stand-in is still handling requests")
            time.sleep(0.01)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, default=13100)
    args = ap.parse_args()
    s = LokiStandIn(args.port)
    print(f"Loki stand-in listening on {s.push_url}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        s.stop()
