"""Real Debian userlands with other Pythons than ours (bullseye 3.9, trixie 3.13) for the artifact
tests: debootstrapped once into a cache directory, then used through a throwaway overlay.

The cached tree is never written: every command runs in a private mount namespace (`unshare -m`)
where an overlayfs puts a per-test upper directory over it, then `chroot`s into the merged view.
Files the test puts into `Guest.upper` (the .pyz, the captures, the .deb) appear inside; what the
command changes (dpkg -i, a removed python3) lands in the upper directory only.
"""

from __future__ import annotations

import fcntl
import os
import shlex
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

CACHE = Path(os.environ.get("PCIEHP_CHROOT_CACHE", Path.home() / ".cache" / "pciehp-chroots"))
MIRROR = os.environ.get("PCIEHP_DEBIAN_MIRROR", "http://deb.debian.org/debian")
PYTHONS = {"bullseye": "3.9", "trixie": "3.13"}
"""Suite -> the python3 version Debian ships in it."""
COMPLETE = ".pciehp-complete"
"""Written last into a finished chroot: a tree without it is an interrupted debootstrap."""
ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
"""The environment inside: systemd's default PATH and nothing else (no LANG, like a unit)."""


def mount_script(binds: Sequence[tuple[Path, str]]) -> str:
    """sh -c script ($1-$4: lower, upper, work, merged): the overlay, /proc as a booted system has
    it (the exporter's process_* metrics read it), the bind mounts, then chroot to the rest."""
    steps = [
        'mount -t overlay overlay -o "lowerdir=$1,upperdir=$2,workdir=$3" "$4"',
        'mount -t proc proc "$4/proc"',
    ]
    for source, inside in binds:
        steps.append(f'mount --bind {shlex.quote(str(source))} "$4"/{shlex.quote(inside[1:])}')
    steps.append('root=$4 && shift 4 && exec chroot "$root" "$@"')
    return " && ".join(steps)


def ensure(suite: str) -> Path:
    """The cached chroot of `suite` (minbase + python3), debootstrapped first if missing.

    A lock file serialises concurrent test sessions; the tree is built beside the cache entry
    and renamed into place only when complete.
    """
    CACHE.mkdir(parents=True, exist_ok=True)
    root = CACHE / suite
    with open(CACHE / f"{suite}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (root / COMPLETE).is_file():
            return root
        building = CACHE / f"{suite}.tmp"
        shutil.rmtree(building, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)
        started = time.monotonic()
        out = subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                "--include=python3",
                suite,
                str(building),
                MIRROR,
            ],
            capture_output=True,
            text=True,
            timeout=1800,
        )
        if out.returncode != 0:
            raise RuntimeError(f"debootstrap {suite} failed:\n{(out.stdout + out.stderr)[-3000:]}")
        (building / COMPLETE).write_text(f"debootstrap took {time.monotonic() - started:.0f} s\n")
        building.rename(root)
    return root


class Guest:
    """A writable view of a suite's cached chroot: an upper directory in `scratch` over it."""

    def __init__(self, suite: str, scratch: Path, binds: Sequence[tuple[Path, str]] = ()) -> None:
        """`binds`: (host directory, path inside) pairs bind-mounted rather than copied, so
        reads inside cost what they cost outside (the benchmark)."""
        self.suite = suite
        self.lower = ensure(suite)
        self.upper = scratch / "upper"
        self._work = scratch / "work"
        self._merged = scratch / "merged"
        for d in (self.upper, self._work, self._merged):
            d.mkdir(parents=True, exist_ok=True)
        for _source, inside in binds:
            self.inside(inside).mkdir(parents=True, exist_ok=True)
        self._script = mount_script(binds)

    def inside(self, path: str) -> Path:
        """Where a file that should appear at `path` inside goes (the upper directory)."""
        target = self.upper / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def argv(self, command: list[str]) -> list[str]:
        """`command` run as root inside the merged tree, in its own mount namespace."""
        return [
            "unshare",
            "-m",
            "sh",
            "-c",
            self._script,
            "sh",
            str(self.lower),
            str(self.upper),
            str(self._work),
            str(self._merged),
            *command,
        ]

    def run(self, command: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
        """Run to completion; stdout and stderr captured as bytes."""
        return subprocess.run(self.argv(command), capture_output=True, env=ENV, timeout=timeout)

    def popen(self, command: list[str]) -> subprocess.Popen:
        """Start without waiting (a server); unshare, sh and chroot exec, so the pid is the
        command's own."""
        return subprocess.Popen(
            self.argv(command), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV
        )
