"""A busybox-static initramfs for lab guests, built here as a newc cpio (no cpio tool needed).

The guest's /init mounts proc, sysfs and devtmpfs, records /dev/kmsg from boot on, loads the virtio
modules the kernel has as modules, prints READY_MARKER on ttyS0 and then serves commands on ttyS1:
`capture` answers with the guest view tree (the sysfs/procfs subset and kernel log the exporter
reads) as a base64 gzip tar between CAPTURE_BEGIN and CAPTURE_END lines.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import lzma
import re
import shutil
import stat
import subprocess
from pathlib import Path

from lab.kernels import AptSuite, Kernel, cache_dir, cache_lock

READY_MARKER = "PCIEHP-LAB-READY"
CAPTURE_BEGIN = "PCIEHP-LAB-CAPTURE-BEGIN"
CAPTURE_END = "PCIEHP-LAB-CAPTURE-END"
# virtio_blk: the disk behind the first port gets its driver (deps are added from modinfo)
WANTED_MODULES = ("virtio_pci", "virtio_blk")
# sysfs modules whose directories the exporter or a reader of a capture looks at
CAPTURED_MODULES = (
    "pciehp pcie_aspm pcieportdrv shpchp acpiphp pci_hotplug virtio_blk virtio_pci pcie_pme"
)

INIT = r"""#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /run /tmp /usr/bin /usr/sbin /sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
cat /dev/kmsg > /run/kmsg.txt &
for m in $(cat /lib/lab-modules 2>/dev/null); do insmod "/lib/lab/$m" 2>/dev/null; done
[ -s /lib/lab-modules ] || modprobe -a virtio_pci virtio_blk 2>/dev/null

T=/tmp/cap/tree
cap_file() { [ -r "$1" ] && cat "$1" > "$T$1" 2>/dev/null; }
cap_link() { readlink "$1" > "$T$1"; }
cap_tree() {
  mkdir -p "$T$1"
  for e in "$1"/*; do
    if [ -L "$e" ]; then cap_link "$e"
    elif [ -d "$e" ]; then
      case "${e##*/}" in holders|notes|sections|power) ;; *) cap_tree "$e" ;; esac
    elif [ -f "$e" ]; then cap_file "$e"
    fi
  done
}
cap_links() {
  mkdir -p "$T$1"
  for e in "$1"/*; do [ -L "$e" ] && cap_link "$e"; done
}
pci_dev() {
  mkdir -p "$T$1"
  for e in "$1"/*; do
    n=${e##*/}
    if [ -L "$e" ]; then
      case "$n" in driver|subsystem) cap_link "$e" ;; esac
    elif [ -d "$e" ]; then
      case "$n" in
        msi_irqs) cap_tree "$e" ;;
        ????:??:??.?:pcie*) mkdir -p "$T$e"; cap_link "$e/subsystem"; cap_file "$e/uevent"
                            [ -L "$e/driver" ] && cap_link "$e/driver" ;;
        ????:??:??.?) pci_dev "$e" ;;
      esac
    elif [ -f "$e" ]; then
      case "$n" in resource*|rom|reset*|remove|rescan|vpd|label|*_rescan) ;;
        *) cap_file "$e" ;; esac
    fi
  done
}
capture() {
  rm -rf /tmp/cap
  mkdir -p $T/proc $T/sys/class/dmi
  for f in interrupts cmdline version uptime; do cat /proc/$f > $T/proc/$f; done
  for root in /sys/devices/pci????:??; do
    mkdir -p "$T$root"; cap_file "$root/uevent"
    for e in "$root"/????:??:??.?; do [ -d "$e" ] && pci_dev "$e"; done
  done
  cap_links /sys/bus/pci/devices
  for d in /sys/bus/pci/drivers/* /sys/bus/pci_express/drivers/*; do cap_links "$d"; done
  cap_links /sys/bus/pci_express/devices
  mkdir -p $T/sys/bus/pci/slots
  for d in /sys/bus/pci/slots/*; do [ -d "$d" ] && cap_tree "$d"; done
  for m in @MODULES@; do [ -d /sys/module/$m ] && cap_tree /sys/module/$m; done
  cap_link /sys/class/dmi/id
  cap_tree /sys/devices/virtual/dmi/id
  cp /run/kmsg.txt $T/kmsg.txt
  dmesg > $T/dmesg.txt
}

stty -F /dev/ttyS1 raw -echo clocal 2>/dev/null
exec 3<>/dev/ttyS1
# only now: bytes that reach ttyS1 before it is open are dropped
echo "@READY@ $(uname -r)" > /dev/ttyS0
while read -r cmd <&3; do
  case "$cmd" in
    capture)
      capture 2>/dev/null
      echo "@BEGIN@" >&3
      tar -czf - -C /tmp/cap tree | base64 >&3
      echo "@END@" >&3 ;;
    *) echo "unknown command: $cmd" >&3 ;;
  esac
done
"""


def init_script() -> str:
    """The guest's /init, with the marker strings filled in."""
    return (
        INIT.replace("@READY@", READY_MARKER)
        .replace("@BEGIN@", CAPTURE_BEGIN)
        .replace("@END@", CAPTURE_END)
        .replace("@MODULES@", CAPTURED_MODULES)
    )


def busybox_binary() -> Path:
    """Debian's busybox-static: the installed one, else its package downloaded into the cache."""
    installed = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", "busybox-static"], capture_output=True, text=True
    )
    if "install ok installed" in installed.stdout and Path("/bin/busybox").exists():
        return Path("/bin/busybox")
    dest = cache_dir() / "busybox-static"
    binary = dest / "bin" / "busybox"
    with cache_lock("busybox-static"):
        if not binary.exists():
            apt = AptSuite("bookworm", cache_dir() / "apt" / "bookworm")
            apt.update()
            dest.mkdir(parents=True, exist_ok=True)
            apt.run("apt-get", "-q", "download", "busybox-static", cwd=dest)
            deb = next(dest.glob("busybox-static_*.deb"))
            subprocess.run(["dpkg-deb", "-x", str(deb), str(dest)], check=True)
    return binary


def _module_bytes(path: Path) -> bytes:
    """A module file's ELF bytes, decompressed when the kernel package ships .ko.xz or .ko.gz."""
    data = path.read_bytes()
    if path.name.endswith(".xz"):
        return lzma.decompress(data)
    if path.name.endswith(".gz"):
        return gzip.decompress(data)
    if path.name.endswith(".zst"):
        return subprocess.run(["zstd", "-dc", str(path)], capture_output=True, check=True).stdout
    return data


def _module_name(path: Path) -> str:
    return re.sub(r"\.ko(\.\w+)?$", "", path.name).replace("-", "_")


def module_load_order(modules_dir: Path, wanted: tuple[str, ...]) -> list[tuple[str, bytes]]:
    """The wanted modules and their dependencies (from each module's modinfo), dependencies first.

    Modules the kernel has built in are absent from the package and simply skipped. Debian's
    packages ship no modules.dep (depmod runs at install), so `depends=` is read from the files.
    """
    files = {_module_name(p): p for p in (modules_dir / "kernel").rglob("*.ko*")}
    order: list[tuple[str, bytes]] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen or name not in files:
            return
        seen.add(name)
        data = _module_bytes(files[name])
        m = re.search(rb"\x00depends=([\w,-]*)\x00", data)
        for dep in m.group(1).decode().split(",") if m else []:
            if dep:
                visit(dep.replace("-", "_"))
        order.append((name, data))

    for name in wanted:
        visit(name)
    return order


def _cpio_entry(name: str, mode: int, data: bytes = b"", ino: int = 0) -> bytes:
    """One newc cpio record (header, name, data, 4-byte padding); /dev/console gets its 5:1."""
    rdev = (5, 1) if stat.S_ISCHR(mode) else (0, 0)
    fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, *rdev, len(name) + 1, 0]
    header = b"070701" + b"".join(f"{v:08x}".encode() for v in fields)
    out = header + name.encode() + b"\x00"
    out += b"\x00" * (-len(out) % 4)
    out += data + b"\x00" * (-len(data) % 4)
    return out


def cpio_newc(entries: list[tuple[str, int, bytes]]) -> bytes:
    """A newc cpio archive of (path, mode, data) entries, with the trailer."""
    buf = io.BytesIO()
    for ino, (name, mode, data) in enumerate(entries, start=1):
        buf.write(_cpio_entry(name, mode, data, ino))
    buf.write(_cpio_entry("TRAILER!!!", 0))
    return buf.getvalue()


def build_initramfs(kernel: Kernel | None) -> Path:
    """A gzip'd cpio with busybox, /init and the kernel's virtio modules; cached by content."""
    busybox = busybox_binary().read_bytes()
    modules = module_load_order(kernel.modules_dir, WANTED_MODULES) if kernel else []
    d, f, x = stat.S_IFDIR | 0o755, stat.S_IFREG | 0o644, stat.S_IFREG | 0o755
    entries: list[tuple[str, int, bytes]] = [
        (p, d, b"") for p in ("bin", "dev", "lib", "lib/lab", "proc", "sys", "run", "tmp")
    ]
    entries += [("bin/busybox", x, busybox), ("bin/sh", stat.S_IFLNK | 0o777, b"busybox")]
    entries += [("init", x, init_script().encode())]
    entries += [(f"lib/lab/{name}.ko", f, data) for name, data in modules]
    order = "".join(f"{name}.ko\n" for name, _ in modules)
    entries += [("lib/lab-modules", f, order.encode())]
    entries.append(("dev/console", stat.S_IFCHR | 0o600, b""))
    archive = cpio_newc(entries)
    digest = hashlib.sha256(archive).hexdigest()[:16]
    label = kernel.release if kernel else "nomodules"
    out = cache_dir() / "initramfs" / f"{label}-{digest}.cpio.gz"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        tmp.write_bytes(gzip.compress(archive, 6, mtime=0))
        tmp.replace(out)
    return out


def combine_initrd(first: Path, ours: Path, dest: Path) -> Path:
    """The image's initrd followed by ours: /init is ours, the image's modules are there."""
    with open(dest, "wb") as out:
        for part in (first, ours):
            with open(part, "rb") as src:
                shutil.copyfileobj(src, out)
            out.write(b"\x00" * (-out.tell() % 4))
    return dest
