"""process_* metrics of the exporter itself, as client_python's ProcessCollector names them."""

import os
import resource
from typing import Iterator, Optional

from exporter.exposition import CounterMetricFamily, GaugeMetricFamily, Metric

_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _boot_time() -> Optional[float]:
    """Seconds since the epoch at boot (`btime` in /proc/stat)."""
    try:
        with open("/proc/stat", "rb") as f:
            for line in f:
                if line.startswith(b"btime "):
                    return float(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


class ProcessCollector:
    """CPU, memory, start time and file descriptors of this process, from /proc/self."""

    def __init__(self) -> None:
        self._btime = _boot_time()

    def collect(self) -> Iterator[Metric]:
        """The process_* families; nothing when /proc/self is not readable."""
        try:
            with open("/proc/self/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            fds = len(os.listdir("/proc/self/fd"))
        except (OSError, IndexError):
            return
        # fields[0] is field 3 of proc(5): state
        yield GaugeMetricFamily(
            "process_virtual_memory_bytes", "Virtual memory size in bytes.", int(fields[20])
        )
        yield GaugeMetricFamily(
            "process_resident_memory_bytes", "Resident memory size in bytes.",
            int(fields[21]) * _PAGE,
        )  # fmt: skip
        if self._btime is not None:
            yield GaugeMetricFamily(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                self._btime + int(fields[19]) / _TICKS,
            )
        times = os.times()
        yield CounterMetricFamily(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds.",
            times.user + times.system,
        )
        yield GaugeMetricFamily("process_open_fds", "Number of open file descriptors.", fds)
        yield GaugeMetricFamily(
            "process_max_fds",
            "Maximum number of open file descriptors.",
            resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        )
