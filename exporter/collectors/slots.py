"""slots: port-service devices and registered hotplug slots: who answers an unplug on each port."""

from typing import Iterator

from exporter.collectors._metrics import port_gauge
from exporter.exposition import Metric
from exporter.pci.topology import Port, Topology
from exporter.registry import Scrape, Source

HANDLERS = ("pciehp", "pciehp_poll", "acpiphp", "none")
_STATES = {"0": 0.0, "1": 1.0}


def handler(port: Port, topo: Topology) -> str:
    """Exactly one of HANDLERS: the driver that would answer an attention-button press.

    acpiphp owns a slot through its `module` link (QEMU's ACPI hotplug); pciehp through a bound
    hotplug service (or a slot registered by it); poll mode needs no IRQ.
    """
    modules = {s.module for s in port.slots}
    if "acpiphp" in modules:
        return "acpiphp"
    service = port.hotplug_service
    if (service is not None and service.driver == "pciehp") or "pciehp" in modules:
        return "pciehp_poll" if topo.pciehp_poll_mode else "pciehp"
    return "none"


class SlotsCollector(Source):
    """pciehp_port_hotplug_handler, port_service_bound, slot_power_on, slot_adapter_present."""

    name = "slots"

    def collect(self, scrape: Scrape) -> Iterator[Metric]:
        topo = scrape.topology
        handler_m = port_gauge(
            "port_hotplug_handler",
            "Who answers an unplug request on this port: exactly one handler is 1.",
            ["handler"],
        )
        bound = port_gauge(
            "port_service_bound",
            "The port's hotplug service device exists and is bound to pciehp.",
        )
        power = port_gauge("slot_power_on", "The slot's power attribute (1 = on).", ["slot"])
        adapter = port_gauge(
            "slot_adapter_present", "The slot's adapter attribute (1 = card present).", ["slot"]
        )
        for port in topo.ports.values():
            labels = list(port.labels)
            chosen = handler(port, topo)
            for h in HANDLERS:
                handler_m.add_metric([*labels, h], 1.0 if h == chosen else 0.0)
            service = port.hotplug_service
            bound.add_metric(labels, 1.0 if service and service.driver == "pciehp" else 0.0)
            for slot in port.slots:
                if slot.power in _STATES:
                    power.add_metric([*labels, slot.name], _STATES[slot.power])
                if slot.adapter in _STATES:
                    adapter.add_metric([*labels, slot.name], _STATES[slot.adapter])
        yield from (handler_m, bound, power, adapter)
