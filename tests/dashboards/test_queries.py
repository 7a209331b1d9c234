"""Every panel query and variable of the committed dashboards, run against the real pipeline:
Prometheus scraping the exporters over the bundled captures (image_id set as a target label),
the host exporter's view of the same VMs (a static exposition) and pciehp-correlator,
Alertmanager holding real detach alerts and root-cause incidents."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, urlencode

import pytest

from tests.alerts.pipeline import Plane, detach_alert, post_alerts, running
from tests.dashboards.common import NAMES, load, panels, prometheus_targets
from tests.support import servers

RATE_INTERVAL = "5s"  # Grafana: max($__interval + scrape interval, 4 x scrape interval of 1s)
LABEL_VALUES = re.compile(r"label_values\((.*),\s*(\w+)\)")


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plane]:
    """The pipeline with open incidents: a detach flood from the pcie_aspm=off image and one
    detach failure from a healthy guest, diagnosed by the correlator."""
    with running(Path(tmp_path_factory.mktemp("dashboards")), host_view=True) as p:
        assert p.alertmanager
        aspm = p.guest("q35_aspm_off", "after_unplug")
        healthy = p.guest("q35_normal", "boot")
        post_alerts(
            p.alertmanager.url,
            [
                detach_alert(
                    "NovaDeviceDetachEventTimeout", "img-aspm-off", aspm.instance_uuid, "vdb"
                ),
                detach_alert("NovaDeviceDetachFailed", "img-aspm-off", aspm.instance_uuid, "vdb"),
                detach_alert(
                    "NovaDeviceDetachFailed", "img-debian12", healthy.instance_uuid, "vdc"
                ),
            ],
        )
        servers.wait_until(
            lambda: len(p.query('pciehp_correlator_incidents{state="firing"} > 0')) == 2,
            timeout=60,
            what="two open incidents scraped from the correlator",
        )
        yield p


def substitute(expr: str, values: dict[str, str]) -> str:
    """Replace Grafana variables the way Grafana would for these selections."""
    expr = expr.replace("$__rate_interval", RATE_INTERVAL)
    for name, value in sorted(values.items(), key=lambda kv: -len(kv[0])):  # $instance_uuid first
        expr = expr.replace(f"${name}", value)
    assert "$" not in expr, expr
    return expr


def run(plane: Plane, target: dict, values: dict[str, str]) -> list[dict]:
    expr = substitute(target["expr"], values)
    if target.get("instant"):
        return plane.query(expr)
    return plane.query_range(expr, seconds=30)


def selections(plane: Plane, dashboard: str) -> Iterator[dict[str, str]]:
    """Variable values to try: "All" for job and image; on the guest dashboard each guest in
    turn, the one whose unplug hangs first (a panel must show data for some real guest)."""
    values = {"job": ".*", "image_id": ".*"}
    if dashboard == "fleet":
        yield values
        return
    first = plane.guest("q35_aspm_off", "after_unplug")
    for guest in [first, *(g for g in plane.guests if g is not first)]:
        yield {**values, "instance": guest.instance, "instance_uuid": guest.instance_uuid}


CASES = [
    pytest.param(
        name, panel["title"], target["refId"], id=f"{name}:{panel['title']}:{target['refId']}"
    )
    for name in NAMES
    for panel, target in prometheus_targets(load(name))
]


@pytest.mark.parametrize("dashboard, title, ref", CASES)
def test_panel_query_returns_data(plane: Plane, dashboard: str, title: str, ref: str) -> None:
    (target,) = [
        t
        for p, t in prometheus_targets(load(dashboard))
        if p["title"] == title and t["refId"] == ref
    ]
    assert any(run(plane, target, values) for values in selections(plane, dashboard)), (
        f"{title} {ref}: no data for any selection"
    )


def test_the_hung_guest_fills_every_guest_panel_but_slot_sysfs(plane: Plane) -> None:
    """With pcie_aspm=off no slot is registered, so only the sysfs slot files are missing."""
    values = next(selections(plane, "guest"))
    empty = {
        (p["title"], t["refId"])
        for p, t in prometheus_targets(load("guest"))
        if not run(plane, t, values)
    }
    assert empty == {("Slots", "A"), ("Slots", "B")}


@pytest.mark.parametrize("dashboard", NAMES)
def test_variables_list_the_fleet(plane: Plane, dashboard: str) -> None:
    expected = {
        "job": {"pciehp-exporter"},
        "image_id": {g.image_id for g in plane.guests},
        "instance": {g.instance for g in plane.guests},
        "instance_uuid": {g.instance_uuid for g in plane.guests},
    }
    for v in load(dashboard)["templating"]["list"]:
        if v["type"] != "query":
            continue
        match = LABEL_VALUES.fullmatch(v["query"])
        assert match, v["query"]
        selector = substitute(match.group(1), {"job": ".*", "image_id": ".*", "instance": ".*"})
        url = f"{plane.prometheus.url}/api/v1/label/{match.group(2)}/values?" + urlencode(
            {"match[]": selector}
        )
        answer = servers.http_json(url)
        assert set(answer["data"]) == expected[v["name"]], v["name"]  # type: ignore[index]


def test_alert_group_panels_show_alertmanager_groups(plane: Plane) -> None:
    assert plane.alertmanager
    shown = {}
    for panel in panels(load("fleet")):
        if panel["type"] == "alertGroups":
            matcher = panel["options"]["labels"]
            groups = servers.http_json(
                f"{plane.alertmanager.url}/api/v2/alerts/groups?filter={quote(matcher)}"
            )
            shown[panel["title"]] = {
                a["labels"]["alertname"]
                for g in groups  # type: ignore[union-attr]
                for a in g["alerts"]
            }
    assert shown == {
        "Root-cause incidents": {"PCIeHotplugRootCause"},
        "Host detach alerts": {"NovaDeviceDetachEventTimeout", "NovaDeviceDetachFailed"},
    }


def stat_value(plane: Plane, dashboard: str, title: str, values: dict[str, str]) -> float:
    """The single value a stat panel shows for these variable values."""
    (panel,) = [p for p in panels(load(dashboard)) if p["title"] == title]
    (result,) = run(plane, panel["targets"][0], values)
    return float(result["value"][1])


@pytest.mark.parametrize(
    "scenario, phase, expected",
    [
        # can-unplug flag (1 = cannot), ports nobody serves, stuck unplugs, rescan workarounds
        ("q35_aspm_off", "after_unplug", (1, 12, 1, 0)),
        ("q35_aspm_off", "boot", (1, 12, 0, 0)),
        ("q35_normal", "boot", (0, 0, 0, 0)),
        ("q35_acpihp_normal", "boot", (0, 0, 0, 0)),
        ("i440fx_normal", "boot", (0, 0, 0, 0)),
    ],
)
def test_guest_verdict_stats(
    plane: Plane, scenario: str, phase: str, expected: tuple[int, ...]
) -> None:
    values = {"job": ".*", "image_id": ".*", "instance": plane.guest(scenario, phase).instance}
    titles = ("Can hot-unplug", "Ports nobody serves", "Stuck unplugs", "Rescan workarounds")
    assert tuple(stat_value(plane, "guest", t, values) for t in titles) == expected


def test_instance_uuid_follows_the_chosen_guest(plane: Plane) -> None:
    """The hidden variable the host view selects by is the chosen guest's own UUID."""
    (variable,) = [v for v in load("guest")["templating"]["list"] if v["name"] == "instance_uuid"]
    selector = LABEL_VALUES.fullmatch(variable["query"]).group(1)  # type: ignore[union-attr]
    for guest in plane.guests:
        expr = substitute(selector, {"job": ".*", "image_id": ".*", "instance": guest.instance})
        (row,) = plane.query(expr)
        assert row["metric"]["instance_uuid"] == guest.instance_uuid


@pytest.mark.parametrize(
    "scenario, verdict, stuck, armed",
    [
        ("q35_aspm_off", ("native", "not_ready", "button_pending_unarmed"), 1, 0),
        ("q35_normal", ("native", "ready", "pciehp_irq"), 0, 12),
        ("q35_acpihp_normal", ("acpi", "ready", "acpi_hotplug"), 0, 0),
    ],
)
def test_host_view_of_the_guest(
    plane: Plane, scenario: str, verdict: tuple[str, str, str], stuck: int, armed: int
) -> None:
    guest = next(g for g in plane.guests if g.capture.scenario == scenario)
    values = {
        "job": ".*",
        "image_id": ".*",
        "instance": guest.instance,
        "instance_uuid": guest.instance_uuid,
    }
    (table,) = [p for p in panels(load("guest")) if p["title"] == "Host verdict"]
    info, decided = (run(plane, t, values) for t in table["targets"])
    assert [
        (i["metric"]["hotplug"], d["metric"]["verdict"], d["metric"]["reason"])
        for i, d in zip(info, decided, strict=True)
    ] == [verdict]
    assert stat_value(plane, "guest", "Host: stuck unplugs", values) == stuck
    (ports,) = [p for p in panels(load("guest")) if p["title"] == "Host view of ports"]
    rows = run(plane, next(t for t in ports["targets"] if t["refId"] == "B"), values)
    assert len(rows) == 12
    assert sum(int(r["value"][1]) for r in rows) == armed


def test_fleet_stats(plane: Plane) -> None:
    values = {"job": ".*", "image_id": ".*"}
    titles = (
        "Guests unable to hot-unplug",
        "Guests reporting",
        "Images that cannot hot-unplug",
        "Open root-cause incidents",
    )
    assert tuple(stat_value(plane, "fleet", t, values) for t in titles) == (2, 7, 1, 2)
    one_image = {"job": ".*", "image_id": "img-debian12"}
    assert stat_value(plane, "fleet", "Guests unable to hot-unplug", one_image) == 0
    assert stat_value(plane, "fleet", "Guests reporting", one_image) == 3
