"""Config-space decoding: capability walk, slot registers, truncated and malformed bytes."""

from __future__ import annotations

import pytest

from exporter.pci.config_space import ConfigSpaceError, decode, find_capability
from tests.exporter.conftest import port, select, value
from tests.support.captures import GUESTS, Capture

CFG = GUESTS / "q35_normal/tree/sys/devices/pci0000:00/0000:00:02.0/config"


def test_real_root_port_registers():
    cap = decode(CFG.read_bytes())
    assert cap is not None
    assert cap.port_type == "root_port"
    assert cap.hotplug_capable and cap.attention_button
    assert cap.physical_slot == 1
    assert cap.interrupt_enabled and not cap.button_pending and cap.presence


def test_first_64_bytes_only_means_unknown_not_wrong():
    """What an unprivileged reader gets: the PCIe capability is out of reach."""
    assert decode(CFG.read_bytes()[:64]) is None


def test_shorter_than_a_header_is_an_error():
    with pytest.raises(ConfigSpaceError):
        decode(b"\x36\x1b\x0c\x00")


def test_capability_loop_is_an_error():
    cfg = bytearray(256)
    cfg[0x06] = 0x10
    cfg[0x34] = 0x40
    cfg[0x40], cfg[0x41] = 0x05, 0x40  # MSI cap pointing at itself
    with pytest.raises(ConfigSpaceError):
        find_capability(bytes(cfg), 0x10)


def test_pointer_into_header_is_an_error():
    cfg = bytearray(256)
    cfg[0x06], cfg[0x34] = 0x10, 0x20
    with pytest.raises(ConfigSpaceError):
        find_capability(bytes(cfg), 0x10)


def test_no_capability_list():
    assert find_capability(bytes(256), 0x10) is None


def test_unprivileged_reader_still_reports_the_handler(scrape, tree_copy):
    """Without root: no slot registers, but port, handler, binding and IRQ are still right."""
    tree = tree_copy(Capture("q35_normal"))
    for cfg in (tree / "sys/devices/pci0000:00").glob("*/config"):
        cfg.write_bytes(cfg.read_bytes()[:64])
    s = scrape(tree)
    p = port("0000:00:02.0")
    assert value(s, "pciehp_port_hotplug_handler", handler="pciehp", **p) == 1
    assert value(s, "pciehp_port_hotplug_capable", **p) == 1
    assert value(s, "pciehp_port_irq_registered", **p) == 1
    assert value(s, "pciehp_port_info", port_type="root_port", **p) == 1
    assert not select(s, "pciehp_slot_button_pending")
    assert value(s, "pciehp_collector_success", collector="ports") == 1


def test_garbage_config_of_one_port_keeps_the_others(scrape, tree_copy):
    tree = tree_copy(Capture("q35_normal"))
    bad = tree / "sys/devices/pci0000:00/0000:00:02.3/config"
    cfg = bytearray(bad.read_bytes())
    cfg[0x34] = 0x10  # capability pointer into the header
    bad.write_bytes(bytes(cfg))
    s = scrape(tree)
    assert value(s, "pciehp_slot_button_pending", **port("0000:00:02.0")) == 0
    assert value(s, "pciehp_port_hotplug_handler", handler="pciehp", **port("0000:00:02.3")) == 1
    assert not select(s, "pciehp_slot_button_pending", **port("0000:00:02.3"))
