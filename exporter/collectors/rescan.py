"""rescan: cron entries and systemd units that write /sys/bus/pci/rescan (the usual workaround).

Rechecked at most once a minute: the files change rarely and a scrape must stay cheap.
"""

import os
import re
import time
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Tuple

from exporter.collectors._metrics import gauge
from exporter.exposition import Metric
from exporter.paths import Paths
from exporter.registry import Scrape, Source

RESCAN_RE = re.compile(r"/sys/bus/pci(?:/devices/[^/\s]+)?/rescan\b")
CRON_FILES = ("etc/crontab",)
CRON_DIRS = ("etc/cron.d", "var/spool/cron", "etc/cron.hourly", "etc/cron.daily", "etc/rc.local.d")
UNIT_DIRS = (
    "etc/systemd/system",
    "lib/systemd/system",
    "usr/lib/systemd/system",
    "run/systemd/system",
)
UNIT_SUFFIXES = (".service", ".timer")
MAX_FILE = 1024 * 1024
MAX_FILES = 5000
REFRESH_SECONDS = 60.0


def mentions_rescan(path: Path) -> bool:
    """True if a non-comment line of the file writes the PCI rescan attribute."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE).decode("utf-8", errors="replace")
    except OSError:
        return False
    return any(
        RESCAN_RE.search(line) for line in data.splitlines() if not line.lstrip().startswith("#")
    )


def _walk(root: Path, denied: List[str], suffixes: Tuple[str, ...] = ()) -> Iterator[Path]:
    """Files under `root`; directories the reader may not list are added to `denied`."""

    def _error(e: OSError) -> None:
        if isinstance(e, PermissionError):
            denied.append(str(e.filename))

    count = 0
    for dirpath, _dirs, files in os.walk(root, onerror=_error):
        for name in sorted(files):
            if suffixes and not name.endswith(suffixes):
                continue
            count += 1
            if count > MAX_FILES:
                return
            yield Path(dirpath) / name


def find_workarounds(paths: Paths) -> Tuple[List[str], List[str]]:
    """Paths (as seen inside the guest) of files that set up a PCI bus rescan, and the
    directories or files the reader was not allowed to read (a crontab dir is mode 1730)."""
    found: List[str] = []
    denied: List[str] = []
    candidates: List[Path] = [paths.root(f) for f in CRON_FILES]
    candidates.append(paths.root("etc/rc.local"))
    for d in CRON_DIRS:
        candidates.extend(_walk(paths.root(d), denied))
    for d in UNIT_DIRS:
        candidates.extend(_walk(paths.root(d), denied, UNIT_SUFFIXES))
    for path in candidates:
        if path.is_file():
            if not os.access(path, os.R_OK):
                denied.append(str(path))
            elif mentions_rescan(path):
                found.append("/" + str(path.relative_to(paths.rootfs)).lstrip("/"))
    return sorted(set(found)), sorted(set(denied))


class RescanCollector(Source):
    """pciehp_rescan_workaround{source}, cached for REFRESH_SECONDS."""

    name = "rescan"

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._cached: Optional[List[str]] = None
        self._denied: List[str] = []
        self._at = 0.0

    def collect(self, scrape: Scrape) -> Iterator[Metric]:
        now = self._clock()
        if self._cached is None or now - self._at >= REFRESH_SECONDS:
            self._cached, self._denied = find_workarounds(scrape.paths)
            self._at = now
        if self._denied:
            scrape.error(f"not allowed to read {len(self._denied)}: {', '.join(self._denied[:3])}")
            scrape.fact_unknown("rescan_workaround", "permission_denied")
        metric = gauge(
            "rescan_workaround",
            "A cron entry or systemd unit writes /sys/bus/pci/rescan (hides hot-add, not unplug).",
            ["source"],
        )
        for source in self._cached:
            metric.add_metric([source], 1.0)
        yield metric
