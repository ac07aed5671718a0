"""An upstream stand-in: receives what frugal forwards, as Grafana Cloud's OTLP gateway
would, and decodes it with the official `opentelemetry-proto` classes.

It also counts, independently of frugal's Rust code, what Grafana would bill for what
arrived: Tempo's size of a trace request (its canonical protobuf size, in which absent
resource/scope/status/attribute-value messages and empty IDs still cost two bytes each)
and Loki's bytes for a log request (line plus structured metadata).

Tests can make it fail on purpose (a status code, a held or missing answer) or take it down
and back up; it records every request that reached it and what it answered.
"""

from __future__ import annotations

import base64
import gzip
import json
import re
import select
import socket
import threading
import time
import zlib
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

REQUEST_TYPES = {
    "traces": trace_service_pb2.ExportTraceServiceRequest,
    "logs": logs_service_pb2.ExportLogsServiceRequest,
    "metrics": metrics_service_pb2.ExportMetricsServiceRequest,
}
RESPONSE_TYPES = {
    "traces": trace_service_pb2.ExportTraceServiceResponse,
    "logs": logs_service_pb2.ExportLogsServiceResponse,
    "metrics": metrics_service_pb2.ExportMetricsServiceResponse,
}


# --- Tempo: trace bytes -------------------------------------------------------------------

def _fill_values(kvs) -> None:
    for kv in kvs:
        if not kv.HasField("value"):
            kv.value.SetInParent()
        _fill_any(kv.value)


def _fill_any(v) -> None:
    which = v.WhichOneof("value")
    if which == "kvlist_value":
        _fill_values(v.kvlist_value.values)
    elif which == "array_value":
        for x in v.array_value.values:
            _fill_any(x)


def canonical_traces(req):
    """A copy of a trace request in pdata's canonical form (absent resource, scope, status
    and attribute-value messages made present), and its count of empty IDs."""
    c = trace_service_pb2.ExportTraceServiceRequest()
    c.CopyFrom(req)
    empty_ids = 0
    for rs in c.resource_spans:
        rs.resource.SetInParent()
        _fill_values(rs.resource.attributes)
        for ss in rs.scope_spans:
            ss.scope.SetInParent()
            _fill_values(ss.scope.attributes)
            for span in ss.spans:
                span.status.SetInParent()
                _fill_values(span.attributes)
                for e in span.events:
                    _fill_values(e.attributes)
                for link in span.links:
                    _fill_values(link.attributes)
                    empty_ids += (len(link.trace_id) == 0) + (len(link.span_id) == 0)
                empty_ids += (len(span.trace_id) == 0) + (len(span.span_id) == 0) + (len(span.parent_span_id) == 0)
    return c, empty_ids


def tempo_size(req) -> int:
    """Tempo's TracesSize of a request: pdata's canonical encoding, empty IDs included."""
    c, empty_ids = canonical_traces(req)
    return len(c.SerializeToString()) + 2 * empty_ids


def span_count(req) -> int:
    return sum(len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans)


# --- Loki: log bytes ----------------------------------------------------------------------

INDEX_LABELS = {
    "service.name", "service.namespace", "service.instance.id", "deployment.environment",
    "deployment.environment.name", "cloud.region", "cloud.availability_zone", "k8s.cluster.name",
    "k8s.namespace.name", "k8s.pod.name", "k8s.container.name", "container.name",
    "k8s.replicaset.name", "k8s.deployment.name", "k8s.statefulset.name", "k8s.daemonset.name",
    "k8s.cronjob.name", "k8s.job.name",
}


def go_float(f: float) -> str:
    """Go's strconv formatting as pdata and encoding/json use it."""
    if f != f:
        return "json: unsupported value: NaN"
    if f in (float("inf"), float("-inf")):
        return "json: unsupported value: " + ("+Inf" if f > 0 else "-Inf")
    a = abs(f)
    r = repr(f)
    if a != 0 and (a < 1e-6 or a >= 1e21):
        mant, exp = (r.split("e") if "e" in r else (format(Decimal(r), "e").split("e")))
        if mant.endswith(".0"):
            mant = mant[:-2]
        sign, digits = exp[0], exp[1:].lstrip("0") or "0"
        if sign == "-":
            return f"{mant}e-{digits}"
        return f"{mant}e+{digits.zfill(2)}"
    s = format(Decimal(r), "f")
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return s


def _go_json_string(s: str) -> str:
    out = json.dumps(s, ensure_ascii=False)
    return (out.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
               .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


class _Unsupported(Exception):
    pass


def _go_json(v) -> str:
    which = v.WhichOneof("value") if v is not None else None
    if which is None:
        return "null"
    if which == "string_value":
        return _go_json_string(v.string_value)
    if which == "bool_value":
        return "true" if v.bool_value else "false"
    if which == "int_value":
        return str(v.int_value)
    if which == "double_value":
        d = v.double_value
        if d != d or d in (float("inf"), float("-inf")):
            raise _Unsupported()
        return go_float(d)
    if which == "bytes_value":
        return _go_json_string(base64.b64encode(v.bytes_value).decode())
    if which == "array_value":
        return "[" + ",".join(_go_json(x) for x in v.array_value.values) + "]"
    if which == "kvlist_value":
        m = {}
        for kv in v.kvlist_value.values:
            m[kv.key] = kv.value if kv.HasField("value") else None
        return "{" + ",".join(_go_json_string(k) + ":" + _go_json(m[k]) for k in sorted(m)) + "}"
    return "null"


def as_string(v) -> str:
    """pdata's Value.AsString."""
    which = v.WhichOneof("value") if v is not None else None
    if which is None:
        return ""
    if which == "string_value":
        return v.string_value
    if which == "bool_value":
        return "true" if v.bool_value else "false"
    if which == "int_value":
        return str(v.int_value)
    if which == "double_value":
        return go_float(v.double_value)
    if which == "bytes_value":
        return base64.b64encode(v.bytes_value).decode()
    try:
        return _go_json(v)
    except _Unsupported:
        return ""


def normalize_label(name: str) -> str:
    out = re.sub(r"[^a-zA-Z0-9_]", "_", name)
    if out[:1].isdigit():
        out = "key_" + out
    elif out.startswith("_") and not out.startswith("__"):
        out = "key" + out
    return out


def _pair(name: str, value: str) -> int:
    if name == "detected_level":
        return 0
    return len(name.encode()) + len(value.encode())


def _attr_bytes(name: str, value) -> int:
    if value is not None and value.WhichOneof("value") == "kvlist_value":
        return sum(_attr_bytes(normalize_label(f"{name}_{c.key}"), c.value if c.HasField("value") else None)
                   for c in value.kvlist_value.values)
    return _pair(name, as_string(value))


def _attrs_bytes(kvs) -> int:
    return sum(_attr_bytes(normalize_label(kv.key), kv.value if kv.HasField("value") else None) for kv in kvs)


def loki_bytes(req) -> int:
    """Loki's billed bytes of an OTLP log request."""
    n = 0
    for rl in req.resource_logs:
        n += _attrs_bytes([kv for kv in rl.resource.attributes if kv.key not in INDEX_LABELS])
        for sl in rl.scope_logs:
            n += _attrs_bytes(sl.scope.attributes)
            for name, value in (("scope_name", sl.scope.name), ("scope_version", sl.scope.version)):
                if value:
                    n += _pair(name, value)
            if sl.scope.dropped_attributes_count:
                n += _pair("scope_dropped_attributes_count", str(sl.scope.dropped_attributes_count))
            for r in sl.log_records:
                n += len(as_string(r.body if r.HasField("body") else None).encode())
                n += _attrs_bytes(r.attributes)
                if r.time_unix_nano and r.observed_time_unix_nano:
                    n += _pair("observed_timestamp", str(r.observed_time_unix_nano))
                if r.severity_number:
                    n += _pair("severity_number", str(r.severity_number))
                if r.severity_text:
                    n += _pair("severity_text", r.severity_text)
                if r.dropped_attributes_count:
                    n += _pair("dropped_attributes_count", str(r.dropped_attributes_count))
                if r.flags:
                    n += _pair("flags", str(r.flags))
                if r.trace_id:
                    n += _pair("trace_id", r.trace_id.hex())
                if r.span_id:
                    n += _pair("span_id", r.span_id.hex())
                if r.event_name:
                    n += _pair("event_name", r.event_name)
    return n


def record_count(req) -> int:
    return sum(len(sl.log_records) for rl in req.resource_logs for sl in rl.scope_logs)


def data_points(req) -> int:
    n = 0
    for rm in req.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                kind = m.WhichOneof("data")
                if kind:
                    n += len(getattr(m, kind).data_points)
    return n


# --- the server ---------------------------------------------------------------------------

class Received:
    """One request (an attempt, for frugal) as it reached the stand-in, and how it was
    answered: `status` is what the stand-in answered (None while unanswered) and `answered`
    whether that answer was written to the client at all (a request the stand-in held until
    the client gave up never was)."""

    def __init__(self, signal, body, message, headers):
        self.signal = signal
        self.body_len = len(body)
        self.message = message
        self.headers = headers
        self.at = time.time()
        self.status: int | None = None
        self.answered = False
        if message is None:
            self.items = self.billed = 0
        elif signal == "traces":
            self.items, self.billed = span_count(message), tempo_size(message)
        elif signal == "logs":
            self.items, self.billed = record_count(message), loki_bytes(message)
        else:
            self.items = self.billed = data_points(message)

    def __repr__(self):
        return (f"<{self.signal} {self.items} items {self.billed} billed: "
                f"{self.status if self.answered else 'never answered'}>")


class StandIn:
    """A threaded HTTP server standing in for Grafana Cloud's OTLP gateway.

    `received` holds the requests it accepted (200); `attempts` every request that reached
    it, whatever it answered. Failure modes, settable while it runs: `fail(status)` answers
    a status instead (with `Retry-After: 1` on 429 and 503); `hang = True` reads the request
    and never answers (until the client goes away); `hold()` keeps requests waiting until
    `release()`; `stop()` takes it down (refused connections) and `start()` brings it back
    on the same port."""

    def __init__(self, port: int = 0):
        self.received: list[Received] = []
        self.attempts: list[Received] = []
        self.lock = threading.Lock()
        self.fail_status: int | None = None
        self.fail_count: int = 0
        self.hang = False
        self.partial_rejected: int = 0
        self.in_progress = 0
        self.port = port
        self._gate = threading.Event()
        self._gate.set()
        self._stopping = threading.Event()
        self._connections: set = set()
        self._server = None
        self._thread = None
        self.start()

    def start(self) -> None:
        standin = self
        self._stopping.clear()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                super().setup()
                with standin.lock:
                    standin._connections.add(self.connection)

            def finish(self):
                with standin.lock:
                    standin._connections.discard(self.connection)
                try:
                    super().finish()
                except OSError:
                    pass

            def log_message(self, *args):
                pass

            def reply(self, rec, status, body=b"", headers=()):
                rec.status = status
                try:
                    self.send_response(status)
                    for k, v in headers:
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    if body:
                        self.wfile.write(body)
                    self.wfile.flush()
                    rec.answered = True
                except OSError:
                    self.close_connection = True

            def wait_for_client_to_leave(self):
                """Holds the request, unanswered, until the client closes the connection."""
                self.close_connection = True
                while not standin._stopping.is_set():
                    ready, _, _ = select.select([self.connection], [], [], 0.05)
                    if ready:
                        try:
                            if not self.connection.recv(1, socket.MSG_PEEK):
                                return
                        except OSError:
                            return

            def do_POST(self):
                signal = self.path.rstrip("/").rsplit("/", 1)[-1]
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                with standin.lock:
                    standin.in_progress += 1
                try:
                    self.handle_export(signal, body)
                finally:
                    with standin.lock:
                        standin.in_progress -= 1

            def handle_export(self, signal, body):
                msg = None
                if signal in REQUEST_TYPES:
                    enc = self.headers.get("Content-Encoding", "")
                    if enc == "gzip":
                        body = gzip.decompress(body)
                    elif enc == "deflate":
                        body = zlib.decompress(body)
                    msg = REQUEST_TYPES[signal]()
                    msg.ParseFromString(body)
                rec = Received(signal, body, msg, {k.lower(): v for k, v in self.headers.items()})
                with standin.lock:
                    standin.attempts.append(rec)
                    hang = standin.hang
                if hang:
                    self.wait_for_client_to_leave()
                    return
                standin._gate.wait(60)
                with standin.lock:
                    fail = standin.fail_status
                    if fail and standin.fail_count > 0:
                        standin.fail_count -= 1
                        if standin.fail_count == 0:
                            standin.fail_status = None
                if fail:
                    self.reply(rec, fail, headers=[("Retry-After", "1")] if fail in (429, 503) else [])
                    return
                if msg is None:
                    self.reply(rec, 404)
                    return
                with standin.lock:
                    standin.received.append(rec)
                    rejected = standin.partial_rejected
                resp = RESPONSE_TYPES[signal]()
                if rejected:
                    ps = resp.partial_success
                    setattr(ps, {"traces": "rejected_spans", "logs": "rejected_log_records",
                                 "metrics": "rejected_data_points"}[signal], rejected)
                    ps.error_message = "stand-in rejected some"
                self.reply(rec, 200, resp.SerializeToString(), [("Content-Type", "application/x-protobuf")])

        class Server(ThreadingHTTPServer):
            allow_reuse_address = True
            daemon_threads = True

        self._server = Server(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Goes down like a crashed server: the listener and every open connection close."""
        self._stopping.set()
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self.lock:
            conns = list(self._connections)
            self._connections.clear()
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
                c.close()
            except OSError:
                pass
        self._gate.set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def fail(self, status: int, times: int = 1_000_000) -> None:
        with self.lock:
            self.fail_status, self.fail_count = status, times

    def heal(self) -> None:
        with self.lock:
            self.fail_status, self.fail_count = None, 0
            self.hang = False

    def hold(self) -> None:
        """Requests arriving from now on wait, unanswered, until `release()`."""
        self._gate.clear()

    def release(self) -> None:
        self._gate.set()

    def busy(self) -> int:
        """Requests that have arrived and whose handling has not finished."""
        with self.lock:
            return self.in_progress

    def idle(self, timeout: float = 5.0) -> None:
        """Waits until every request that arrived has been handled (so how each was answered
        is final: a client may hear the answer before the stand-in notes it was written)."""
        deadline = time.time() + timeout
        while self.busy():
            if time.time() > deadline:
                raise AssertionError(f"the stand-in is still handling {self.busy()} requests")
            time.sleep(0.01)

    def of(self, signal: str) -> list[Received]:
        with self.lock:
            return [r for r in self.received if r.signal == signal]

    def attempts_of(self, signal: str) -> list[Received]:
        with self.lock:
            return [r for r in self.attempts if r.signal == signal]

    def clear(self) -> None:
        with self.lock:
            self.received.clear()
            self.attempts.clear()


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, default=14318)
    args = ap.parse_args()
    s = StandIn(args.port)
    print(f"stand-in listening on {s.url}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        s.stop()
