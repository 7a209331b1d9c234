"""Grouping per image (guest-side causes) and per host (host-side causes), explained members,
root cause, evidence, and the hold-down lifecycle (freezegun)."""

from __future__ import annotations

import time

import pytest
from freezegun import freeze_time

from correlator.config import Config, LabelMap
from correlator.diagnosis import DiagnosisTable
from correlator.incidents import IncidentBook, incident_id
from correlator.model import FIRING, Alert, GuestFacts, Verdict

TABLE = DiagnosisTable.from_config(Config())
ASPM = Verdict("pcie_aspm_off", ("12 of 12 ports ...", "kernel command line has pcie_aspm=off"))
HOST = Verdict("host_side", ("no port has ...",), guest_can_unplug=True)
NODATA = Verdict("no_guest_data", ("no pciehp_guest_info ...",))


def detach(vm: str, image: str | None = "img", host: str = "h1", device: str = "vdb") -> Alert:
    labels = {"alertname": "NovaDeviceDetachFailed", "instance_uuid": vm, "host": host}
    labels["device"] = device
    if image:
        labels["image_id"] = image
    return Alert(f"{vm}-{device}", labels, FIRING, starts_at=50.0)


def book(hold_down: float = 300) -> IncidentBook:
    return IncidentBook(LabelMap(), TABLE, hold_down)


def firing(*alerts: Alert) -> dict[str, Alert]:
    return {a.fingerprint: a for a in alerts}


def test_one_incident_per_image_with_members_instances_and_hosts():
    b = book()
    alerts = firing(
        detach("vm1", host="h1"),
        detach("vm1", host="h1", device="vdc"),
        detach("vm2", host="h2"),
        detach("vm3", image="other"),
    )
    changed = b.update(alerts, {"vm1": ASPM, "vm2": ASPM, "vm3": HOST}, {}, now=100.0)
    assert sorted((i.kind, i.image_id, i.host) for i in changed) == [
        ("host", "", "h1"),
        ("image", "img", ""),
    ]
    inc = b.open["img"]
    assert inc.counts() == {
        "alerts": 3,
        "firing_alerts": 3,
        "explained_alerts": 3,
        "instances": 2,
        "hosts": 2,
    }
    assert inc.explained() == {"vm1": "h1", "vm2": "h2"}
    assert inc.root_cause == "pcie_aspm_off"
    assert inc.first_seen == 50.0
    assert inc.evidence() == [
        {"text": "12 of 12 ports ...", "instances": 2},
        {"text": "kernel command line has pcie_aspm=off", "instances": 2},
    ]
    assert inc.id == incident_id("img", 1)
    assert "3 detach alert(s) (3 firing) from 2 instance(s) on 2 host(s) of image img" in (
        inc.description(TABLE)
    )
    # Nothing new, nothing changed.
    assert b.update(alerts, {"vm1": ASPM, "vm2": ASPM, "vm3": HOST}, {}, now=101.0) == []


def test_the_dominant_cause_wins_and_healthy_guests_are_counter_evidence():
    b = book()
    alerts = firing(*(detach(f"vm{i}") for i in range(5)))
    verdicts = {"vm0": ASPM, "vm1": ASPM, "vm2": HOST, "vm3": NODATA, "vm4": NODATA}
    b.update(alerts, verdicts, {}, now=1.0)
    inc = b.open["img"]
    assert inc.root_cause == "pcie_aspm_off"  # no_guest_data never outvotes a real diagnosis
    # The image's breakdown counts every affected instance, the host-side one included.
    assert inc.breakdown() == {"pcie_aspm_off": 2, "no_guest_data": 2, "host_side": 1}
    assert inc.facts_summary() == {"instances": 5, "with_facts": 0, "without_facts": 5}
    assert [c["instance_uuid"] for c in inc.counter_evidence()] == ["vm2"]
    # Members: the broken ones explained, the ones without facts unexplained (never muted);
    # the host-side one belongs to its host's incident.
    assert {m.instance_uuid: m.explained for m in inc.members.values()} == {
        "vm0": True,
        "vm1": True,
        "vm3": False,
        "vm4": False,
    }
    assert list(inc.explained()) == ["vm0", "vm1"]
    assert [m.instance_uuid for m in b.open["host:h1"].members.values()] == ["vm2"]

    tie = {"vm0": ASPM, "vm1": ASPM, "vm2": NODATA, "vm3": NODATA, "vm4": NODATA}
    b.update(alerts, tie, {}, now=2.0)
    assert inc.root_cause == "pcie_aspm_off"  # a guest-side cause outranks unknown ones

    b.update(alerts, dict.fromkeys(verdicts, NODATA), {}, now=3.0)
    assert inc.root_cause == "no_guest_data" and inc.counter_evidence() == []
    assert inc.explained() == {}  # nothing explained: every detach alert still pages


def test_one_broken_host_across_many_images_is_one_incident_naming_it():
    b = book()
    alerts = firing(*(detach(f"vm{i}", image=f"img-{i}", host="cmp-7") for i in range(10)))
    alerts |= firing(detach("vm-other", image="img-0", host="cmp-2"))
    verdicts = {a.labels["instance_uuid"]: HOST for a in alerts.values()}
    b.update(alerts, verdicts, {}, now=1.0)
    assert sorted(b.open) == ["host:cmp-2", "host:cmp-7"]
    inc = b.open["host:cmp-7"]
    assert (inc.kind, inc.host, inc.image_id, inc.root_cause) == ("host", "cmp-7", "", "host_side")
    assert inc.images() == [f"img-{i}" for i in range(10)]
    assert inc.counts()["explained_alerts"] == 10
    assert "on host cmp-7 from 10 instance(s) of 10 image(s)" in inc.description(TABLE)
    assert inc.counter_evidence() == []

    # The facts change: vm0 turns out broken; its alert moves to its image's incident.
    b.update(alerts, {**verdicts, "vm0": ASPM}, {}, now=2.0)
    assert "vm0" not in {m.instance_uuid for m in inc.members.values()}
    assert b.open["img-0"].root_cause == "pcie_aspm_off"


def test_image_key_falls_back_to_the_guest_label_then_the_boot_configuration():
    b = book()
    facts = {
        "vm1": GuestFacts("vm1", kernel="6.1", image_id="img-from-target"),
        "vm2": GuestFacts("vm2", kernel="6.1", cmdline={"pcie_aspm": "off"}),
        "vm3": GuestFacts("vm3", kernel="6.1", cmdline={"pcie_aspm": "off"}),
    }
    alerts = firing(*(detach(f"vm{i}", image=None) for i in (1, 2, 3, 4)))
    b.update(alerts, dict.fromkeys(("vm1", "vm2", "vm3", "vm4"), ASPM), facts, now=1.0)
    by_source = {i.key_source: i for i in b.open.values()}
    assert by_source["guest_label"].image_id == "img-from-target"
    boot = by_source["boot_fingerprint"]
    assert boot.image_id == f"boot-{facts['vm2'].boot_fingerprint()}"
    assert sorted(m.instance_uuid for m in boot.members.values()) == ["vm2", "vm3"]
    assert by_source["unknown"].image_id == "unknown"

    # vm4's facts arrive: its alert moves from "unknown" to its boot configuration's incident.
    facts["vm4"] = GuestFacts("vm4", kernel="6.1", cmdline={"pcie_aspm": "off"})
    b.update(alerts, {}, facts, now=2.0)
    assert len(boot.members) == 3
    assert b.open["unknown"].members == {} and b.open["unknown"].state == "resolving"


def test_hold_down_keeps_a_flapping_member_in_the_same_incident():
    b = book(hold_down=300)
    alerts = firing(detach("vm1"), detach("vm2"))
    verdicts = {"vm1": ASPM, "vm2": ASPM}
    with freeze_time("2026-11-25 12:00:00") as clock:
        b.update(alerts, verdicts, {}, now=time.time())
        first = b.open["img"]
        clock.tick(60)
        b.update({}, {}, {}, now=time.time())  # every member resolved
        assert first.state == "resolving"
        assert all(m.status == "resolved" for m in first.members.values())
        clock.tick(299)
        b.update({}, {}, {}, now=time.time())
        assert first.state == "resolving"
        b.update(firing(detach("vm1")), verdicts, {}, now=time.time())  # flaps back
        assert b.open["img"] is first and first.state == "firing"
        assert first.members["vm1-vdb"].status == "firing"
        assert first.members["vm2-vdb"].status == "resolved"

        clock.tick(10)
        b.update({}, {}, {}, now=time.time())
        clock.tick(299)
        b.update({}, {}, {}, now=time.time())
        assert first.state == "resolving"
        clock.tick(1)
        changed = b.update({}, {}, {}, now=time.time())
        assert changed == [first] and first.state == "resolved"
        assert first.resolved_at == time.time()
        assert "img" not in b.open and b.history[first.id] is first

        clock.tick(5)  # after the hold-down, the image's next failure is a new incident
        b.update(alerts, verdicts, {}, now=time.time())
        second = b.open["img"]
        assert second.id == incident_id("img", 2) != first.id
        assert [i.id for i in b.all()] == [second.id, first.id]


def test_history_is_trimmed_to_the_limit():
    b = book(hold_down=1)
    for n in range(5):
        b.update(firing(detach("vm", image=f"img{n}")), {}, {}, now=10.0 * n)
        b.update({}, {}, {}, now=10.0 * n + 1)
        b.update({}, {}, {}, now=10.0 * n + 2)
    assert len(b.history) == 5
    b.trim_history(2)
    assert sorted(i.image_id for i in b.history.values()) == ["img3", "img4"]


@pytest.mark.parametrize("state", ["firing", "resolving", "resolved"])
def test_state_round_trips_through_json(state):
    from correlator.incidents import Incident

    b = book(hold_down=1)
    b.update(firing(detach("vm1"), detach("vm2", host="h2")), {"vm1": ASPM, "vm2": HOST}, {}, 1.0)
    inc = b.open["img"]
    if state != "firing":
        b.update({}, {}, {}, now=2.0)
    if state == "resolved":
        b.update({}, {}, {}, now=3.0)
    copy = Incident.from_state(inc.state_json(), [m.__dict__ for m in inc.members.values()])
    assert copy.detail_json(TABLE) == inc.detail_json(TABLE)
    assert copy.state == state
