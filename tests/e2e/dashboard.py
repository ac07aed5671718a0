"""Reading dashboards/frugal-quota-burn.json the way Grafana does, for the tests: every
panel (rows' nested panels too), every query target with the datasource it runs on, and
the template variables substituted into an expression."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "dashboards" / "frugal-quota-burn.json"
# The datasource variables: frugal's metrics, and Grafana Cloud's own usage metrics.
FRUGAL_DS = "${datasource}"
USAGE_DS = "${usage_datasource}"
MIXED_DS = "-- Mixed --"
# The row of the tail sampler's families (frugal_tail_*), which frugal exports only when
# the policy has `traces.tail`: on any other frugal its panels show No data.
TAIL_ROW = "Tail sampling"


def load() -> dict:
    return json.loads(DASHBOARD.read_text())


def panels(d: dict | None = None) -> list[dict]:
    """Every panel, rows included, in order, with `_row` set to the title of its row."""
    d = d or load()
    out, row = [], None
    for p in d["panels"]:
        if p["type"] == "row":
            row = p["title"]
            out.append({**p, "_row": row})
            for q in p.get("panels", []):  # a collapsed row keeps its panels inside
                out.append({**q, "_row": row})
        else:
            out.append({**p, "_row": row})
    return out


def targets(d: dict | None = None) -> list[tuple[dict, dict, str]]:
    """(panel, target, the datasource uid the target runs on) for every query target."""
    out = []
    for p in panels(d):
        for t in p.get("targets", []):
            ds = (t.get("datasource") or p.get("datasource") or {}).get("uid", "")
            out.append((p, t, ds))
    return out


def substitute(expr: str, values: dict[str, str]) -> str:
    """`expr` with `$name`, `${name}` and `[[name]]` replaced as Grafana would; every
    variable in it must have a value."""
    def one(m: re.Match) -> str:
        name = m.group(1) or m.group(2) or m.group(3)
        if name not in values:
            raise KeyError(f"no value for ${name} in {expr!r}")
        return values[name]
    return re.sub(r"\$\{(\w+)\}|\$(\w+)|\[\[(\w+)\]\]", one, expr)
