"""/proc/interrupts parsing across kernel generations, IRQ-to-port mapping, hostile input."""

from __future__ import annotations

import pytest

from exporter.interrupts import InterruptsError, parse, parse_row
from tests.exporter.conftest import port, value
from tests.support.captures import Capture

HEADER2 = "           CPU0       CPU1       \n"


@pytest.mark.parametrize(
    ("rest", "chip", "hwirq", "flow", "actions", "bdf"),
    [
        # 3.10 / RHEL7: flow glued to the chip, no hwirq
        (
            "         3          0   PCI-MSI-edge      pciehp",
            "PCI-MSI",
            None,
            "edge",
            ("pciehp",),
            None,
        ),
        (
            "         3          0   IO-APIC-fasteoi   PCIe PME, pciehp",
            "IO-APIC",
            None,
            "fasteoi",
            ("PCIe PME", "pciehp"),
            None,
        ),
        # 4.x - 6.1: hwirq = devfn << 11 (real q35 capture)
        (
            "          1          0   PCI-MSI 32768-edge      PCIe PME, aerdrv, pciehp",
            "PCI-MSI",
            32768,
            "edge",
            ("PCIe PME", "aerdrv", "pciehp"),
            "0000:00:02.0",
        ),
        (
            "          1          0   PCI-MSI 67584-edge      PCIe PME, pciehp",
            "PCI-MSI",
            67584,
            "edge",
            ("PCIe PME", "pciehp"),
            "0000:00:04.1",
        ),
        (
            "          0          0   IR-PCI-MSI 36864-edge      PCIe PME, pciehp",
            "IR-PCI-MSI",
            36864,
            "edge",
            ("PCIe PME", "pciehp"),
            "0000:00:02.2",
        ),
        # >= 6.2: per-device MSI domains, BDF in the chip name
        (
            "          0          0   PCI-MSIX-0000:00:02.2   0-edge  PCIe PME, aerdrv, pciehp",
            "PCI-MSIX-0000:00:02.2",
            0,
            "edge",
            ("PCIe PME", "aerdrv", "pciehp"),
            "0000:00:02.2",
        ),
        (
            "          0          0   IR-PCI-MSIX-0000:05:00.0   3-edge  nvme0q3",
            "IR-PCI-MSIX-0000:05:00.0",
            3,
            "edge",
            ("nvme0q3",),
            "0000:05:00.0",
        ),
        (
            "          0          0   PCI-MSI-0000:00:1c.0   0-edge  PCIe PME, pciehp",
            "PCI-MSI-0000:00:1c.0",
            0,
            "edge",
            ("PCIe PME", "pciehp"),
            "0000:00:1c.0",
        ),
        # legacy INTx row: not decodable
        (
            "        111          0   IO-APIC   2-edge      timer",
            "IO-APIC",
            2,
            "edge",
            ("timer",),
            None,
        ),
        # 2024 regression: no space between the last count and the chip
        (
            "          0       1900GIC-0  27 Level     arch_timer",
            "GIC-0",
            27,
            "Level",
            ("arch_timer",),
            None,
        ),
        # a downstream port's own vector, only pciehp (real x3130 switch layout)
        (
            "          0          0   PCI-MSI 1048576-edge      pciehp",
            "PCI-MSI",
            1048576,
            "edge",
            ("pciehp",),
            "0000:02:00.0",
        ),
    ],
)
def test_row_formats(rest, chip, hwirq, flow, actions, bdf):
    row = parse_row(24, rest, 2)
    assert (row.chip, row.hwirq, row.flow, row.actions) == (chip, hwirq, flow, actions)
    assert row.bdf() == bdf


def test_counts_sum_over_all_cpus():
    text = "  CPU0 CPU1 CPU2 CPU3\n 40:  1  2  3  4  PCI-MSI 16384-edge  pciehp\n"
    assert parse(text.encode())[40].total == 10


def test_named_and_short_rows_are_ignored_and_no_space_after_colon_is_fine():
    text = HEADER2 + (
        "NMI:          0          0   Non-maskable interrupts\n"
        "ERR:          0\n"
        "MIS:          0\n"
        " 24:5 7 PCI-MSI 16384-edge PCIe PME, pciehp\n"
    )
    rows = parse(text.encode())
    assert list(rows) == [24]
    assert rows[24].total == 12


def test_only_wanted_rows_and_pciehp_rows_are_parsed():
    text = HEADER2 + (
        "  0:        111          0   IO-APIC   2-edge      timer\n"
        "  9:          0          0   IO-APIC   9-fasteoi   acpi\n"
        " 24:          1          0   PCI-MSI 32768-edge      PCIe PME, aerdrv, pciehp\n"
    )
    assert set(parse(text.encode())) == {24}
    assert set(parse(text.encode(), wanted=[9])) == {9, 24}


def test_malformed_rows_are_skipped_not_fatal():
    text = HEADER2 + " 24:  x y z pciehp\n 25:          1          0   PCI-MSI 34816-edge pciehp\n"
    assert set(parse(text.encode())) == {25}


@pytest.mark.parametrize("text", [b"", b"garbage\n", b"\x00\x01\x02", b" 24: 1 2 PCI-MSI pciehp\n"])
def test_no_header_is_an_error(text):
    with pytest.raises(InterruptsError):
        parse(text)


def test_rows_mapped_by_hwirq_when_sysfs_lacks_msi_irqs(scrape, tree_copy):
    """Older kernels without msi_irqs: the pciehp row is still tied to its port by the hwirq."""
    tree = tree_copy(Capture("q35_normal"))
    for d in (tree / "sys" / "devices" / "pci0000:00").glob("0000:00:0*/msi_irqs"):
        for f in d.iterdir():
            f.unlink()
        d.rmdir()
    s = scrape(tree)
    assert value(s, "pciehp_port_irq_registered", **port("0000:00:02.3")) == 1


def test_rows_mapped_by_chip_name_on_6_2_kernels(scrape, tree_copy):
    """>= 6.2 rows name the port in the chip (the real 6.12 capture: `PCI-MSIX-0000:00:02.0`);
    with no msi_irqs entry to tie a vector to its port, the chip name still maps the row."""
    capture = Capture("trixie_q35_normal")
    assert "PCI-MSIX-0000:00:03.3" in capture.procfs.joinpath("interrupts").read_text()
    tree = tree_copy(capture)
    for d in (tree / "sys" / "devices" / "pci0000:00").glob("0000:00:0*/msi_irqs"):
        for f in d.iterdir():
            f.unlink()
    s = scrape(tree)
    assert value(s, "pciehp_port_irq_registered", **port("0000:00:03.3")) == 1
    assert value(s, "pciehp_port_irq_registered", **port("0000:00:02.0")) == 1


def test_intx_fallback_row_maps_through_sysfs_irq(scrape, tree_copy):
    """pcie_pme=nomsi / pci=nomsi: the port's services share an IO-APIC line named in `irq`."""
    tree = tree_copy(Capture("q35_normal"))
    portdir = tree / "sys" / "devices" / "pci0000:00" / "0000:00:02.0"
    for f in (portdir / "msi_irqs").iterdir():
        f.unlink()
    (portdir / "irq").write_text("16\n")
    interrupts = tree / "proc" / "interrupts"
    text = interrupts.read_text().replace(
        " 24:          1          0   PCI-MSI 32768-edge      PCIe PME, aerdrv, pciehp\n",
        " 16:          7          2   IO-APIC  16-fasteoi   PCIe PME, pciehp\n",
    )
    interrupts.write_text(text)
    s = scrape(tree)
    assert value(s, "pciehp_port_irq_registered", **port("0000:00:02.0")) == 1
    assert value(s, "pciehp_port_interrupts_total", **port("0000:00:02.0")) == 9


def test_poll_mode_bound_port_without_irq(scrape):
    """pciehp.pciehp_poll_mode=1 (real capture): bound, no pciehp IRQ row, handler pciehp_poll."""
    s = scrape(Capture("q35_poll_mode"))
    p = port("0000:00:02.0")
    assert value(s, "pciehp_port_hotplug_handler", handler="pciehp_poll", **p) == 1
    assert value(s, "pciehp_port_irq_registered", **p) == 0
    assert value(s, "pciehp_port_service_bound", **p) == 1
