"""Register decoding and verdicts on real config bytes: guest captures and a recorded monitor."""

from __future__ import annotations

import json

import pytest

from host.slots import (
    ConfigReadError,
    PortAddress,
    PortView,
    bridges,
    capabilities,
    decode,
    ecam_address,
    parse_xp,
    port_unplug_ready,
    vm_verdict,
)
from tests.host.transcript import DATA
from tests.support.captures import Capture

DISK_PORT = "devices/pci0000:00/0000:00:02.0/config"
EMPTY_PORT = "devices/pci0000:00/0000:00:02.1/config"


def config(scenario: str, port: str = DISK_PORT, phase: str = "boot") -> bytes:
    """The first 256 bytes the guest read: the host reads the same bytes (kernel-facts 9)."""
    return (Capture(scenario, phase).sysfs / port).read_bytes()[:256]


def firmware_answers() -> dict:
    return json.loads((DATA / "firmware_q35_12ports.json").read_text())["answers"]


def view(cfg: bytes, pending: bool = False) -> PortView:
    regs = decode(cfg)
    assert regs is not None
    return PortView(PortAddress(0, 2, 0, "pci.1"), regs, pending)


@pytest.mark.parametrize(
    ("scenario", "phase", "port", "sltctl", "sltsta", "armed", "hpie", "abp"),
    [
        ("q35_normal", "boot", DISK_PORT, 0x01F1, 0x0040, True, True, False),
        ("q35_normal", "boot", EMPTY_PORT, 0x07F1, 0x0000, True, True, False),
        ("q35_aspm_off", "boot", DISK_PORT, 0x01C0, 0x0040, False, False, False),
        ("q35_aspm_off", "after_unplug", DISK_PORT, 0x01C0, 0x0041, False, False, True),
        ("q35_acpihp_normal", "boot", DISK_PORT, 0x01C0, 0x0000, False, False, False),
    ],
)
def test_decode_captured_ports(scenario, phase, port, sltctl, sltsta, armed, hpie, abp) -> None:
    regs = decode(config(scenario, port, phase))
    assert regs is not None
    assert regs.port_type == "root_port"
    assert regs.hotplug_capable
    assert (regs.sltctl, regs.sltsta) == (sltctl, sltsta)
    assert regs.driver_armed is armed
    assert regs.interrupt_enabled is hpie
    assert regs.button_latched is abp
    assert regs.enabled_by_os  # Linux set bus master and MSI-X in every scenario, aspm_off too


def test_acpi_hotplug_port_hides_presence() -> None:
    """QEMU's ACPI-hotplug ports read PDS 0 with the disk present: not a usable signal there."""
    assert not decode(config("q35_acpihp_normal")).adapter_present
    assert decode(config("q35_normal")).adapter_present


def test_parse_recorded_xp_answer() -> None:
    answers = firmware_answers()
    mcfg = answers[json.dumps(["qom-get", {"path": "/machine/q35", "property": "MCFG"}])]
    base = mcfg["return"]
    assert base == 0xB000_0000
    addr = ecam_address(base, 0, 2, 0)
    assert addr == 0xB001_0000
    key = json.dumps(["human-monitor-command", {"command-line": f"xp /64wx 0x{addr:x}"}])
    cfg = parse_xp(answers[key]["return"], addr)
    assert cfg[:4] == bytes.fromhex("361b0c00")  # Red Hat 1b36:000c, QEMU's pcie-root-port
    regs = decode(cfg)
    assert regs.sltctl == 0x07C0  # QEMU's reset value of an empty slot: nobody wrote it
    assert regs.command == 0x0103  # SeaBIOS: I/O, memory, SERR; no bus master
    assert not regs.msix_enabled
    assert not regs.enabled_by_os
    assert capabilities(cfg) == {0x0D: 0x40, 0x11: 0x48, 0x10: 0x54}


def test_recorded_query_pci_lists_the_twelve_ports() -> None:
    answer = firmware_answers()[json.dumps(["query-pci", {}])]["return"]
    found = bridges(answer)
    assert [p.port_id for p in found] == [f"pci.{i}" for i in range(1, 13)]
    assert found[8] == PortAddress(0, 3, 0, "pci.9")
    assert found[8].bdf == "0000:00:03.0"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("00000000b0010000: Cannot access memory\r\n", "unexpected monitor output"),
        ("00000000b0020000: 0x000c1b36 0x00100103 0x06040000 0x00810000\r\n", "expected"),
        ("00000000b0010000: 0x000c1b36 0x00100103 0x06040000 0x00810000\r\n", "16 config bytes"),
        ("", "0 config bytes"),
        ("unknown command: 'xp'\r\n", "unexpected monitor output"),
    ],
)
def test_parse_xp_rejects_what_is_not_config_space(text: str, message: str) -> None:
    with pytest.raises(ConfigReadError, match=message):
        parse_xp(text, 0xB001_0000)


def test_capability_loop_is_an_error_not_a_hang() -> None:
    cfg = bytearray(config("q35_normal"))
    cfg[0x54 + 1] = 0x54  # the PCIe capability points at itself
    cfg[0x48 + 1] = 0x54
    with pytest.raises(ConfigReadError, match="broken"):
        decode(bytes(cfg))


def test_non_port_functions_are_not_ports() -> None:
    cfg = bytearray(config("q35_normal"))
    cfg[0x54 + 2] = 0x52  # PCIe capability: type 5 = upstream port of a switch
    assert decode(bytes(cfg)) is None
    cfg[0x06] = 0  # no capability list at all (a conventional PCI device)
    assert decode(bytes(cfg)) is None


@pytest.mark.parametrize(
    "answer",
    [
        [{"bus": 0, "devices": [{"pci_bridge": {}, "bus": 0, "slot": "x", "function": 0}]}],
        [{"bus": 0, "devices": [{"pci_bridge": {}, "bus": 0, "slot": 40, "function": 0}]}],
        [{"bus": 0, "devices": [{"pci_bridge": {}, "slot": 1, "function": 0}]}],
    ],
)
def test_hostile_query_pci(answer) -> None:
    with pytest.raises(ConfigReadError, match="query-pci"):
        bridges(answer)


def test_query_pci_without_bridges() -> None:
    assert bridges([{"bus": 0, "devices": [{"bus": 0, "slot": 1}]}]) == []
    assert bridges({"not": "a list"}) == []


def test_verdicts_of_the_captured_guests() -> None:
    normal = [view(config("q35_normal")), view(config("q35_normal", EMPTY_PORT))]
    broken = [view(config("q35_aspm_off")), view(config("q35_aspm_off", EMPTY_PORT))]
    acpi = [view(config("q35_acpihp_normal"))]
    hung = [view(config("q35_aspm_off", phase="after_unplug"), pending=True)]
    assert vm_verdict(True, "native", False, normal) == ("ready", "pciehp_irq")
    assert vm_verdict(True, "native", False, broken) == ("not_ready", "driver_not_armed")
    assert vm_verdict(True, "native", False, hung) == ("not_ready", "button_pending_unarmed")
    assert vm_verdict(True, "acpi", False, acpi) == ("ready", "acpi_hotplug")
    assert vm_verdict(True, "acpi", False, []) == ("ready", "acpi_hotplug")  # i440fx
    assert vm_verdict(False, "native", False, normal) == ("unknown", "not_running")
    assert vm_verdict(True, None, False, normal) == ("unknown", "hotplug_mode_unknown")
    assert vm_verdict(True, "native", True, []) == ("unknown", "booting")
    assert vm_verdict(True, "native", False, []) == ("unknown", "no_hotplug_ports")
    v = vm_verdict(True, "native", False, broken)
    assert [port_unplug_ready(v, "native", p) for p in broken] == [False, False]
    v = vm_verdict(True, "acpi", False, acpi)
    assert port_unplug_ready(v, "acpi", acpi[0]) is True


def test_poll_mode_is_armed_without_interrupt() -> None:
    cfg = bytearray(config("q35_normal"))
    cfg[0x54 + 0x18] = 0xC1  # Slot Control 0x01c1: what pciehp writes with pciehp_poll_mode=1
    p = view(bytes(cfg))
    assert p.regs.driver_armed and not p.regs.interrupt_enabled
    assert vm_verdict(True, "native", False, [p]) == ("ready", "pciehp_poll")


def test_firmware_ports_read_booting_not_broken() -> None:
    """Reset values look exactly like a guest that never armed: only OS traces tell them apart."""
    answers = firmware_answers()
    ports = []
    for addr in bridges(answers[json.dumps(["query-pci", {}])]["return"]):
        where = ecam_address(0xB000_0000, addr.bus, addr.device, addr.function)
        key = json.dumps(["human-monitor-command", {"command-line": f"xp /64wx 0x{where:x}"}])
        ports.append(PortView(addr, decode(parse_xp(answers[key]["return"], where)), False))
    v = vm_verdict(True, "native", False, ports)
    assert v == ("unknown", "booting")
    assert all(port_unplug_ready(v, "native", p) is None for p in ports)
