"""The port topology is walked once and again when the PCI device (or slot) set changes; each
scrape re-reads only the slot registers and slot attributes. One registry across scrapes, as the
HTTP server keeps it."""

from __future__ import annotations

from pathlib import Path

from exporter.cli import Registry, build_registry, parse_args
from exporter.cli import scrape as scrape_bytes
from exporter.paths import Paths
from exporter.pci import config_space
from exporter.pci.topology import REWALK_SECONDS, TopologyCache
from tests.exporter.conftest import Samples, exporter_args, parse_samples, port, select, value
from tests.support.captures import Capture, kmsg_with

PORT = "0000:00:02.1"


def registry(tree: Path) -> Registry:
    return build_registry(parse_args(exporter_args(tree)))


def scrape(reg: Registry) -> Samples:
    return parse_samples(scrape_bytes(reg).decode())


def ports(samples: Samples) -> set[str]:
    return {dict(lbl)["address"] for lbl in select(samples, "pciehp_port_info")}


def device(tree: Path, address: str = PORT) -> Path:
    """The capture's /sys/bus/pci/devices entry (a file holding the link target)."""
    return tree / "sys" / "bus" / "pci" / "devices" / address


def config(tree: Path) -> Path:
    return tree / "sys" / "devices" / "pci0000:00" / PORT / "config"


def test_a_removed_port_is_gone_on_the_next_scrape(tree_copy):
    tree = tree_copy(Capture("q35_normal"))
    reg = registry(tree)
    before = ports(scrape(reg))
    assert PORT in before
    device(tree).unlink()
    assert ports(scrape(reg)) == before - {PORT}


def test_an_added_port_appears_on_the_next_scrape(tree_copy):
    tree = tree_copy(Capture("q35_normal"))
    link = device(tree).read_bytes()
    device(tree).unlink()
    reg = registry(tree)
    assert PORT not in ports(scrape(reg))
    device(tree).write_bytes(link)
    after = scrape(reg)
    assert PORT in ports(after)
    assert value(after, "pciehp_port_hotplug_handler", handler="pciehp", **port(PORT)) == 1


def test_slot_registers_are_read_on_every_scrape(tree_copy):
    """Attention Button Pressed latched between two scrapes: the second one shows it."""
    tree = tree_copy(Capture("q35_normal"))
    reg = registry(tree)
    assert value(scrape(reg), "pciehp_slot_button_pending", **port(PORT)) == 0
    cfg = bytearray(config(tree).read_bytes())
    off = config_space.find_capability(bytes(cfg), config_space.PCI_CAP_ID_EXP)
    cfg[off + config_space.EXP_SLTSTA] |= config_space.EXP_SLTSTA_ABP
    config(tree).write_bytes(bytes(cfg))
    assert value(scrape(reg), "pciehp_slot_button_pending", **port(PORT)) == 1


def test_static_facts_are_not_reread_until_the_device_set_changes(tree_copy):
    """A changed `class` (a fact of the walk) is seen only once another device comes or goes."""
    tree = tree_copy(Capture("q35_normal"))
    reg = registry(tree)
    assert PORT in ports(scrape(reg))
    (config(tree).parent / "class").write_text("0x010802\n")  # an NVMe controller now
    assert PORT in ports(scrape(reg))  # cached: the walk is not repeated
    device(tree, "0000:00:02.0").unlink()
    assert PORT not in ports(scrape(reg))


def test_a_port_whose_config_space_reads_short_is_walked_again(tree_copy):
    """As a removed device's attributes do (ENODEV) on an open descriptor: the walk is redone."""
    tree = tree_copy(Capture("q35_normal"))
    reg = registry(tree)
    assert select(scrape(reg), "pciehp_slot_button_pending", **port(PORT))
    config(tree).write_bytes(b"")
    after = scrape(reg)
    assert PORT in ports(after)
    assert not select(after, "pciehp_slot_button_pending", **port(PORT))


def test_walked_again_after_rewalk_seconds_even_without_a_change(tree_copy):
    tree = tree_copy(Capture("q35_normal"))
    now = [1000.0]
    cache = TopologyCache(Paths(tree / "proc", tree / "sys", tree), clock=lambda: now[0])
    assert PORT in cache.get().ports
    (config(tree).parent / "class").write_text("0x010802\n")
    now[0] += REWALK_SECONDS - 1
    assert PORT in cache.get().ports
    now[0] += 1
    assert PORT not in cache.get().ports


def test_event_counts_follow_the_log_between_scrapes(tree_copy):
    """The events family is reused while nothing changed, and counted again on a new log line."""
    tree = tree_copy(Capture("q35_normal"))
    reg = registry(tree)
    labels = {"event": "attention_button", **port(PORT)}
    before = value(scrape(reg), "pciehp_events_total", **labels)
    assert value(scrape(reg), "pciehp_events_total", **labels) == before
    kmsg = tree / "kmsg.txt"
    kmsg_with(kmsg, kmsg, [f"pcieport {PORT}: pciehp: Slot(2): Attention button pressed"])
    assert value(scrape(reg), "pciehp_events_total", **labels) == before + 1
