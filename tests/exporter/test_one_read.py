"""One read per scrape: /proc/interrupts and /proc/cmdline are opened once however many collectors
use them, and each collector still reports its own success when the shared read fails."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from exporter.cli import build_registry, parse_args
from exporter.cli import scrape as scrape_bytes
from tests.exporter.conftest import exporter_args, parse_samples, select, value
from tests.support.captures import Capture

_opens: list[str] | None = None


def _audit(event: str, args: tuple) -> None:
    """Record every file the interpreter opens while `_opens` is a list (CPython audit events)."""
    if event == "open" and _opens is not None and isinstance(args[0], (str, bytes, Path)):
        _opens.append(str(args[0]))


sys.addaudithook(_audit)


def opened_during_scrapes(tree: Path, scrapes: int) -> list[str]:
    """Paths opened by `scrapes` scrapes of one exporter over `tree` (its setup not counted)."""
    global _opens
    registry = build_registry(parse_args(exporter_args(tree)))
    scrape_bytes(registry)  # the first scrape reads the whole kernel log; count the later ones
    _opens = []
    try:
        for _ in range(scrapes):
            scrape_bytes(registry)
        return _opens
    finally:
        _opens = None


@pytest.mark.parametrize("scenario", ["q35_normal", "q35_aspm_off", "i440fx_normal"])
def test_interrupts_and_cmdline_are_read_once_per_scrape(scenario):
    tree = Capture(scenario).tree
    opened = opened_during_scrapes(tree, 3)
    for name in ("interrupts", "cmdline"):
        assert opened.count(str(tree / "proc" / name)) == 3, name


def test_a_failed_shared_read_fails_each_user_on_its_own(tree_copy):
    tree = tree_copy(Capture("q35_normal"))
    (tree / "proc/interrupts").unlink()
    (tree / "proc/cmdline").unlink()
    s = parse_samples(scrape_bytes(build_registry(parse_args(exporter_args(tree)))).decode())
    for collector, ok in (("interrupts", 0), ("cmdline", 0), ("verdict", 1), ("ports", 1)):
        assert value(s, "pciehp_collector_success", collector=collector) == ok, collector
        assert value(s, "pciehp_collector_duration_seconds", collector=collector) >= 0
    assert value(s, "pciehp_fact_unknown", fact="irq_registered", reason="interrupts_unreadable")
    assert value(s, "pciehp_fact_unknown", fact="kernel_params", reason="cmdline_unreadable")
    assert select(s, "pciehp_port_irq_registered") == {}
    assert select(s, "pciehp_kernel_param") == {}
