"""kernel_log: pciehp event counters and the _OSC outcome, from the tailed kernel log."""

from typing import Dict, Iterator, Mapping, Optional, Tuple

from exporter.boot_state import (
    BootFacts,
    BootStateFile,
    StateError,
    osc_from_cmdline,
    read_boot_id,
)
from exporter.collectors._metrics import counter, gauge, port_counter, port_gauge
from exporter.collectors.cmdline import scrape_params
from exporter.collectors.slots import handler
from exporter.exposition import Metric
from exporter.kernel_log import EVENTS, OSC_FEATURES, KernelLog, OscState
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

    def __init__(self, log: KernelLog, state: Optional[BootStateFile] = None) -> None:
        self.log = log
        self.state = state
        self._events_seen: Optional[Tuple[Topology, int, Metric]] = None

    def _events(self, topo: Topology) -> Metric:
        """The events family; the last one again while neither the ports nor the log changed
        (a new walk gives a new Topology; a new log line, a new count)."""
        seen = self._events_seen
        if seen is not None and seen[0] is topo and seen[1] == self.log.lines_total:
            return seen[2]
        metric = self._count_events(topo)
        self._events_seen = (topo, self.log.lines_total, metric)
        return metric

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
        yield from self._osc(*self._boot_osc(scrape, up))

    def _count_events(self, topo: Topology) -> Metric:
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

    def _boot_osc(self, scrape: Scrape, up: bool) -> Tuple[Mapping[str, OscState], str]:
        """This boot's `_OSC` outcome per bridge and where it came from: the log (kept in the
        state file), else the state file, else what the command line decides, else unknown."""
        osc = self.log.osc()
        if osc:
            if up:
                self._state(scrape, BootFacts(dict(osc), self.log.flags()))
            return osc, "log"
        saved = self._state(scrape, None)
        if saved is not None and saved.osc:
            return saved.osc, "state"
        try:
            derived = osc_from_cmdline(scrape_params(scrape))
        except (OSError, ValueError):
            derived = None  # the cmdline collector reports it
        if derived is not None:
            return {"": derived}, "cmdline"
        return {}, "unknown"

    def _state(self, scrape: Scrape, facts: Optional[BootFacts]) -> Optional[BootFacts]:
        """Save `facts` for this boot, or (None) load what was saved; failures are reported."""
        if self.state is None:
            return None
        try:
            boot_id = read_boot_id(scrape.paths)
            if facts is not None:
                self.state.save(boot_id, facts)
                return facts
            return self.state.load(boot_id)
        except (OSError, StateError) as e:
            scrape.error(f"state file: {e}")
            return None

    def _osc(self, states: Mapping[str, OscState], source: str) -> Iterator[Metric]:
        control = gauge(
            "osc_control",
            "After _OSC, the OS controls this PCIe feature of the host bridge (1) or not (0).",
            ["bridge", "feature"],
        )
        info = gauge(
            "osc_info",
            "Outcome of the ACPI _OSC negotiation per host bridge; source: log, state (the state "
            "file of this boot), cmdline (implied by kernel parameters) or unknown.",
            ["bridge", "outcome", "missing_support", "denied", "source"],
        )
        if not states:
            info.add_metric(["", "unknown", "", "", source], 1.0)
        for bridge, state in sorted(states.items()):
            if source != "cmdline":
                for feature in OSC_FEATURES:
                    control.add_metric(
                        [bridge, feature], 1.0 if feature in state.controlled else 0.0
                    )
            info.add_metric(
                [
                    bridge,
                    state.outcome,
                    " ".join(state.missing_support),
                    " ".join(state.denied),
                    source,
                ],
                1.0,
            )
        yield from (control, info)
