"""`./run dist`: dist/pciehp-exporter.pyz (a zipapp) and dist/pciehp-exporter_<version>_all.deb.

The zipapp holds only the exporter package and a __main__, so any CPython from 3.6 runs it with
nothing but the standard library; the .deb (dpkg-deb, no debhelper) installs it with a wrapper that
finds the image's interpreter and the systemd units from deploy/. Both are byte-reproducible: every
file gets the same mtime (SOURCE_DATE_EPOCH, else a fixed date).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipapp
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "pkg"
NAME = "pciehp-exporter"
LIBDIR = f"usr/lib/{NAME}"
PYZ_NAME = f"{NAME}.pyz"
WRAPPER = f"usr/bin/{NAME}"
UNIT_DIR = "lib/systemd/system"  # found by systemd on merged and unmerged /usr alike
UNITS = (
    "pciehp-exporter.service",
    "pciehp-exporter-textfile.service",
    "pciehp-exporter-textfile.timer",
)
PIP_BINARY = "/usr/local/bin/pciehp-exporter"
EPOCH = int(os.environ.get("SOURCE_DATE_EPOCH", "1767225600"))  # 2026-01-01 UTC

MAIN = '''"""Entry point of pciehp-exporter.pyz: `python3 pciehp-exporter.pyz [flags]`."""

import sys

from exporter.cli import main

sys.exit(main())
'''

CONTROL = """Package: {name}
Version: {version}
Architecture: all
Maintainer: pciehp-watch <pciehp-watch@users.noreply.github.com>
Installed-Size: {size}
Depends: python3 (>= 3.6)
Section: admin
Priority: optional
Homepage: https://github.com/pciehp-watch/pciehp-watch
Description: Prometheus exporter: can each PCIe port of this guest answer a hot-unplug?
 Per PCIe root and downstream port: the hotplug handler (pciehp, acpiphp or
 none), whether pciehp's IRQ is registered, the slot registers, the kernel
 parameters and the _OSC outcome that decide them, and a verdict.
 .
 One zipapp using only the standard library of any CPython from 3.6. Serves
 :9860/metrics (pciehp-exporter.service) or writes a node_exporter textfile
 every minute (pciehp-exporter-textfile.timer).
"""

# systemd rereads units it already knows only on daemon-reload; no-op in an image being built
RELOAD = """#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || true
fi
"""

COPYRIGHT = """Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: pciehp-watch
Source: https://github.com/pciehp-watch/pciehp-watch

Files: *
Copyright: pciehp-watch authors
License: Apache-2.0
 On Debian systems the full text is in /usr/share/common-licenses/Apache-2.0.
"""


def version() -> str:
    """exporter.__version__, read without importing the package."""
    text = (ROOT / "exporter" / "__init__.py").read_text()
    match = re.search(r'^__version__ = "([^"]+)"', text, re.M)
    assert match, "no __version__ in exporter/__init__.py"
    return match.group(1)


def _stamp(tree: Path) -> None:
    """Give every file and directory the same mtime, so archives do not depend on checkout time."""
    for path in [tree, *tree.rglob("*")]:
        os.utime(path, (EPOCH, EPOCH), follow_symlinks=False)


def build_pyz(out: Path) -> Path:
    """dist/pciehp-exporter.pyz: exporter/ plus __main__, run by `/usr/bin/env python3`."""
    with tempfile.TemporaryDirectory(prefix="pciehp-pyz-") as tmp:
        stage = Path(tmp) / "app"
        shutil.copytree(
            ROOT / "exporter",
            stage / "exporter",
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
        )
        (stage / "__main__.py").write_text(MAIN)
        for path in stage.rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o644)
        _stamp(stage)
        target = out / PYZ_NAME
        zipapp.create_archive(stage, target, interpreter="/usr/bin/env python3", compressed=True)
    return target


def deb_unit(name: str) -> str:
    """A unit from deploy/ with ExecStart pointing at the packaged wrapper instead of pip's."""
    text = (ROOT / "deploy" / name).read_text()
    if name.endswith(".service"):
        assert PIP_BINARY in text, f"{name}: no {PIP_BINARY} to replace"
    return text.replace(PIP_BINARY, "/" + WRAPPER)


def _md5sums(root: Path) -> str:
    lines = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if path.is_file() and rel.parts[0] != "DEBIAN":
            lines.append(f"{hashlib.md5(path.read_bytes()).hexdigest()}  {rel}\n")
    return "".join(lines)


def build_deb(pyz: Path, out: Path) -> Path:
    """dist/pciehp-exporter_<version>_all.deb, built by dpkg-deb from a staged root."""
    ver = version()
    with tempfile.TemporaryDirectory(prefix="pciehp-deb-") as tmp:
        root = Path(tmp) / "root"
        files = {
            f"{LIBDIR}/{PYZ_NAME}": (pyz.read_bytes(), 0o644),
            WRAPPER: ((PKG / "pciehp-exporter.sh").read_bytes(), 0o755),
            f"usr/share/doc/{NAME}/copyright": (COPYRIGHT.encode(), 0o644),
        }
        for unit in UNITS:
            files[f"{UNIT_DIR}/{unit}"] = (deb_unit(unit).encode(), 0o644)
        for rel, (data, mode) in files.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            path.chmod(mode)
        size_kib = sum((len(d) + 1023) // 1024 for d, _ in files.values())
        debian = root / "DEBIAN"
        debian.mkdir()
        (debian / "control").write_text(CONTROL.format(name=NAME, version=ver, size=size_kib))
        (debian / "md5sums").write_text(_md5sums(root))
        for script in ("postinst", "postrm"):
            (debian / script).write_text(RELOAD)
            (debian / script).chmod(0o755)
        for path in root.rglob("*"):
            if path.is_dir():
                path.chmod(0o755)
        _stamp(root)
        target = out / f"{NAME}_{ver}_all.deb"
        env = dict(os.environ, SOURCE_DATE_EPOCH=str(EPOCH))
        subprocess.run(
            ["dpkg-deb", "--root-owner-group", "-Zxz", "--build", str(root), str(target)],
            check=True,
            stdout=subprocess.DEVNULL,
            env=env,
        )
    return target


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "dist", help="output directory")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    pyz = build_pyz(args.out)
    deb = build_deb(pyz, args.out)
    for path in (pyz, deb):
        print(f"{path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
