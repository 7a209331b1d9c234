"""verdict: per port, can an unplug be answered; and which facts the exporter could not read."""

import os
from typing import Dict, Iterator, List, Optional, Set, Tuple

from exporter.collectors._metrics import gauge, port_gauge
from exporter.collectors.cmdline import scrape_params
from exporter.collectors.interrupts import irq_registered, port_rows
from exporter.exposition import Metric
from exporter.interrupts import IrqRow
from exporter.pci.topology import Port
from exporter.registry import Scrape, Source
from exporter.verdict import PortFacts, decide, listed


def _fact_unknown(scrape: Scrape, port: Port) -> Optional[Tuple[str, str]]:
    """(fact, reason) when the port's Slot Capabilities could not be read from config space."""
    if port.cap is not None:
        return None
    if not os.path.isfile(os.path.join(port.dev_dir, "config")):
        return ("hotplug_capable", "sysfs_missing")
    return ("hotplug_capable", "config_truncated")


class VerdictCollector(Source):
    """pciehp_port_unplug_verdict and pciehp_fact_unknown, from the facts the others read."""

    name = "verdict"

    def collect(self, scrape: Scrape) -> Iterator[Metric]:
        verdict = port_gauge(
            "port_unplug_verdict",
            "Whether this port can answer a hot-unplug (ready, not_ready, unknown) and why.",
            ["verdict", "reason"],
        )
        unknown = gauge(
            "fact_unknown",
            "A fact the exporter could not read, so verdicts depending on it are unknown.",
            ["fact", "reason"],
        )
        missing: Set[Tuple[str, str]] = set()
        if not os.path.isdir(scrape.paths.sys("bus", "pci", "devices")):
            missing.add(("pci_devices", "sysfs_missing"))
        topo = scrape.topology
        rows: Optional[Dict[str, List[IrqRow]]] = None
        try:
            rows = port_rows(scrape)
        except (OSError, ValueError):
            missing.add(("irq_registered", "interrupts_unreadable"))
        params: List[Tuple[str, str]] = []
        try:
            params = scrape_params(scrape)
        except (OSError, ValueError):
            missing.add(("kernel_params", "cmdline_unreadable"))
        compat = ("pcie_ports", "compat") in params
        # kernel-facts 2.2: without ASPM or MSI support the kernel skips _OSC, unless told native
        osc_skipped = (
            bool({("pcie_aspm", "off"), ("pci", "nomsi")} & set(params))
            and (
                "pcie_ports",
                "native",
            )
            not in params
        )
        for port in topo.ports.values():
            gap = _fact_unknown(scrape, port)
            modules = tuple(s.module or "" for s in port.slots)
            service = port.hotplug_service
            facts = PortFacts(
                hotplug_capable=port.cap.hotplug_capable if port.cap is not None else None,
                config_missing=gap == ("hotplug_capable", "sysfs_missing"),
                slot_modules=modules,
                pciehp_bound=(service is not None and service.driver == "pciehp")
                or "pciehp" in modules,
                irq_registered=None if rows is None else irq_registered(rows[port.address]),
                poll_mode=topo.pciehp_poll_mode,
                port_services_disabled=compat,
                osc_skipped=osc_skipped,
            )
            if not listed(facts):
                continue
            if gap is not None:
                missing.add(gap)
            v = decide(facts)
            verdict.add_metric([*port.labels, v.verdict, v.reason], 1.0)
        missing |= scrape.unknown_facts  # what the collectors before this one could not read
        for fact, reason in sorted(missing):
            unknown.add_metric([fact, reason], 1.0)
        yield verdict
        yield unknown
