"""Connections cannot pin frugal: slow headers, idle keep-alive connections and stalled
bodies are closed by their deadlines; at the connection cap new connections are closed at
once while the admin port still answers; HTTP/2 streams per connection are capped.

Raw sockets throughout: the point is what a client that does not play along sees."""

from __future__ import annotations

import random
import select
import socket
import struct
import time

import requests

import payloads
from conftest import policy_for, wait_for
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

PB = {"Content-Type": "application/x-protobuf"}


def connections(header="1s", request="2s", idle="3s", max_=200, admin_max=8, streams=4) -> str:
    return (f"listen:\n  connections: {{max: {max_}, admin_max: {admin_max}, header_timeout: {header}, "
            f"request_timeout: {request}, idle_timeout: {idle}, max_streams: {streams}}}\n")


def connect(addr: str) -> socket.socket:
    host, port = addr.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=5)
    s.setblocking(False)
    return s


def closed(s: socket.socket) -> bool:
    """Whether the peer has closed `s` (reads what is there; EOF or reset means closed)."""
    try:
        while True:
            data = s.recv(65536)
            if not data:
                return True
    except BlockingIOError:
        return False
    except (ConnectionResetError, BrokenPipeError):
        return True


def wait_closed(socks: list[socket.socket], timeout: float, trickle: list[bytes] | None = None,
                every: float = 0.25, since: float | None = None) -> dict[int, float]:
    """Waits until every socket is closed by the peer (within `timeout`), sending the next
    byte of its `trickle` every `every` seconds meanwhile. Returns when each one closed, in
    seconds from `since` (a `time.monotonic()`; default: the call)."""
    start = time.monotonic() if since is None else since
    done: dict[int, float] = {}
    sent = 0
    next_byte = start + every
    while len(done) < len(socks):
        now = time.monotonic()
        assert now - start < timeout, f"{len(socks) - len(done)} of {len(socks)} still open after {timeout}s"
        if trickle and now >= next_byte:
            for i, s in enumerate(socks):
                if i not in done and sent < len(trickle[i]):
                    try:
                        s.send(trickle[i][sent:sent + 1])
                    except (BrokenPipeError, ConnectionResetError):
                        done[i] = now - start
            sent += 1
            next_byte += every
        readable, _, _ = select.select([s for i, s in enumerate(socks) if i not in done], [], [], 0.05)
        for s in readable:
            i = socks.index(s)
            if closed(s):
                done[i] = time.monotonic() - start
    return done


def test_slow_headers_are_closed_at_the_header_timeout(standin, frugal_factory):
    f = frugal_factory(policy_for(standin.url, extra=connections(header="2s")))
    # On OTLP/HTTP, 80 trickle an HTTP/1.1 request and 10 the HTTP/2 preface (which hyper
    # reads before it knows the version); on OTLP/gRPC, 10 the preface: a byte every
    # 250 ms, so 8 bytes arrive before the deadline.
    h1 = b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
    h2 = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    socks = [connect(f.http) for _ in range(90)] + [connect(f.grpc) for _ in range(10)]
    t = wait_closed(socks, timeout=6, trickle=[h1] * 80 + [h2] * 20)
    slowest, fastest = max(t.values()), min(t.values())
    print(f"100 slow-header connections closed after {fastest:.2f}s to {slowest:.2f}s (header_timeout 2s)")
    assert 1.8 <= fastest and slowest <= 3.0, (fastest, slowest)
    wait_for(lambda: f.metric("frugal_connections_open", port="http") == 0
             and f.metric("frugal_connections_open", port="grpc") == 0, what="no connection open")
    # The port still serves.
    body = encode_spans(payloads.spans(random.Random(1), 3)).SerializeToString()
    assert requests.post(f"{f.http_url}/v1/traces", data=body, headers=PB, timeout=10).status_code == 200


def test_idle_and_stalled_connections_are_closed_by_their_deadlines(standin, frugal_factory):
    f = frugal_factory(policy_for(standin.url, extra=connections(header="1s", request="2s", idle="3s")))
    # Idle keep-alive: one request answered, then nothing. Closed at the idle timeout, not
    # the header timeout.
    idle = [connect(f.http), connect(f.admin)]
    start = time.monotonic()
    idle[0].send(b"GET /v1/traces HTTP/1.1\r\nHost: x\r\n\r\n")
    idle[1].send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    # A stalled body: 15 MiB announced, 1 KiB sent.
    stalled = connect(f.http)
    stalled.send(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                 b"Content-Length: 15728640\r\n\r\n" + b"\x0a" * 1024)
    answer = b""
    sent = time.monotonic()
    while b"\r\n\r\n" not in answer and time.monotonic() - sent < 5:
        select.select([stalled], [], [], 0.1)
        try:
            answer += stalled.recv(65536)
        except BlockingIOError:
            pass
    stalled_after = time.monotonic() - sent
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    t = wait_closed([stalled], timeout=2)
    print(f"stalled body answered 408 after {stalled_after:.2f}s and closed {t[0]:.2f}s later (request_timeout 2s)")
    assert 1.8 <= stalled_after <= 3.0
    t = wait_closed(idle, timeout=5, since=start)
    print(f"idle keep-alive connections (OTLP/HTTP, admin) closed after {min(t.values()):.2f}s to "
          f"{max(t.values()):.2f}s (idle_timeout 3s, header_timeout 1s)")
    assert all(2.7 <= v <= 4.0 for v in t.values()), t


def test_at_the_cap_new_connections_are_closed_while_admin_answers(standin, frugal_factory):
    f = frugal_factory(policy_for(standin.url, extra=connections(header="30s", idle="30s", max_=20)))
    held = [connect(f.http) for _ in range(20)] + [connect(f.grpc) for _ in range(20)]
    wait_for(lambda: f.metric("frugal_connections_open", port="http") == 20
             and f.metric("frugal_connections_open", port="grpc") == 20, what="40 connections open")
    over = [connect(f.http) for _ in range(10)] + [connect(f.grpc) for _ in range(10)]
    t = wait_closed(over, timeout=2)
    print(f"at the cap, 20 new connections closed within {max(t.values()) * 1000:.0f} ms")
    for _ in range(5):
        start = time.monotonic()
        assert f.readyz() == 200
        took = time.monotonic() - start
        assert took < 1.0, took
    print(f"/readyz answered in {took * 1000:.1f} ms with both OTLP ports at their cap")
    assert f.metric("frugal_connections_refused_total", port="http") == 10
    assert f.metric("frugal_connections_refused_total", port="grpc") == 10
    assert any("connection cap reached" in line for line in f.log)
    for s in held:
        s.close()
    wait_for(lambda: f.metric("frugal_connections_open", port="http") == 0, what="the held connections gone")
    body = encode_spans(payloads.spans(random.Random(2), 3)).SerializeToString()
    r = requests.post(f"{f.http_url}/v1/traces", data=body, headers=PB, timeout=10)
    assert r.status_code == 200, r.text


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def literal(name: bytes, value: bytes) -> bytes:
    """An HPACK literal header field without indexing (short names and values)."""
    return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value


def read_frames(s: socket.socket, until, timeout: float) -> list[tuple[int, int, int, bytes]]:
    """HTTP/2 frames read from `s` until `until(frames)` holds."""
    buf, frames = b"", []
    deadline = time.monotonic() + timeout
    while not until(frames):
        assert time.monotonic() < deadline, f"frames so far: {[(k, st) for k, _, st, _ in frames]}"
        select.select([s], [], [], 0.1)
        try:
            buf += s.recv(65536)
        except BlockingIOError:
            continue
        while len(buf) >= 9:
            n = int.from_bytes(buf[:3], "big")
            if len(buf) < 9 + n:
                break
            frames.append((buf[3], buf[4], int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF, buf[9:9 + n]))
            buf = buf[9 + n:]
    return frames


def test_http2_streams_per_connection_are_capped(standin, frugal_factory):
    f = frugal_factory(policy_for(standin.url, extra=connections(request="2s", streams=4)))
    s = connect(f.http)
    s.send(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0))
    settings = read_frames(s, lambda fr: any(k == 4 and fl == 0 for k, fl, _, _ in fr), 5)
    advertised = dict(struct.unpack(">HI", p[i:i + 6]) for k, fl, _, p in settings if k == 4 and fl == 0
                      for i in range(0, len(p), 6))
    assert advertised.get(3) == 4, advertised  # SETTINGS_MAX_CONCURRENT_STREAMS
    s.send(frame(4, 1, 0))  # ack
    headers = (literal(b":method", b"POST") + literal(b":scheme", b"http") + literal(b":path", b"/v1/traces")
               + literal(b":authority", b"x") + literal(b"content-type", b"application/x-protobuf"))
    # Six requests whose bodies never come: two past the cap are refused at once, the four
    # others answered 408 at the request timeout.
    ids = [1, 3, 5, 7, 9, 11]
    start = time.monotonic()
    s.send(b"".join(frame(1, 0x4, i, headers) for i in ids))
    refused = read_frames(s, lambda fr: sum(k == 3 for k, _, _, _ in fr) >= 2, 2)
    assert sorted(st for k, _, st, p in refused if k == 3 and p == struct.pack(">I", 7)) == [9, 11]
    # Each answer's body (a google.rpc.Status) says why; ":status 408" itself is
    # Huffman-coded.
    def why(fr):
        return {st for k, _, st, p in fr if k == 0 and b"did not arrive within 2s" in p}
    answered = read_frames(s, lambda fr: len(why(fr)) >= 4, 5)
    took = time.monotonic() - start
    assert why(answered) == {1, 3, 5, 7}
    print(f"h2c: streams 5 and 6 refused at once, the 4 stalled ones answered 408 after {took:.2f}s")
    assert 1.8 <= took <= 3.5
