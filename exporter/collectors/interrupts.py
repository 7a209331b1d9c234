"""interrupts: whether each port's hotplug IRQ is registered, from /proc/interrupts."""

from typing import Dict, Iterator, List, Set

from exporter import interrupts, sysfs
from exporter.collectors._metrics import port_counter, port_gauge
from exporter.exposition import Metric
from exporter.registry import Scrape, Source


def port_rows(scrape: Scrape) -> Dict[str, List[interrupts.IrqRow]]:
    """Each port's /proc/interrupts rows (pciehp's, else its own IRQs), read once per scrape."""
    return scrape.shared("interrupts", lambda: _read_port_rows(scrape))


def _read_port_rows(scrape: Scrape) -> Dict[str, List[interrupts.IrqRow]]:
    topo = scrape.topology
    path = scrape.paths.proc("interrupts")
    raw = sysfs.read_file(path, interrupts.MAX_BYTES + 1)
    if len(raw) > interrupts.MAX_BYTES:
        raise ValueError(f"{path} is larger than {interrupts.MAX_BYTES} bytes")
    if b"\0" in raw:
        raise ValueError(f"{path} contains NUL bytes: not a text file")
    wanted = {irq for port in topo.ports.values() for irq in port.irqs}
    rows = interrupts.parse(raw, wanted)
    by_port: Dict[str, Set[int]] = {a: set(p.irqs) for a, p in topo.ports.items()}
    for row in rows.values():
        if "pciehp" in row.actions and row.irq not in wanted:
            bdf = row.bdf()
            if bdf in by_port:
                by_port[bdf].add(row.irq)
    return {a: [rows[i] for i in sorted(irqs) if i in rows] for a, irqs in by_port.items()}


def irq_registered(rows: List[interrupts.IrqRow]) -> bool:
    """Some IRQ of the port lists pciehp: the native hotplug interrupt is wired."""
    return any("pciehp" in r.actions for r in rows)


class InterruptsCollector(Source):
    """pciehp_port_irq_registered and pciehp_port_interrupts_total.

    IRQs map to ports through sysfs `msi_irqs` and `irq`; rows naming pciehp that sysfs does not
    explain are mapped by decoding the hwirq (4.x-6.1) or the chip name (>= 6.2).
    """

    name = "interrupts"

    def collect(self, scrape: Scrape) -> Iterator[Metric]:
        topo = scrape.topology
        by_port = port_rows(scrape)
        registered = port_gauge(
            "port_irq_registered",
            "An IRQ of this port lists pciehp in /proc/interrupts.",
        )
        total = port_counter(
            "port_interrupts",
            "Interrupts on this port's pciehp IRQ (or its IRQs if none is pciehp), all CPUs.",
        )
        for address, port in topo.ports.items():
            rows = by_port[address]
            hp_rows = [r for r in rows if "pciehp" in r.actions]
            labels = list(port.labels)
            registered.add_metric(labels, 1.0 if irq_registered(rows) else 0.0)
            total.add_metric(labels, float(sum(r.total for r in (hp_rows or rows))))
        yield from (registered, total)
