"""Fixtures for the exporter tests: run a scrape in-process over a capture tree."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter.cli import build_registry, parse_args
from exporter.cli import scrape as scrape_bytes
from tests.support import chroots, servers
from tests.support.captures import GUESTS, Capture, tree_args

ROOT = Path(__file__).resolve().parents[2]

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def exporter_args(tree: Path, kernel_log: Path | None = None) -> list[str]:
    return tree_args(tree, kernel_log)


@contextmanager
def serving(listen: str, args: list[str]) -> Iterator[int]:
    """The exporter process serving `args` on `listen` (HOST:PORT or :PORT); yields the port once
    /-/healthy answers, and on exit asserts that SIGTERM ends it cleanly."""
    p = int(listen.rsplit(":", 1)[1])
    proc = subprocess.Popen(
        [sys.executable, "-m", "exporter.cli", "--web.listen-address", listen, *args],
        stderr=subprocess.PIPE,
    )
    try:
        servers.wait_until(
            lambda: servers.http_get(f"http://127.0.0.1:{p}/-/healthy")[0] == 200,
            what="exporter up",
        )
        yield p
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
        proc.stderr.close()


def parse_samples(text: str) -> Samples:
    """Exposition text into {(sample name, labels): value}."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def scrape_text(tree: Path, kernel_log: Path | None = None) -> str:
    registry = build_registry(parse_args(exporter_args(tree, kernel_log)))
    return scrape_bytes(registry).decode()


def select(samples: Samples, name: str, **labels: str) -> dict[frozenset, float]:
    """Samples of one name whose labels include `labels`."""
    want = set(labels.items())
    return {lbl: v for (n, lbl), v in samples.items() if n == name and want <= set(lbl)}


def value(samples: Samples, name: str, **labels: str) -> float:
    """The single sample of `name` matching `labels` (fails if none or several)."""
    found = select(samples, name, **labels)
    assert len(found) == 1, f"{name}{labels}: {len(found)} samples"
    return next(iter(found.values()))


def port(address: str) -> dict[str, str]:
    """node_exporter PCI labels for a BDF such as 0000:00:02.0."""
    seg, bus, rest = address.split(":")
    dev, fn = rest.split(".")
    return {"segment": seg, "bus": bus, "device": dev, "function": fn}


@pytest.fixture
def scrape() -> Callable[..., Samples]:
    """scrape(capture_or_tree) -> samples of one in-process scrape."""

    def _scrape(target: Capture | Path, kernel_log: Path | None = None) -> Samples:
        tree = target.tree if isinstance(target, Capture) else target
        return parse_samples(scrape_text(tree, kernel_log))

    return _scrape


@pytest.fixture
def tree_copy(tmp_path: Path) -> Callable[[Capture], Path]:
    """A writable copy of a capture tree, for tests that change it."""

    def _copy(capture: Capture) -> Path:
        dest = tmp_path / f"{capture.scenario}-{capture.phase}"
        shutil.copytree(capture.tree, dest, symlinks=True)
        for p in dest.rglob("*"):
            if not p.is_symlink():
                p.chmod(p.stat().st_mode | 0o200)
        return dest

    return _copy


class Artifacts(NamedTuple):
    """What `./run dist` builds."""

    pyz: Path
    deb: Path


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Artifacts:
    """The .pyz and .deb built from this checkout by pkg/build.py (what `./run dist` runs)."""
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, str(ROOT / "pkg" / "build.py"), "--out", str(out)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    (deb,) = out.glob("*.deb")
    return Artifacts(out / "pciehp-exporter.pyz", deb)


GUEST_DIR = "/opt/pciehp"
"""Where the artifact tests put the .pyz and the captures inside a chroot."""


def inside_args(capture: Capture) -> list[str]:
    """The exporter's path flags for a capture copied to GUEST_DIR inside a chroot."""
    return tree_args(Path(GUEST_DIR) / "guests" / capture.tree.relative_to(GUESTS))


@pytest.fixture(scope="session", params=sorted(chroots.PYTHONS))
def debian_guest(
    request: pytest.FixtureRequest,
    artifacts: Artifacts,
    tmp_path_factory: pytest.TempPathFactory,
) -> chroots.Guest:
    """A Debian chroot (bullseye, trixie) holding the built .pyz and every capture."""
    guest = chroots.Guest(request.param, tmp_path_factory.mktemp(request.param))
    shutil.copy(artifacts.pyz, guest.inside(f"{GUEST_DIR}/pciehp-exporter.pyz"))
    shutil.copytree(GUESTS, guest.inside(f"{GUEST_DIR}/guests"), symlinks=True)
    return guest
