"""The rules and the Alertmanager configuration against the real pipeline: exporters serving
the bundled captures, Prometheus evaluating alerts/*.rules.yml, Alertmanager with
alerts/alertmanager.yml, and pciehp-correlator."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.alerts.pipeline import DETACH_ALERTNAME, Plane, detach_alert, post_alerts, running
from tests.support import servers


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plane]:
    with running(Path(tmp_path_factory.mktemp("plane"))) as p:
        yield p


def active(plane: Plane, alertname: str) -> list[dict]:
    """Labels of the rule's active (pending or firing) alerts."""
    return [a["labels"] for a in plane.alert_rules()[alertname]["alerts"]]


def instances(plane: Plane, scenario: str, phase: str | None = None) -> set[str]:
    return {
        g.instance
        for g in plane.guests
        if g.capture.scenario == scenario and phase in (None, g.capture.phase)
    }


def test_handler_missing_only_on_the_pcie_aspm_off_guests(plane: Plane) -> None:
    alerts = active(plane, "PCIeHotplugHandlerMissing")
    assert {a["instance"] for a in alerts} == instances(plane, "q35_aspm_off")
    # all 12 root ports of both captures, each with its image
    assert len(alerts) == 24
    assert {a["image_id"] for a in alerts} == {"img-aspm-off"}


def test_osc_not_granted_names_the_missing_support(plane: Plane) -> None:
    alerts = active(plane, "PCIeHotplugOSCNotGranted")
    # the i440fx guest's _OSC is not requested either, but it has no PCIe ports; the
    # ACPI-hotplug guest is denied PCIeHotplug but acpiphp serves its ports
    assert {a["instance"] for a in alerts} == instances(plane, "q35_aspm_off")
    assert {(a["outcome"], a["missing_support"]) for a in alerts} == {
        ("not_requested", "ASPM ClockPM")
    }


def test_stuck_unplug_on_the_port_whose_unplug_hangs(plane: Plane) -> None:
    alerts = active(plane, "PCIeHotplugUnplugStuck")
    hung = plane.guest("q35_aspm_off", "after_unplug").instance
    assert [(a["instance"], a["bus"], a["device"], a["function"]) for a in alerts] == [
        (hung, "00", "02", "0")
    ]


def test_healthy_guests_raise_nothing(plane: Plane) -> None:
    rules = plane.alert_rules()
    broken = instances(plane, "q35_aspm_off")
    for name, rule in rules.items():
        for alert in rule["alerts"]:
            assert alert["labels"].get("instance") in broken | {None}, (name, alert["labels"])


def test_exporters_and_correlator_are_healthy(plane: Plane) -> None:
    for name in (
        "PCIeHotplugExporterDown",
        "PCIeHotplugCollectorFailing",
        "PCIeHotplugKernelLogUnreadable",
        "PCIeHotplugRescanWorkaround",
        "PCIeHotplugCorrelatorDown",
    ):
        assert active(plane, name) == [], name
    # the rules select metric names the real correlator declares (a labelled counter has no
    # sample before its first increment, so look at the # TYPE lines)
    assert plane.correlator
    status, body = servers.http_get(plane.correlator.url + "/metrics")
    declared = {
        line.split()[2] for line in body.decode().splitlines() if line.startswith("# TYPE ")
    }
    for metric in (
        "pciehp_correlator_last_reconcile_timestamp_seconds",
        "pciehp_correlator_push_failures_total",
        "pciehp_correlator_prometheus_errors_total",
        "pciehp_correlator_alertmanager_errors_total",
    ):
        assert status == 200 and {metric, metric.removesuffix("_total")} & declared, metric
    assert plane.query(
        'pciehp_correlator_last_reconcile_timestamp_seconds{job="pciehp-correlator"}'
    )


def test_fleet_recording_rules(plane: Plane) -> None:
    per_guest = {
        r["metric"]["instance"]: r["value"][1]
        for r in plane.query("instance:pciehp_guest_cannot_unplug:bool")
    }
    broken = instances(plane, "q35_aspm_off")
    assert per_guest == {g.instance: "1" if g.instance in broken else "0" for g in plane.guests}
    ratio = {
        r["metric"]["image_id"]: float(r["value"][1])
        for r in plane.query("image_id:pciehp_guests_cannot_unplug:ratio")
    }
    assert ratio == {"img-aspm-off": 2 / 3, "img-debian12": 0.0, "img-debian12-pc": 0.0}
    image_alerts = active(plane, "PCIeHotplugImageCannotUnplug")
    assert [a["image_id"] for a in image_alerts] == ["img-aspm-off"]


def test_detach_flood_pages_once_per_image_with_the_root_cause(plane: Plane) -> None:
    """Detach alerts for both images go to Alertmanager; the correlator diagnoses them from
    the guests' facts; on-call receives one PCIeHotplugRootCause per image for the guest-side
    cause, one per host for the host-side one, and no detach alert (the correlator's
    per-instance markers mute them)."""
    assert plane.alertmanager and plane.recorder
    aspm = [plane.guest("q35_aspm_off", p) for p in ("boot", "after_unplug")]
    healthy = plane.guest("q35_normal", "boot")
    flood = [
        detach_alert(name, "img-aspm-off", g.instance_uuid, dev)
        for g in aspm[1:]
        for name in ("NovaDeviceDetachEventTimeout", "NovaDeviceDetachFailed")
        for dev in ("vdb", "vdc", "vdd")
    ] + [detach_alert("NovaDeviceDetachFailed", "img-debian12", healthy.instance_uuid, "vdb")]
    post_alerts(plane.alertmanager.url, flood)

    def root_causes() -> dict[str, dict]:
        return {
            a["labels"].get("image_id") or "host:" + a["labels"]["host"]: a
            for a in plane.recorder.alerts("/oncall")  # type: ignore[union-attr]
            if a["labels"]["alertname"] == "PCIeHotplugRootCause"
        }

    servers.wait_until(lambda: len(root_causes()) == 2, timeout=60, what="two root causes")
    causes = root_causes()
    assert causes["img-aspm-off"]["labels"]["root_cause"] == "pcie_aspm_off"
    assert causes["img-aspm-off"]["labels"]["severity"] == "critical"
    assert causes["img-aspm-off"]["annotations"]["runbook_url"].endswith("/pcie_aspm_off.md")
    assert causes["host:cmp-17"]["labels"]["root_cause"] == "host_side"

    # The on-call detach route waits longer than the correlator needs, so by the time those
    # groups flush the incidents' markers inhibit them. Barrier: a detach alert of an instance
    # without facts is never explained, so never inhibited; posted after the flood, its group
    # flushes after the flood's groups did.
    barrier = detach_alert("NovaDeviceDetachFailed", "", "u-unknown", "vdz")
    del barrier["labels"]["image_id"]
    post_alerts(plane.alertmanager.url, [barrier])

    def barrier_paged() -> bool:
        return any(
            a["labels"].get("instance_uuid") == "u-unknown"
            for a in plane.recorder.alerts("/oncall")  # type: ignore[union-attr]
        )

    servers.wait_until(barrier_paged, timeout=60, what="the unattributable detach alert paged")
    paged = plane.recorder.alerts("/oncall")
    detach_paged = {
        (a["labels"]["alertname"], a["labels"].get("image_id", ""))
        for a in paged
        if DETACH_ALERTNAME.fullmatch(a["labels"]["alertname"])
    }
    assert detach_paged == {("NovaDeviceDetachFailed", "")}
    images = {
        a["labels"].get("image_id", "")
        for a in paged
        if a["labels"]["alertname"] == "PCIeHotplugRootCause"
    }
    assert "img-aspm-off" in images
    listed = servers.http_json(plane.alertmanager.url + "/api/v2/alerts")
    flood_states = {
        a["status"]["state"]
        for a in listed  # type: ignore[union-attr]
        if DETACH_ALERTNAME.fullmatch(a["labels"]["alertname"]) and a["labels"].get("image_id")
    }
    assert flood_states == {"suppressed"}
