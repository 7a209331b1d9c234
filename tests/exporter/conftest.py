"""Fixtures for the exporter tests: run a scrape in-process over a capture tree."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter.cli import build_registry, parse_args
from exporter.cli import scrape as scrape_bytes
from tests.support.captures import Capture, tree_args

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def exporter_args(tree: Path, kernel_log: Path | None = None) -> list[str]:
    return tree_args(tree, kernel_log)


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
