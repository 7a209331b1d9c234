"""The demo's host view: the host exporter's code on the captures' real config space."""

from __future__ import annotations

from demo.fleet import Fleet, FleetServer, default_fleet
from demo.hostview import host_report
from tests.host.conftest import find, port_values, samples, verdict_of
from tests.support.captures import Capture
from tests.support.servers import free_port, http_get, http_json


def test_captures_read_as_the_host_would() -> None:
    cases = {
        ("q35_normal", "boot"): ("ready", "pciehp_irq"),
        ("q35_aspm_off", "boot"): ("not_ready", "driver_not_armed"),
        ("q35_aspm_off", "after_unplug"): ("not_ready", "button_pending_unarmed"),
        ("q35_acpihp_normal", "after_unplug"): ("ready", "acpi_hotplug"),
        ("i440fx_normal", "boot"): ("ready", "acpi_hotplug"),
    }
    for (scenario, phase), verdict in cases.items():
        r = host_report(Capture(scenario, phase), "u", "d")
        assert r.verdict == verdict, (scenario, phase)
    hung = host_report(Capture("q35_aspm_off", "after_unplug"), "u", "d")
    assert [p.address.port_id for p in hung.ports if p.button_pending] == ["rp1"]
    assert len(hung.ports) == 12


def test_fleet_serves_host_views_of_guests_without_exporter() -> None:
    fleet = Fleet(default_fleet(40))
    agentless = [g for g in fleet.guests.values() if not g.exporter]
    assert agentless
    server = FleetServer(fleet, free_port()).start()
    try:
        base = f"http://{server.address}"
        guest_paths = {t["labels"]["__metrics_path__"] for t in http_json(base + "/targets")}
        assert all(f"/guests/{g.name}/metrics" not in guest_paths for g in agentless)
        hosts = http_json(base + "/host-targets")
        assert {t["labels"]["host"] for t in hosts} == {g.host for g in fleet.guests.values()}
        g = agentless[0]
        status, body = http_get(f"{base}/hosts/{g.host}/metrics")
        assert status == 200
        m = samples(body.decode())
        assert verdict_of(m, g.instance_uuid) == ("ready", "acpi_hotplug")
        [info] = find(m, "pciehp_host_vm_info", instance_uuid=g.instance_uuid)
        assert dict(info)["hotplug"] == "acpi"
        ready = port_values(m, "pciehp_host_port_unplug_ready", g.instance_uuid)
        assert ready == {f"rp{i}": 1.0 for i in range(1, 13)}
        assert http_get(f"{base}/hosts/nowhere/metrics")[0] == 404
        broken = next(x for x in fleet.guests.values() if x.capture.scenario == "q35_aspm_off")
        fleet.advance(broken.name, "after_unplug")
        m = samples(http_get(f"{base}/hosts/{broken.host}/metrics")[1].decode())
        assert verdict_of(m, broken.instance_uuid) == ("not_ready", "button_pending_unarmed")
        pending = port_values(m, "pciehp_host_slot_button_pending", broken.instance_uuid)
        assert pending["rp1"] == 1.0
    finally:
        server.stop()
