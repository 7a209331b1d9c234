"""Debian kernels for the lab: downloaded as packages and unpacked into a cache, never installed.

Each series gets its own private apt configuration (sources list, lists, package cache) under
the lab cache, so the host's apt state is neither read nor changed and a bookworm host can fetch
a trixie or bullseye kernel. `linux-image-amd64` of that suite names the current kernel package;
`apt-get download` fetches it and `dpkg-deb -x` unpacks it.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

MIRROR = "http://deb.debian.org/debian"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
SERIES = {"bullseye": "5.10", "bookworm": "6.1", "trixie": "6.12"}


@dataclass(frozen=True)
class Kernel:
    """An unpacked Debian kernel: its image, its modules and where it came from."""

    series: str
    release: str
    vmlinuz: Path
    modules_dir: Path
    package: str = ""
    version: str = ""


def cache_dir() -> Path:
    """The lab's cache root (`$PCIEHP_LAB_CACHE`, default ~/.cache/pciehp-lab)."""
    env = os.environ.get("PCIEHP_LAB_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "pciehp-lab"


@contextmanager
def cache_lock(name: str) -> Iterator[None]:
    """An exclusive lock on one cache entry, so parallel tests and helpers download it once."""
    path = cache_dir() / "locks" / f"{name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _progress(msg: str) -> None:
    print(f"lab: {msg}", file=sys.stderr, flush=True)


class AptSuite:
    """apt-get and apt-cache pointed at one Debian suite through a private configuration."""

    def __init__(self, series: str, root: Path) -> None:
        self.series = series
        self.root = root

    def _options(self) -> list[str]:
        return [
            "-o", f"Dir::Etc::SourceList={self.root / 'sources.list'}",
            "-o", "Dir::Etc::SourceParts=/dev/null",
            "-o", f"Dir::State::Lists={self.root / 'lists'}",
            "-o", f"Dir::Cache={self.root / 'cache'}",
            "-o", "APT::Architecture=amd64",
            "-o", "Debug::NoLocking=1",
        ]  # fmt: skip

    def update(self) -> None:
        """Write the sources list and fetch the suite's package index."""
        for d in ("lists/partial", "cache/archives/partial"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        (self.root / "sources.list").write_text(
            f"deb [signed-by={KEYRING}] {MIRROR} {self.series} main\n"
        )
        self.run("apt-get", "-q", "update")

    def run(self, tool: str, *args: str, cwd: Path | None = None) -> str:
        """Run apt-get/apt-cache with this suite's options; its stdout."""
        proc = subprocess.run(
            [tool, *self._options(), *args], cwd=cwd, capture_output=True, text=True
        )
        if proc.returncode != 0:
            raise RuntimeError(f"{tool} {' '.join(args)} failed: {proc.stderr.strip()[-2000:]}")
        return proc.stdout

    def image_package(self) -> tuple[str, str]:
        """The kernel package `linux-image-amd64` depends on, and its candidate version."""
        deps = self.run("apt-cache", "depends", "linux-image-amd64")
        m = re.search(r"Depends: (linux-image-[0-9][^\s]*-amd64)\b", deps)
        if not m:
            raise RuntimeError(f"no kernel package behind linux-image-amd64 in {self.series}")
        pkg = m.group(1)
        policy = self.run("apt-cache", "policy", pkg)
        v = re.search(r"Candidate: (\S+)", policy)
        return pkg, v.group(1) if v else ""


def _kernel_from_root(series: str, root: Path, package: str, version: str) -> Kernel:
    for mods in (root / "lib" / "modules", root / "usr" / "lib" / "modules"):
        if mods.is_dir():
            release = sorted(p.name for p in mods.iterdir())[0]
            return Kernel(
                series=series,
                release=release,
                vmlinuz=root / "boot" / f"vmlinuz-{release}",
                modules_dir=mods / release,
                package=package,
                version=version,
            )
    raise RuntimeError(f"{root}: no lib/modules in the unpacked kernel package")


def fetch_kernel(series: str) -> Kernel:
    """The current Debian kernel of `series` (bullseye, bookworm, trixie), fetched once, cached."""
    if series not in SERIES:
        raise ValueError(f"unknown series {series!r}; one of {', '.join(SERIES)}")
    base = cache_dir() / "kernels" / series
    meta = base / "kernel.json"
    with cache_lock(f"kernel-{series}"):
        if meta.exists():
            info = json.loads(meta.read_text())
            kernel = _kernel_from_root(series, base / "root", info["package"], info["version"])
            if kernel.vmlinuz.exists():
                return kernel
        apt = AptSuite(series, cache_dir() / "apt" / series)
        _progress(f"fetching the {series} package index")
        apt.update()
        package, version = apt.image_package()
        debs = base / "debs"
        debs.mkdir(parents=True, exist_ok=True)
        _progress(f"downloading {package} {version}")
        apt.run("apt-get", "-q", "download", package, cwd=debs)
        deb = sorted(debs.glob(f"{package}_*.deb"))[-1]
        root = base / "root"
        subprocess.run(["rm", "-rf", str(root)], check=True)
        root.mkdir(parents=True)
        _progress(f"unpacking {deb.name}")
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
        deb.unlink()
        kernel = _kernel_from_root(series, root, package, version)
        if not kernel.vmlinuz.exists():
            raise RuntimeError(f"{deb.name}: no {kernel.vmlinuz.name}")
        meta.write_text(json.dumps({"package": package, "version": version}) + "\n")
        return kernel
