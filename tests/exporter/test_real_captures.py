"""The verdicts the exporter must give on the real QEMU captures (issue: right on real captures)."""

from __future__ import annotations

import json

import pytest

from tests.exporter.conftest import port, select, value
from tests.support.captures import GUESTS, PHASES, Capture

ROOT_PORTS = [f"0000:00:02.{f}" for f in range(8)] + [f"0000:00:03.{f}" for f in range(4)]


@pytest.mark.parametrize("phase", PHASES)
def test_q35_native_normal_every_port_served_by_pciehp(scrape, phase):
    s = scrape(Capture("q35_normal", phase))
    for addr in ROOT_PORTS:
        p = port(addr)
        assert value(s, "pciehp_port_hotplug_capable", **p) == 1
        assert value(s, "pciehp_port_hotplug_handler", handler="pciehp", **p) == 1
        assert value(s, "pciehp_port_service_bound", **p) == 1
        assert value(s, "pciehp_port_irq_registered", **p) == 1
    assert value(s, "pciehp_guest_info", machine="q35") == 1


@pytest.mark.parametrize("phase", PHASES)
def test_q35_aspm_off_no_port_has_a_handler(scrape, phase):
    s = scrape(Capture("q35_aspm_off", phase))
    for addr in ROOT_PORTS:
        p = port(addr)
        assert value(s, "pciehp_port_hotplug_capable", **p) == 1
        assert value(s, "pciehp_port_hotplug_handler", handler="none", **p) == 1
        assert value(s, "pciehp_port_service_bound", **p) == 0
        assert value(s, "pciehp_port_irq_registered", **p) == 0
    assert value(s, "pciehp_kernel_param", param="pcie_aspm") == 1
    assert select(s, "pciehp_kernel_param", param="pcie_aspm", value="off")


@pytest.mark.parametrize("phase", PHASES)
def test_q35_acpi_hotplug_is_served_by_acpiphp(scrape, phase):
    s = scrape(Capture("q35_acpihp_normal", phase))
    for addr in ROOT_PORTS:
        p = port(addr)
        assert value(s, "pciehp_port_hotplug_handler", handler="acpiphp", **p) == 1
        assert value(s, "pciehp_port_hotplug_handler", handler="none", **p) == 0
        assert value(s, "pciehp_port_service_bound", **p) == 0


@pytest.mark.parametrize("phase", PHASES)
def test_i440fx_has_no_pcie_ports(scrape, phase):
    s = scrape(Capture("i440fx_normal", phase))
    assert not select(s, "pciehp_port_info")
    assert not select(s, "pciehp_port_hotplug_handler")
    assert value(s, "pciehp_guest_info", machine="i440fx") == 1


def test_each_port_has_exactly_one_handler(scrape):
    for capture in (Capture(sc) for sc in ("q35_normal", "q35_aspm_off", "q35_acpihp_normal")):
        s = scrape(capture)
        for addr in ROOT_PORTS:
            rows = select(s, "pciehp_port_hotplug_handler", **port(addr))
            assert len(rows) == 4
            assert sorted(rows.values()) == [0, 0, 0, 1]


def test_unplug_on_normal_guest_logs_button_and_power_off(scrape):
    s = scrape(Capture("q35_normal", "after_unplug"))
    disk = port("0000:00:02.0")
    assert value(s, "pciehp_events_total", event="attention_button", **disk) == 1
    assert value(s, "pciehp_events_total", event="power_off_request", **disk) == 1
    other = port("0000:00:02.1")
    assert value(s, "pciehp_events_total", event="attention_button", **other) == 0


def test_plug_on_normal_guest_logs_power_on_card_and_link(scrape):
    s = scrape(Capture("q35_normal", "after_plug"))
    target = port("0000:00:02.1")
    for event in ("attention_button", "power_on_request", "card_present", "link_up"):
        assert value(s, "pciehp_events_total", event=event, **target) == 1, event


def test_aspm_off_unplug_leaves_button_pending_with_interrupt_disabled(scrape):
    before = scrape(Capture("q35_aspm_off", "boot"))
    after = scrape(Capture("q35_aspm_off", "after_unplug"))
    disk = port("0000:00:02.0")
    assert value(before, "pciehp_slot_button_pending", **disk) == 0
    assert value(after, "pciehp_slot_button_pending", **disk) == 1
    assert value(after, "pciehp_slot_interrupt_enabled", **disk) == 0
    # and the kernel logged nothing about it
    assert all(v == 0 for v in select(after, "pciehp_events_total", **disk).values())


def test_normal_guest_slot_is_armed(scrape):
    s = scrape(Capture("q35_normal"))
    disk = port("0000:00:02.0")
    assert value(s, "pciehp_slot_interrupt_enabled", **disk) == 1
    assert value(s, "pciehp_slot_power_on", slot="1", **disk) == 1
    assert value(s, "pciehp_slot_adapter_present", slot="1", **disk) == 1
    assert value(s, "pciehp_slot_adapter_present", slot="2", **port("0000:00:02.1")) == 0


@pytest.mark.parametrize(
    ("scenario", "outcome", "missing", "denied"),
    [
        ("q35_normal", "granted", "", "LTR"),  # QEMU never grants LTR
        ("q35_aspm_off", "not_requested", "ASPM ClockPM", ""),
        ("q35_acpihp_normal", "partial", "", "PCIeHotplug LTR"),
    ],
)
def test_osc_outcome(scrape, scenario, outcome, missing, denied):
    s = scrape(Capture(scenario))
    assert (
        value(
            s,
            "pciehp_osc_info",
            bridge="PNP0A08:00",
            outcome=outcome,
            missing_support=missing,
            denied=denied,
        )
        == 1
    )
    hotplug = value(s, "pciehp_osc_control", bridge="PNP0A08:00", feature="PCIeHotplug")
    assert hotplug == (1 if scenario == "q35_normal" else 0)


def test_guest_identity_is_the_smbios_uuid(scrape):
    for scenario in ("q35_normal", "q35_aspm_off", "q35_acpihp_normal", "i440fx_normal"):
        meta = json.loads((GUESTS / scenario / "meta.json").read_text())
        s = scrape(Capture(scenario))
        assert (
            value(s, "pciehp_guest_info", instance_uuid=meta["uuid"], kernel=meta["kernel_release"])
            == 1
        )


def test_every_collector_succeeds_on_every_capture(scrape):
    for capture in (
        Capture(sc, ph)
        for sc in ("q35_normal", "q35_aspm_off", "q35_acpihp_normal", "i440fx_normal")
        for ph in PHASES
    ):
        s = scrape(capture)
        rows = select(s, "pciehp_collector_success")
        assert len(rows) == 8
        assert all(v == 1 for v in rows.values()), (capture, rows)
