"""ACPI `_OSC` negotiation per host bridge, from the lines drivers/acpi/pci_root.c prints.

Both eras are understood: the decoded `_OSC: <what> [names]` lines (3.14 and later, RHEL7)
and the hex masks of 3.1-3.13. Each bridge keeps the outcome of its latest negotiation.
"""

import re
from typing import Dict, FrozenSet, Iterable, Match, NamedTuple, Tuple

OSC_FEATURES: Tuple[str, ...] = (
    "PCIeHotplug",
    "SHPCHotplug",
    "PME",
    "AER",
    "PCIeCapability",
    "LTR",
    "DPC",
)
"""Control features as the kernel names them, in bit order."""

REQUIRED_SUPPORT: Tuple[str, ...] = ("ExtendedConfig", "ASPM", "ClockPM", "MSI")
"""ACPI_PCIE_REQ_SUPPORT: without all of these the kernel requests no control at all."""

CORE_FEATURES = frozenset(("PCIeHotplug", "SHPCHotplug", "PME", "AER", "PCIeCapability"))
"""Features whose refusal makes an outcome `partial` (LTR and DPC refusals are routine)."""

OUTCOMES: Tuple[str, ...] = ("granted", "partial", "not_requested", "failed", "unknown")

# bit values from include/linux/acpi.h (OSC_PCI_*_SUPPORT, OSC_PCI_EXPRESS_*_CONTROL)
_SUPPORT_BITS = ((0x1, "ExtendedConfig"), (0x2, "ASPM"), (0x4, "ClockPM"), (0x8, "Segments"),
                 (0x10, "MSI"), (0x80, "EDR"), (0x100, "HPX-Type3"))  # fmt: skip
_CONTROL_BITS = ((0x1, "PCIeHotplug"), (0x2, "SHPCHotplug"), (0x4, "PME"), (0x8, "AER"),
                 (0x10, "PCIeCapability"), (0x20, "LTR"), (0x80, "DPC"))  # fmt: skip


class OscState(NamedTuple):
    """The latest `_OSC` outcome of one host bridge (e.g. `PNP0A08:00`)."""

    outcome: str = "unknown"
    """granted | partial | not_requested | failed | unknown"""
    controlled: FrozenSet[str] = frozenset()
    """Features the OS controls after `_OSC`, named as the kernel prints them."""
    missing_support: Tuple[str, ...] = ()
    """Required support bits the OS lacked, in kernel order, e.g. ("ASPM", "ClockPM")."""
    denied: Tuple[str, ...] = ()
    """Features the platform refused, in the order the kernel reported them."""
    os_supports: Tuple[str, ...] = ()
    """The `OS supports [...]` list, when printed."""
    requested: Tuple[str, ...] = ()
    """What the OS asked for, when printed (`OS requested`, hex `Requesting`)."""
    services_disabled: bool = False
    """`pcie_ports=compat`: portdrv services off, so nothing was requested."""
    reason: str = ""
    """The ACPI status of a failure, e.g. `AE_SUPPORT`."""


def _names(listing: str) -> Tuple[str, ...]:
    return tuple(listing.split())


def _bits(mask: str, table: Tuple[Tuple[int, str], ...]) -> Tuple[str, ...]:
    value = int(mask, 16)
    return tuple(name for bit, name in table if value & bit)


def _merge(first: Iterable[str], more: Iterable[str]) -> Tuple[str, ...]:
    out = list(first)
    out.extend(n for n in more if n not in out)
    return tuple(out)


def _missing(supports: Tuple[str, ...]) -> Tuple[str, ...]:
    return tuple(b for b in REQUIRED_SUPPORT if b not in supports)


def _settled(state: OscState, controlled: Iterable[str]) -> OscState:
    """The state once the OS holds `controlled`: granted unless a core feature was refused."""
    controlled = frozenset(controlled)
    denied = _merge(state.denied, (f for f in state.requested if f not in controlled))
    outcome = "partial" if CORE_FEATURES.intersection(denied) else "granted"
    return state._replace(outcome=outcome, controlled=controlled, denied=denied)


def _supports(s: OscState, m: Match[str]) -> OscState:
    names = _names(m["list"])
    if names and all(n.startswith("CXL") for n in names):
        return s  # the CXL half of a CXL host bridge's negotiation
    return OscState(os_supports=names, missing_support=_missing(names))


def _not_requested(s: OscState, m: Match[str]) -> OscState:
    return s._replace(outcome="not_requested", controlled=frozenset())


def _services_disabled(s: OscState, m: Match[str]) -> OscState:
    return s._replace(outcome="not_requested", controlled=frozenset(), services_disabled=True)


def _platform_refuses(s: OscState, m: Match[str]) -> OscState:
    return s._replace(denied=_merge(s.denied, _names(m["list"])))


def _platform_refuses_required(s: OscState, m: Match[str]) -> OscState:
    return s._replace(outcome="failed", controlled=frozenset(),
                   denied=_merge(s.denied, _names(m["list"])))  # fmt: skip


def _requested(s: OscState, m: Match[str]) -> OscState:
    return s._replace(requested=_names(m["list"]))


def _willing(s: OscState, m: Match[str]) -> OscState:
    willing = _names(m["list"])
    return s._replace(denied=_merge(s.denied, (f for f in s.requested if f not in willing)))


def _now_controls(s: OscState, m: Match[str]) -> OscState:
    names = _names(m["list"])
    if names and all(n.startswith("CXL") for n in names):
        return s
    return _settled(s, names)


def _assumes(s: OscState, m: Match[str]) -> OscState:
    return _settled(s, s.controlled | frozenset(_names(m["list"])))


def _failed(s: OscState, m: Match[str]) -> OscState:
    return s._replace(outcome="failed", controlled=frozenset(), reason=m["reason"])


def _hex_requesting(s: OscState, m: Match[str]) -> OscState:
    return OscState(requested=_bits(m["mask"], _CONTROL_BITS))


def _hex_granted(s: OscState, m: Match[str]) -> OscState:
    return _settled(s, _bits(m["mask"], _CONTROL_BITS))


def _hex_failed(s: OscState, m: Match[str]) -> OscState:
    returned = _bits(m["mask"], _CONTROL_BITS)
    denied = _merge(s.denied, (f for f in s.requested if f not in returned))
    return s._replace(outcome="failed", controlled=frozenset(), denied=denied, reason=m["reason"])


def _hex_unable(s: OscState, m: Match[str]) -> OscState:
    supports = _bits(m["mask"], _SUPPORT_BITS)
    missing = _missing(supports)
    # with every required bit present, only pcie_ports=compat stops the request
    return OscState(outcome="not_requested", os_supports=supports, missing_support=missing,
                    services_disabled=not missing)  # fmt: skip


_L = r"\[(?P<list>[^\]]*)\]"
_RULES = (
    (re.compile(rf"_OSC: OS supports {_L}"), _supports),
    (re.compile(rf"_OSC: not requesting OS control; OS requires {_L}"), _not_requested),
    (re.compile(rf"_OSC: not requesting control; platform does not support {_L}"),
     _platform_refuses_required),
    (re.compile(rf"_OSC: platform does not support {_L}"), _platform_refuses),
    (re.compile(rf"_OSC: OS requested {_L}"), _requested),
    (re.compile(rf"_OSC: platform willing to grant {_L}"), _willing),
    (re.compile(rf"_OSC: OS now controls {_L}"), _now_controls),
    (re.compile(rf"_OSC: OS assumes control of {_L}"), _assumes),
    (re.compile(r"_OSC failed \((?P<reason>[^)]*)\)"), _failed),
    (re.compile(r"_OSC: platform retains control of PCIe features \((?P<reason>[^)]*)\)"),
     _failed),
    (re.compile(r"PCIe port services disabled; not requesting _OSC control"), _services_disabled),
    (re.compile(r"Requesting ACPI _OSC control \((?P<mask>0x[0-9a-fA-F]{1,8})\)"), _hex_requesting),
    (re.compile(r"ACPI _OSC control \((?P<mask>0x[0-9a-fA-F]{1,8})\) granted"), _hex_granted),
    (re.compile(r"ACPI _OSC request failed \((?P<reason>[^)]*)\), returned control mask: "
                r"(?P<mask>0x[0-9a-fA-F]{1,8})"), _hex_failed),
    (re.compile(r"Unable to request _OSC control \(_OSC support mask: "
                r"(?P<mask>0x[0-9a-fA-F]{1,8})\)"), _hex_unable),
)  # fmt: skip

# `acpi PNP0A08:00: ` (3.9+), `pci_root PNP0A08:00: ` (older): the host bridge's ACPI device
_BRIDGE = re.compile(r"(?:^|\s)(?:acpi|pci_root) (?P<bridge>[A-Z0-9]{3,8}:[0-9A-Fa-f]{2,}): ")


class OscTracker:
    """Follows the `_OSC` lines of every host bridge and keeps each one's latest outcome."""

    def __init__(self) -> None:
        self._bridges: Dict[str, OscState] = {}

    def feed(self, message: str) -> bool:
        """Apply one kernel message; True if it was an `_OSC` line."""
        prefix = _BRIDGE.search(message)
        bridge, body = (prefix["bridge"], message[prefix.end() :]) if prefix else ("", message)
        for pattern, apply in _RULES:
            m = pattern.match(body)
            if m:
                self._bridges[bridge] = apply(self._bridges.get(bridge, OscState()), m)
                return True
        return False

    def states(self) -> Dict[str, OscState]:
        """bridge -> latest state (a copy; the states themselves are immutable)."""
        return dict(self._bridges)

    def clear(self) -> None:
        """Forget every bridge (a new boot starts in the log)."""
        self._bridges.clear()
