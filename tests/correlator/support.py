"""Real parts for the correlator tests: guest exporters, Alertmanager configs, a correlator process.

Guests are real `pciehp-exporter` processes serving copies of the bundled captures, each copy
with its own SMBIOS UUID so several instances of one scenario are distinct guests.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support import servers
from tests.support.captures import Capture, tree_args

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
DETACH = "NovaDeviceDetachFailed"
ROOT_CAUSE = "PCIeHotplugRootCause"
EXPLAINED = "PCIeHotplugDetachExplained"
UUID_FILE = Path("sys/devices/virtual/dmi/id/product_uuid")

# Fast timings so the tests finish in seconds (production defaults are in config.example.yml).
FAST = {
    "timings": {
        "reconcile_interval": "1s",
        "webhook_debounce": "50ms",
        "alert_ttl": "1m",
        "hold_down": "2s",
        "resend_interval": "2s",
        "push_ttl": "30s",
        "retry_initial": "100ms",
        "retry_max": "500ms",
    }
}


def guest_uuid(name: str) -> str:
    """A stable instance UUID for a test guest name."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"pciehp-watch-test/{name}"))


@dataclass
class Guest:
    """One guest: a capture copy with its own UUID, served by a real exporter process."""

    name: str
    scenario: str
    image_id: str | None
    phase: str = "boot"
    port: int = 0
    tree: Path | None = None
    proc: subprocess.Popen | None = None

    @property
    def uuid(self) -> str:
        return guest_uuid(self.name)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def prepare(self, workdir: Path) -> None:
        """Copy the capture tree and give it this guest's UUID."""
        src = Capture(self.scenario, self.phase).tree
        self.tree = workdir / self.name
        shutil.copytree(src, self.tree, symlinks=True)
        (self.tree / UUID_FILE).write_text(self.uuid + "\n")

    def start(self, log_dir: Path) -> None:
        """Start the exporter on a free port (readiness is awaited by `wait_ready`)."""
        assert self.tree is not None
        self.port = servers.free_port()
        args = [
            "--path.procfs",
            str(self.tree / "proc"),
            "--path.sysfs",
            str(self.tree / "sys"),
            "--path.rootfs",
            str(self.tree),
            "--kernel-log",
            str(self.tree / "kmsg.txt"),
        ]
        log = open(log_dir / f"exporter-{self.name}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "exporter.cli", "--web.listen-address", self.target, *args],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

    def wait_ready(self, log_dir: Path) -> None:
        """Wait until /metrics answers; fail at once with its log if the exporter exited."""

        def up() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                log = (log_dir / f"exporter-{self.name}.log").read_text(errors="replace")
                raise RuntimeError(f"exporter {self.name} exited: {log[-2000:]}")
            return servers.http_get(f"http://{self.target}/metrics", timeout=2)[0] == 200

        servers.wait_until(up, timeout=60, what=f"exporter {self.name}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


def scrape_configs(guests: Iterable[Guest]) -> list[dict]:
    """One `pciehp` job; each guest a static target with its image_id target label."""
    groups = []
    for g in guests:
        group: dict = {"targets": [g.target]}
        if g.image_id:
            group["labels"] = {"image_id": g.image_id}
        groups.append(group)
    return [{"job_name": "pciehp", "static_configs": groups}]


def exporter_once(
    target: Capture | Path, kernel_log: Path | None = None, extra: Sequence[str] = ()
) -> str:
    """One scrape of the real exporter (`--once`) over a capture or a capture-shaped tree."""
    tree = target.tree if isinstance(target, Capture) else target
    res = subprocess.run(
        [PYTHON, "-m", "exporter.cli", "--once", *tree_args(tree, kernel_log), *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return res.stdout


# --- Alertmanager -------------------------------------------------------------------------------


def am_config(correlator_url: str, token_file: Path | None = None) -> dict:
    """Alertmanager routing detach alerts to the correlator, with the project's inhibit rule."""
    hook: dict = {"url": f"{correlator_url}/api/v1/webhook", "send_resolved": True}
    if token_file:
        hook["http_config"] = {
            "authorization": {"type": "Bearer", "credentials_file": str(token_file)}
        }
    return {
        "route": {
            "receiver": "blackhole",
            "group_by": ["image_id"],
            "group_wait": "0s",
            "group_interval": "1s",
            "repeat_interval": "1h",
            "routes": [
                {
                    "receiver": "correlator",
                    "matchers": ['alertname=~".*Detach.*(Timeout|Failed).*"'],
                }
            ],
        },
        "receivers": [{"name": "correlator", "webhook_configs": [hook]}, {"name": "blackhole"}],
        "inhibit_rules": [
            {
                "source_matchers": [f'alertname="{EXPLAINED}"', 'instance_uuid!=""'],
                "target_matchers": ['alertname=~".*Detach.*(Timeout|Failed).*"'],
                "equal": ["instance_uuid"],
            }
        ],
    }


def detach_alert(
    guest: Guest | str,
    image_id: str | None,
    host: str,
    device: str = "vdb",
    ends_in: float = 3600,
) -> dict:
    """A host-side detach alert as the control plane would post it (labels per DESIGN.md)."""
    uid = guest.uuid if isinstance(guest, Guest) else guest
    labels = {"alertname": DETACH, "instance_uuid": uid, "host": host, "device": device}
    if image_id:
        labels["image_id"] = image_id
    now = time.time()
    return {
        "labels": labels,
        "annotations": {"summary": f"detach of {device} from {uid} failed"},
        "startsAt": _rfc3339(now - 60),
        "endsAt": _rfc3339(now + ends_in),
    }


def _rfc3339(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"


def post_alerts(am_url: str, alerts: Sequence[Mapping]) -> None:
    """POST alerts to Alertmanager's API, as Prometheus would."""
    servers.http_json(f"{am_url}/api/v2/alerts", list(alerts))


def am_alerts(am_url: str, alertname: str) -> list[dict]:
    """Active alerts of one name in Alertmanager."""
    q = urllib.parse.quote(f'alertname="{alertname}"')
    return servers.http_json(f"{am_url}/api/v2/alerts?filter={q}")  # type: ignore[return-value]


def root_causes(am_url: str, image_id: str) -> list[dict]:
    """PCIeHotplugRootCause alerts for one image in Alertmanager."""
    return [a for a in am_alerts(am_url, ROOT_CAUSE) if a["labels"].get("image_id") == image_id]


def webhook_payload(alerts: Sequence[Mapping], status: str = "firing") -> dict:
    """A version 4 webhook payload around alerts in Alertmanager's API form."""
    items = []
    for a in alerts:
        items.append(
            {
                "status": status,
                "labels": a["labels"],
                "annotations": a.get("annotations", {}),
                "startsAt": a["startsAt"],
                "endsAt": a["endsAt"] if status == "resolved" else "0001-01-01T00:00:00Z",
                "generatorURL": a.get("generatorURL", ""),
                "fingerprint": a.get("fingerprint") or _fingerprint(a["labels"]),
            }
        )
    return {
        "receiver": "correlator",
        "status": status,
        "alerts": items,
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.test",
        "version": "4",
        "groupKey": "{}:{}",
        "truncatedAlerts": 0,
    }


def _fingerprint(labels: Mapping[str, str]) -> str:
    from correlator.model import labels_fingerprint

    return labels_fingerprint(labels)


# --- the correlator process ---------------------------------------------------------------------


@dataclass
class Correlator:
    """A real `pciehp-correlator` process (python -m correlator.app)."""

    workdir: Path
    prometheus_url: str
    alertmanager_urls: Sequence[str]
    config: Mapping = field(default_factory=lambda: FAST)
    port: int = field(default_factory=servers.free_port)
    server: servers.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def storage(self) -> Path:
        return self.workdir / "incidents.sqlite"

    def start(self) -> Correlator:
        self.workdir.mkdir(parents=True, exist_ok=True)
        cfg = self.workdir / "correlator.yml"
        cfg.write_text(yaml.safe_dump(dict(self.config)))
        argv = [
            PYTHON,
            "-m",
            "correlator.app",
            "--config",
            str(cfg),
            "--web.listen-address",
            f"127.0.0.1:{self.port}",
            "--prometheus.url",
            self.prometheus_url,
            "--storage.path",
            str(self.storage),
        ]
        for am in self.alertmanager_urls:
            argv += ["--alertmanager.url", am]
        self.server = servers.Server("correlator", argv, self.port, self.workdir)
        self.server.start(timeout=30)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.server:
            self.server.stop(sig)

    def get(self, path: str) -> object:
        return servers.http_json(self.url + path)

    def incidents(self, image_id: str | None = None) -> list[dict]:
        """Incidents (of one image; "" selects host incidents, which have no image)."""
        data = self.get("/api/v1/incidents")["data"]  # type: ignore[index]
        return [i for i in data if image_id is None or i["image_id"] == image_id]

    def incident(self, incident_id: str) -> dict:
        return self.get(f"/api/v1/incidents/{incident_id}")["data"]  # type: ignore[index]

    def post_webhook(self, payload: Mapping, token: str | None = None) -> tuple[int, dict]:
        req = urllib.request.Request(
            self.url + "/api/v1/webhook",
            data=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json"}
            | ({"Authorization": f"Bearer {token}"} if token else {}),
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of `name` whose labels include `labels` (0 when none)."""
        _, body = servers.http_get(self.url + "/metrics")
        total = 0.0
        for family in text_string_to_metric_families(body.decode()):
            for s in family.samples:
                if s.name == name and labels.items() <= s.labels.items():
                    total += s.value
        return total


def wait_incident(corr: Correlator, image_id: str, timeout: float = 30, **want: object) -> dict:
    """Poll the correlator until an incident of `image_id` has every field in `want`."""

    def check() -> dict | None:
        for inc in corr.incidents(image_id):
            if all(inc.get(k) == v for k, v in want.items()):
                return inc
        return None

    return servers.wait_until(check, timeout=timeout, what=f"incident {image_id} {want}")
