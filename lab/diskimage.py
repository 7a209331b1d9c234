"""A VM disk image's default boot entry, read without mounting anything on the host.

A qcow2 (or any non-raw format qemu-img knows) is converted to a raw temporary file; the MBR
(with logical partitions) or GPT partition table is read here; files are read from ext2/3/4
partitions with e2fsprogs' debugfs opened read-only at the partition's byte offset
(`debugfs -R 'cat PATH' 'image?offset=N'`). grub.cfg is looked for where GRUB installs it
(/boot/grub, /grub, /boot/grub2, /grub2), its default entry found by lab.grub, and that
entry's kernel and initrds are dumped out of the partition GRUB's `root` names.
"""

from __future__ import annotations

import json
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

from lab.grub import BootEntry, GrubError, Root, default_entry

SECTOR = 512
GRUB_CFGS = ("/boot/grub/grub.cfg", "/grub/grub.cfg", "/boot/grub2/grub.cfg", "/grub2/grub.cfg")
_EXTENDED = (0x05, 0x0F, 0x85)


class ImageError(RuntimeError):
    """The image could not be read or holds no bootable Linux entry we can read."""


@dataclass(frozen=True)
class Partition:
    """A partition (number as GRUB counts it; 0 for a filesystem on the whole disk)."""

    number: int
    offset: int
    size: int


@dataclass(frozen=True)
class ImageBoot:
    """What the image boots by default: the entry, and its kernel and initrds copied out."""

    entry: BootEntry
    kernel: Path
    initrds: tuple[Path, ...]
    grub_cfg: str


def raw_image(image: Path, workdir: Path) -> Path:
    """The image itself when raw, else a raw copy in workdir (qemu-img convert; read-only)."""
    info = subprocess.run(
        ["qemu-img", "info", "--output=json", "--force-share", str(image)],
        capture_output=True,
        text=True,
    )
    if info.returncode != 0:
        raise ImageError(f"qemu-img info {image}: {info.stderr.strip()}")
    fmt = json.loads(info.stdout).get("format", "")
    if fmt == "raw":
        return image
    raw = workdir / "image.raw"
    conv = subprocess.run(
        ["qemu-img", "convert", "--force-share", "-f", fmt, "-O", "raw", str(image), str(raw)],
        capture_output=True,
        text=True,
    )
    if conv.returncode != 0:
        raise ImageError(f"qemu-img convert {image} ({fmt}): {conv.stderr.strip()}")
    return raw


def _mbr_entries(sector: bytes) -> list[tuple[int, int, int]]:
    """(type, first LBA, sectors) of the four primary slots that are in use."""
    out = []
    for i in range(4):
        e = sector[446 + 16 * i : 462 + 16 * i]
        ptype = e[4]
        start, count = struct.unpack_from("<II", e, 8)
        if ptype and count:
            out.append((ptype, start, count))
    return out


def partitions(raw: Path) -> list[Partition]:
    """The partitions of a raw disk (GPT, or MBR with logical ones numbered from 5)."""
    with open(raw, "rb") as f:
        mbr = f.read(SECTOR)
        if len(mbr) < SECTOR or mbr[510:512] != b"\x55\xaa":
            return []
        primary = _mbr_entries(mbr)
        if any(t == 0xEE for t, _, _ in primary):
            return _gpt(f)
        parts = []
        for n, (ptype, start, count) in enumerate(primary, start=1):
            if ptype in _EXTENDED:
                parts += _logical(f, start)
            else:
                parts.append(Partition(n, start * SECTOR, count * SECTOR))
        return parts


def _logical(f, ext_start: int) -> list[Partition]:
    parts: list[Partition] = []
    ebr_lba, n = ext_start, 5
    while ebr_lba and n < 64:
        f.seek(ebr_lba * SECTOR)
        entries = _mbr_entries(f.read(SECTOR))
        if not entries:
            break
        _, rel, count = entries[0]
        parts.append(Partition(n, (ebr_lba + rel) * SECTOR, count * SECTOR))
        nxt = [e for e in entries[1:] if e[0] in _EXTENDED]
        ebr_lba = ext_start + nxt[0][1] if nxt else 0
        n += 1
    return parts


def _gpt(f) -> list[Partition]:
    f.seek(SECTOR)
    hdr = f.read(92)
    if hdr[:8] != b"EFI PART":
        return []
    entries_lba, count, size = struct.unpack_from("<QII", hdr, 72)
    f.seek(entries_lba * SECTOR)
    table = f.read(count * size)
    parts = []
    for i in range(count):
        e = table[i * size : (i + 1) * size]
        if len(e) < 48 or e[:16] == b"\x00" * 16:
            continue
        first, last = struct.unpack_from("<QQ", e, 32)
        parts.append(Partition(i + 1, first * SECTOR, (last - first + 1) * SECTOR))
    return parts


class ExtFs:
    """One ext2/3/4 filesystem inside a raw image, read through debugfs (never written)."""

    def __init__(self, raw: Path, part: Partition) -> None:
        self.raw = raw
        self.part = part
        self.spec = f"{raw}?offset={part.offset}"

    def _debugfs(self, request: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            ["debugfs", "-R", request, self.spec], capture_output=True, timeout=120
        )

    def _errors(self, proc: subprocess.CompletedProcess[bytes]) -> str:
        lines = proc.stderr.decode(errors="replace").splitlines()
        return "\n".join(ln for ln in lines if not ln.startswith("debugfs "))

    def stats(self) -> dict[str, str] | None:
        """The superblock's fields (`Filesystem UUID`, ...), None when this is not ext2/3/4."""
        proc = self._debugfs("stats -h")
        if proc.returncode != 0 or self._errors(proc):
            return None
        out = {}
        for line in proc.stdout.decode(errors="replace").splitlines():
            k, sep, v = line.partition(":")
            if sep:
                out[k.strip()] = v.strip()
        return out

    def read(self, path: str) -> bytes | None:
        """A file's bytes; None when it does not exist (or is no regular file)."""
        proc = self._debugfs(f'cat "{path}"')
        return None if self._errors(proc) else proc.stdout

    def listdir(self, path: str) -> list[str] | None:
        """Names in a directory, None when it does not exist."""
        proc = self._debugfs(f'ls -p "{path}"')
        if self._errors(proc):
            return None
        names = []
        for line in proc.stdout.decode(errors="replace").splitlines():
            fields = line.split("/")
            if len(fields) >= 6 and fields[5] not in ("", ".", ".."):
                names.append(fields[5])
        return names

    def dump(self, path: str, dest: Path) -> bool:
        """Copy a file out into dest; False when it does not exist."""
        proc = self._debugfs(f'dump "{path}" "{dest}"')
        return not self._errors(proc) and dest.exists()


def _filesystems(raw: Path) -> list[tuple[ExtFs, dict[str, str]]]:
    parts = partitions(raw) or [Partition(0, 0, raw.stat().st_size)]
    out = []
    for p in parts:
        fs = ExtFs(raw, p)
        stats = fs.stats()
        if stats is not None:
            out.append((fs, stats))
    return out


def _root_fs(root: Root, grub_fs: ExtFs, found: list[tuple[ExtFs, dict[str, str]]]) -> list[ExtFs]:
    """The filesystems to look in for an entry's files: the one `root` names first."""
    named = [
        fs
        for fs, st in found
        if (root.partition is not None and fs.part.number == root.partition)
        or (root.uuid and st.get("Filesystem UUID", "").lower() == root.uuid.lower())
        or (root.label and st.get("Filesystem volume name", "") == root.label)
    ]
    rest = [grub_fs] + [fs for fs, _ in found if fs is not grub_fs]
    return named + [fs for fs in rest if fs not in named]


def default_boot(image: Path, workdir: Path) -> ImageBoot:
    """The image's default GRUB entry with its kernel and initrds copied into workdir."""
    raw = raw_image(image, workdir)
    found = _filesystems(raw)
    if not found:
        raise ImageError(f"{image}: no ext2/3/4 filesystem (only those are read; xfs/btrfs not)")
    for fs, _ in found:
        for cfg_path in GRUB_CFGS:
            text = fs.read(cfg_path)
            if text is None:
                continue
            cfg_dir = cfg_path.rsplit("/", 1)[0]

            def reader(path: str, fs: ExtFs = fs, cfg_dir: str = cfg_dir) -> str | None:
                if path == "grubenv":
                    path = f"{cfg_dir}/grubenv"
                if path.endswith("/"):
                    names = fs.listdir(path)
                    return None if names is None else "\n".join(names)
                data = fs.read(path)
                return None if data is None else data.decode(errors="replace")

            try:
                entry = default_entry(text.decode(errors="replace"), reader)
            except GrubError as e:
                raise ImageError(f"{image}: {cfg_path} on partition {fs.part.number}: {e}") from e
            where = f"partition {fs.part.number}:{cfg_path}"
            return _copy_out(entry, _root_fs(entry.root, fs, found), workdir, where)
    raise ImageError(f"{image}: no grub.cfg in {', '.join(GRUB_CFGS)} on any ext partition")


def _copy_out(entry: BootEntry, order: list[ExtFs], workdir: Path, where: str) -> ImageBoot:
    def fetch(path: str, name: str) -> Path:
        dest = workdir / name
        for fs in order:
            if fs.dump(path, dest):
                return dest
        raise ImageError(f"{where}: default entry {entry.title!r}: {path} not found")

    kernel = fetch(entry.kernel, "vmlinuz")
    initrds = tuple(fetch(p, f"initrd{i}") for i, p in enumerate(entry.initrds))
    return ImageBoot(entry, kernel, initrds, where)
