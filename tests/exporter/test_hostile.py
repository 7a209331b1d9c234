"""Hostile input never escapes a scrape: a failing source reports collector_success 0."""

from __future__ import annotations

import os
import shutil

import pytest

from exporter.cli import build_registry, parse_args
from exporter.cli import scrape as scrape_bytes
from tests.exporter.conftest import exporter_args, parse_samples, port, select, value
from tests.support.captures import Capture, materialize_links

HUGE = 40 * 1024 * 1024


def _ok(s, collector: str) -> float:
    return value(s, "pciehp_collector_success", collector=collector)


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda p: p.unlink(), id="missing"),
        pytest.param(lambda p: (p.unlink(), p.mkdir()), id="directory"),
        pytest.param(lambda p: p.write_bytes(os.urandom(4096)), id="binary"),
        pytest.param(lambda p: p.write_bytes(b"\0" * 100), id="nul"),
        pytest.param(lambda p: p.write_bytes(p.read_bytes()[:10]), id="truncated-header"),
        pytest.param(lambda p: p.write_bytes(b"x" * HUGE), id="huge"),
    ],
)
def test_bad_proc_interrupts(scrape, tree_copy, mutate):
    tree = tree_copy(Capture("q35_normal"))
    mutate(tree / "proc" / "interrupts")
    s = scrape(tree)
    assert _ok(s, "interrupts") == 0
    assert not select(s, "pciehp_port_irq_registered")
    # everything else still served
    assert _ok(s, "ports") == 1 and _ok(s, "slots") == 1 and _ok(s, "kernel_log") == 1
    assert value(s, "pciehp_port_hotplug_handler", handler="pciehp", **port("0000:00:02.0")) == 1


def test_truncated_interrupts_gives_partial_rows(scrape, tree_copy):
    tree = tree_copy(Capture("q35_normal"))
    p = tree / "proc" / "interrupts"
    text = p.read_text()
    p.write_text(text[: text.index(" 30:") + 20])  # cut in the middle of irq 30's row
    s = scrape(tree)
    assert _ok(s, "interrupts") == 1
    assert value(s, "pciehp_port_irq_registered", **port("0000:00:02.0")) == 1
    assert value(s, "pciehp_port_irq_registered", **port("0000:00:03.3")) == 0


def test_missing_cmdline_and_identity(scrape, tree_copy):
    tree = tree_copy(Capture("q35_normal"))
    (tree / "proc/cmdline").unlink()
    (tree / "sys/devices/virtual/dmi/id/product_uuid").write_bytes(b"\xff\xfe garbage")
    s = scrape(tree)
    assert _ok(s, "cmdline") == 0
    assert _ok(s, "identity") == 0
    assert value(s, "pciehp_guest_info", instance_uuid="", machine="q35") == 1
    assert _ok(s, "ports") == 1


@pytest.mark.parametrize(
    ("damage", "reason"),
    [("absent", "dmi_missing"), ("junk", "not_a_uuid")],
)
def test_an_unknown_instance_uuid_says_why(scrape, tree_copy, damage, reason):
    """No SMBIOS and a value that is not a UUID are told apart from no privilege (the log said
    "needs root" even to root on a platform without DMI); permission_denied is in
    test_unprivileged.py, since root reads a mode-0400 file."""
    tree = tree_copy(Capture("q35_normal"))
    uuid = tree / "sys/devices/virtual/dmi/id/product_uuid"
    if damage == "absent":
        uuid.unlink()
    else:
        uuid.write_text("Not Settable\n")
    s = scrape(tree)
    assert _ok(s, "identity") == 0
    assert select(s, "pciehp_fact_unknown") == {
        frozenset({("fact", "instance_uuid"), ("reason", reason)}): 1.0
    }
    assert value(s, "pciehp_guest_info", instance_uuid="", machine="q35") == 1


def test_empty_sysfs_is_no_ports_not_an_error(scrape, tree_copy):
    tree = tree_copy(Capture("q35_normal"))
    shutil.rmtree(tree / "sys")
    (tree / "sys").mkdir()
    s = scrape(tree)
    assert not select(s, "pciehp_port_info")
    assert _ok(s, "ports") == 1


@pytest.mark.parametrize(
    "attr", ["class", "config", "irq", "secondary_bus_number", "driver", "msi_irqs"]
)
def test_unreadable_port_attribute(scrape, tree_copy, attr):
    """One attribute of a port replaced by junk: no exception, the other ports are fine."""
    tree = tree_copy(Capture("q35_normal"))
    target = tree / "sys/devices/pci0000:00/0000:00:02.5" / attr
    if target.is_dir():
        shutil.rmtree(target)
    target.write_bytes(os.urandom(300))
    s = scrape(tree)
    assert value(s, "pciehp_port_hotplug_handler", handler="pciehp", **port("0000:00:02.0")) == 1
    assert _ok(s, "ports") == 1 and _ok(s, "slots") == 1


def test_a_vanished_port_vanishes_from_the_output(tree_copy):
    """Metrics are built fresh on each scrape: no stale series for an unplugged port."""
    tree = tree_copy(Capture("q35_normal"))
    registry = build_registry(parse_args(exporter_args(tree)))
    first = parse_samples(scrape_bytes(registry).decode())
    assert select(first, "pciehp_port_info", **port("0000:00:03.3"))
    (tree / "sys/bus/pci/devices/0000:00:03.3").unlink()
    second = parse_samples(scrape_bytes(registry).decode())
    assert not select(second, "pciehp_port_info", **port("0000:00:03.3"))
    assert not select(second, "pciehp_events_total", **port("0000:00:03.3"))
    assert select(second, "pciehp_port_info", **port("0000:00:03.2"))


def test_real_symlinks_read_like_flattened_links(scrape, tree_copy):
    """The captures store sysfs links as files; a tree with real symlinks gives the same output."""
    tree = tree_copy(Capture("q35_normal", "after_unplug"))
    expected = scrape(tree)
    converted = materialize_links(tree)
    assert converted > 100
    got = scrape(tree)
    strip = {k: v for k, v in got.items() if k[0] != "pciehp_collector_duration_seconds"}
    want = {k: v for k, v in expected.items() if k[0] != "pciehp_collector_duration_seconds"}
    assert strip == want
