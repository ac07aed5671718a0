"""The dashboard and the alert rules against a real Prometheus (Debian's `prometheus`,
started here) scraping frugal while it paces, drops, is refused and loses its upstream:
every expression in dashboards/frugal-quota-burn.json and dashboards/frugal-alerts.yaml,
with the template variables filled in as Grafana would, returns data through Prometheus's
query API — except the queries on Grafana Cloud's own usage datasource (`grafanacloud_*`),
which only Grafana Cloud has, and the tail-sampling row's (`frugal_tail_*`, exported only
with `traces.tail`), which return nothing, without error, from that frugal and data from a
second one that tail-samples. The rules, loaded unmodified, fire when usage is pushed past
a threshold with `frugal usage set` and stay quiet below it."""

from __future__ import annotations

import random
import re
import subprocess
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest
import requests
import yaml
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

import dashboard
import payloads
import promstack
from conftest import BIN, free_port, policy_for, wait_for

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "dashboards" / "frugal-alerts.yaml"
JOB = "frugal-under-test"
LIMIT = 1_000_000_000  # bytes, traces and logs alike: the load below is a few MB
RATE_INTERVAL = "10s"  # $__rate_interval for a 1 s scrape


class Prometheus:
    def __init__(self, tmp: Path, target: str):
        self.port = free_port()
        cfg = tmp / "prometheus.yml"
        cfg.write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": [target]}]}],
        }))
        self.proc = subprocess.Popen(
            [promstack.prometheus_binary(), f"--config.file={cfg}", f"--storage.tsdb.path={tmp / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=subprocess.DEVNULL, stderr=open(tmp / "prometheus.log", "w"))
        self.log = tmp / "prometheus.log"

    def query(self, expr: str) -> list[dict]:
        r = requests.get(f"http://127.0.0.1:{self.port}/api/v1/query", params={"query": expr}, timeout=10)
        body = r.json()
        assert r.status_code == 200 and body["status"] == "success", f"{expr}\n{body}"
        return body["data"]["result"]

    def alerts(self) -> set[tuple[str, str, str]]:
        """(alertname, signal, state) of the rules' alerts now."""
        return {(a["metric"]["alertname"], a["metric"].get("signal", ""), a["metric"]["alertstate"])
                for a in self.query('ALERTS{alertname=~"Frugal.*"}')}

    def last_evaluation(self) -> float:
        """When the rules were last evaluated (Unix seconds; 0 before the first time)."""
        groups = requests.get(f"http://127.0.0.1:{self.port}/api/v1/rules", timeout=10).json()["data"]["groups"]
        (group,) = groups
        stamp = re.sub(r"(\.\d{6})\d*", r"\1", group["lastEvaluation"]).replace("Z", "+00:00")
        return datetime.fromisoformat(stamp).timestamp()

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError("prometheus exited:\n" + self.log.read_text()[-3000:])
        try:
            return requests.get(f"http://127.0.0.1:{self.port}/-/ready", timeout=1).status_code == 200
        except requests.ConnectionError:
            return False

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


def usage_set(f, signal: str, amount: str):
    done = subprocess.run([str(BIN), "usage", "set", signal, amount, "--admin", f.admin_url],
                          capture_output=True, text=True, timeout=20)
    assert done.returncode == 0, done.stdout + done.stderr


class Load(threading.Thread):
    """Traces with 10 % errors (priority), logs with warnings (priority), posted every 50 ms;
    metrics only while `metrics` is set."""

    def __init__(self, f):
        super().__init__(daemon=True)
        self.f, self.stop, self.metrics = f, threading.Event(), threading.Event()
        self.answers: dict[int, int] = {}

    def post(self, signal: str, body: bytes):
        try:
            r = requests.post(f"{self.f.http_url}/v1/{signal}", data=body, timeout=10,
                              headers={"Content-Type": "application/x-protobuf"})
            self.answers[r.status_code] = self.answers.get(r.status_code, 0) + 1
        except requests.RequestException:
            self.answers[0] = self.answers.get(0, 0) + 1

    def run(self):
        rng = random.Random(11)
        while not self.stop.is_set():
            self.post("traces", encode_spans(payloads.spans(rng, 30)).SerializeToString())
            self.post("logs", encode_logs(payloads.log_records(rng, 30)).SerializeToString())
            if self.metrics.is_set():
                self.post("metrics", encode_metrics(payloads.metrics(rng)).SerializeToString())
            self.stop.wait(0.05)


def frugal_queries(instance: str):
    """(panel, target, expression) for every dashboard query on frugal's datasource, the
    variables filled in as Grafana does for this job and instance, a query of the per-signal
    row once for each signal."""
    for p, t, ds in dashboard.targets():
        if ds == dashboard.USAGE_DS:
            continue  # grafanacloud_*: only Grafana Cloud has them
        signals = ["traces", "logs"] if 'signal="$signal"' in t["expr"] else ["traces|logs"]
        for sig in signals:
            # A picked value goes into a regex matcher escaped, as Grafana does.
            yield p, t, dashboard.substitute(t["expr"], {
                "job": JOB, "instance": re.escape(instance).replace("\\", "\\\\"),
                "signal": sig, "__rate_interval": RATE_INTERVAL})


def selectors(expr: str) -> list[str]:
    """The frugal metric selectors in a PromQL expression (name and label matchers)."""
    return [m.group(0) for m in re.finditer(r"\bfrugal_\w+(\{[^}]*\})?", expr)]


@pytest.fixture
def prom_factory(tmp_path):
    started = []

    def make(target):
        p = Prometheus(tmp_path, target)
        started.append(p)
        return p

    yield make
    for p in started:
        p.stop()


def test_every_dashboard_and_rule_expression_returns_data_and_the_rules_fire_past_a_threshold(
        standin, frugal_factory, prom_factory):
    f = frugal_factory(policy_for(standin.url, budgets=f"""
pacing: {{recompute_every: 1s}}
budgets:
  traces: {{limit: {LIMIT}, target: 95%, at_limit: keep_priority}}
  logs: {{limit: {LIMIT}, target: 95%, at_limit: keep_priority}}
  metrics: {{active_series: 20}}
""", extra="""
traces:
  priority: [{name: errors, status_code: ERROR}]
logs:
  priority: [{name: warnings, severity_at_least: WARN}]
"""), extra_args=["--upstream-remote-write", f"{standin.url}/api/v1/push"])
    prom = prom_factory(f"127.0.0.1:{f.admin_port}")
    wait_for(prom.ready, timeout=30, what="prometheus ready")
    wait_for(lambda: prom.query(f'frugal_build_info{{job="{JOB}"}}'), timeout=30, what="the first scrape")

    # Below every threshold, the rules stay quiet: 30 % used, through several evaluations.
    usage_set(f, "traces", str(LIMIT * 30 // 100))
    wait_for(lambda: prom.query('frugal_budget_usage_ratio{signal="traces"} >= 0.3'), timeout=20,
             what="30 % used, scraped")
    evaluated = time.time()
    wait_for(lambda: prom.last_evaluation() > evaluated + 3, timeout=20, what="three more rule evaluations")
    assert prom.alerts() == set(), "no alert below every threshold"

    # Past 80 % (traces), 110 % (logs): the thresholds' alerts go pending now and
    # fire after their `for:` (1m), while load, refusals and an outage run.
    usage_set(f, "traces", str(LIMIT * 85 // 100))
    usage_set(f, "logs", str(LIMIT * 110 // 100))  # past the limit: projected over it
    crossed = time.time()
    load = Load(f)
    load.start()
    try:
        wait_for(lambda: f.metric("frugal_dropped_items_total", signal="traces", reason="sampled"), timeout=20,
                 what="pacing drops")
        wait_for(lambda: f.metric("frugal_priority_dropped_items_total", signal="logs"), timeout=20,
                 what="priority logs dropped at the limit")
        standin.fail(400)  # upstream refuses
        wait_for(lambda: f.metric("frugal_rejected_items_total", signal="traces", reason="bad_request"),
                 timeout=20, what="refusals")
        standin.heal()
        standin.stop()  # upstream unreachable; metrics only now, so their destination never succeeds
        load.metrics.set()
        wait_for(lambda: f.metric("frugal_upstream_attempts_total", destination="otlp_metrics",
                                  outcome="connect_error"), timeout=20, what="connect errors")
        wait_for(lambda: f.metric("frugal_upstream_unavailable_total", signal="metrics"), timeout=20,
                 what="clients told to retry")
        load.metrics.clear()
        standin.start()
        # Remote write past the series limit (20, new series refused from 19): some refused.
        now = int(time.time() * 1000)
        promstack.push(f"{f.http_url}/api/v1/push", promstack.write_request(
            [({"__name__": "live_series", "n": str(i)}, [(1.0, now)]) for i in range(40)]))
        wait_for(lambda: (f.metric("frugal_series_refused_total") or 0) > 0, timeout=20,
                 what="new series refused")
        r = requests.post(f"{f.http_url}/v1/traces", data=b"\xff\xff", timeout=5,
                          headers={"Content-Type": "application/x-protobuf"})
        assert r.status_code == 400

        # The rules: 50 % and 80 % fire for traces after a minute, 95 % does not; all three
        # for logs.
        want = {("FrugalBudget50PercentUsed", "traces"), ("FrugalBudget80PercentUsed", "traces"),
                ("FrugalBudget50PercentUsed", "logs"), ("FrugalBudget80PercentUsed", "logs"),
                ("FrugalBudget95PercentUsed", "logs")}
        firing = wait_for(lambda: (lambda a: a if want <= {(n, s) for n, s, st in a if st == "firing"} else None)(
            prom.alerts()), timeout=100, interval=1, what="the threshold alerts firing")
        assert time.time() - crossed >= 60, "fired before their for: of 1m"
        budget = {(n, s) for n, s, _ in firing if n.startswith("FrugalBudget")}
        assert budget == want, f"only the thresholds crossed: {budget}"
        assert ("FrugalProjectedOverage", "logs", "pending") in firing  # for: 15m

        # Every dashboard query on frugal's datasource returns data, the variables filled in
        # as Grafana does for this job and instance, the per-signal row for each signal; but
        # the tail-sampling row's: this frugal has no traces.tail, so they run without error
        # and return nothing (No data in Grafana). The next test gives them data.
        empty, queried = [], 0
        for p, t, expr in frugal_queries(f"127.0.0.1:{f.admin_port}"):
            queried += 1
            result = prom.query(expr)  # fails on an error
            if p["_row"] == dashboard.TAIL_ROW:
                assert result == [], f"{p['title']} [{t['refId']}] without traces.tail: {expr}\n{result}"
            elif not result:
                empty.append(f"{p['title']} [{t['refId']}]: {expr}")
        assert not empty, "dashboard queries without data:\n" + "\n".join(empty)
        assert queried > 30

        # Every alert expression returns data under these conditions, but for the two
        # whose condition would take frugal down (not ready; not scraped for 5 minutes):
        # those run without error and every selector in them matches frugal's series.
        rules = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
        quiet = {"FrugalNotReady", "FrugalAbsent"}
        for rule in rules:
            result = prom.query(rule["expr"])
            if rule["alert"] in quiet:
                assert result == [], rule["alert"]
                for sel in selectors(rule["expr"]):
                    assert prom.query(sel), f"{rule['alert']}: {sel} matches nothing"
            else:
                assert result, f"{rule['alert']}: no data\n{rule['expr']}"
    finally:
        load.stop.set()
        load.join(20)
    assert load.answers.get(200), load.answers


def test_the_tail_sampling_row_returns_data_from_a_frugal_that_tail_samples(standin, frugal_factory, prom_factory):
    """A frugal with `traces.tail` (decisions 1 s after a trace's first span, sooner once its
    root arrived; a status_code policy keeping errors) under the same OTLP/HTTP load of
    traces, 10 % with an error: once it has decided traces (and they reached upstream),
    every query of the tail-sampling row returns data, and the rest of the dashboard's
    queries run without error."""
    f = frugal_factory(policy_for(standin.url, budgets=f"""
pacing: {{recompute_every: 1s}}
budgets:
  traces: {{limit: {LIMIT}, target: 95%}}
  logs: {{limit: {LIMIT}, target: 95%}}
""", extra="""
traces:
  tail:
    decision_wait: 1s
    root_grace: 200ms
    policies:
      - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}, class: priority}
"""))
    prom = prom_factory(f"127.0.0.1:{f.admin_port}")
    wait_for(prom.ready, timeout=30, what="prometheus ready")
    wait_for(lambda: prom.query(f'frugal_tail_buffered_bytes{{job="{JOB}"}}'), timeout=30,
             what="the first scrape, with the tail families")
    load = Load(f)
    load.start()
    try:
        # Spans are acknowledged once in the spool and sent after their trace's decision:
        # poll for both, then for two scrapes' worth of decisions in Prometheus (so rates
        # and the latency quantiles have something to work on).
        wait_for(lambda: f.metric("frugal_tail_decisions_total", policy="errors", decision="kept"),
                 timeout=20, what="error traces kept by the tail policy")
        wait_for(lambda: f.metric("frugal_tail_decisions_total", policy="none", decision="kept"),
                 timeout=20, what="other traces kept at the keep probability")
        wait_for(lambda: standin.of("traces"), timeout=20, what="decided traces upstream")
        wait_for(lambda: prom.query(f'sum(rate(frugal_tail_decision_seconds_count{{job="{JOB}"}}[{RATE_INTERVAL}])) > 0')
                 and prom.query(f'sum(rate(frugal_tail_decisions_total{{job="{JOB}"}}[{RATE_INTERVAL}])) > 0'),
                 timeout=30, interval=0.5, what="decisions scraped")

        empty, tail_queries = [], 0
        for p, t, expr in frugal_queries(f"127.0.0.1:{f.admin_port}"):
            result = prom.query(expr)  # fails on an error
            if p["_row"] == dashboard.TAIL_ROW:
                tail_queries += 1
                if not result:
                    empty.append(f"{p['title']} [{t['refId']}]: {expr}")
        assert not empty, "tail-sampling queries without data:\n" + "\n".join(empty)
        assert tail_queries >= 9
    finally:
        load.stop.set()
        load.join(20)
    assert load.answers.get(200), load.answers
