"""Small, failure-tolerant readers for sysfs attributes and links.

Real sysfs uses symlinks (`driver`, `module`, `bus/pci/devices/*`). Captures made by archive tools
that do not keep links store the link target as the content of a small regular file instead; both
forms are accepted so a capture reads exactly like the system it came from. Paths are plain
strings here: a scrape reads a few hundred attributes and pathlib's overhead showed in profiles.
"""

import os
from typing import List, Optional, Union

MAX_ATTR = 64 * 1024
_LINK_MAX = 4096

StrPath = Union[str, "os.PathLike[str]"]


def read_text(path: StrPath, limit: int = MAX_ATTR) -> Optional[str]:
    """An attribute's text, stripped; None when it is missing or unreadable."""
    data = read_bytes(path, limit)
    return None if data is None else data.decode("utf-8", errors="replace").strip()


def read_bytes(path: StrPath, limit: int = 4096) -> Optional[bytes]:
    """An attribute's raw bytes (e.g. `config`); None when missing or unreadable."""
    try:
        return read_file(path, limit)
    except OSError:
        return None


_CHUNK = 64 * 1024


def read_file(path: StrPath, limit: int) -> bytes:
    """The first `limit` bytes of a file (all of it if shorter); raises OSError.

    os.open/os.read, not open(): no buffered file object per attribute (a third of the cost),
    and no `limit`-sized buffer allocated up front as file.read(limit) does (a 32 MiB cap on
    /proc/interrupts cost more than parsing it).
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while limit > 0:
            chunk = os.read(fd, min(limit, _CHUNK))
            if not chunk:
                break
            chunks.append(chunk)
            limit -= len(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)
    finally:
        os.close(fd)


def read_link(path: StrPath) -> Optional[str]:
    """The target of a sysfs link (a symlink, or a file holding a relative target); else None."""
    try:
        return os.readlink(path)
    except OSError:
        pass
    try:
        with open(path, "rb") as f:
            data = f.read(_LINK_MAX + 1)
    except OSError:  # missing, a directory, unreadable
        return None
    text = data.decode("utf-8", errors="replace").strip()
    if len(data) <= _LINK_MAX and text.startswith("../") and "\n" not in text:
        return text
    return None


def link_name(path: StrPath) -> Optional[str]:
    """The last component of a link's target: the driver or module name behind `driver`/`module`."""
    target = read_link(path)
    return target.rstrip("/").rsplit("/", 1)[-1] if target else None


def resolve(path: StrPath) -> str:
    """Follow a sysfs link lexically (relative to its directory); non-links are returned as is."""
    path = os.fspath(path)
    for _ in range(8):
        if os.path.isdir(path) and not os.path.islink(path):
            return path
        target = read_link(path)
        if target is None:
            return path
        path = os.path.normpath(os.path.join(os.path.dirname(path), target))
    return path


def list_dir(path: StrPath) -> List[str]:
    """Sorted entry names of a directory; empty when missing or unreadable."""
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []
