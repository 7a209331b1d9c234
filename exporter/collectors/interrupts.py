"""interrupts: whether each port's hotplug IRQ is registered, from /proc/interrupts."""

from typing import Dict, Iterator, Set

from exporter import interrupts
from exporter.collectors._metrics import port_counter, port_gauge
from exporter.exposition import Metric
from exporter.registry import Scrape, Source


class InterruptsCollector(Source):
    """pciehp_port_irq_registered and pciehp_port_interrupts_total.

    IRQs map to ports through sysfs `msi_irqs` and `irq`; rows naming pciehp that sysfs does not
    explain are mapped by decoding the hwirq (4.x-6.1) or the chip name (>= 6.2).
    """

    name = "interrupts"

    def collect(self, scrape: Scrape) -> Iterator[Metric]:
        topo = scrape.topology
        path = scrape.paths.proc("interrupts")
        with open(path, "rb") as f:
            raw = f.read(interrupts.MAX_BYTES + 1)
        if len(raw) > interrupts.MAX_BYTES:
            raise ValueError(f"{path} is larger than {interrupts.MAX_BYTES} bytes")
        if b"\0" in raw:
            raise ValueError(f"{path} contains NUL bytes: not a text file")
        wanted = {irq for port in topo.ports.values() for irq in port.irqs}
        rows = interrupts.parse(raw, wanted)
        by_port: Dict[str, Set[int]] = {a: set(p.irqs) for a, p in topo.ports.items()}
        for row in rows.values():
            if "pciehp" in row.actions and not any(row.irq in s for s in by_port.values()):
                bdf = row.bdf()
                if bdf in by_port:
                    by_port[bdf].add(row.irq)
        registered = port_gauge(
            "port_irq_registered",
            "An IRQ of this port lists pciehp in /proc/interrupts.",
        )
        total = port_counter(
            "port_interrupts",
            "Interrupts on this port's pciehp IRQ (or its IRQs if none is pciehp), all CPUs.",
        )
        for address, port in topo.ports.items():
            port_rows = [rows[i] for i in sorted(by_port[address]) if i in rows]
            hp_rows = [r for r in port_rows if "pciehp" in r.actions]
            labels = list(port.labels)
            registered.add_metric(labels, 1.0 if hp_rows else 0.0)
            total.add_metric(labels, float(sum(r.total for r in (hp_rows or port_rows))))
        yield from (registered, total)
