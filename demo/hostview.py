"""What pciehp-host-exporter would report for a demo guest, from its capture's real config space.

The guest's own reads of a root port's config space equal the host's through the QEMU monitor
(kernel-facts.md section 9), so a capture's `config` files are exactly the bytes the host exporter
decodes. The verdict and metrics come from the exporter's own code (host.slots, host.metrics).
"""

from __future__ import annotations

import json
import re

from demo.captures import PHASES, Capture
from host.probe import VmReport
from host.slots import PortAddress, PortRegisters, PortView, decode, vm_verdict

QEMU_MACHINE = {"q35": "pc-q35-7.2", "pc": "pc-i440fx-7.2"}  # the captures' Debian QEMU 7.2
_BDF = re.compile(r"0000:00:([0-9a-f]{2})\.([0-7])")
_ADDR = re.compile(r"\bid=([^,]+),.*\baddr=0x([0-9a-f]+)\.0x([0-7])")


def _meta(capture: Capture) -> dict:
    return json.loads((Capture(capture.scenario).tree.parent / "meta.json").read_text())


def port_ids(meta: dict) -> dict[tuple[int, int], str]:
    """(device, function) -> the QEMU device id of each pcie-root-port on the capture's argv."""
    ids = {}
    for arg in meta.get("qemu_args", []):
        m = _ADDR.search(arg) if arg.startswith("pcie-root-port,") else None
        if m:
            ids[(int(m.group(2), 16), int(m.group(3)))] = m.group(1)
    return ids


def root_ports(capture: Capture) -> dict[PortAddress, PortRegisters]:
    """Every root port on bus 0 of the capture, decoded from its first 256 config bytes."""
    ids = port_ids(_meta(capture))
    found = {}
    for dev in sorted((capture.sysfs / "devices" / "pci0000:00").iterdir()):
        m = _BDF.fullmatch(dev.name)
        cfg = dev / "config"
        if not m or not cfg.is_file():
            continue
        regs = decode(cfg.read_bytes()[:256])
        if regs is not None:
            d, f = int(m.group(1), 16), int(m.group(2))
            found[PortAddress(0, d, f, ids.get((d, f), ""))] = regs
    return found


def neighbour_phase(phase: str) -> str:
    """The capture taken next (or, for the last one, the one before): the second reading."""
    i = PHASES.index(phase)
    return PHASES[i + 1] if i + 1 < len(PHASES) else PHASES[i - 1]


def host_report(capture: Capture, instance_uuid: str, domain: str) -> VmReport:
    """The host exporter's report of a VM whose guest looks like `capture`.

    A latched ABP counts only if the neighbouring capture (20-seconds-apart reading) shows it too.
    """
    meta = _meta(capture)
    ports = root_ports(capture)
    again = root_ports(Capture(capture.scenario, neighbour_phase(capture.phase)))
    views = [
        PortView(a, r, r.button_latched and a in again and again[a].button_latched)
        for a, r in ports.items()
    ]
    hotplug = meta.get("hotplug_mode") if meta.get("hotplug_mode") in ("native", "acpi") else None
    report = VmReport(
        target=domain,
        success=True,
        instance_uuid=instance_uuid,
        domain=domain,
        machine=QEMU_MACHINE.get(meta.get("machine", ""), meta.get("machine", "")),
        hotplug=hotplug,
        ports=views,
    )
    report.verdict = vm_verdict(True, hotplug, False, views)
    return report
