"""deploy/grafana/tssh-recorder.json is a Grafana dashboard whose queries cannot drift from
the code: its JSON has the shape Grafana imports (a data source variable, panels on the
24-column grid, PromQL targets per replica), and every metric its queries name is exposed by
a real recorder process after an upload, and every metric the recorder exposes has a panel."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from tests.recorder.conftest import ALICE, SERVER, RecorderProc, cast_header, event
from tests.recorder.h2upload import H2Upload
from tests.recorder.scrape import scrape

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy/grafana/tssh-recorder.json"
METRIC = re.compile(r"\btsrecorder_[a-z0-9_]+")
SELECTOR = re.compile(r"\b(tsrecorder_[a-z0-9_]+)(\{[^}]*\})?")
RATE = re.compile(r"\b(?:rate|increase)\(\s*(tsrecorder_[a-z0-9_]+)")
COUNTER_SAMPLE = re.compile(r"_(total|bucket|sum|count)$")
PANEL_TYPES = {"row", "timeseries", "stat"}


def load() -> dict[str, Any]:
    doc = json.loads(DASHBOARD.read_text())
    assert isinstance(doc, dict)
    return doc


def panels(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in doc["panels"] if p["type"] != "row"]


def expressions(doc: dict[str, Any]) -> list[str]:
    """Every PromQL expression: the panels' targets and the variables' queries."""
    found = [t["expr"] for p in panels(doc) for t in p["targets"]]
    for var in doc["templating"]["list"]:
        if var["type"] == "query":
            found.append(var["query"]["query"] if isinstance(var["query"], dict)
                         else var["query"])
    return found


def balanced(expr: str) -> bool:
    stack: list[str] = []
    pairs = {")": "(", "}": "{", "]": "["}
    in_string = False
    for ch in expr:
        if ch == '"':
            in_string = not in_string
        elif in_string:
            continue
        elif ch in "({[":
            stack.append(ch)
        elif ch in pairs and (not stack or stack.pop() != pairs[ch]):
            return False
    return not stack and not in_string


def test_the_dashboard_is_grafana_shaped() -> None:
    doc = load()
    assert doc["uid"] == "tssh-recorder" and doc["title"]
    assert isinstance(doc["schemaVersion"], int) and doc["schemaVersion"] >= 36
    assert doc["id"] is None  # imported dashboards get their id from Grafana
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["instance"]["type"] == "query"
    assert variables["instance"]["multi"] and variables["instance"]["includeAll"]
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells: set[tuple[int, int]] = set()
    for p in doc["panels"]:
        assert p["type"] in PANEL_TYPES, p["type"]
        g = p["gridPos"]
        assert g["w"] > 0 and g["h"] > 0 and g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
        mine = {(g["x"] + dx, g["y"] + dy) for dx in range(g["w"]) for dy in range(g["h"])}
        assert not mine & cells, f"panel {p['title']!r} overlaps another"
        cells |= mine
    for p in panels(doc):
        assert p["title"] and p["description"], p["id"]
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert refs and len(refs) == len(set(refs)), p["title"]
        for t in p["targets"]:
            assert t["datasource"] == p["datasource"], p["title"]


def test_every_query_is_per_replica_and_well_formed() -> None:
    doc = load()
    for expr in (t["expr"] for p in panels(doc) for t in p["targets"]):
        assert balanced(expr), expr
        for name, labels in SELECTOR.findall(expr):
            # the replica picker applies to every series the panel reads
            assert 'instance=~"$instance"' in labels, f"{name} in {expr}"
        for name in RATE.findall(expr):  # rate() of a gauge is meaningless
            assert COUNTER_SAMPLE.search(name), f"rate of non-counter {name} in {expr}"
        if "histogram_quantile" in expr:
            assert "_bucket" in expr and re.search(r"by \([^)]*\ble\b", expr), expr
    quantiles = [t["expr"] for p in panels(doc) for t in p["targets"]
                 if "tsrecorder_ack_latency_seconds_bucket" in t["expr"]]
    assert any("0.5," in e for e in quantiles) and any("0.99," in e for e in quantiles)


async def test_every_metric_of_the_dashboard_is_exposed_and_every_exposed_one_shown(
    recorder: RecorderProc,
) -> None:
    up = await H2Upload.open("127.0.0.1", recorder.port, local_address=SERVER)
    try:
        assert await up.wait_headers() == 200
        body = cast_header() + event(0.1, "hello\r\n") + event(0.2, "0", "x")
        await up.send(body)
        await up.end()
        await up.wait_end()
        assert up.error is None and up.acks[-1] == len(body)
    finally:
        await up.close()
    with recorder.client(ALICE) as c:
        assert c.get("/api/v1/recordings").status_code == 200
        exposed = scrape(c)
    used = {m for expr in expressions(load()) for m in METRIC.findall(expr)}
    assert used, "the dashboard names no metric"
    missing = used - exposed.names()
    assert not missing, f"the dashboard queries metrics the recorder does not expose: {missing}"
    unshown = {family for family in exposed.metrics() if not exposed.sample_names(family) & used}
    assert not unshown, f"metrics without a panel in the dashboard: {unshown}"
