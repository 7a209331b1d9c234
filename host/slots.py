"""Decode a PCIe port's config space as the host reads it, and judge whether its slot can unplug.

Offsets and bits follow the PCI Express Base Specification (include/uapi/linux/pci_regs.h). The
bytes come from `xp /64wx` at ECAM + (bus << 20 | device << 15 | function << 12), ECAM being
the base the firmware programmed (`qom-get /machine/q35 MCFG`), so read it on every probe.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from typing import Any, NamedTuple

CONFIG_BYTES = 256
ECAM_UNSET = 0xFFFF_FFFF_FFFF_FFFF  # MCFG before the firmware enabled PCIEXBAR (or after a reset)

PCI_COMMAND = 0x04
PCI_COMMAND_MASTER = 0x0004
PCI_COMMAND_INTX_DISABLE = 0x0400
PCI_STATUS = 0x06
PCI_STATUS_CAP_LIST = 0x10
PCI_CAPABILITY_LIST = 0x34
PCI_CAP_ID_MSIX = 0x11
PCI_MSIX_FLAGS_ENABLE = 0x8000
PCI_CAP_ID_EXP = 0x10
EXP_FLAGS_SLOT = 0x0100
EXP_SLTCAP_HPC = 0x0040
EXP_SLTCTL_ABPE = 0x0001
EXP_SLTCTL_PDCE = 0x0008
EXP_SLTCTL_HPIE = 0x0020
EXP_SLTSTA_ABP = 0x0001
EXP_SLTSTA_PDS = 0x0040
PORT_TYPES = {4: "root_port", 6: "downstream_port"}

_XP_LINE = re.compile(r"([0-9a-f]{16}):((?: 0x[0-9a-f]{8}){1,4})")


class ConfigReadError(ValueError):
    """The monitor's answer is not 256 readable config bytes of the expected address."""


def ecam_address(base: int, bus: int, device: int, function: int) -> int:
    """Guest-physical address of a function's config space under ECAM."""
    return base + (bus << 20 | device << 15 | function << 12)


def parse_xp(text: str, address: int) -> bytes:
    """The 256 bytes an `xp /64wx ADDRESS` answer shows (words are little-endian in memory)."""
    words: list[int] = []
    expect = address
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        m = _XP_LINE.fullmatch(line)
        if m is None:
            raise ConfigReadError(f"unexpected monitor output: {line[:80]!r}")
        if int(m.group(1), 16) != expect:
            raise ConfigReadError(f"output for 0x{m.group(1)}, expected 0x{expect:016x}")
        row = [int(w, 16) for w in m.group(2).split()]
        words.extend(row)
        expect += 4 * len(row)
    if len(words) != CONFIG_BYTES // 4:
        raise ConfigReadError(f"{len(words) * 4} config bytes, expected {CONFIG_BYTES}")
    return struct.pack("<64I", *words)


def _u16(cfg: bytes, off: int) -> int:
    return struct.unpack_from("<H", cfg, off)[0]


def capabilities(cfg: bytes) -> dict[int, int]:
    """Capability id -> offset, walking the list from 0x34 (raises ConfigReadError on a loop)."""
    found: dict[int, int] = {}
    if len(cfg) < CONFIG_BYTES or not _u16(cfg, PCI_STATUS) & PCI_STATUS_CAP_LIST:
        return found
    ptr = cfg[PCI_CAPABILITY_LIST] & 0xFC
    seen: set[int] = set()
    while ptr:
        if ptr < 0x40 or ptr in seen:
            raise ConfigReadError(f"capability list broken at 0x{ptr:02x}")
        seen.add(ptr)
        found.setdefault(cfg[ptr], ptr)
        ptr = cfg[ptr + 1] & 0xFC
    return found


@dataclass(frozen=True)
class PortRegisters:
    """What one PCIe port's config space says about its slot and about who has touched it."""

    port_type: str
    hotplug_capable: bool
    command: int
    msix_enabled: bool
    sltctl: int
    sltsta: int

    @property
    def driver_armed(self) -> bool:
        """The guest wrote Slot Control to listen: attention button or presence detect enabled."""
        return bool(self.sltctl & (EXP_SLTCTL_ABPE | EXP_SLTCTL_PDCE))

    @property
    def interrupt_enabled(self) -> bool:
        """Slot Control HPIE (0 also in pciehp's poll mode)."""
        return bool(self.sltctl & EXP_SLTCTL_HPIE)

    @property
    def adapter_present(self) -> bool:
        """Slot Status PDS (QEMU clears it on ACPI-hotplug ports even with a device present)."""
        return bool(self.sltsta & EXP_SLTSTA_PDS)

    @property
    def button_latched(self) -> bool:
        """Slot Status ABP in this one reading (proves nothing alone: pciehp clears it fast)."""
        return bool(self.sltsta & EXP_SLTSTA_ABP)

    @property
    def enabled_by_os(self) -> bool:
        """An operating system has taken this port: firmware leaves all of these clear.

        SeaBIOS sets only I/O, memory and SERR in Command; Linux's port driver sets bus master
        and INTx disable and enables MSI-X (even with pcie_aspm=off), pciehp writes Slot Control.
        """
        touched = self.command & (PCI_COMMAND_MASTER | PCI_COMMAND_INTX_DISABLE)
        return bool(touched) or self.msix_enabled or self.driver_armed


def decode(cfg: bytes) -> PortRegisters | None:
    """The registers of a root or downstream port, None for any other function."""
    caps = capabilities(cfg)
    exp = caps.get(PCI_CAP_ID_EXP)
    if exp is None or exp + 0x1C > len(cfg):
        return None
    flags = _u16(cfg, exp + 0x02)
    port_type = PORT_TYPES.get((flags >> 4) & 0xF)
    if port_type is None:
        return None
    slot = bool(flags & EXP_FLAGS_SLOT)
    sltcap = struct.unpack_from("<I", cfg, exp + 0x14)[0] if slot else 0
    msix = caps.get(PCI_CAP_ID_MSIX)
    return PortRegisters(
        port_type=port_type,
        hotplug_capable=slot and bool(sltcap & EXP_SLTCAP_HPC),
        command=_u16(cfg, PCI_COMMAND),
        msix_enabled=msix is not None and bool(_u16(cfg, msix + 2) & PCI_MSIX_FLAGS_ENABLE),
        sltctl=_u16(cfg, exp + 0x18) if slot else 0,
        sltsta=_u16(cfg, exp + 0x1A) if slot else 0,
    )


@dataclass(frozen=True)
class PortAddress:
    """A bridge as the guest numbered it, with QEMU's device id (`pci.3`)."""

    bus: int
    device: int
    function: int
    port_id: str

    @property
    def bdf(self) -> str:
        return f"0000:{self.bus:02x}:{self.device:02x}.{self.function:x}"


def bridges(query_pci: Any) -> list[PortAddress]:
    """Every PCI bridge in a `query-pci` answer, behind switches too (candidates for ports)."""
    found: list[PortAddress] = []

    def walk(devices: Any) -> None:
        for dev in devices if isinstance(devices, list) else []:
            bridge = dev.get("pci_bridge") if isinstance(dev, dict) else None
            if not isinstance(bridge, dict):
                continue
            try:
                addr = PortAddress(
                    int(dev["bus"]), int(dev["slot"]), int(dev["function"]), str(dev["qdev_id"])
                )
            except (KeyError, TypeError, ValueError) as e:
                raise ConfigReadError(f"query-pci: malformed bridge entry ({e!r})") from e
            if not (0 <= addr.bus < 256 and 0 <= addr.device < 32 and 0 <= addr.function < 8):
                raise ConfigReadError(f"query-pci: address out of range: {addr}")
            found.append(addr)
            walk(bridge.get("devices"))

    for bus in query_pci if isinstance(query_pci, list) else []:
        if isinstance(bus, dict):
            walk(bus.get("devices"))
    return found


@dataclass(frozen=True)
class PortView:
    """One hotplug-relevant port of a VM: where it is, its registers, and a confirmed ABP."""

    address: PortAddress
    regs: PortRegisters
    button_pending: bool


class Verdict(NamedTuple):
    """Whether a device_del on this VM will be answered, and the short id of why."""

    verdict: str  # ready | not_ready | unknown
    reason: str


def vm_verdict(
    running: bool, hotplug: str | None, ecam_unset: bool, ports: list[PortView]
) -> Verdict:
    """The VM-level verdict; the rule for `booting` is documented in docs/host.md.

    A VM is `booting` (unknown, not broken) while the firmware has not set ECAM yet (its ports
    cannot be read then), or while
    no port shows any sign of an operating system (see PortRegisters.enabled_by_os): QEMU's
    reset values are exactly what a guest that never armed its slots shows, so only an
    OS-touched port makes "not armed" a finding.
    """
    hp = [p for p in ports if p.regs.hotplug_capable]
    if not running:
        return Verdict("unknown", "not_running")
    if hotplug is None:
        return Verdict("unknown", "hotplug_mode_unknown")
    if ecam_unset or (hp and not any(p.regs.enabled_by_os for p in ports)):
        return Verdict("unknown", "booting")
    if hotplug == "acpi":
        return Verdict("ready", "acpi_hotplug")
    if not hp:
        return Verdict("unknown", "no_hotplug_ports")
    if any(p.button_pending and not p.regs.driver_armed for p in hp):
        return Verdict("not_ready", "button_pending_unarmed")
    if not all(p.regs.driver_armed for p in hp):
        return Verdict("not_ready", "driver_not_armed")
    if all(p.regs.interrupt_enabled for p in hp):
        return Verdict("ready", "pciehp_irq")
    return Verdict("ready", "pciehp_poll")


def port_unplug_ready(verdict: Verdict, hotplug: str | None, port: PortView) -> bool | None:
    """Per port: will a device_del behind it be answered (None while the VM verdict is unknown)."""
    if verdict.verdict == "unknown" or not port.regs.hotplug_capable:
        return None
    return hotplug == "acpi" or port.regs.driver_armed
