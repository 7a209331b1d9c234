"""kernel_log: pciehp event counters and the _OSC outcome, from the tailed kernel log."""

from typing import Dict, Iterator, Optional, Tuple

from exporter.collectors._metrics import counter, gauge, port_counter, port_gauge
from exporter.collectors.slots import handler
from exporter.exposition import Metric
from exporter.kernel_log import EVENTS, OSC_FEATURES, KernelLog
from exporter.pci.topology import Port, Topology
from exporter.registry import Scrape, Source

PCIEHP_HANDLERS = ("pciehp", "pciehp_poll")


def event_port(topo: Topology, bdf: str, slot: str) -> Optional[Port]:
    """The port an event line belongs to: its BDF prefix, else the sysfs slot of that name."""
    if bdf in topo.ports:
        return topo.ports[bdf]
    for port in topo.ports.values():
        if any(s.name == slot for s in port.slots):
            return port
    return None


class KernelLogCollector(Source):
    """pciehp_events_total, slot_unplug_unanswered, osc_control, osc_info, kernel_log_lines_total,
    kernel_log_reader_up.

    The log is polled (only new bytes) on each scrape; counts live in the KernelLog.
    """

    name = "kernel_log"

    def __init__(self, log: KernelLog) -> None:
        self.log = log

    def collect(self, scrape: Scrape) -> Iterator[Metric]:
        self.log.poll()
        up = self.log.reader_up
        if not up:
            scrape.error(f"kernel log not readable: {self.log.last_error}")
        lines = counter("kernel_log_lines", "Lines (records) read from the kernel log.")
        lines.add_metric([], float(self.log.lines_total))
        reader = gauge("kernel_log_reader_up", "The kernel log source is open and being read.")
        reader.add_metric([], 1.0 if up else 0.0)
        yield from (lines, reader)
        yield self._events(scrape.topology)
        yield self._unanswered(scrape.topology, up)
        yield from self._osc()

    def _events(self, topo: Topology) -> Metric:
        counts: Dict[str, Dict[str, int]] = {}
        for (bdf, slot), events in self.log.events().items():
            port = event_port(topo, bdf, slot)
            if port is None:
                continue
            per_port = counts.setdefault(port.address, {})
            for event, n in events.items():
                per_port[event] = per_port.get(event, 0) + n
        metric = port_counter(
            "events", "pciehp events logged by the kernel for the port's slot.", ["slot", "event"]
        )
        for port in topo.ports.values():
            if not port.hotplug_capable and port.address not in counts:
                continue
            per_port = counts.get(port.address, {})
            samples = metric.samples
            segment, bus, device, function = port.labels
            slot = port.slot_name
            for event in EVENTS:  # 14 per port: the bulk of a scrape, so appended directly
                values = (segment, bus, device, function, slot, event)
                samples.append((values, float(per_port.get(event, 0))))
        return metric

    def _unanswered(self, topo: Topology, up: bool) -> Metric:
        """Per port pciehp answers on: 1 if the latest press in this boot's log is unanswered.

        State, not totals: an unplug answered yesterday does not hide today's unanswered one. Only
        where the log witnesses presses (pciehp handles the port, or logged for it) and the log is
        readable; a press whose slot now reads no adapter was answered by the removal.
        """
        metric = port_gauge(
            "slot_unplug_unanswered",
            "The attention button was pressed and pciehp logged no power-off/on, cancel or "
            "removal since (this boot).",
            ["slot"],
        )
        if not up:
            return metric
        latest: Dict[str, Tuple[int, bool]] = {}
        for (bdf, slot), last in self.log.last_requests().items():
            port = event_port(topo, bdf, slot)
            if port is not None and last > latest.get(port.address, (0, False)):
                latest[port.address] = last
        for port in topo.ports.values():
            if port.address not in latest and handler(port, topo) not in PCIEHP_HANDLERS:
                continue
            pending = latest.get(port.address, (0, False))[1]
            if any(s.adapter == "0" for s in port.slots):
                pending = False
            metric.add_metric([*port.labels, port.slot_name], 1.0 if pending else 0.0)
        return metric

    def _osc(self) -> Iterator[Metric]:
        control = gauge(
            "osc_control",
            "After _OSC, the OS controls this PCIe feature of the host bridge (1) or not (0).",
            ["bridge", "feature"],
        )
        info = gauge(
            "osc_info",
            "Outcome of the ACPI _OSC negotiation per host bridge.",
            ["bridge", "outcome", "missing_support", "denied"],
        )
        states = self.log.osc()
        if not states:
            info.add_metric(["", "unknown", "", ""], 1.0)
        for bridge, state in sorted(states.items()):
            for feature in OSC_FEATURES:
                control.add_metric([bridge, feature], 1.0 if feature in state.controlled else 0.0)
            info.add_metric(
                [bridge, state.outcome, " ".join(state.missing_support), " ".join(state.denied)],
                1.0,
            )
        yield from (control, info)
