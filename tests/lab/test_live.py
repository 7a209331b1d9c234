"""One live guest end to end: boot, exporter verdict on the captured tree, device_del."""

from __future__ import annotations

from pathlib import Path

from lab.kernels import fetch_kernel
from lab.qemu import Guest, GuestSpec
from tests.exporter.conftest import parse_samples, scrape_text


def test_bookworm_native_boot_capture_unplug(tmp_path: Path) -> None:
    """pciehp handling the disk port in the live capture matches DEVICE_DELETED arriving."""
    spec = GuestSpec(fetch_kernel("bookworm"), machine="q35-native", ports=4)
    with Guest(spec) as g:
        g.wait_ready(300)
        assert g.qmp_socket.exists()
        tree = g.capture(tmp_path / "tree")
        samples = parse_samples(scrape_text(tree))
        handler = {
            dict(lbl)["handler"]
            for (name, lbl), v in samples.items()
            if name == "pciehp_port_hotplug_handler"
            and v == 1
            and ("bus", "00") in lbl
            and ("device", "02") in lbl
            and ("function", "0") in lbl
        }
        assert handler == {"pciehp"}
        assert g.device_del(g.disk_id or "", 30) is True
