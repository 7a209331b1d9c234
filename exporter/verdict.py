"""Whether each PCIe port can answer a hot-unplug, decided once from facts the exporter read.

Pure: no I/O, so the verdict and its reasons are tested on facts alone. Verdicts are `ready`,
`not_ready` or `unknown`; a port is never called ready when a fact it depends on is missing.
"""

from typing import NamedTuple, Optional, Tuple

READY = "ready"
NOT_READY = "not_ready"
UNKNOWN = "unknown"


class PortFacts(NamedTuple):
    """What sysfs, config space, /proc/interrupts and /proc/cmdline said about one port."""

    hotplug_capable: Optional[bool]  # Slot Implemented and HPC; None when config space is cut
    config_missing: bool  # the port's sysfs `config` file is absent, not merely truncated
    slot_modules: Tuple[str, ...]  # driver module of each slot registered on the port
    pciehp_bound: bool  # the hotplug port service is bound to pciehp (or pciehp owns a slot)
    irq_registered: Optional[bool]  # a port IRQ lists pciehp; None if /proc/interrupts failed
    poll_mode: bool  # /sys/module/pciehp/parameters/pciehp_poll_mode is Y
    port_services_disabled: bool  # pcie_ports=compat: no port services, so never pciehp
    osc_skipped: bool  # pcie_aspm=off or pci=nomsi without pcie_ports=native: never native hotplug


class Verdict(NamedTuple):
    """A verdict and the short snake_case reason that decided it."""

    verdict: str
    reason: str


def listed(facts: PortFacts) -> bool:
    """A port gets a verdict when it has a slot or may be hotplug-capable (or we cannot tell)."""
    return bool(facts.slot_modules) or facts.hotplug_capable is not False or facts.pciehp_bound


def decide(facts: PortFacts) -> Verdict:
    """The verdict for one listed port; facts that name a handler win over unreadable config."""
    if "acpiphp" in facts.slot_modules:
        return Verdict(READY, "acpi_hotplug")
    if facts.pciehp_bound:
        if facts.poll_mode:
            return Verdict(READY, "pciehp_poll")
        if facts.irq_registered is None:
            return Verdict(UNKNOWN, "interrupts_unreadable")
        if facts.irq_registered:
            return Verdict(READY, "pciehp_irq")
        return Verdict(NOT_READY, "pciehp_no_irq")
    if facts.port_services_disabled:
        # no port service exists at all, so nothing answers whatever config space would say
        return Verdict(NOT_READY, "port_services_disabled")
    if facts.osc_skipped:
        # the kernel never asked for native hotplug, so pciehp cannot bind whatever config space
        # would say: only an ACPI slot (above) could answer; exact even with config cut short
        return Verdict(NOT_READY, "no_handler")
    if facts.hotplug_capable is None:
        return Verdict(UNKNOWN, "sysfs_missing" if facts.config_missing else "config_unreadable")
    return Verdict(NOT_READY, "no_handler")
