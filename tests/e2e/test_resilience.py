"""What frugal promises under failure: usage survives `kill -9`, nothing a client was told
was accepted is lost while upstream is down (clients hear 503 with Retry-After), and
SIGTERM drains before exiting."""

from __future__ import annotations

import random
import signal
import threading
import time

import requests
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

import payloads
from conftest import policy_for, wait_for
from standin import tempo_size

FLUSH_INTERVAL = 0.2  # seconds, as in policy_for
GRACE_PERIOD = 25.0  # seconds: src/app.rs GRACE_PERIOD
PB = {"Content-Type": "application/x-protobuf"}


def kind_of_error(e: BaseException) -> str:
    """A connection error, by what happened: refused (nothing listening) or reset (the
    connection broke)."""
    while e is not None:
        if isinstance(e, ConnectionRefusedError):
            return "refused"
        e = e.__cause__ or e.__context__ or (e.args[0] if e.args and isinstance(e.args[0], BaseException) else None)
    return "reset"


class Outcome:
    def __init__(self, kind: str, ids: set[bytes], billed: int):
        self.at = time.time()
        self.kind = kind  # ok, 503 (with Retry-After), status <n>, refused, reset, timeout
        self.ids = ids
        self.billed = billed


class Load:
    """Client threads posting OTLP/HTTP protobuf (the SDK's encoding of SDK spans) through
    frugal until stopped, recording each request's outcome by kind."""

    def __init__(self, url: str, threads: int = 4, seed: int = 0):
        self.url = url
        self.outcomes: list[Outcome] = []
        self.stop_flag = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, args=(seed + i,), daemon=True) for i in range(threads)]
        for t in self.threads:
            t.start()

    def run(self, seed: int):
        rng = random.Random(seed)
        session = requests.Session()
        while not self.stop_flag.is_set():
            msg = encode_spans(payloads.spans(rng, rng.randint(20, 60)))
            ids = {s.span_id for rs in msg.resource_spans for ss in rs.scope_spans for s in ss.spans}
            try:
                r = session.post(f"{self.url}/v1/traces", data=msg.SerializeToString(), headers=PB, timeout=10)
                if r.status_code == 200:
                    kind = "ok"
                elif r.status_code == 503 and r.headers.get("Retry-After", "").isdigit():
                    kind = "503"
                else:
                    kind = f"status {r.status_code}"
            except requests.Timeout:
                kind = "timeout"
            except requests.ConnectionError as e:
                kind = kind_of_error(e)
                session = requests.Session()
            with self.lock:
                self.outcomes.append(Outcome(kind, ids, tempo_size(msg)))

    def stop(self):
        self.stop_flag.set()
        for t in self.threads:
            t.join(30)
        assert not any(t.is_alive() for t in self.threads)

    def of(self, kind: str | None = None, since: float = 0.0, until: float = float("inf")) -> list[Outcome]:
        with self.lock:
            return [o for o in self.outcomes if (kind is None or o.kind == kind) and since <= o.at < until]

    def accepted_ids(self) -> set[bytes]:
        return set().union(*(o.ids for o in self.of("ok")))


def received_ids(standin) -> set[bytes]:
    return {s.span_id for r in standin.of("traces") for rs in r.message.resource_spans
            for ss in rs.scope_spans for s in ss.spans}


def test_usage_survives_kill_9_under_load(standin, frugal_factory, tmp_path):
    """After `kill -9` under load, usage resumes at no less than what upstream acknowledged,
    less at most one flush interval of metering per kill, and at no more than what reached
    upstream plus the requests that were in flight when it died."""
    data = tmp_path / "data"
    f = frugal_factory(policy_for(standin.url), data_dir=data)
    allowed_loss = 0  # each kill may lose at most one flush interval of metering
    in_flight = 0  # reserved and counted, but perhaps never delivered
    for cycle in range(5):
        load = Load(f.http_url, threads=3, seed=cycle * 10)
        began = time.time()
        # Traffic acknowledged for several flush intervals, so usage is on disk to lose.
        wait_for(lambda: len(load.of("ok", since=began + 4 * FLUSH_INTERVAL)) >= 3, timeout=30,
                 what="traffic acknowledged")
        f.kill9()
        killed_at = time.time()
        load.stop()
        not_ok = [o for o in load.of() if o.kind != "ok"]
        assert {o.kind for o in not_ok} <= {"refused", "reset"}, "the only failures are the kill's"
        in_flight += sum(o.billed for o in not_ok)
        acked = standin.of("traces")
        total = sum(r.billed for r in acked)
        allowed_loss += sum(r.billed for r in acked if r.at > killed_at - FLUSH_INTERVAL - 0.05)
        assert total > 0
        f.start()
        used = f.used("traces")
        # Never lower than what upstream acknowledged before the kill, less at most one
        # flush interval of metering per kill...
        assert used >= total - allowed_loss, f"cycle {cycle}: used {used} < acknowledged {total} - {allowed_loss}"
        # ...and never more than every attempt that reached upstream plus what was in flight.
        reached = sum(r.billed for r in standin.attempts_of("traces"))
        assert used <= reached + in_flight, f"cycle {cycle}: used {used} > reached {reached} + {in_flight}"
        assert "usage store open" in " ".join(f.log)


def test_nothing_accepted_is_lost_while_upstream_is_down(standin, frugal_factory):
    """While upstream is down, clients hear 503 with Retry-After (never a reset, a hang or
    another status), everything they were told was accepted reaches upstream, and when it
    is back data flows again; usage stays between what upstream received and that plus
    what was in flight when it went down."""
    f = frugal_factory(policy_for(standin.url))
    load = Load(f.http_url, threads=4, seed=100)
    wait_for(lambda: len(load.of("ok")) >= 8, timeout=30, what="traffic acknowledged")
    standin.stop()
    down_at = time.time()
    wait_for(lambda: len(load.of("503", since=down_at)) >= 8, timeout=60, what="clients told to retry")
    standin.start()
    up_at = time.time()
    wait_for(lambda: len(load.of("ok", since=up_at)) >= 8, timeout=60, what="traffic acknowledged again")
    load.stop()

    accepted = load.accepted_ids()
    lost = accepted - received_ids(standin)
    assert not lost, f"{len(lost)} spans acknowledged to the client never reached upstream"
    during = load.of(since=down_at, until=up_at)
    kinds = {o.kind for o in during}
    assert kinds <= {"503", "ok"}, f"during the outage clients heard {kinds}"
    assert len(load.of("503")) == len(load.of("503", since=down_at)), "503 only because of the outage"
    unavailable = f.metric("frugal_upstream_unavailable_total", signal="traces")
    assert unavailable == len(load.of("503")), "each 503 is an upstream outage frugal reported"
    # An attempt on a connection that broke as upstream went down may have arrived: at most
    # one per connection frugal had open, one per client thread.
    in_flight = len(load.threads) * max(o.billed for o in load.of())
    reached = sum(r.billed for r in standin.attempts_of("traces"))
    used = f.used("traces")
    assert reached <= used <= reached + in_flight


def refused(url: str) -> bool:
    try:
        requests.post(f"{url}/v1/traces", data=b"", headers=PB, timeout=2)
    except requests.ConnectionError as e:
        return kind_of_error(e) == "refused"
    return False


def test_sigterm_drains_in_flight_requests_unready_and_flushes(standin, frugal_factory, tmp_path):
    """On SIGTERM frugal turns unready (/readyz 503) and stops accepting connections while
    the requests in flight finish with 200 (upstream acknowledged them); it exits 0 within
    the 25 s grace period with every counter flushed."""
    data = tmp_path / "data"
    f = frugal_factory(policy_for(standin.url, timeout="10s", max_elapsed="15s"), data_dir=data)
    assert f.readyz() == 200
    standin.hold()  # requests are in flight, held upstream, when the signal comes
    results = []

    def send(i):
        body = encode_spans(payloads.spans(random.Random(i), 10)).SerializeToString()
        r = requests.post(f"{f.http_url}/v1/traces", data=body, headers=PB, timeout=30)
        results.append(r.status_code)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    wait_for(lambda: standin.busy() == 6, timeout=15, what="six requests in flight at upstream")
    f.proc.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    wait_for(lambda: f.readyz() == 503, timeout=5, interval=0.02, what="/readyz 503 while draining")
    wait_for(lambda: refused(f.http_url), timeout=5, what="new connections refused while draining")
    assert f.proc.poll() is None and standin.busy() == 6, "still draining what is in flight"
    assert f.readyz() == 503
    standin.release()
    code = f.proc.wait(GRACE_PERIOD + 5)
    took = time.monotonic() - signalled
    for t in threads:
        t.join(10)
    assert code == 0
    assert took <= GRACE_PERIOD, f"exited {took:.1f}s after SIGTERM"
    assert sorted(results) == [200] * 6, results
    assert len(standin.of("traces")) == 6
    billed = sum(r.billed for r in standin.of("traces"))
    f.start()
    assert f.used("traces") == billed, "SIGTERM flushed every counter"
    assert f.readyz() == 200
