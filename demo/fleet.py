"""A simulated fleet: many guests, each served by the real exporter code over a real capture.

One process serves every guest that runs the exporter at `/guests/<name>/metrics` and lists them
for Prometheus' `http_sd_configs` at `/targets`, each with its `image_id` target label, the way a
cloud's service discovery would. Guests built from the same capture differ by instance UUID.
Every compute host's pciehp-host-exporter view, covering all its guests, exporter or not, is at
`/hosts/<host>/metrics` (listed at `/host-targets`), decoded by the host exporter's own code from
the captures' real config space (demo.hostview).
"""

from __future__ import annotations

import json
import threading
import uuid as uuidlib
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from demo.captures import Capture
from demo.hostview import host_report
from exporter.cli import PlainHandler
from exporter.collectors import default_sources
from exporter.exposition import CONTENT_TYPE, render_metrics
from exporter.kernel_log import KernelLog
from exporter.paths import Paths
from exporter.registry import ExporterCollector
from host.metrics import render


@dataclass(frozen=True)
class FleetGuest:
    """One simulated VM: its image, host, capture (what its kernel looks like) and identity;
    `exporter` False for an image that runs no guest exporter (seen from the host only)."""

    name: str
    image_id: str
    host: str
    capture: Capture
    exporter: bool = True

    @property
    def instance_uuid(self) -> str:
        """Deterministic per name, so a re-run shows the same instances."""
        return str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, f"pciehp-watch-demo/{self.name}"))


class Fleet:
    """The exporters of every guest, built once; each scrape runs that guest's collectors."""

    def __init__(self, guests: list[FleetGuest]) -> None:
        self.guests = {g.name: g for g in guests}
        self._collectors: dict[str, ExporterCollector] = {}
        for g in guests:
            if g.exporter:
                self._collectors[g.name] = self._build(g)

    @staticmethod
    def _build(g: FleetGuest) -> ExporterCollector:
        tree = g.capture.tree
        paths = Paths(procfs=tree / "proc", sysfs=tree / "sys", rootfs=tree)
        log = KernelLog(tree / "kmsg.txt")
        return ExporterCollector(paths, default_sources(log, product_uuid=g.instance_uuid))

    def advance(self, name: str, phase: str) -> None:
        """Show a guest as its capture looked later (e.g. after the host sent device_del)."""
        g = self.guests[name]
        g = FleetGuest(g.name, g.image_id, g.host, Capture(g.capture.scenario, phase), g.exporter)
        self.guests[name] = g
        if g.exporter:
            self._collectors[name] = self._build(g)

    def scrape(self, name: str) -> bytes | None:
        collector = self._collectors.get(name)
        return None if collector is None else render_metrics(collector.collect()).encode()

    def host_scrape(self, host: str) -> bytes | None:
        """That compute host's pciehp-host-exporter scrape: every guest it runs."""
        on_host = [g for g in self.guests.values() if g.host == host]
        if not on_host:
            return None
        reports = [host_report(g.capture, g.instance_uuid, f"instance-{g.name}") for g in on_host]
        return render(reports, True)

    @property
    def exporter_guests(self) -> int:
        """How many guests run the guest exporter."""
        return len(self._collectors)

    def targets(self, address: str) -> list[dict]:
        """http_sd_configs answer: one target group per guest exporter, its image as a label."""
        return [
            {
                "targets": [address],
                "labels": {
                    "__metrics_path__": f"/guests/{g.name}/metrics",
                    "guest": g.name,
                    "image_id": g.image_id,
                },
            }
            for g in self.guests.values()
            if g.exporter
        ]

    def host_targets(self, address: str) -> list[dict]:
        """http_sd_configs answer: one host exporter per compute host."""
        hosts = sorted({g.host for g in self.guests.values()})
        return [
            {"targets": [address], "labels": {"__metrics_path__": f"/hosts/{h}/metrics", "host": h}}
            for h in hosts
        ]


class FleetServer:
    """HTTP front of a Fleet on 127.0.0.1."""

    def __init__(self, fleet: Fleet, port: int) -> None:
        self.fleet = fleet
        self.port = port
        self.address = f"127.0.0.1:{port}"
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fleet, address = self.fleet, self.address

        class Handler(PlainHandler):
            def do_GET(self) -> None:
                parts = self.path.split("?", 1)[0].strip("/").split("/")
                if parts == ["targets"]:
                    body = json.dumps(fleet.targets(address)).encode()
                    self._send(200, "application/json", body)
                elif parts == ["host-targets"]:
                    body = json.dumps(fleet.host_targets(address)).encode()
                    self._send(200, "application/json", body)
                elif len(parts) == 3 and parts[0] == "hosts" and parts[2] == "metrics":
                    body = fleet.host_scrape(parts[1])
                    if body is None:
                        self._send(404, "text/plain", b"no such host\n")
                    else:
                        self._send(200, CONTENT_TYPE, body)
                elif len(parts) == 3 and parts[0] == "guests" and parts[2] == "metrics":
                    body = fleet.scrape(parts[1])
                    if body is None:
                        self._send(404, "text/plain", b"no such guest\n")
                    else:
                        self._send(200, CONTENT_TYPE, body)
                elif parts == ["-", "ready"]:
                    self._send(200, "text/plain", b"OK\n")
                else:
                    self._send(404, "text/plain", b"not found\n")

        return Handler

    def start(self) -> FleetServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


BROKEN_HOST = "cmp-broken"  # its nova-compute lost libvirt: no detach on it reaches QEMU


def default_fleet(size: int = 300) -> list[FleetGuest]:
    """Several images, a few hundred guests. Which capture a guest mirrors decides its fate:

    - img-legacy-aspm: an image whose GRUB line carries pcie_aspm=off, on native-hotplug hosts;
      a tenth of its VMs were fixed by hand (counter-evidence for the incident);
    - img-debian12: healthy, native PCIe hotplug;
    - img-debian12-acpi: healthy, QEMU's default ACPI hotplug (no pciehp, and that is fine);
    - img-centos-pc: healthy i440fx guests (ACPI hotplug, no PCIe ports at all);
    - img-imported-acpi: a customer's image brought from another cloud, running no guest exporter;
      healthy under ACPI hotplug, which only the host exporter can tell;
    - img-imported-legacy: another customer image without a guest exporter, booted with
      pcie_aspm=off: only the host exporter sees its root ports never armed.

    The first guest of every healthy image runs on BROKEN_HOST, where every detach hangs.
    """
    mix = (
        ("img-legacy-aspm", 0.35, "q35_aspm_off", "q35_normal", 10, True),
        ("img-debian12", 0.20, "q35_normal", None, 0, True),
        ("img-debian12-acpi", 0.15, "q35_acpihp_normal", None, 0, True),
        ("img-centos-pc", 0.15, "i440fx_normal", None, 0, True),
        ("img-imported-acpi", 0.10, "q35_acpihp_normal", None, 0, False),
        ("img-imported-legacy", 0.05, "q35_aspm_off", None, 0, False),
    )
    guests: list[FleetGuest] = []
    n = 0
    for image, share, scenario, fixed_scenario, fixed_every, exporter in mix:
        count = max(1, round(size * share))
        for i in range(count):
            use = fixed_scenario if fixed_every and i % fixed_every == fixed_every - 1 else scenario
            capture = Capture(use or scenario)
            healthy = not would_hang_capture(capture)
            guests.append(
                FleetGuest(
                    name=f"vm-{n:04d}",
                    image_id=image,
                    host=BROKEN_HOST if healthy and i == 0 else f"cmp-{n % 17:02d}",
                    capture=capture,
                    exporter=exporter,
                )
            )
            n += 1
    return guests


def would_hang_capture(capture: Capture) -> bool:
    """Ground truth from the real capture: did QEMU never emit DEVICE_DELETED?"""
    result = json.loads((capture.tree.parent / "result.json").read_text())
    return not result["device_deleted"]


def would_hang(guest: FleetGuest) -> bool:
    """Does a detach from this guest hang: its kernel never answers, or its host is broken."""
    return guest.host == BROKEN_HOST or would_hang_capture(guest.capture)
