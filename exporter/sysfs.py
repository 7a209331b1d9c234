"""Small, failure-tolerant readers for sysfs attributes and links.

Real sysfs uses symlinks (`driver`, `module`, `bus/pci/devices/*`). Captures made by archive tools
that do not keep links store the link target as the content of a small regular file instead; both
forms are accepted so a capture reads exactly like the system it came from.
"""

from __future__ import annotations

import os
from pathlib import Path

MAX_ATTR = 64 * 1024
_LINK_MAX = 4096


def read_text(path: Path, limit: int = MAX_ATTR) -> str | None:
    """An attribute's text, stripped; None when it is missing or unreadable."""
    try:
        with open(path, "rb") as f:
            data = f.read(limit)
    except OSError:
        return None
    return data.decode("utf-8", errors="replace").strip()


def read_bytes(path: Path, limit: int = 4096) -> bytes | None:
    """An attribute's raw bytes (e.g. `config`); None when missing or unreadable."""
    try:
        with open(path, "rb") as f:
            return f.read(limit)
    except OSError:
        return None


def read_link(path: Path) -> str | None:
    """The target of a sysfs link (a symlink, or a file holding a relative target); else None."""
    try:
        return os.readlink(path)
    except OSError:
        pass
    try:
        if not path.is_file() or path.stat().st_size > _LINK_MAX:
            return None
        with open(path, "rb") as f:
            text = f.read(_LINK_MAX).decode("utf-8", errors="replace").strip()
    except OSError:
        return None
    if text.startswith("../") and "\n" not in text:
        return text
    return None


def link_name(path: Path) -> str | None:
    """The last component of a link's target: the driver or module name behind `driver`/`module`."""
    target = read_link(path)
    return target.rstrip("/").rsplit("/", 1)[-1] if target else None


def resolve(path: Path) -> Path:
    """Follow a sysfs link lexically (relative to its directory); non-links are returned as is."""
    for _ in range(8):
        if path.is_dir() and not path.is_symlink():
            return path
        target = read_link(path)
        if target is None:
            return path
        path = Path(os.path.normpath(path.parent / target))
    return path


def list_dir(path: Path) -> list[str]:
    """Sorted entry names of a directory; empty when missing or unreadable."""
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []
