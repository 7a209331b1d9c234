"""Start the whole pciehp-watch pipeline on loopback: fleet, Prometheus, Alertmanager, correlator,
on-call recorder. Real servers from the Debian packages and this repository's code."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from demo.fleet import Fleet, FleetServer, default_fleet
from tests.alerts.pipeline import (
    RULE_FILES,
    Recorder,
    RepoProcess,
    alertmanager_config_for_tests,
)
from tests.support import servers

ONCALL_PATH = "/oncall"


@dataclass
class Pipeline:
    """The running pieces and their URLs."""

    fleet: Fleet
    fleet_server: FleetServer
    prometheus: servers.Server
    alertmanager: servers.Server
    correlator: RepoProcess
    oncall: Recorder

    def incidents(self) -> list[dict]:
        """The correlator's incidents (GET /api/v1/incidents)."""
        answer = servers.http_json(self.correlator.url + "/api/v1/incidents")
        assert isinstance(answer, dict) and answer["status"] == "success", answer
        return answer["data"]

    def oncall_alerts(self) -> list[dict]:
        """Every alert Alertmanager delivered to on-call, in order."""
        return self.oncall.alerts(ONCALL_PATH)

    def oncall_notifications(self) -> list[dict]:
        """Every notification (webhook POST) on-call received."""
        with self.oncall._lock:
            return [body for path, body in self.oncall.posts if path == ONCALL_PATH]

    def guests_scraped(self) -> int:
        r = servers.http_json(self.prometheus.url + "/api/v1/query?query=count(pciehp_guest_info)")
        result = r["data"]["result"]  # type: ignore[index]
        return int(float(result[0]["value"][1])) if result else 0


def correlator_config(workdir: Path, reconcile: str, runbooks_url: str | None) -> Path:
    cfg: dict = {
        "timings": {"reconcile_interval": reconcile, "resend_interval": "10s", "push_ttl": "2m"}
    }
    if runbooks_url:
        cfg["runbook_base_url"] = runbooks_url
    path = workdir / "correlator.yml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@contextlib.contextmanager
def running(
    workdir: Path, guests: int = 300, scrape_interval: str = "5s", reconcile: str = "1s"
) -> Iterator[Pipeline]:
    """Everything started, Prometheus scraping every guest; stopped on exit, whatever happens."""
    fleet = Fleet(default_fleet(guests))
    fleet_server = FleetServer(fleet, servers.free_port()).start()
    oncall = Recorder().start()
    correlator_port = servers.free_port()
    correlator_url = f"http://127.0.0.1:{correlator_port}"
    prom = servers.prometheus(
        workdir / "prometheus",
        scrape_configs=[
            {
                "job_name": "pciehp-exporter",
                "scrape_interval": scrape_interval,
                "http_sd_configs": [
                    {"url": f"http://{fleet_server.address}/targets", "refresh_interval": "30s"}
                ],
                "relabel_configs": [{"source_labels": ["guest"], "target_label": "instance"}],
            },
            {
                "job_name": "pciehp-correlator",
                "static_configs": [{"targets": [f"127.0.0.1:{correlator_port}"]}],
            },
        ],
        rule_files=RULE_FILES,
        scrape_interval=scrape_interval,
        evaluation_interval=scrape_interval,
    )
    am = servers.alertmanager(
        workdir / "alertmanager",
        alertmanager_config_for_tests(oncall.url + ONCALL_PATH, correlator_url + "/api/v1/webhook"),
    )
    correlator = RepoProcess(
        "correlator",
        [
            sys.executable,
            "-m",
            "correlator.app",
            "--config",
            str(correlator_config(workdir, reconcile, None)),
            "--web.listen-address",
            f"127.0.0.1:{correlator_port}",
            "--prometheus.url",
            prom.url,
            "--alertmanager.url",
            am.url,
            "--storage.path",
            str(workdir / "incidents.sqlite"),
        ],
        correlator_port,
        workdir,
    )
    try:
        with servers.running(prom, am):
            correlator.start()
            yield Pipeline(fleet, fleet_server, prom, am, correlator, oncall)
    finally:
        correlator.stop()
        oncall.stop()
        fleet_server.stop()
