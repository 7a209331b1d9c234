"""Helpers for the dashboard tests: load the committed JSON and walk its panels and queries."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from dashboards.generate import DASHBOARDS, OUT

NAMES = tuple(DASHBOARDS)


def load(name: str) -> dict:
    """The committed dashboard JSON."""
    return json.loads((OUT / f"{name}.json").read_text())


def panels(dashboard: dict) -> Iterator[dict]:
    """Every panel that shows data (rows are layout only)."""
    return (p for p in dashboard["panels"] if p["type"] != "row")


def prometheus_targets(dashboard: dict) -> Iterator[tuple[dict, dict]]:
    """(panel, target) for every PromQL target."""
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            if "expr" in target:
                yield panel, target


def variable(dashboard: dict, name: str) -> dict | None:
    """The template variable called `name`, if any."""
    return next((v for v in dashboard["templating"]["list"] if v["name"] == name), None)


def json_path(name: str) -> Path:
    """Where the committed JSON of a dashboard lives."""
    return OUT / f"{name}.json"
