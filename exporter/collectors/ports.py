"""ports: each PCIe root/downstream port and its slot registers from config space."""

import logging
from typing import Iterator

from exporter.collectors._metrics import port_gauge
from exporter.exposition import Metric
from exporter.registry import Scrape, Source, log_once


class PortsCollector(Source):
    """pciehp_port_info, port_hotplug_capable, slot_button_pending, slot_interrupt_enabled."""

    name = "ports"

    def collect(self, scrape: Scrape) -> Iterator[Metric]:
        topo = scrape.topology
        info = port_gauge(
            "port_info",
            "A PCIe root or downstream port; slot is the kernel's hotplug slot name, if any.",
            ["address", "port_type", "slot"],
        )
        capable = port_gauge(
            "port_hotplug_capable",
            "Slot Implemented and Slot Capabilities Hot-Plug Capable are both set.",
        )
        pending = port_gauge(
            "slot_button_pending",
            "Slot Status Attention Button Pressed is latched: an unplug was requested.",
            ["slot"],
        )
        enabled = port_gauge(
            "slot_interrupt_enabled",
            "Slot Control Hot-Plug Interrupt Enable: a driver armed the slot.",
            ["slot"],
        )
        for port in topo.ports.values():
            labels = list(port.labels)
            info.add_metric([*labels, port.address, port.port_type, port.slot_name], 1.0)
            hp = port.hotplug_capable
            if hp is not None:
                capable.add_metric(labels, float(hp))
            if port.cap is not None and port.cap.hotplug_capable:
                pending.add_metric([*labels, port.slot_name], float(port.cap.button_pending))
                enabled.add_metric([*labels, port.slot_name], float(port.cap.interrupt_enabled))
        if topo.unreadable_config:
            log_once(
                logging.WARNING,
                f"config space of {len(topo.unreadable_config)} port(s) is not readable "
                "(reading beyond 64 bytes needs CAP_SYS_ADMIN); slot registers are not "
                f"reported: {'; '.join(topo.unreadable_config[:3])}",
            )
        yield from (info, capable, pending, enabled)
