"""The monitoring plane for real: exporters on the bundled captures, Prometheus with our rules,
Alertmanager with our configuration, pciehp-correlator, and a webhook recorder for on-call.

Shared by the alert and dashboard tests. Each capture is one guest (scrape target); its VM
image is the `image_id` target label, set in static_configs as service discovery would.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlencode

import yaml

from demo.plane import ALERTMANAGER_CONFIG as ALERTMANAGER_CONFIG
from demo.plane import ALERTS as ALERTS
from demo.plane import RULE_FILES as RULE_FILES
from demo.plane import Recorder as Recorder
from demo.plane import RepoProcess as RepoProcess
from demo.plane import correlator_process as correlator_process
from demo.plane import loopback_am_config as loopback_am_config
from demo.plane import post_alerts as post_alerts
from demo.plane import rfc3339 as rfc3339
from tests.support import captures, servers
from tests.support.captures import Capture

ROOT = Path(__file__).resolve().parents[2]
EXPORTER_JOB = "pciehp-exporter"
CORRELATOR_JOB = "pciehp-correlator"
DETACH_ALERTNAME = re.compile(r".*Detach.*(Timeout|Failed).*")
# On-call's detach group_wait in the tests: the correlator's budget to explain an instance before
# its detach alert pages. Generous, so that only a broken correlator misses it (a loaded 2-core
# machine does not); the tests learn that the groups flushed from a barrier alert, not a timer.
ONCALL_WAIT = "20s"

# (scenario, phase, image_id). img-aspm-off: two pcie_aspm=off guests (one right after a hung
# unplug) and one whose owner fixed it; img-debian12: native-hotplug and ACPI-hotplug hosts;
# img-debian12-pc: an i440fx guest without PCIe ports.
GUESTS: tuple[tuple[str, str, str], ...] = (
    ("q35_aspm_off", "boot", "img-aspm-off"),
    ("q35_aspm_off", "after_unplug", "img-aspm-off"),
    ("q35_normal", "after_unplug", "img-aspm-off"),
    ("q35_normal", "boot", "img-debian12"),
    ("q35_normal", "after_plug", "img-debian12"),
    ("q35_acpihp_normal", "boot", "img-debian12"),
    ("i440fx_normal", "boot", "img-debian12-pc"),
)


@dataclass
class Guest:
    """One scrape target: an exporter serving one capture, labelled with its image."""

    capture: Capture
    image_id: str
    port: int

    @property
    def instance(self) -> str:
        """The scrape target address, Prometheus' `instance` label."""
        return f"127.0.0.1:{self.port}"

    @property
    def instance_uuid(self) -> str:
        """The SMBIOS UUID the capture's VM was started with (Nova: the instance UUID)."""
        meta = captures.GUESTS / self.capture.scenario / "meta.json"
        return json.loads(meta.read_text())["uuid"]


@dataclass
class StaticExposition:
    """A loopback HTTP server answering every GET with one fixed Prometheus exposition."""

    text: str
    _server: ThreadingHTTPServer | None = None

    @property
    def instance(self) -> str:
        """The scrape target address."""
        assert self._server
        return f"127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> StaticExposition:
        """Listen on a free loopback port in a background thread."""
        body = self.text.encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

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


def host_exposition(scenarios: Sequence[str]) -> str:
    """What pciehp-host-exporter reports for the captures' VMs (DESIGN.md section host/),
    built from each capture's QEMU command line and known outcome: its root ports (id and
    address), the hotplug model QEMU offered, whether the guest armed the slots (pciehp bound:
    q35_normal only), and for the pcie_aspm=off VM the disk port's button latched by the hung
    device_del."""
    families: dict[str, list[str]] = {m: [] for m in ("vm_info", "vm_verdict", *HOST_PORT_METRICS)}
    for scenario in sorted(set(scenarios)):
        meta = json.loads((captures.GUESTS / scenario / "meta.json").read_text())
        uuid, hotplug = meta["uuid"], meta["hotplug_mode"]
        machine = "pc-i440fx-7.2" if meta["machine"] == "pc" else "pc-q35-7.2"
        armed = scenario == "q35_normal"
        if hotplug == "acpi":
            verdict, reason = "ready", "acpi_hotplug"
        elif armed:
            verdict, reason = "ready", "pciehp_irq"
        else:
            verdict, reason = "not_ready", "button_pending_unarmed"
        vm = f'instance_uuid="{uuid}"'
        families["vm_info"].append(
            f'{{{vm},domain="{scenario}",machine="{machine}",hotplug="{hotplug}"}} 1'
        )
        families["vm_verdict"].append(f'{{{vm},verdict="{verdict}",reason="{reason}"}} 1')
        for spec in (a for a in meta["qemu_args"] if a.startswith("pcie-root-port,")):
            opts = dict(kv.split("=", 1) for kv in spec.split(",")[1:] if "=" in kv)
            dev_text, _, fn_text = opts["addr"].partition(".")
            dev, fn = int(dev_text, 16), int(fn_text or "0", 16)
            labels = (
                f'{vm},segment="0000",bus="00",device="{dev:02x}",function="{fn:x}",'
                f'port_id="{opts["id"]}"'
            )
            disk = f"0000:00:{dev:02x}.{fn:x}" == meta["disk_port_bdf"]
            values = {
                "port_hotplug_capable": 1,
                "port_driver_armed": int(armed),
                "port_interrupt_enabled": int(armed),
                "slot_adapter_present": int(disk),
                "slot_button_pending": int(hotplug == "native" and not armed and disk),
                "port_unplug_ready": int(verdict == "ready"),
            }
            for m, v in values.items():
                families[m].append(f"{{{labels}}} {v}")
    lines = []
    for m, samples in families.items():
        lines.append(f"# TYPE pciehp_host_{m} gauge")
        lines += [f"pciehp_host_{m}{s}" for s in samples]
    return "\n".join(lines) + "\n"


HOST_PORT_METRICS = (
    "port_hotplug_capable",
    "port_driver_armed",
    "port_interrupt_enabled",
    "slot_adapter_present",
    "slot_button_pending",
    "port_unplug_ready",
)
HOST_JOB = "pciehp-host"


@dataclass
class Plane:
    """The running monitoring plane."""

    prometheus: servers.Server
    guests: list[Guest]
    alertmanager: servers.Server | None = None
    correlator: RepoProcess | None = None
    recorder: Recorder | None = None

    def query(self, expr: str) -> list[dict]:
        """Instant PromQL query; returns the result vector (raises on an API error)."""
        return _result(self.prometheus.url, "query", {"query": expr})

    def query_range(self, expr: str, seconds: int, step: str = "1s") -> list[dict]:
        """Range query over the last `seconds`; returns the result matrix."""
        now = time.time()
        params = {"query": expr, "start": f"{now - seconds:.3f}", "end": f"{now:.3f}", "step": step}
        return _result(self.prometheus.url, "query_range", params)

    def guest(self, scenario: str, phase: str) -> Guest:
        """The guest serving one capture."""
        return next(
            g for g in self.guests if (g.capture.scenario, g.capture.phase) == (scenario, phase)
        )

    def alert_rules(self) -> dict[str, dict]:
        """Prometheus' view of every alerting rule, by name (state and active alerts)."""
        answer = servers.http_json(self.prometheus.url + "/api/v1/rules?type=alert")
        groups = answer["data"]["groups"]  # type: ignore[index]
        return {r["name"]: r for g in groups for r in g["rules"]}


def _result(base: str, endpoint: str, params: dict[str, str]) -> list[dict]:
    """Call a Prometheus query endpoint and return its result, failing on an API error."""
    answer = servers.http_json(f"{base}/api/v1/{endpoint}?{urlencode(params)}")
    assert isinstance(answer, dict) and answer.get("status") == "success", answer
    return answer["data"]["result"]


def detach_alert(alertname: str, image_id: str, instance_uuid: str, device: str) -> dict:
    """A host-side detach alert with the labels the correlator expects (kernel-facts §7.3)."""
    return {
        "labels": {
            "alertname": alertname,
            "severity": "warning",
            "service": "nova-compute",
            "host": "cmp-17",
            "instance_uuid": instance_uuid,
            "image_id": image_id,
            "device": device,
        },
        "annotations": {"summary": f"Detach of {device} from {instance_uuid} timed out"},
        "generatorURL": "http://nova-log.example.invalid/",
    }


def exporter_argv(capture: Capture, port: int) -> list[str]:
    """Command line of an exporter serving one capture on 127.0.0.1:port."""
    return [
        sys.executable,
        "-m",
        "exporter.cli",
        "--web.listen-address",
        f"127.0.0.1:{port}",
        *capture.exporter_args(),
    ]


def scrape_configs(
    guests: Sequence[Guest], correlator_port: int | None, host: StaticExposition | None = None
) -> list[dict]:
    """Prometheus scrape configs: one static target per guest with its image_id label (and
    the host exporter's target, when given)."""
    configs: list[dict] = [
        {
            "job_name": EXPORTER_JOB,
            "static_configs": [
                {"targets": [g.instance], "labels": {"image_id": g.image_id}} for g in guests
            ],
        }
    ]
    if host:
        configs.append({"job_name": HOST_JOB, "static_configs": [{"targets": [host.instance]}]})
    if correlator_port:
        configs.append(
            {
                "job_name": CORRELATOR_JOB,
                "static_configs": [{"targets": [f"127.0.0.1:{correlator_port}"]}],
            }
        )
    return configs


@contextlib.contextmanager
def running(
    workdir: Path,
    guests: Sequence[tuple[str, str, str]] = GUESTS,
    full: bool = True,
    host_view: bool = False,
) -> Iterator[Plane]:
    """Start exporters and Prometheus (with alerts/*.rules.yml); with `full`, also the on-call
    recorder, Alertmanager (our configuration) and pciehp-correlator, scraped by Prometheus;
    with `host_view`, a static host-exporter exposition for the guests' VMs.

    Yields once every target has been scraped a few times and every rule group has been
    evaluated on that data.
    """
    members = [Guest(Capture(s, p), image, servers.free_port()) for s, p, image in guests]
    exporters = [
        RepoProcess(
            f"exporter-{i}", exporter_argv(g.capture, g.port), g.port, workdir, None, "/metrics"
        )
        for i, g in enumerate(members)
    ]
    recorder = Recorder().start() if full else None
    host = None
    if host_view:
        host = StaticExposition(host_exposition([s for s, _, _ in guests])).start()
    correlator_port = servers.free_port() if full else None
    prom = servers.prometheus(
        workdir / "prometheus",
        scrape_configs=scrape_configs(members, correlator_port, host),
        rule_files=RULE_FILES,
    )
    am = correlator = None
    if recorder and correlator_port:
        am = servers.alertmanager(
            workdir / "alertmanager",
            loopback_am_config(
                recorder.url + "/oncall",
                f"http://127.0.0.1:{correlator_port}/api/v1/webhook",
                ONCALL_WAIT,
            ),
        )
        cfg = workdir / "correlator.yml"
        cfg.write_text(yaml.safe_dump({"timings": {"reconcile_interval": "1s"}}))
        correlator = correlator_process(workdir, cfg, correlator_port, prom.url, am.url)
    try:
        for e in exporters:
            e.launch()
        for e in exporters:
            e.wait_ready()
        with servers.running(*(s for s in (prom, am) if s)):
            if correlator:
                correlator.start()
            plane = Plane(prom, members, am, correlator, recorder)
            wait_for_data(plane, len(members) + (1 if correlator else 0) + (1 if host else 0))
            yield plane
    finally:
        if correlator:
            correlator.stop()
        for e in exporters:
            e.stop()
        if recorder:
            recorder.stop()
        if host:
            host.stop()


def wait_for_data(plane: Plane, targets: int, samples: int = 4, timeout: float = 60.0) -> None:
    """Wait until every target is up with `samples` scrapes, then for one more rule evaluation."""

    def scraped() -> bool:
        r = plane.query(f"count(count_over_time(up[1m]) >= {samples} and up == 1)")
        return bool(r) and int(float(r[0]["value"][1])) == targets

    servers.wait_until(scraped, timeout=timeout, what=f"{targets} targets scraped {samples}x")
    since = time.time()

    def evaluated() -> bool:
        answer = servers.http_json(plane.prometheus.url + "/api/v1/rules")
        groups = answer["data"]["groups"]  # type: ignore[index]
        return bool(groups) and all(_later(g["lastEvaluation"], since) for g in groups)

    servers.wait_until(evaluated, timeout=timeout, what="every rule group evaluated on the data")


def _later(rfc3339_time: str, since: float) -> bool:
    """Whether a Prometheus RFC 3339 time (nanoseconds, Z or offset) is later than `since`."""
    # Python parses at most microseconds: cut the fraction to 6 digits.
    text = re.sub(r"(\.\d{6})\d+", r"\1", rfc3339_time).replace("Z", "+00:00")
    return datetime.fromisoformat(text).timestamp() > since
