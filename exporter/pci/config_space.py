"""Decode the PCI Express capability and slot registers from a device's `config` bytes.

Offsets and bits follow include/uapi/linux/pci_regs.h. Unprivileged readers get only the first
64 bytes, where the PCIe capability never is; `decode` then says the capability is unreachable.
"""

from typing import NamedTuple, Optional, Set, Tuple

PCI_STATUS = 0x06
PCI_STATUS_CAP_LIST = 0x10
PCI_CAPABILITY_LIST = 0x34
PCI_SECONDARY_BUS = 0x19
PCI_CAP_ID_EXP = 0x10

EXP_FLAGS = 0x02
EXP_FLAGS_TYPE = 0x00F0
EXP_FLAGS_SLOT = 0x0100
EXP_SLTCAP = 0x14
EXP_SLTCAP_HPC = 0x40
EXP_SLTCAP_ABP = 0x01
EXP_SLTCAP_PSN_SHIFT = 19
EXP_SLTCTL = 0x18
EXP_SLTCTL_HPIE = 0x20
EXP_SLTSTA = 0x1A
EXP_SLTSTA_ABP = 0x01
EXP_SLTSTA_PDS = 0x40

PORT_TYPES = {4: "root_port", 5: "upstream_port", 6: "downstream_port"}
_MAX_CAPS = 48


class ConfigSpaceError(ValueError):
    """The config bytes are malformed (a capability loop or a pointer out of range)."""


class PcieCap(NamedTuple):
    """What the PCIe capability of a port says about its slot."""

    port_type: Optional[str]
    slot_implemented: bool
    hotplug_capable: bool
    attention_button: bool
    physical_slot: int
    sltctl: int
    sltsta: int
    offset: int
    """Where the capability starts in config space (for re-reading the slot registers)."""

    @property
    def button_pending(self) -> bool:
        return bool(self.sltsta & EXP_SLTSTA_ABP)

    @property
    def interrupt_enabled(self) -> bool:
        return bool(self.sltctl & EXP_SLTCTL_HPIE)

    @property
    def presence(self) -> bool:
        return bool(self.sltsta & EXP_SLTSTA_PDS)


def _u16(b: bytes, off: int) -> int:
    return b[off] | (b[off + 1] << 8)


def _u32(b: bytes, off: int) -> int:
    return _u16(b, off) | (_u16(b, off + 2) << 16)


def find_capability(cfg: bytes, cap_id: int) -> Optional[int]:
    """Offset of a standard capability, None if absent or beyond the readable bytes.

    Raises ConfigSpaceError on a looping or out-of-range capability list.
    """
    if len(cfg) < 0x40:
        raise ConfigSpaceError(f"config space truncated to {len(cfg)} bytes")
    if not _u16(cfg, PCI_STATUS) & PCI_STATUS_CAP_LIST:
        return None
    ptr = cfg[PCI_CAPABILITY_LIST] & 0xFC
    seen: Set[int] = set()
    while ptr:
        if ptr < 0x40 or ptr > 0xFC:
            raise ConfigSpaceError(f"capability pointer 0x{ptr:02x} out of range")
        if ptr + 2 > len(cfg):
            return None  # beyond what this reader may see (64 bytes without CAP_SYS_ADMIN)
        if ptr in seen or len(seen) > _MAX_CAPS:
            raise ConfigSpaceError("capability list loops")
        seen.add(ptr)
        if cfg[ptr] == cap_id:
            return ptr
        ptr = cfg[ptr + 1] & 0xFC
    return None


def decode(cfg: bytes) -> Optional[PcieCap]:
    """The port's PCIe capability registers, or None when they are not readable.

    Raises ConfigSpaceError when the bytes are malformed.
    """
    off = find_capability(cfg, PCI_CAP_ID_EXP)
    if off is None or off + EXP_SLTSTA + 2 > len(cfg):
        return None
    flags = _u16(cfg, off + EXP_FLAGS)
    slot_impl = bool(flags & EXP_FLAGS_SLOT)
    sltcap = _u32(cfg, off + EXP_SLTCAP) if slot_impl else 0
    return PcieCap(
        port_type=PORT_TYPES.get((flags & EXP_FLAGS_TYPE) >> 4),
        slot_implemented=slot_impl,
        hotplug_capable=slot_impl and bool(sltcap & EXP_SLTCAP_HPC),
        attention_button=bool(sltcap & EXP_SLTCAP_ABP),
        physical_slot=sltcap >> EXP_SLTCAP_PSN_SHIFT,
        sltctl=_u16(cfg, off + EXP_SLTCTL) if slot_impl else 0,
        sltsta=_u16(cfg, off + EXP_SLTSTA) if slot_impl else 0,
        offset=off,
    )


def slot_registers(data: bytes) -> Tuple[int, int]:
    """(Slot Control, Slot Status) from the 4 bytes at the capability's EXP_SLTCTL offset."""
    return _u16(data, 0), _u16(data, EXP_SLTSTA - EXP_SLTCTL)


def secondary_bus(cfg: bytes) -> Optional[int]:
    """A bridge's secondary bus number (type 1 header), None if the header is too short."""
    return cfg[PCI_SECONDARY_BUS] if len(cfg) > PCI_SECONDARY_BUS else None
