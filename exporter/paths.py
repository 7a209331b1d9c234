"""The --path.* roots, so every collector can read a fixture tree instead of the live system."""

from pathlib import Path
from typing import NamedTuple


class Paths(NamedTuple):
    """Roots of procfs, sysfs and the root filesystem (node_exporter's --path.* flags)."""

    procfs: Path = Path("/proc")
    sysfs: Path = Path("/sys")
    rootfs: Path = Path("/")

    def proc(self, *parts: str) -> Path:
        return self.procfs.joinpath(*parts)

    def sys(self, *parts: str) -> Path:
        return self.sysfs.joinpath(*parts)

    def root(self, *parts: str) -> Path:
        return self.rootfs.joinpath(*(p.lstrip("/") for p in parts))
