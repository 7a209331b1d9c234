"""Kernel command-line parameters that affect port services."""

from __future__ import annotations

import pytest

from exporter.collectors.cmdline import relevant_params, split_cmdline
from tests.exporter.conftest import select, value
from tests.support.captures import Capture


@pytest.mark.parametrize(
    ("cmdline", "expected"),
    [
        ("console=ttyS0 log_buf_len=1M", []),
        ("console=ttyS0 pcie_aspm=off", [("pcie_aspm", "off")]),
        ("pcie_aspm=off pcie_ports=native", [("pcie_aspm", "off"), ("pcie_ports", "native")]),
        ("pci=nomsi,noaer quiet", [("pci", "nomsi"), ("pci", "noaer")]),
        ("pcie_ports=compat", [("pcie_ports", "compat")]),
        ("acpi=off", [("acpi", "off")]),
        ("pcie_pme=nomsi", [("pcie_pme", "nomsi")]),
        (
            "pciehp.pciehp_poll_mode=1 pciehp.pciehp_poll_time=5",
            [("pciehp.pciehp_poll_mode", "1"), ("pciehp.pciehp_poll_time", "5")],
        ),
        ('root=/dev/vda1 dyndbg="file pciehp* +p" pcie_aspm=force', [("pcie_aspm", "force")]),
        ("pcie_aspm=off -- pcie_ports=native", [("pcie_aspm", "off")]),
        ("pcie_aspm=off pcie_aspm=off", [("pcie_aspm", "off")]),
        ("pcie_aspmx=off xpcie_aspm=off", []),
    ],
)
def test_relevant_params(cmdline, expected):
    assert relevant_params(cmdline) == expected


def test_quotes_group_words():
    assert split_cmdline('a="b c" d') == ["a=b c", "d"]


def test_real_captures(scrape):
    assert select(scrape(Capture("q35_normal")), "pciehp_kernel_param") == {}
    assert (
        value(
            scrape(Capture("q35_aspm_off")), "pciehp_kernel_param", param="pcie_aspm", value="off"
        )
        == 1
    )


def test_nul_separated_and_binary_cmdline_does_not_fail(scrape, tree_copy):
    tree = tree_copy(Capture("q35_normal"))
    (tree / "proc/cmdline").write_bytes(b"pcie_aspm=off\0\xff\xfe quiet\n")
    s = scrape(tree)
    assert value(s, "pciehp_kernel_param", param="pcie_aspm", value="off") == 1
    assert value(s, "pciehp_collector_success", collector="cmdline") == 1
