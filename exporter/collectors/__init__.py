"""One collector per data source, in the order they run on each scrape."""

from typing import List, Optional

from exporter.boot_state import BootStateFile
from exporter.collectors.cmdline import CmdlineCollector
from exporter.collectors.identity import IdentityCollector
from exporter.collectors.interrupts import InterruptsCollector
from exporter.collectors.kernel_log import KernelLogCollector
from exporter.collectors.ports import PortsCollector
from exporter.collectors.rescan import RescanCollector
from exporter.collectors.slots import SlotsCollector
from exporter.collectors.verdict import VerdictCollector
from exporter.kernel_log import KernelLog
from exporter.registry import Source


def default_sources(
    log: KernelLog, product_uuid: Optional[str] = None, state: Optional[BootStateFile] = None
) -> List[Source]:
    """Every collector, ports first (it reads the sysfs topology the others share), cmdline before
    kernel_log (whose `_OSC` fallback reads the parameters it shares)."""
    return [
        PortsCollector(),
        SlotsCollector(),
        InterruptsCollector(),
        CmdlineCollector(),
        KernelLogCollector(log, state),
        IdentityCollector(product_uuid),
        RescanCollector(),
        VerdictCollector(),
    ]
