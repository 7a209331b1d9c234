"""Runs every collector per scrape and adds pciehp_collector_success / _duration_seconds.

Like node_exporter's NodeCollector: one failing source never blanks the others; a source may also
report a partial failure and still return what it could read.
"""

import logging
import threading
import time
from typing import Any, Callable, Dict, Iterable, Iterator, Optional, Sequence, Tuple, TypeVar

from exporter.exposition import GaugeMetricFamily, Metric
from exporter.paths import Paths
from exporter.pci import topology
from exporter.pci.topology import Topology, TopologyCache

log = logging.getLogger("pciehp_exporter")

PREFIX = "pciehp_"
PORT_LABELS = ["segment", "bus", "device", "function"]
T = TypeVar("T")


class LogOnce:
    """Logs each distinct message once per process, so a bad source does not flood the journal."""

    def __init__(self, limit: int = 1000) -> None:
        self._seen = set()  # type: Set[str]
        self._limit = limit
        self._lock = threading.Lock()

    def __call__(self, level: int, message: str) -> None:
        with self._lock:
            if message in self._seen or len(self._seen) >= self._limit:
                return
            self._seen.add(message)
        log.log(level, "%s", message)


log_once = LogOnce()


class Scrape:
    """Per-scrape context: the roots, the topology, files read once for several collectors, and
    the errors noted."""

    def __init__(self, paths: Paths, topologies: Optional[TopologyCache] = None) -> None:
        self.paths = paths
        self.errors = {}  # type: Dict[str, List[str]]
        self.current = ""
        self._topologies = topologies
        self._topology = None  # type: Optional[Topology]
        self._shared: Dict[str, Tuple[Any, Optional[Exception]]] = {}

    @property
    def topology(self) -> Topology:
        """The ports: from the cache when there is one (refreshed), else walked in this scrape."""
        if self._topology is None:
            cache = self._topologies
            self._topology = topology.read(self.paths) if cache is None else cache.get()
        return self._topology

    def shared(self, key: str, read: Callable[[], T]) -> T:
        """`read()` once per scrape however many collectors ask; its exception raised to each."""
        if key not in self._shared:
            try:
                self._shared[key] = (read(), None)
            except Exception as e:
                self._shared[key] = (None, e)
        value, error = self._shared[key]
        if error is not None:
            raise error
        return value

    def error(self, message: str) -> None:
        """Note a partial failure of the running collector; its other output is still served."""
        self.errors.setdefault(self.current, []).append(message)


class Source:
    """A collector for one data source; subclasses set `name` and implement `collect`."""

    name: str = ""

    def collect(self, scrape: Scrape) -> Iterable[Metric]:
        raise NotImplementedError


class ExporterCollector:
    """Runs the sources on each scrape; every metric is built fresh."""

    def __init__(
        self,
        paths: Paths,
        sources: Sequence[Source],
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.paths = paths
        self.sources = list(sources)
        self._clock = clock
        self._lock = threading.Lock()
        self._topologies = TopologyCache(paths)

    def collect(self) -> Iterator[Metric]:
        with self._lock:  # sources keep state (the kernel log tail): one scrape at a time
            yield from self._collect()

    def _collect(self) -> Iterator[Metric]:
        scrape = Scrape(self.paths, self._topologies)
        success = GaugeMetricFamily(
            PREFIX + "collector_success",
            "Whether the collector read its source without error (1) or not (0).",
            labels=["collector"],
        )
        duration = GaugeMetricFamily(
            PREFIX + "collector_duration_seconds",
            "How long the collector took on this scrape.",
            labels=["collector"],
        )
        for source in self.sources:
            scrape.current = source.name
            start = self._clock()
            try:
                families = list(source.collect(scrape))
            except Exception as e:
                families = []
                scrape.error(f"{type(e).__name__}: {e}")
            elapsed = self._clock() - start
            errors = scrape.errors.get(source.name, [])
            for message in errors:
                log_once(logging.WARNING, f"collector {source.name}: {message}")
            success.add_metric([source.name], 0.0 if errors else 1.0)
            duration.add_metric([source.name], elapsed)
            yield from families
        yield success
        yield duration
