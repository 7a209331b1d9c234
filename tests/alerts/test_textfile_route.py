"""The textfile route for real: `pciehp-exporter --textfile` on each capture, one Debian
node_exporter per guest serving that file (job "node"), real Prometheus with the committed
rules. The default rules must find the pcie_aspm=off guests and nothing else."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.alerts.pipeline import RULE_FILES, Plane, RepoProcess, wait_for_data
from tests.support import servers
from tests.support.captures import Capture

NODE_EXPORTER = shutil.which("prometheus-node-exporter") or "/usr/bin/prometheus-node-exporter"
NODE_JOB = "node"
# (scenario, phase, image_id): one node_exporter per guest
GUESTS = (
    ("q35_aspm_off", "boot", "img-aspm-off"),
    ("q35_aspm_off", "after_unplug", "img-aspm-off"),
    ("q35_normal", "boot", "img-debian12"),
    ("q35_normal", "after_unplug", "img-debian12"),
    ("q35_acpihp_normal", "boot", "img-debian12-acpi"),
    ("i440fx_normal", "boot", "img-centos-pc"),
)


class NodeGuest:
    """A guest on the textfile route: its textfile directory and its node_exporter."""

    def __init__(self, workdir: Path, capture: Capture, image_id: str) -> None:
        self.capture = capture
        self.image_id = image_id
        self.textdir = workdir / f"{capture.scenario}-{capture.phase}"
        self.textdir.mkdir(parents=True)
        port = servers.free_port()
        argv = [
            NODE_EXPORTER,
            "--collector.disable-defaults",
            "--collector.textfile",
            f"--collector.textfile.directory={self.textdir}",
            f"--web.listen-address=127.0.0.1:{port}",
        ]
        name = f"node-{self.textdir.name}"
        self.server = RepoProcess(name, argv, port, workdir, None, "/metrics")

    @property
    def instance(self) -> str:
        """node_exporter's scrape address, the series' `instance` label."""
        return f"127.0.0.1:{self.server.port}"

    def write_textfile(self) -> None:
        """Run the exporter once in textfile mode, as the deploy/ timer does."""
        out = self.textdir / "pciehp.prom"
        argv = [sys.executable, "-m", "exporter.cli", "--textfile", str(out)]
        subprocess.run(argv + self.capture.exporter_args(), check=True, timeout=60)
        assert out.stat().st_size > 0


@pytest.fixture(scope="module")
def route(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Plane, list[NodeGuest]]]:
    workdir = Path(tmp_path_factory.mktemp("textfile"))
    guests = [NodeGuest(workdir, Capture(s, p), image) for s, p, image in GUESTS]
    for g in guests:
        g.write_textfile()
    scrape = [
        {
            "job_name": NODE_JOB,
            "static_configs": [
                {"targets": [g.instance], "labels": {"image_id": g.image_id}} for g in guests
            ],
        }
    ]
    prom = servers.prometheus(workdir / "prometheus", scrape_configs=scrape, rule_files=RULE_FILES)
    try:
        for g in guests:
            g.server.start()
        with servers.running(prom):
            plane = Plane(prom, [])
            wait_for_data(plane, len(guests))
            yield plane, guests
    finally:
        for g in guests:
            g.server.stop()


def active(plane: Plane) -> list[dict]:
    """Labels of every active (pending or firing) alert, with its alertname."""
    return [
        {"alertname": name, **a["labels"]}
        for name, rule in plane.alert_rules().items()
        for a in rule["alerts"]
    ]


def test_the_exporter_series_arrive_with_node_exporters_job(
    route: tuple[Plane, list[NodeGuest]],
) -> None:
    plane, guests = route
    infos = plane.query("pciehp_guest_info")
    assert {(r["metric"]["job"], r["metric"]["instance"]) for r in infos} == {
        (NODE_JOB, g.instance) for g in guests
    }


def test_handler_missing_for_the_pcie_aspm_off_capture_only(
    route: tuple[Plane, list[NodeGuest]],
) -> None:
    plane, guests = route
    aspm = {g.instance for g in guests if g.capture.scenario == "q35_aspm_off"}
    alerts = [a for a in active(plane) if a["alertname"] == "PCIeHotplugHandlerMissing"]
    assert {a["instance"] for a in alerts} == aspm
    assert {(a["job"], a["image_id"]) for a in alerts} == {(NODE_JOB, "img-aspm-off")}
    # every root port of both captures (12 each)
    assert len(alerts) == 24


def test_nothing_fires_for_the_other_captures(route: tuple[Plane, list[NodeGuest]]) -> None:
    plane, guests = route
    aspm = {g.instance for g in guests if g.capture.scenario == "q35_aspm_off"}
    # no correlator runs here: its absence alert is expected and is not about a guest
    others = [
        a
        for a in active(plane)
        if a.get("instance") not in aspm
        and a.get("image_id") != "img-aspm-off"
        and a["alertname"] != "PCIeHotplugCorrelatorDown"
    ]
    assert others == []
    images = [a for a in active(plane) if a["alertname"] == "PCIeHotplugImageCannotUnplug"]
    assert [a["image_id"] for a in images] == ["img-aspm-off"]
    # and the guests were seen: each other capture's facts are in Prometheus
    assert len(plane.query('pciehp_guest_info{image_id!="img-aspm-off"}')) == len(guests) - 2


def test_the_textfile_is_fresh_and_the_exporters_up(route: tuple[Plane, list[NodeGuest]]) -> None:
    plane, _ = route
    ages = plane.query('time() - node_textfile_mtime_seconds{file=~".*pciehp.prom"}')
    assert len(ages) == len(GUESTS) and all(float(r["value"][1]) < 900 for r in ages)
    names = {a["alertname"] for a in active(plane)}
    assert not names & {"PCIeHotplugTextfileStale", "PCIeHotplugExporterDown"}
