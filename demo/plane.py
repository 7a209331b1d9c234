"""The monitoring plane's parts on loopback, shared by the demo and the tests: processes of this
project, the on-call webhook recorder, the shipped rules and Alertmanager configuration with
loopback receivers, and alerts posted as Prometheus or the correlator would."""

from __future__ import annotations

import copy
import json
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

import alerts
from demo import servers

ALERTS = Path(alerts.__file__).resolve().parent
RULE_FILES = tuple(sorted(ALERTS.glob("*.rules.yml")))
ALERTMANAGER_CONFIG = ALERTS / "alertmanager.yml"
RUNBOOKS = ALERTS / "runbooks"


@dataclass
class RepoProcess(servers.Server):
    """A process of this project (or another server without /-/ready), run with `sys.executable`
    or by path from its work directory; ready once `ready_path` answers 200."""


@dataclass
class Recorder:
    """A webhook receiver on loopback that records every POST (path, JSON body)."""

    posts: list[tuple[str, dict]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        """Base URL of the receiver; webhooks go to <url>/<any path>."""
        assert self._server
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> Recorder:
        """Listen on a free loopback port in a background thread."""
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with recorder._lock:
                    recorder.posts.append((self.path, json.loads(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                """Keep test output quiet."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop listening."""
        if self._server:
            self._server.shutdown()
            self._server.server_close()

    def notifications(self, path: str) -> list[dict]:
        """Every webhook body delivered to `path` so far, in order."""
        with self._lock:
            return [body for p, body in self.posts if p == path]

    def alerts(self, path: str) -> list[dict]:
        """Every alert delivered to `path` so far, in order (firing and resolved)."""
        with self._lock:
            return [a for p, body in self.posts if p == path for a in body["alerts"]]


def post_alerts(alertmanager_url: str, alerts: Sequence[dict]) -> None:
    """POST alerts to Alertmanager's v2 API, as Prometheus or the correlator would."""
    servers.http_json(alertmanager_url + "/api/v2/alerts", list(alerts))


def rfc3339(offset_seconds: float = 0.0) -> str:
    """Now plus an offset, as Alertmanager's API wants it."""
    return (datetime.now(UTC) + timedelta(seconds=offset_seconds)).isoformat()


def loopback_am_config(
    oncall_url: str, correlator_url: str, oncall_wait: str = "6s"
) -> dict[str, Any]:
    """The shipped alertmanager.yml with receiver URLs pointed at loopback and timers shrunk.

    Routes, matchers and inhibit rules are kept as committed; only durations shrink (keeping
    their order: the on-call detach route still waits longer than the correlator's route).
    `oncall_wait` is that route's group_wait: the correlator's budget to explain an instance
    before its detach alert pages (tests give a generous one; it only bounds a failure).
    """
    cfg = copy.deepcopy(yaml.safe_load(ALERTMANAGER_CONFIG.read_text()))
    urls = {"oncall": oncall_url, "pciehp-correlator": correlator_url}
    for receiver in cfg["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = urls[receiver["name"]]
    timers = {
        # receiver, is a detach route -> (group_wait, group_interval)
        ("pciehp-correlator", True): ("0s", "1s"),
        ("oncall", True): (oncall_wait, "1s"),
    }
    cfg["route"].update(group_wait="1s", group_interval="1s")
    for route in cfg["route"]["routes"]:
        detach = any("Detach" in m for m in route.get("matchers", []))
        wait, interval = timers.get((route["receiver"], detach), ("0s", "1s"))
        route.update(group_wait=wait, group_interval=interval)
    return cfg


def correlator_process(
    workdir: Path, config: Path, port: int, prometheus_url: str, alertmanager_url: str
) -> RepoProcess:
    """pciehp-correlator from this repository, its SQLite store in workdir (not started)."""
    argv = [
        sys.executable, "-m", "correlator.app",
        "--config", str(config),
        "--web.listen-address", f"127.0.0.1:{port}",
        "--prometheus.url", prometheus_url,
        "--alertmanager.url", alertmanager_url,
        "--storage.path", str(workdir / "incidents.sqlite"),
    ]  # fmt: skip
    return RepoProcess("correlator", argv, port, workdir)
