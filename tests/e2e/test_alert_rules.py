"""The alert rules in dashboards/frugal-alerts.yaml, checked by Prometheus's own promtool
(Debian's `prometheus` package; tests/run.sh installs it): they load, every alert fires
after its `for:` and not before (tests/rules/frugal-alerts.test.yaml), and every alert has
a test and a runbook section in the README."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "dashboards" / "frugal-alerts.yaml"
TESTS = ROOT / "tests" / "rules" / "frugal-alerts.test.yaml"


def promtool(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("promtool")
    assert exe, "promtool is missing: apt-get install prometheus (tests/run.sh does)"
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=60, cwd=TESTS.parent)


def alerts() -> list[dict]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "alert" in r]


def test_the_rules_load_and_their_unit_tests_pass():
    checked = promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in checked.stdout
    tested = promtool("test", "rules", TESTS.name)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^a-z0-9 -]", "", heading.strip().lower()).replace(" ", "-")


def test_every_alert_has_a_unit_test_and_a_runbook_in_the_readme():
    tests = yaml.safe_load(TESTS.read_text())["tests"]
    fired = {a["alertname"] for t in tests for a in t["alert_rule_test"] if a["exp_alerts"]}
    quiet = {a["alertname"] for t in tests for a in t["alert_rule_test"] if not a["exp_alerts"]}
    readme = (ROOT / "README.md").read_text()
    anchors = {slug(h) for h in re.findall(r"^#{2,4} (.+)$", readme, re.M)}
    for rule in alerts():
        name = rule["alert"]
        assert name in fired and name in quiet, f"{name}: a test where it fires and one where it does not"
        for key in ("summary", "description", "runbook"):
            assert rule["annotations"].get(key), f"{name}: no {key}"
        anchor = rule["annotations"]["runbook"].split("#", 1)[1]
        assert anchor in anchors, f"{name}: no README section #{anchor}"
        for rng in re.findall(r"\[(\d+)([smh])\]", rule["expr"]):
            seconds = int(rng[0]) * {"s": 1, "m": 60, "h": 3600}[rng[1]]
            assert seconds <= 300, f"{name}: a range over 5 minutes"
