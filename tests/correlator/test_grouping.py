"""The right group for each cause, end to end with real Prometheus, Alertmanager (the committed
alertmanager.yml) and the real correlator process; on-call is a webhook recorder.

Guests are the real exporter's scrape of the bundled captures (`--once`), each with its own
instance UUID; the hung guest's log has today's unanswered button press appended. VMs without a
guest exporter are seen through a host exporter's exposition of the DESIGN.md host/ metrics. A
static HTTP server serves them all; Prometheus scrapes it.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.alerts.pipeline import ONCALL_WAIT, Recorder, loopback_am_config, rfc3339
from tests.correlator.support import (
    DETACH,
    EXPLAINED,
    ROOT_CAUSE,
    Correlator,
    am_alerts,
    detach_alert,
    exporter_once,
    guest_uuid,
    post_alerts,
    wait_incident,
)
from tests.support import servers
from tests.support.captures import Capture, kmsg_with

HEALTHY_IMAGES = [f"img-healthy-{i}" for i in range(10)]


class StaticMetrics:
    """Expositions served at /<name>/metrics from one loopback HTTP server."""

    def __init__(self, pages: Mapping[str, str]) -> None:
        self.pages = dict(pages)
        pages_ = self.pages

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                name = self.path.strip("/").removesuffix("/metrics")
                body = pages_.get(name)
                if body is None:
                    self.send_error(404)
                    return
                data = body.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                """Keep test output quiet."""

        self.server = ThreadingHTTPServer(("127.0.0.1", servers.free_port()), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def guest_page(text: str, name: str) -> str:
    """A real exporter scrape as the guest `name` (its own UUID)."""
    return re.sub(r'instance_uuid="[^"]*"', f'instance_uuid="{guest_uuid(name)}"', text)


# What the guests are: name -> (capture, image, kernel messages appended to the capture's log)
TODAY_UNANSWERED = (
    # After the plug phase the guest has answered slot 1's unplug and slot 2's plug; today the
    # host presses slot 2's button (its disk is present) and nothing answers.
    "pcieport 0000:00:02.1: pciehp: Slot(2): Attention button pressed",
)
GUESTS: dict[str, tuple[Capture, str, tuple[str, ...]]] = {
    **{f"healthy-{i}": (Capture("q35_normal"), img, ()) for i, img in enumerate(HEALTHY_IMAGES)},
    **{f"broken-{i}": (Capture("q35_aspm_off"), "img-broken", ()) for i in range(3)},
    "hung": (Capture("q35_normal", "after_plug"), "img-hung", TODAY_UNANSWERED),
}
# VMs with no guest exporter, seen by the host exporter: name -> (image, hotplug, verdict, reason)
HOST_ONLY = {
    **{f"nodrv-{i}": ("img-nodrv", "native", "not_ready", "driver_not_armed") for i in range(3)},
    **{f"acpivm-{i}": ("img-acpivm", "acpi", "ready", "acpi_hotplug") for i in range(2)},
}


def host_page() -> str:
    """A host exporter's exposition (DESIGN.md host/) for the VMs without a guest exporter."""
    lines = []
    for name, (_, hotplug, verdict, reason) in HOST_ONLY.items():
        u = guest_uuid(name)
        armed = "0" if hotplug == "acpi" or verdict == "not_ready" else "1"
        port = (
            f'bus="00",device="02",function="0",instance_uuid="{u}",port_id="pci.1",segment="0000"'
        )
        lines += [
            f'pciehp_host_vm_info{{domain="{name}",hotplug="{hotplug}",instance_uuid="{u}",'
            f'machine="pc-q35-7.2"}} 1',
            f'pciehp_host_vm_verdict{{instance_uuid="{u}",reason="{reason}",'
            f'verdict="{verdict}"}} 1',
            f'pciehp_host_probe_success{{instance_uuid="{u}"}} 1',
            f"pciehp_host_port_hotplug_capable{{{port}}} 1",
            f"pciehp_host_port_driver_armed{{{port}}} {armed}",
            f"pciehp_host_slot_button_pending{{{port}}} {'1' if verdict == 'not_ready' else '0'}",
            f"pciehp_host_port_unplug_ready{{{port}}} {'1' if verdict == 'ready' else '0'}",
        ]
    return "\n".join(lines) + "\n"


@dataclass
class World:
    prometheus: servers.Server
    recorder: Recorder
    workdir: Path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    work = tmp_path_factory.mktemp("grouping")
    scrapes: dict[tuple[Capture, tuple[str, ...]], str] = {}
    for capture, _, messages in GUESTS.values():
        if (capture, messages) not in scrapes:
            log = kmsg_with(capture.kmsg, work / f"kmsg-{len(scrapes)}.txt", messages)
            scrapes[capture, messages] = exporter_once(capture, log)
    pages = {name: guest_page(scrapes[c, m], name) for name, (c, _, m) in GUESTS.items()}
    pages["host"] = host_page()
    static = StaticMetrics(pages)
    groups = [
        {
            "targets": [static.address],
            "labels": {"__metrics_path__": f"/{name}/metrics", "instance": name, "image_id": img},
        }
        for name, (_, img, _) in GUESTS.items()
    ]
    host_group = {
        "targets": [static.address],
        "labels": {"__metrics_path__": "/host/metrics", "instance": "cmp-host-exporter"},
    }
    prom = servers.prometheus(
        work / "prometheus",
        [
            {"job_name": "pciehp", "static_configs": groups},
            {"job_name": "pciehp-host", "static_configs": [host_group]},
        ],
    )
    recorder = Recorder().start()
    try:
        with servers.running(prom):

            def scraped() -> bool:
                q = quote("count(pciehp_guest_info) + count(pciehp_host_vm_info)")
                doc = servers.http_json(f"{prom.url}/api/v1/query?query={q}")
                result = doc["data"]["result"]  # type: ignore[index]
                return bool(result) and float(result[0]["value"][1]) == len(GUESTS) + len(HOST_ONLY)

            servers.wait_until(scraped, timeout=60, what="static guests and host scraped")
            yield World(prom, recorder, work)
    finally:
        recorder.stop()
        static.stop()


@dataclass
class Stack:
    correlator: Correlator
    alertmanager: servers.Server
    recorder: Recorder
    path: str

    def oncall(self) -> list[dict]:
        return self.recorder.alerts(self.path + "/oncall")


@pytest.fixture
def stack(world: World, tmp_path: Path) -> Iterator[Stack]:
    """A correlator and an Alertmanager with the committed alertmanager.yml; on-call recorded."""
    am_port = servers.free_port()
    corr = Correlator(tmp_path / "corr", world.prometheus.url, [f"http://127.0.0.1:{am_port}"])
    path = "/" + tmp_path.name  # each test's notifications apart on the shared recorder
    cfg = loopback_am_config(world.recorder.url + path + "/oncall", corr.url + "/api/v1/webhook")
    for route in cfg["route"]["routes"]:
        if route["receiver"] == "oncall" and "Detach" in route["matchers"][0]:
            route["group_wait"] = ONCALL_WAIT  # the correlator's (generous) latency budget
    am = servers.alertmanager(tmp_path / "am", cfg, port=am_port)
    corr.start()
    am.start()
    try:
        yield Stack(corr, am, world.recorder, path)
    finally:
        corr.stop()
        am.stop()


def explain_then_flood(stack: Stack, alerts: list[dict], explained: set[str]) -> None:
    """The flood reaches Alertmanager, which sends it to the correlator at once and holds the
    on-call group for ONCALL_WAIT; the correlator's markers must be there by then (asserted
    after the flush). Then a barrier alert that can never be inhibited: once on-call has it,
    every earlier detach group has been flushed. The alerts start now: Alertmanager flushes a
    new group at once when its alert started more than group_wait ago."""
    now = rfc3339(0)
    alerts = [{**a, "startsAt": now} for a in alerts]
    post_alerts(stack.alertmanager.url, alerts)

    def markers() -> bool:
        got = {a["labels"]["instance_uuid"] for a in am_alerts(stack.alertmanager.url, EXPLAINED)}
        return got == explained

    servers.wait_until(markers, what=f"{len(explained)} explained markers in Alertmanager")
    barrier = {**detach_alert("barrier-vm", "img-barrier", host="cmp-barrier"), "startsAt": now}
    post_alerts(stack.alertmanager.url, [barrier])
    servers.wait_until(
        lambda: any(
            a["labels"] == barrier["labels"] for a in stack.oncall()
        ),  # the detach alert itself (the correlator's root cause for it pages sooner)
        timeout=60,
        what="the barrier alert at on-call",
    )


def incidents(stack: Stack, image_id: str | None = None) -> list[dict]:
    """The correlator's incidents, without the barrier's."""
    found = stack.correlator.incidents(image_id)
    return [i for i in found if i["image_id"] != "img-barrier"]


def paged_detach_uuids(stack: Stack) -> set[str]:
    return {
        a["labels"]["instance_uuid"]
        for a in stack.oncall()
        if a["labels"]["alertname"] == DETACH and a["labels"].get("image_id") != "img-barrier"
    }


def test_one_broken_host_failing_healthy_guests_of_ten_images_is_one_incident(stack: Stack):
    """(a) One host with a broken control plane fails detaches of healthy guests of 10 images:
    one incident naming that host, no per-image incidents, its alerts muted."""
    alerts = [
        detach_alert(guest_uuid(f"healthy-{i}"), img, host="cmp-broken", device=d)
        for i, img in enumerate(HEALTHY_IMAGES)
        for d in ("vdb", "vdc")
    ]
    uuids = {guest_uuid(f"healthy-{i}") for i in range(10)}
    explain_then_flood(stack, alerts, uuids)

    (inc,) = incidents(stack)
    assert (inc["kind"], inc["host"], inc["image_id"]) == ("host", "cmp-broken", "")
    assert (inc["root_cause"], inc["images"]) == ("host_side", HEALTHY_IMAGES)
    assert inc["counts"]["alerts"] == inc["counts"]["explained_alerts"] == 20
    assert "on host cmp-broken from 10 instance(s) of 10 image(s)" in inc["description"]
    texts = [e["text"] for e in inc["evidence"]]
    assert any("verdict ready because" in t for t in texts), texts
    assert all(e["instances"] == 10 for e in inc["evidence"])

    roots = am_alerts(stack.alertmanager.url, ROOT_CAUSE)
    assert [r["labels"] for r in roots if r["labels"].get("image_id") != "img-barrier"] == [
        {
            "alertname": ROOT_CAUSE,
            "host": "cmp-broken",
            "root_cause": "host_side",
            "severity": "warning",
        }
    ]
    marker = am_alerts(stack.alertmanager.url, EXPLAINED)[0]["labels"]
    assert (marker["root_cause"], marker["host"]) == ("host_side", "cmp-broken")
    assert marker["image_id"] in HEALTHY_IMAGES
    paged = [
        a["labels"]
        for a in stack.oncall()
        if a["labels"]["alertname"] == ROOT_CAUSE and a["labels"].get("image_id") != "img-barrier"
    ]
    assert paged and all(p["host"] == "cmp-broken" for p in paged)
    assert paged_detach_uuids(stack) == set()


def test_broken_guests_are_the_members_and_instances_without_facts_still_page(stack: Stack):
    """(b) An image with broken guests and a few instances without facts: the incident explains
    (and mutes) the broken ones; the others' detach alerts reach on-call."""
    broken = {guest_uuid(f"broken-{i}") for i in range(3)}
    blind = {guest_uuid(f"no-exporter-{i}") for i in range(2)}
    alerts = [
        detach_alert(u, "img-broken", host=f"cmp-{n % 2}")
        for n, u in enumerate(sorted(broken | blind))
    ]
    explain_then_flood(stack, alerts, broken)

    (inc,) = incidents(stack, "img-broken")
    assert inc["root_cause"] == "pcie_aspm_off"
    assert inc["cause_breakdown"] == {"pcie_aspm_off": 3, "no_guest_data": 2}
    assert inc["facts"] == {"instances": 5, "with_facts": 3, "without_facts": 2}
    assert "2 alert(s) not explained, not muted" in inc["description"]
    members = stack.correlator.incident(inc["id"])["members"]
    assert {m["instance_uuid"] for m in members if m["explained"]} == broken
    assert {m["instance_uuid"] for m in members if not m["explained"]} == blind
    assert paged_detach_uuids(stack) == blind
    assert len(incidents(stack)) == 1


def test_a_guest_that_answered_yesterday_and_hangs_today_is_not_host_side(stack: Stack):
    """(c) State, not totals: the unanswered unplug of today is the guest's."""
    uuid = guest_uuid("hung")
    explain_then_flood(stack, [detach_alert(uuid, "img-hung", host="cmp-3")], {uuid})
    (inc,) = incidents(stack)
    assert (inc["kind"], inc["image_id"], inc["root_cause"]) == (
        "image",
        "img-hung",
        "guest_unresponsive",
    )
    assert any("unplug_unanswered=1" in e["text"] for e in inc["evidence"])
    assert paged_detach_uuids(stack) == set()


def test_without_a_guest_exporter_the_host_view_names_the_cause(stack: Stack):
    """Issue 10: no guest exporter; native hotplug never armed -> guest_no_hotplug_driver, one
    incident for the image; ACPI hotplug -> host_side, grouped by host."""
    nodrv = {guest_uuid(n) for n, v in HOST_ONLY.items() if v[0] == "img-nodrv"}
    acpi = {guest_uuid(n) for n, v in HOST_ONLY.items() if v[0] == "img-acpivm"}
    alerts = [
        detach_alert(u, "img-nodrv", host=f"cmp-{n % 2}") for n, u in enumerate(sorted(nodrv))
    ] + [detach_alert(u, "img-acpivm", host="cmp-acpi") for u in sorted(acpi)]
    explain_then_flood(stack, alerts, nodrv | acpi)

    inc = wait_incident(stack.correlator, "img-nodrv", root_cause="guest_no_hotplug_driver")
    assert inc["counts"]["instances"] == 3 and inc["severity"] == "critical"
    texts = " ".join(e["text"] for e in inc["evidence"])
    assert "host verdict not_ready because driver_not_armed" in texts
    assert "native hotplug" in texts
    assert inc["runbook_url"].endswith("/alerts/runbooks/guest_no_hotplug_driver.md")
    (host_inc,) = incidents(stack, "")
    assert (host_inc["host"], host_inc["root_cause"]) == ("cmp-acpi", "host_side")
    assert host_inc["images"] == ["img-acpivm"]
    assert paged_detach_uuids(stack) == set()
