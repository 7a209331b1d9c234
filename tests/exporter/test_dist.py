"""`./run dist`: the zipapp runs by itself and prints the golden output; the .deb carries it, the
wrapper and the units pointing at the wrapper. The old/new-Python runs are in test_artifact.py."""

from __future__ import annotations

import shlex
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from exporter import __version__
from exporter.cli import parse_args
from tests.exporter.conftest import ROOT
from tests.exporter.test_golden import GOLDEN, VOLATILE
from tests.support.captures import ALL, Capture

PYZ = "/usr/lib/pciehp-exporter/pciehp-exporter.pyz"
WRAPPER = "/usr/bin/pciehp-exporter"
UNITS = [
    "/lib/systemd/system/pciehp-exporter.service",
    "/lib/systemd/system/pciehp-exporter-textfile.service",
    "/lib/systemd/system/pciehp-exporter-textfile.timer",
]


def golden(capture: Capture) -> str:
    return (GOLDEN / f"{capture.scenario}__{capture.phase}.prom").read_text()


def test_pyz_holds_the_exporter_package_and_a_main_only(artifacts):
    with zipfile.ZipFile(artifacts.pyz) as z:
        names = z.namelist()
    assert "__main__.py" in names
    assert all(n == "__main__.py" or n.startswith("exporter/") for n in names), names
    assert not [n for n in names if n.endswith(".pyc") or "__pycache__" in n]
    sources = {p.relative_to(ROOT).as_posix() for p in (ROOT / "exporter").rglob("*.py")}
    assert {n for n in names if n.endswith(".py")} - {"__main__.py"} == sources
    assert artifacts.pyz.read_bytes().startswith(b"#!/usr/bin/env python3\n")


@pytest.mark.parametrize("capture", ALL, ids=lambda c: f"{c.scenario}__{c.phase}")
def test_pyz_textfile_matches_golden(artifacts, capture, tmp_path):
    """The zipapp alone (no checkout on sys.path, -I) writes the golden scrape as a textfile."""
    out = tmp_path / "pciehp.prom"
    run = subprocess.run(
        [
            sys.executable,
            "-I",
            str(artifacts.pyz),
            "--textfile",
            str(out),
            *capture.exporter_args(),
        ],
        capture_output=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert run.returncode == 0 and run.stderr == b"", run.stderr.decode()
    assert VOLATILE.sub("", out.read_text()) == golden(capture)


def test_build_is_reproducible(artifacts, tmp_path):
    subprocess.run(
        [sys.executable, str(ROOT / "pkg" / "build.py"), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    assert (tmp_path / artifacts.pyz.name).read_bytes() == artifacts.pyz.read_bytes()
    assert (tmp_path / artifacts.deb.name).read_bytes() == artifacts.deb.read_bytes()


def deb_listing(deb: Path) -> dict[str, str]:
    """`dpkg-deb -c`: absolute path -> mode string, for the regular files."""
    out = subprocess.run(
        ["dpkg-deb", "-c", str(deb)], capture_output=True, text=True, check=True, timeout=60
    )
    files = {}
    for line in out.stdout.splitlines():
        mode, _owner, _size, _date, _time, name = line.split(None, 5)
        if mode.startswith("-"):
            files[name.removeprefix(".")] = mode
    return files


def test_deb_contains_pyz_wrapper_and_units(artifacts):
    files = deb_listing(artifacts.deb)
    assert files[PYZ] == "-rw-r--r--"
    assert files[WRAPPER] == "-rwxr-xr-x"
    for unit in UNITS:
        assert files[unit] == "-rw-r--r--"
    fields = subprocess.run(
        ["dpkg-deb", "-f", str(artifacts.deb), "Package", "Version", "Architecture", "Depends"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert "Package: pciehp-exporter\n" in fields
    assert "Architecture: all\n" in fields
    assert "Depends: python3 (>= 3.6)\n" in fields
    assert f"Version: {__version__}\n" in fields
    assert artifacts.deb.name == f"pciehp-exporter_{__version__}_all.deb"


def test_deb_units_start_the_wrapper_with_valid_flags(artifacts, tmp_path):
    subprocess.run(["dpkg-deb", "-x", str(artifacts.deb), str(tmp_path)], check=True, timeout=60)
    for unit in UNITS:
        if not unit.endswith(".service"):
            continue
        text = (tmp_path / unit.lstrip("/")).read_text()
        (exec_start,) = [line for line in text.splitlines() if line.startswith("ExecStart=")]
        argv = shlex.split(exec_start.removeprefix("ExecStart="))
        assert argv[0] == WRAPPER
        assert parse_args(argv[1:]).kernel_log == "/dev/kmsg"
    wrapper = (tmp_path / WRAPPER.lstrip("/")).read_text()
    assert wrapper == (ROOT / "pkg" / "pciehp-exporter.sh").read_text()
    assert f"PYZ={PYZ}\n" in wrapper
    assert (tmp_path / PYZ.lstrip("/")).read_bytes() == artifacts.pyz.read_bytes()
