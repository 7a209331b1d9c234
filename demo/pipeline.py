"""Start the whole pciehp-watch pipeline on loopback: fleet, Prometheus, Alertmanager, correlator,
on-call recorder. Real servers from the Debian packages and this repository's code."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import yaml

from demo import servers
from demo.fleet import Fleet, FleetServer, default_fleet
from demo.plane import (
    RULE_FILES,
    RUNBOOKS,
    Recorder,
    RepoProcess,
    correlator_process,
    loopback_am_config,
)

ONCALL_PATH = "/oncall"


class RunbookServer:
    """Serves alerts/runbooks/*.md on loopback, so the incident's runbook links work offline."""

    def __init__(self) -> None:
        class Handler(SimpleHTTPRequestHandler):
            extensions_map: ClassVar[dict[str, str]] = {
                ".md": "text/plain; charset=utf-8",
                "": "text/plain",
            }

            def __init__(self, *args: object, **kwargs: object) -> None:
                super().__init__(*args, directory=str(RUNBOOKS), **kwargs)  # type: ignore[arg-type]

            def translate_path(self, path: str) -> str:
                return super().translate_path(path.removeprefix("/runbooks"))

            def log_message(self, fmt: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}/runbooks/"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@dataclass
class Pipeline:
    """The running pieces and their URLs."""

    fleet: Fleet
    fleet_server: FleetServer
    prometheus: servers.Server
    alertmanager: servers.Server
    correlator: RepoProcess
    oncall: Recorder
    runbooks: RunbookServer

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
        return self.oncall.notifications(ONCALL_PATH)

    def _count(self, query: str) -> int:
        r = servers.http_json(self.prometheus.url + "/api/v1/query?query=count(" + query + ")")
        result = r["data"]["result"]  # type: ignore[index]
        return int(float(result[0]["value"][1])) if result else 0

    def guests_scraped(self) -> int:
        """Guest exporters Prometheus has scraped."""
        return self._count("pciehp_guest_info")

    def host_views_scraped(self) -> int:
        """VMs the host exporters report (every guest, exporter or not)."""
        return self._count("pciehp_host_vm_info")

    def all_scraped(self) -> bool:
        """Every guest exporter and every VM's host view are in Prometheus."""
        fleet = self.fleet
        return self.guests_scraped() >= fleet.exporter_guests and self.host_views_scraped() >= len(
            fleet.guests
        )


def correlator_config(workdir: Path, reconcile: str, runbooks_url: str) -> Path:
    cfg: dict = {
        "timings": {"reconcile_interval": reconcile, "resend_interval": "10s", "push_ttl": "2m"}
    }
    cfg["runbook_base_url"] = runbooks_url
    path = workdir / "correlator.yml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@contextlib.contextmanager
def running(
    workdir: Path,
    guests: int = 300,
    scrape_interval: str = "5s",
    reconcile: str = "1s",
    oncall_wait: str = "6s",
) -> Iterator[Pipeline]:
    """Everything started, Prometheus scraping every guest; stopped on exit, whatever happens.

    `oncall_wait`: how long on-call's detach groups wait for the correlator's markers.
    """
    fleet = Fleet(default_fleet(guests))
    fleet_server = FleetServer(fleet, servers.free_port()).start()
    oncall = Recorder().start()
    runbooks = RunbookServer()
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
                "job_name": "pciehp-host-exporter",
                "scrape_interval": scrape_interval,
                "http_sd_configs": [
                    {
                        "url": f"http://{fleet_server.address}/host-targets",
                        "refresh_interval": "30s",
                    }
                ],
                "relabel_configs": [{"source_labels": ["host"], "target_label": "instance"}],
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
        loopback_am_config(
            oncall.url + ONCALL_PATH, correlator_url + "/api/v1/webhook", oncall_wait
        ),
    )
    config = correlator_config(workdir, reconcile, runbooks.base_url)
    correlator = correlator_process(workdir, config, correlator_port, prom.url, am.url)
    try:
        with servers.running(prom, am):
            correlator.start()
            yield Pipeline(fleet, fleet_server, prom, am, correlator, oncall, runbooks)
    finally:
        correlator.stop()
        oncall.stop()
        runbooks.stop()
        fleet_server.stop()
