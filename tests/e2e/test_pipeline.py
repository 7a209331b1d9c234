"""End to end: the demo's pipeline, smaller. A fleet where one image cannot hot-unplug, Nova's
detach flood, and on-call receiving exactly one notification per affected image."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest

from demo import pipeline
from demo.fleet import BROKEN_HOST
from demo.player import Player
from tests.alerts.pipeline import ONCALL_WAIT
from tests.support import servers

GUESTS = 40
BROKEN_IMAGE = "img-legacy-aspm"
# What on-call must be told, one root cause each: the image whose guests skip _OSC, the image
# without a guest exporter whose root ports the host sees never armed, and the broken host
EXPECTED = {
    BROKEN_IMAGE: "pcie_aspm_off",
    "img-imported-legacy": "guest_no_hotplug_driver",
    f"host {BROKEN_HOST}": "host_side",
}
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "incident-page.png"
SCREENSHOT_SIZE = "1280,1600"


@pytest.fixture(scope="module")
def flood(tmp_path_factory):
    """The pipeline after the whole flood: every detach replayed, incidents and notifications
    settled (on-call's detach group_wait passed with nothing new)."""
    workdir = tmp_path_factory.mktemp("e2e")
    with pipeline.running(
        workdir, guests=GUESTS, scrape_interval="2s", oncall_wait=ONCALL_WAIT
    ) as p:
        servers.wait_until(p.all_scraped, timeout=90, interval=0.5, what="every guest scraped")
        player = Player(p.fleet, p.alertmanager.url, attempt_seconds=0.5, spread_seconds=4)
        thread = threading.Thread(target=player.run, daemon=True)
        thread.start()
        servers.wait_until(player.done.is_set, timeout=60, what="flood replayed")
        # Alertmanager holds on-call's detach groups for ONCALL_WAIT (the correlator's generous
        # budget); wait until the correlator's root cause went out, then until a barrier alert
        # that nothing inhibits, posted after the flood, reached on-call: its group was the last
        # to open, so every detach group has flushed by then.
        servers.wait_until(
            lambda: any(
                a["labels"]["alertname"] == "PCIeHotplugRootCause" for a in p.oncall_alerts()
            ),
            timeout=60,
            what="root cause delivered",
        )
        barrier = {
            "labels": {
                "alertname": "NovaDeviceDetachFailed",
                "image_id": "barrier",
                "instance_uuid": "barrier",
                "host": "h",
                "device": "vdb",
            }
        }
        servers.http_json(p.alertmanager.url + "/api/v2/alerts", [barrier])
        servers.wait_until(
            lambda: any(a["labels"].get("image_id") == "barrier" for a in p.oncall_alerts()),
            timeout=60,
            what="barrier delivered (detach groups flushed)",
        )
        yield p, player
        player.stop()


def real_alerts(p):
    return [a for a in p.oncall_alerts() if a["labels"].get("image_id") != "barrier"]


def subject(labels: dict) -> str:
    """What an incident or root-cause alert is about: its image, or for a host-side one its host."""
    return labels.get("image_id") or f"host {labels['host']}"


def test_flood_was_a_flood(flood):
    p, player = flood
    broken = [g for g in p.fleet.guests.values() if g.image_id == BROKEN_IMAGE]
    assert len(player.hung) >= len(broken) - len(broken) // 10 - 1 > 5
    assert player.raised >= 9 * len(player.hung)  # 8 attempts + the failure, per hung VM


def test_oncall_gets_one_notification_per_cause_and_no_detach_alert(flood):
    p, _ = flood
    alerts = real_alerts(p)
    names = Counter(a["labels"]["alertname"] for a in alerts)
    assert set(names) == {"PCIeHotplugRootCause"}, names
    per_subject = Counter(subject(a["labels"]) for a in alerts if a["status"] == "firing")
    assert per_subject == dict.fromkeys(EXPECTED, 1)
    notes = [
        n for n in p.oncall_notifications() if n["alerts"][0]["labels"].get("image_id") != "barrier"
    ]
    assert len(notes) == len(EXPECTED)


def test_root_cause_and_runbook(flood):
    p, _ = flood
    for alert in real_alerts(p):
        cause = EXPECTED[subject(alert["labels"])]
        assert alert["labels"]["root_cause"] == cause
        assert alert["annotations"]["runbook_url"].endswith(f"/{cause}.md")
        assert alert["generatorURL"].startswith(p.correlator.url)


def test_incident_holds_every_member_and_counter_evidence(flood):
    p, player = flood
    hung = [p.fleet.guests[n] for n in player.hung]
    hung_here = [g for g in hung if g.image_id == BROKEN_IMAGE]

    def current() -> dict[str, dict]:
        return {subject(i): i for i in p.incidents() if i["image_id"] != "barrier"}

    # the last attempts' alerts reach the correlator through Alertmanager's correlator route,
    # which the on-call barrier does not flush: wait until the incident holds them all
    servers.wait_until(
        lambda: (
            current().get(BROKEN_IMAGE, {}).get("counts", {}).get("alerts") == 2 * len(hung_here)
        ),  # per-attempt alert + failure
        timeout=90,
        what="every member alert in the incident",
    )
    incidents = current()
    assert {k: i["root_cause"] for k, i in incidents.items()} == EXPECTED
    inc = incidents[BROKEN_IMAGE]
    assert inc["root_cause"] == "pcie_aspm_off"
    assert inc["counts"]["instances"] == len(hung_here)
    fixed = {
        g.instance_uuid
        for g in p.fleet.guests.values()
        if g.image_id == BROKEN_IMAGE and g.capture.scenario == "q35_normal"
    }
    assert fixed, "the fleet has fixed guests of the broken image"
    assert {c["instance_uuid"] for c in inc["counter_evidence"]} >= fixed
    # the broken host's hung guests are healthy guests of every healthy image, agentless included
    on_host = incidents[f"host {BROKEN_HOST}"]
    assert on_host["images"] == sorted({g.image_id for g in hung if g.host == BROKEN_HOST})
    assert "img-imported-acpi" in on_host["images"]


def test_demo_main_command_runs_bounded(tmp_path):
    """The README's main command with a bounded duration, as CI runs it."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "demo",
            "--guests",
            "20",
            "--duration",
            "120",
            "--attempt-seconds",
            "0.5",
            "--quiet-after",
            "10",
            "--summary-json",
            str(tmp_path / "summary.json"),
            "--workdir",
            str(tmp_path / "w"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "On-call received 3 notification(s): 3 x PCIeHotplugRootCause" in out.stdout
    for line in ("img-legacy-aspm: pcie_aspm_off", "img-imported-legacy: guest_no_hotplug_driver",
                 f"host {BROKEN_HOST}: host_side"):  # fmt: skip
        assert line in out.stdout


CHROMIUM = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--hide-scrollbars"]  # fmt: skip


def chromium(tmp_path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"chromium-profile-{len(list(tmp_path.iterdir()))}"
    return subprocess.run(
        [*CHROMIUM, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_incident_page_in_a_real_browser(flood, tmp_path):
    """Headless Chromium loads the incident page: the incident, its cause, the flood timeline
    and a runbook link that resolves; a screenshot is saved for people to look at."""
    from html.parser import HTMLParser

    p, _ = flood
    inc = next(i for i in p.incidents() if i["image_id"] == BROKEN_IMAGE)
    url = f"{p.correlator.url}/incidents/{inc['id']}"
    dom = chromium(tmp_path, "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]

    class Page(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.links: list[str] = []
            self.circles = 0
            self.incident_lines = 0
            self.text: list[str] = []

        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            if tag == "a" and a.get("href"):
                self.links.append(a["href"])
            if tag == "circle":
                self.circles += 1
            if tag == "line" and a.get("class") == "incident-line":
                self.incident_lines += 1

        def handle_data(self, data):
            self.text.append(data)

    page = Page()
    page.feed(dom.stdout)
    text = " ".join(page.text)
    assert BROKEN_IMAGE in text and "pcie_aspm_off" in text
    # every member alert on the timeline: the flood may still add members between the two reads
    after = next(i for i in p.incidents() if i["id"] == inc["id"])
    assert inc["counts"]["alerts"] <= page.circles <= after["counts"]["alerts"]
    assert page.incident_lines == 1  # against one incident
    runbook = next(h for h in page.links if h.endswith("/pcie_aspm_off.md"))
    status, body = servers.http_get(runbook)
    assert status == 200 and b"pcie_aspm=off" in body and b"GRUB_CMDLINE_LINUX" in body

    # PCIEHP_UPDATE_SCREENSHOT=1 retakes the README's docs/incident-page.png
    shot = SCREENSHOT if os.environ.get("PCIEHP_UPDATE_SCREENSHOT") else tmp_path / "incident.png"
    out = chromium(tmp_path, f"--screenshot={shot}", f"--window-size={SCREENSHOT_SIZE}", url)
    assert out.returncode == 0, out.stderr[-2000:]
    assert shot.stat().st_size > 10_000
    print(f"screenshot: {shot}")
