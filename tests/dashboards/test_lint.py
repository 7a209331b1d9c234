"""Lint rules as tests, after grafana/dashboard-linter: datasource variables, titles,
descriptions and units, no hard-coded job or instance, $__rate_interval, a sane layout."""

from __future__ import annotations

import re

import pytest

from tests.dashboards.common import NAMES, load, panels, prometheus_targets, variable

DATASOURCES = {"${datasource}": "prometheus", "${alertmanager}": "alertmanager"}
# A raw exporter metric (not a recording rule, not the correlator's own metrics).
EXPORTER_SELECTOR = re.compile(r"(?<![:\w])(pciehp_(?!correlator_)[a-z_]+)(\{[^}]*\})?")
LABEL_MATCHER = re.compile(r'\b(job|instance|image_id)\s*(=~|!~|!=|=)\s*"([^"]*)"')
RANGE = re.compile(r"\[([^\]]+)\]")


@pytest.fixture(params=NAMES)
def dashboard(request: pytest.FixtureRequest) -> dict:
    return load(request.param)


def test_identity(dashboard: dict) -> None:
    assert dashboard["uid"].startswith("pciehp-")
    assert dashboard["title"].startswith("pciehp-watch / ")
    assert "pciehp-watch" in dashboard["tags"]


def test_datasource_variables(dashboard: dict) -> None:
    prom = variable(dashboard, "datasource")
    assert prom and prom["type"] == "datasource" and prom["query"] == "prometheus"
    used = {p["datasource"]["uid"] for p in panels(dashboard)}
    if "${alertmanager}" in used:
        am = variable(dashboard, "alertmanager")
        assert am and am["type"] == "datasource" and am["query"] == "alertmanager"
    for v in dashboard["templating"]["list"]:
        if v["type"] == "query":
            assert v["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, v["name"]


def test_every_panel_and_target_uses_a_datasource_variable(dashboard: dict) -> None:
    for panel in panels(dashboard):
        ds = panel["datasource"]
        assert DATASOURCES.get(ds["uid"]) == ds["type"], panel["title"]
        for target in panel.get("targets", []):
            assert target["datasource"] == ds, panel["title"]
        if panel["type"] == "alertGroups":
            assert panel["options"]["alertmanager"] == "${alertmanager}"


def test_every_panel_has_title_description_and_unit(dashboard: dict) -> None:
    for panel in dashboard["panels"]:
        assert panel["title"].strip()
        if panel["type"] != "row":
            assert panel.get("description", "").strip(), panel["title"]
            assert panel["fieldConfig"]["defaults"].get("unit"), panel["title"]


def test_panels_have_queries(dashboard: dict) -> None:
    for panel in panels(dashboard):
        if panel["type"] == "alertGroups":
            assert panel["options"]["labels"].startswith("alertname"), panel["title"]
        else:
            assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"])


def queries(dashboard: dict) -> list[str]:
    """Every PromQL text of the dashboard: panel targets and variable queries."""
    exprs = [t["expr"] for _, t in prometheus_targets(dashboard)]
    return exprs + [v["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]


def test_no_hard_coded_job_instance_or_image(dashboard: dict) -> None:
    for expr in queries(dashboard):
        for label, _, value in LABEL_MATCHER.findall(expr):
            assert value == f"${label}", f"{label} hard-coded in {expr}"


def test_exporter_metrics_are_selected_by_job(dashboard: dict) -> None:
    """Guest exporter series by $job (and $instance per guest); the host exporter's, whose
    job and instance are the compute host's, by the VM's $instance_uuid."""
    per_instance = dashboard["uid"] == "pciehp-guest"
    for panel, target in prometheus_targets(dashboard):
        for metric, selector in EXPORTER_SELECTOR.findall(target["expr"]):
            if metric.startswith("pciehp_host_"):
                assert 'instance_uuid=~"$instance_uuid"' in selector, f"{panel['title']}: {metric}"
                continue
            assert 'job=~"$job"' in selector, f"{panel['title']}: {metric} without $job"
            if per_instance:
                assert 'instance=~"$instance"' in selector, f"{panel['title']}: {metric}"


def test_ranges_use_rate_interval(dashboard: dict) -> None:
    for panel, target in prometheus_targets(dashboard):
        for window in RANGE.findall(target["expr"]):
            assert window == "$__rate_interval", f"{panel['title']}: [{window}]"


def test_instance_variable_is_a_single_choice_from_prometheus(dashboard: dict) -> None:
    instance = variable(dashboard, "instance")
    if dashboard["uid"] == "pciehp-guest":
        assert instance and instance["type"] == "query" and not instance["multi"]
        assert instance["query"].startswith("label_values(")
    else:
        assert instance is None, "the fleet dashboard aggregates per image"


def test_layout(dashboard: dict) -> None:
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        g = panel["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24, panel["title"]
        area = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not area & cells, f"{panel['title']} overlaps another panel"
        cells |= area
