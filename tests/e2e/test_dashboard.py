"""dashboards/frugal-quota-burn.json as Grafana would import it from a provisioned file:
the classic JSON model, a stable uid, no `__inputs` (file provisioning cannot fill them),
every query on a datasource variable, panel ids unique, panels on the 24-column grid
without overlapping; and the two ways to provision it (a Grafana provisioning file, a
ConfigMap for the Grafana Helm chart's dashboard sidecar) carrying this very file.

Every expression returning data from a real Prometheus is test_live_prometheus.py's job.

Run as a script (`python3 tests/e2e/test_dashboard.py --write-configmap`) it rewrites the
ConfigMap from the JSON file."""

from __future__ import annotations

import json
import re
import sys

import yaml

import dashboard
from dashboard import DASHBOARD, FRUGAL_DS, MIXED_DS, ROOT, USAGE_DS

CONFIGMAP = ROOT / "dashboards" / "frugal-quota-burn.configmap.yaml"
PROVISIONING = ROOT / "dashboards" / "provisioning" / "frugal.yaml"
CONFIGMAP_HEADER = """\
# The quota-burn dashboard as a ConfigMap for the Grafana Helm chart's dashboard sidecar
# (`sidecar.dashboards.enabled: true`; it picks up ConfigMaps labelled grafana_dashboard).
# Generated from frugal-quota-burn.json: python3 tests/e2e/test_dashboard.py --write-configmap
"""


def configmap_text() -> str:
    doc = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "frugal-quota-burn-dashboard",
            "labels": {"grafana_dashboard": "1", "app.kubernetes.io/name": "frugal"},
            "annotations": {"grafana_folder": "frugal"},
        },
        "data": {DASHBOARD.name: DASHBOARD.read_text()},
    }

    class Literal(str):
        pass

    class Dumper(yaml.SafeDumper):
        pass

    Dumper.add_representer(Literal, lambda d, s: d.represent_scalar("tag:yaml.org,2002:str", s, style="|"))
    doc["data"] = {k: Literal(v) for k, v in doc["data"].items()}
    return CONFIGMAP_HEADER + yaml.dump(doc, Dumper=Dumper, sort_keys=False, width=1000)


def test_the_dashboard_is_a_classic_model_fit_for_file_provisioning():
    d = dashboard.load()
    assert "__inputs" not in d and "__requires" not in d, "file provisioning cannot fill __inputs"
    assert d.get("id") is None, "a provisioned dashboard gets its id from Grafana"
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,40}", d["uid"]) and d["uid"] == "frugal-quota-burn"
    assert d["schemaVersion"] >= 39
    assert d["title"] and isinstance(d["panels"], list) and d["panels"]
    variables = {v["name"]: v for v in d["templating"]["list"]}
    for name in ("datasource", "usage_datasource"):
        assert variables[name]["type"] == "datasource" and variables[name]["query"] == "prometheus"
    for name in ("job", "instance"):
        v = variables[name]
        assert v["type"] == "query" and v["datasource"]["uid"] == FRUGAL_DS
        assert v["includeAll"] and v["multi"], f"${name}: pick one, several or all"
        assert "frugal_build_info" in v["definition"]


def test_panel_ids_are_unique_and_the_grid_holds_them_without_overlap():
    ps = dashboard.panels()
    ids = [p["id"] for p in ps]
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {sorted(i for i in ids if ids.count(i) > 1)}"
    cells: dict[tuple[int, int], str] = {}
    for p in ps:
        g = p["gridPos"]
        assert all(isinstance(g[k], int) for k in ("x", "y", "w", "h")), p["title"]
        assert g["w"] >= 1 and g["h"] >= 1 and g["x"] >= 0 and g["y"] >= 0, p["title"]
        assert g["x"] + g["w"] <= 24, f"{p['title']}: past the 24 columns"
        if p["type"] == "row":
            assert (g["x"], g["w"], g["h"]) == (0, 24, 1), f"row {p['title']}: full width, one unit high"
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = p["title"]


def test_every_query_runs_on_a_datasource_variable():
    ts = dashboard.targets()
    assert len(ts) > 20
    for p, t, ds in ts:
        where = f"{p['title']!r} target {t['refId']}"
        assert ds in (FRUGAL_DS, USAGE_DS), f"{where}: on {ds!r}, not a datasource variable"
        panel_ds = p["datasource"]["uid"]
        assert panel_ds in (ds, MIXED_DS), f"{where}: the panel is on {panel_ds!r}"
        uses_grafana = "grafanacloud_" in t["expr"]
        assert uses_grafana == (ds == USAGE_DS), f"{where}: grafanacloud_* metrics, and only they, on ${{usage_datasource}}"
        if ds == FRUGAL_DS:
            # frugal's queries follow the job and instance pickers.
            for name in re.findall(r"\bfrugal_\w+", t["expr"]):
                assert re.search(name + r'\{[^}]*job=~"\$job", instance=~"\$instance"', t["expr"]), \
                    f"{where}: {name} without the $job/$instance selectors"
    rows = {p["_row"] for p, _, ds in ts if ds == USAGE_DS}
    assert rows == {next(p["title"] for p in dashboard.panels() if p["type"] == "row" and "Grafana Cloud" in p["title"])}


def test_every_frugal_metric_the_dashboard_reads_is_in_the_readme_table():
    readme = (ROOT / "README.md").read_text()
    # Two tables: what every frugal exports, and what one with traces.tail exports too.
    tables = [readme.split(f"<!-- {name}: start -->")[1].split(f"<!-- {name}: end -->")[0]
              for name in ("metrics table", "tail metrics table")]
    documented = {m for table in tables for m in re.findall(r"`(frugal_\w+)`", table)}
    read = {re.sub(r"_(bucket|sum|count)$", "", m) for _, t, _ in dashboard.targets()
            for m in re.findall(r"\bfrugal_\w+", t["expr"])}
    assert read - documented == set(), "the dashboard reads metrics frugal does not document"


def test_the_tail_sampling_row_and_only_it_reads_the_tail_families():
    """frugal exports frugal_tail_* only with traces.tail: those panels sit together in one
    row, so a frugal without tail sampling shows one row of No data, nothing broken elsewhere
    (and test_live_prometheus.py knows which queries need a tail-sampling frugal)."""
    rows = [p for p in dashboard.panels() if p["type"] == "row" and p["title"] == dashboard.TAIL_ROW]
    assert len(rows) == 1 and not rows[0].get("repeat")
    in_row = [p for p in dashboard.panels() if p["_row"] == dashboard.TAIL_ROW and p["type"] != "row"]
    assert in_row, "the tail-sampling row has panels"
    for p, t, ds in dashboard.targets():
        names = set(re.findall(r"\bfrugal_\w+", t["expr"]))
        tail = {n for n in names if n.startswith("frugal_tail_")}
        if p["_row"] == dashboard.TAIL_ROW:
            assert names and tail == names and ds == FRUGAL_DS, f"{p['title']!r}: {t['expr']}"
        else:
            assert not tail, f"{p['title']!r} outside the tail-sampling row reads {tail}"
    read = {re.sub(r"_(bucket|sum|count)$", "", m) for p, t, _ in dashboard.targets()
            if p["_row"] == dashboard.TAIL_ROW for m in re.findall(r"\bfrugal_\w+", t["expr"])}
    assert read == {"frugal_tail_buffered_traces", "frugal_tail_buffered_bytes", "frugal_tail_spool_bytes",
                    "frugal_tail_traces_received_total", "frugal_tail_decisions_total",
                    "frugal_tail_early_decisions_total", "frugal_tail_late_spans_total",
                    "frugal_tail_decision_seconds", "frugal_tail_late_span_age_seconds"}, \
        "every tail-sampling family is on the dashboard"
    for p in in_row:
        assert "traces.tail" in p["description"], f"{p['title']!r}: say it needs traces.tail"


def test_the_per_signal_row_repeats_over_the_byte_budgeted_signals():
    d = dashboard.load()
    signal = next(v for v in d["templating"]["list"] if v["name"] == "signal")
    assert signal["query"].split(",") == ["traces", "logs"]
    repeated = [p for p in dashboard.panels(d) if p.get("repeat") == "signal"]
    assert len(repeated) == 1 and repeated[0]["type"] == "row"
    row = repeated[0]["title"]
    in_row = [p for p in dashboard.panels(d) if p["_row"] == row and p["type"] != "row"]
    assert {"burn-down", "projected", "keep probability", "dropped"} <= {
        w for p in in_row for w in ("burn-down", "projected", "keep probability", "dropped") if w in p["title"]}
    for p in in_row:
        assert "$signal" in p["title"], p["title"]
        for t in p["targets"]:
            assert 'signal="$signal"' in t["expr"], f"{p['title']}: {t['expr']}"


def test_the_provisioning_file_and_the_configmap_carry_this_dashboard():
    prov = yaml.safe_load(PROVISIONING.read_text())
    assert prov["apiVersion"] == 1
    (provider,) = prov["providers"]
    assert provider["type"] == "file" and provider["options"]["path"]
    cm_text = CONFIGMAP.read_text()
    assert cm_text == configmap_text(), \
        "the ConfigMap is stale: python3 tests/e2e/test_dashboard.py --write-configmap"
    cm = yaml.safe_load(cm_text)
    assert cm["kind"] == "ConfigMap" and cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"][DASHBOARD.name]) == dashboard.load()


if __name__ == "__main__":
    if sys.argv[1:] == ["--write-configmap"]:
        CONFIGMAP.write_text(configmap_text())
        print(f"wrote {CONFIGMAP.relative_to(ROOT)}")
    else:
        sys.exit(__doc__)
