"""What frugal promises under failure: usage survives `kill -9`, nothing a client was told
was accepted is lost while upstream is down, and SIGTERM drains before exiting."""

from __future__ import annotations

import random
import threading
import time

import requests
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace.export import SpanExportResult

import payloads
from conftest import policy_for, wait_for

FLUSH_INTERVAL = 0.2  # seconds, as in policy_for


class Load:
    """Client threads exporting SDK spans through frugal until stopped, remembering which
    batches the client was told were accepted."""

    def __init__(self, url: str, threads: int = 4, seed: int = 0):
        self.url = url
        self.accepted: list[set[bytes]] = []
        self.failed = 0
        self.stop_flag = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, args=(seed + i,), daemon=True) for i in range(threads)]
        for t in self.threads:
            t.start()

    def run(self, seed: int):
        rng = random.Random(seed)
        exporter = OTLPSpanExporter(endpoint=f"{self.url}/v1/traces", timeout=10)
        while not self.stop_flag.is_set():
            batch = payloads.spans(rng, rng.randint(20, 60))
            ids = {s.context.span_id.to_bytes(8, "big") for s in batch}
            try:
                ok = exporter.export(batch) == SpanExportResult.SUCCESS
            except Exception:  # noqa: BLE001 - a refused connection during restarts
                ok = False
            with self.lock:
                if ok:
                    self.accepted.append(ids)
                else:
                    self.failed += 1

    def stop(self):
        self.stop_flag.set()
        for t in self.threads:
            t.join(30)

    def accepted_ids(self) -> set[bytes]:
        with self.lock:
            return set().union(*self.accepted) if self.accepted else set()


def received_ids(standin) -> set[bytes]:
    return {s.span_id for r in standin.of("traces") for rs in r.message.resource_spans
            for ss in rs.scope_spans for s in ss.spans}


def test_usage_survives_kill_9_under_load(standin, frugal_factory, tmp_path):
    data = tmp_path / "data"
    f = frugal_factory(policy_for(standin.url), data_dir=data)
    allowed_loss = 0  # each kill may lose at most one flush interval of metering
    for cycle in range(5):
        load = Load(f.http_url, threads=3, seed=cycle * 10)
        time.sleep(1.5)
        f.kill9()
        killed_at = time.time()
        load.stop()
        acked = standin.of("traces")
        total = sum(r.billed for r in acked)
        allowed_loss += sum(r.billed for r in acked if r.at > killed_at - FLUSH_INTERVAL - 0.05)
        assert total > 0
        f.start()
        used = f.used("traces")
        # Never lower than what upstream acknowledged before the kill, less at most one
        # flush interval of metering per kill.
        assert used >= total - allowed_loss, f"cycle {cycle}: used {used} < acknowledged {total} - {allowed_loss}"
        assert "usage store open" in " ".join(f.log)


def test_nothing_accepted_is_lost_while_upstream_is_down(standin, frugal_factory):
    f = frugal_factory(policy_for(standin.url))
    load = Load(f.http_url, threads=4, seed=100)
    time.sleep(3)
    standin.stop()
    down_at = time.time()
    time.sleep(30)
    standin.start()
    time.sleep(5)
    load.stop()
    accepted = load.accepted_ids()
    arrived = received_ids(standin)
    lost = accepted - arrived
    assert not lost, f"{len(lost)} spans acknowledged to the client never reached upstream"
    assert load.failed > 0, "the outage was visible to the client (503s it can retry)"
    assert time.time() - down_at >= 30
    metrics = f.metrics()
    assert 'frugal_upstream_unavailable_total{signal="traces"}' in metrics
    # The outage is over: data flows again.
    n = len(standin.of("traces"))
    exporter = OTLPSpanExporter(endpoint=f"{f.http_url}/v1/traces")
    assert exporter.export(payloads.spans(random.Random(5), 10)) == SpanExportResult.SUCCESS
    assert len(standin.of("traces")) == n + 1


def test_sigterm_finishes_what_is_in_flight_and_flushes(standin, frugal_factory, tmp_path):
    data = tmp_path / "data"
    f = frugal_factory(policy_for(standin.url), data_dir=data)
    standin.delay = 1.5  # requests are in flight when the signal comes
    results = []

    def send(i):
        body = encode_spans(payloads.spans(random.Random(i), 10)).SerializeToString()
        r = requests.post(f"{f.http_url}/v1/traces", data=body,
                          headers={"Content-Type": "application/x-protobuf"}, timeout=20)
        results.append(r.status_code)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    code = f.terminate()
    for t in threads:
        t.join(20)
    assert code == 0
    assert results == [200] * 6, results
    assert len(standin.of("traces")) == 6
    billed = sum(r.billed for r in standin.of("traces"))
    standin.delay = 0
    f.start()
    assert f.used("traces") == billed, "SIGTERM flushed every counter"
    wait_for(lambda: requests.get(f"{f.admin_url}/readyz", timeout=2).status_code == 200, what="ready")
