"""Start real Prometheus and Alertmanager (Debian packages) on free loopback ports.

The demo and the tests use these instead of mocks (so it ships in the wheel, with the demo).
Readiness is awaited by polling the servers' own `/-/ready` endpoints, never by sleeping.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
ALERTMANAGER = shutil.which("prometheus-alertmanager") or "/usr/bin/prometheus-alertmanager"


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now.

    Picked at random below the kernel's ephemeral range: a port from bind(0) sits in that range,
    where any outgoing connection (a scrape, a webhook) may take it before the server binds it.
    """
    low = _ephemeral_low()
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(10000, max(10001, low))
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """GET url; returns (status, body), status 0 when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


def http_json(url: str, payload: object | None = None, timeout: float = 5.0) -> object:
    """GET (or POST payload as JSON) and decode the JSON answer; raises on HTTP errors."""
    data = None if payload is None else json.dumps(payload).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        body = r.read()
    return json.loads(body) if body else None


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.05, what: str = "condition"):
    """Poll predicate until it returns a truthy value; raise TimeoutError after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@dataclass
class Server:
    """A started server process with its base URL and scratch directory."""

    name: str
    argv: list[str]
    port: int
    workdir: Path
    proc: subprocess.Popen | None = None
    log_path: Path = field(init=False)
    ready_path: str = "/-/ready"

    def __post_init__(self) -> None:
        self.log_path = self.workdir / f"{self.name}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def launch(self) -> None:
        """Start the process without waiting for it."""
        log = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the child's lifetime
        self.proc = subprocess.Popen(
            self.argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            start_new_session=True,
        )
        log.close()

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Poll `ready_path` until it answers 200; fail fast if the process died."""

        def ready() -> bool:
            if self.proc and self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log_tail()}")
            return http_get(self.url + self.ready_path, timeout=1.0)[0] == 200

        wait_until(ready, timeout=timeout, what=f"{self.name} ready")

    def start(self, timeout: float = 60.0) -> Server:
        """Start the process and wait until `ready_path` answers."""
        self.launch()
        self.wait_ready(timeout)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the process (SIGTERM, then SIGKILL after 10 s)."""
        if not self.proc or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def reload(self) -> None:
        """Ask the server to re-read its configuration (POST /-/reload)."""
        req = urllib.request.Request(self.url + "/-/reload", data=b"", method="POST")
        urllib.request.urlopen(req, timeout=10).read()

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""


def prometheus(
    workdir: Path,
    scrape_configs: Sequence[dict] = (),
    rule_files: Sequence[Path] = (),
    alertmanagers: Sequence[str] = (),
    scrape_interval: str = "1s",
    evaluation_interval: str = "1s",
    port: int | None = None,
) -> Server:
    """A Prometheus server (not started) with the given scrape configs, rules and Alertmanagers."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    config: dict = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": evaluation_interval},
        "scrape_configs": list(scrape_configs),
        "rule_files": [str(Path(p).resolve()) for p in rule_files],
    }
    if alertmanagers:
        targets = [a.removeprefix("http://") for a in alertmanagers]
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": targets}]}]}
    cfg = workdir / "prometheus.yml"
    cfg.write_text(yaml.safe_dump(config, sort_keys=False))
    argv = [
        PROMETHEUS,
        f"--config.file={cfg}",
        f"--storage.tsdb.path={workdir / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--web.enable-lifecycle",
        "--web.enable-admin-api",
        "--storage.tsdb.retention.time=1d",
    ]
    return Server("prometheus", argv, port, workdir)


def alertmanager(
    workdir: Path,
    config: dict | Path,
    port: int | None = None,
    cluster_port: int | None = None,
    peers: Sequence[str] = (),
) -> Server:
    """An Alertmanager (not started); clustering off unless cluster_port is given."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    if isinstance(config, Path):
        cfg = config
    else:
        cfg = workdir / "alertmanager.yml"
        cfg.write_text(yaml.safe_dump(config, sort_keys=False))
    argv = [
        ALERTMANAGER,
        f"--config.file={cfg}",
        f"--storage.path={workdir / 'am-data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    if cluster_port:
        argv.append(f"--cluster.listen-address=127.0.0.1:{cluster_port}")
        argv += [f"--cluster.peer={p}" for p in peers]
        argv.append(f"--cluster.advertise-address=127.0.0.1:{cluster_port}")
    else:
        argv.append("--cluster.listen-address=")
    return Server("alertmanager", argv, port, workdir)


@contextlib.contextmanager
def running(*servers: Server) -> Iterator[tuple[Server, ...]]:
    """Start servers in order, stop them in reverse order whatever happens."""
    started: list[Server] = []
    try:
        for s in servers:
            started.append(s.start())
        yield servers
    finally:
        for s in reversed(started):
            s.stop()
