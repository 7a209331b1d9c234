"""End to end: real exporters on the captures, real Prometheus and Alertmanager, the real
correlator process. Host-side detach alerts go into Alertmanager as the control plane would
post them; the root-cause incident must come back out of Alertmanager."""

from __future__ import annotations

import signal

from tests.correlator.conftest import Fleet, wait_scraped
from tests.correlator.support import (
    DETACH,
    EXPLAINED,
    FAST,
    ROOT_CAUSE,
    am_alerts,
    detach_alert,
    post_alerts,
    root_causes,
    scrape_configs,
    wait_incident,
    webhook_payload,
)
from tests.support import servers


def _flood(guests, image_id: str, devices=("vdb", "vdc")) -> list[dict]:
    """Two failed detaches per guest (two volumes), spread over hosts."""
    return [
        detach_alert(g, image_id, host=f"cmp-{i % 3}", device=d)
        for i, g in enumerate(guests)
        for d in devices
    ]


def test_aspm_off_image_gives_one_incident_holding_every_member(make_stack, fleet: Fleet):
    stack = make_stack()
    guests = fleet.image("img-aspm")
    post_alerts(stack.am_url, _flood(guests, "img-aspm"))

    rc = servers.wait_until(
        lambda: root_causes(stack.am_url, "img-aspm"), what="root cause in Alertmanager"
    )
    assert len(rc) == 1, "replicas and re-sends must collapse into one labelset"
    alert = rc[0]
    assert alert["labels"] == {
        "alertname": ROOT_CAUSE,
        "image_id": "img-aspm",
        "root_cause": "pcie_aspm_off",
        "severity": "critical",
    }
    ann = alert["annotations"]
    assert ann["runbook_url"].endswith("/alerts/runbooks/pcie_aspm_off.md")
    assert "pcie_aspm=off" in ann["summary"]
    assert "6 detach alert(s)" in ann["description"]
    assert "3 instance(s) on 3 host(s)" in ann["description"]

    inc = wait_incident(stack.correlator, "img-aspm", root_cause="pcie_aspm_off")
    assert inc["state"] == "firing" and inc["kind"] == "image"
    # The healthy guest's alerts are host-side: they belong to its host's incident.
    assert inc["counts"] == {
        "alerts": 6,
        "firing_alerts": 6,
        "explained_alerts": 6,
        "instances": 3,
        "hosts": 3,
    }
    assert inc["cause_breakdown"] == {"pcie_aspm_off": 3, "host_side": 1}
    assert inc["facts"] == {"instances": 4, "with_facts": 4, "without_facts": 0}
    texts = [e["text"] for e in inc["evidence"]]
    assert any("verdict not_ready because no_handler" in t for t in texts), texts
    assert any("kernel command line has pcie_aspm=off" in t for t in texts), texts
    assert all(e["instances"] == 3 for e in inc["evidence"])
    healthy = fleet.guest("aspm-ok")
    assert [c["instance_uuid"] for c in inc["counter_evidence"]] == [healthy.uuid]
    assert len(stack.correlator.incidents("img-aspm")) == 1

    # Once the root cause fires, Alertmanager inhibits the detach alerts; they stay members.
    def all_suppressed() -> dict | None:
        detail = stack.correlator.incident(inc["id"])
        ok = all(m["suppressed"] and m["status"] == "firing" for m in detail["members"])
        return detail if ok and len(detail["members"]) == 6 else None

    detail = servers.wait_until(all_suppressed, what="members inhibited yet counted")
    broken = {g.uuid for g in guests if g.name != "aspm-ok"}
    assert {m["instance_uuid"] for m in detail["members"]} == broken
    explained = am_alerts(stack.am_url, EXPLAINED)
    assert {a["labels"]["instance_uuid"] for a in explained} >= broken
    assert {v["cause"] for v in detail["instances"]} == {"pcie_aspm_off", "host_side"}

    # generatorURL leads on-call to the incident page.
    status, body = servers.http_get(alert["generatorURL"])
    assert status == 200 and b"img-aspm" in body and b"pcie_aspm_off.md" in body
    # A bounded number of PromQL queries per reconcile (4 per batch of instances needing facts,
    # at most two batches), however many alerts.
    queries = stack.correlator.metric("pciehp_correlator_prometheus_queries_total")
    reconciles = stack.correlator.metric("pciehp_correlator_reconcile_duration_seconds_count")
    assert 4 <= queries <= 8 * reconciles
    assert stack.correlator.metric("pciehp_correlator_prometheus_queries_per_reconcile") <= 8


def test_acpi_hotplug_guests_with_the_same_alerts_give_host_side_per_host(make_stack, fleet):
    stack = make_stack()
    guests = fleet.image("img-acpi")
    alerts = _flood(guests, "img-acpi")
    post_alerts(stack.am_url, alerts)

    inc = wait_incident(stack.correlator, "", root_cause="host_side", host="cmp-1")
    assert inc["kind"] == "host" and inc["images"] == ["img-acpi"]
    assert inc["cause_breakdown"] == {"host_side": 1}
    assert inc["severity"] == "warning"
    assert inc["counter_evidence"] == []
    assert stack.correlator.incidents("img-acpi") == []  # no per-image incident

    def by_host() -> dict[str, dict]:
        got = {a["labels"].get("host"): a for a in am_alerts(stack.am_url, ROOT_CAUSE)}
        return got if len(got) == 3 else {}

    rc = servers.wait_until(by_host, what="one root cause per host")
    assert sorted(rc) == ["cmp-0", "cmp-1", "cmp-2"]
    assert {a["labels"]["root_cause"] for a in rc.values()} == {"host_side"}
    assert all("image_id" not in a["labels"] for a in rc.values())

    # The detach alerts resolve: after the hold-down the incident resolves, in Alertmanager too.
    for a in alerts:
        a["endsAt"] = a["startsAt"]
    post_alerts(stack.am_url, alerts)
    resolved = wait_incident(stack.correlator, "", state="resolved", host="cmp-1")
    assert resolved["id"] == inc["id"] and resolved["resolved_at"]
    servers.wait_until(
        lambda: not am_alerts(stack.am_url, ROOT_CAUSE), what="root causes resolved in AM"
    )


def test_duplicate_and_replayed_webhooks_change_nothing(make_stack, fleet: Fleet):
    stack = make_stack()
    corr = stack.correlator
    guests = fleet.image("img-aspm")[:2]
    alerts = _flood(guests, "img-dup", devices=("vdb",))
    post_alerts(stack.am_url, alerts)
    inc = wait_incident(corr, "img-dup", root_cause="pcie_aspm_off")
    in_am = [a for a in am_alerts(stack.am_url, DETACH) if a["labels"]["image_id"] == "img-dup"]
    firing = webhook_payload(in_am)

    # An HA pair delivers every notification twice: the same fingerprints, nothing new.
    for _ in range(2):
        status, body = corr.post_webhook(firing)
        assert status == 200
    assert body["data"]["duplicate"] == 2 and body["data"]["accepted"] == 0

    for a in alerts:
        a["endsAt"] = a["startsAt"]
    post_alerts(stack.am_url, alerts)
    resolved_payload = webhook_payload(
        [dict(a, endsAt=alerts[0]["endsAt"]) for a in in_am], status="resolved"
    )
    assert corr.post_webhook(resolved_payload)[0] == 200
    wait_incident(corr, "img-dup", state="resolving")

    # A replay of the old firing notification is recognised as stale and ignored.
    status, body = corr.post_webhook(firing)
    assert status == 200 and body["data"]["stale"] == 2
    done = wait_incident(corr, "img-dup", state="resolved")
    assert done["id"] == inc["id"]
    assert done["counts"] == {
        "alerts": 2,
        "firing_alerts": 0,
        "explained_alerts": 2,
        "instances": 2,
        "hosts": 2,
    }
    assert len(corr.incidents("img-dup")) == 1


def test_restart_keeps_the_same_incidents_and_doubles_none(make_stack, fleet: Fleet):
    stack = make_stack()
    corr = stack.correlator
    post_alerts(stack.am_url, _flood(fleet.image("img-aspm"), "img-aspm"))
    before = wait_incident(corr, "img-aspm", root_cause="pcie_aspm_off")
    servers.wait_until(lambda: root_causes(stack.am_url, "img-aspm"), what="root cause")
    members = {m["fingerprint"] for m in corr.incident(before["id"])["members"]}
    assert len(members) == 6  # the healthy guest's two are in its host's incident

    corr.stop(signal.SIGKILL)
    corr.start()

    after = corr.incidents("img-aspm")
    assert [i["id"] for i in after] == [before["id"]]
    assert {m["fingerprint"] for m in corr.incident(before["id"])["members"]} == members
    reconciles = corr.metric("pciehp_correlator_reconcile_duration_seconds_count")
    servers.wait_until(
        lambda: corr.metric("pciehp_correlator_reconcile_duration_seconds_count") >= reconciles + 2,
        what="two more reconciles",
    )
    again = corr.incidents("img-aspm")
    assert [(i["id"], i["state"], i["counts"]["alerts"]) for i in again] == [
        (before["id"], "firing", 6)
    ]
    assert len(corr.incidents()) == 2  # and the healthy guest's host incident
    assert len(root_causes(stack.am_url, "img-aspm")) == 1


def test_alertmanager_down_then_up_delivers_the_incident(make_stack, fleet: Fleet):
    config = {"timings": {**FAST["timings"], "hold_down": "30s"}}
    stack = make_stack(config=config, start_alertmanager=False)
    corr = stack.correlator
    alerts = _flood(fleet.image("img-aspm"), "img-aspm")
    # Alertmanager is down: the webhook alone tells the correlator (as the HA peer would).
    status, _ = corr.post_webhook(webhook_payload(alerts))
    assert status == 200
    wait_incident(corr, "img-aspm", root_cause="pcie_aspm_off")
    servers.wait_until(
        lambda: corr.metric("pciehp_correlator_push_failures_total") >= 2,
        what="failed pushes counted",
    )
    assert corr.metric("pciehp_correlator_alertmanager_errors_total") >= 1
    assert corr.metric("pciehp_correlator_push_queue_length") >= 1

    stack.alertmanager.start()
    post_alerts(stack.am_url, alerts)  # the control plane re-sends its alerts
    rc = servers.wait_until(lambda: root_causes(stack.am_url, "img-aspm"), what="delivery")
    assert rc[0]["labels"]["root_cause"] == "pcie_aspm_off"
    servers.wait_until(
        lambda: corr.metric("pciehp_correlator_push_latency_seconds_count") >= 1,
        what="delivery latency observed",
    )
    assert corr.metric("pciehp_correlator_push_queue_length") == 0
    assert len(corr.incidents("img-aspm")) == 1


def test_prometheus_down_gives_no_guest_data_then_rediagnoses(make_stack, fleet: Fleet):
    prom_port = servers.free_port()
    stack = make_stack(prometheus_url=f"http://127.0.0.1:{prom_port}")
    corr = stack.correlator
    post_alerts(stack.am_url, _flood(fleet.image("img-aspm"), "img-aspm"))

    blind = wait_incident(corr, "img-aspm", root_cause="no_guest_data")
    assert blind["cause_breakdown"] == {"no_guest_data": 4}
    assert any("Prometheus unreachable" in e["text"] for e in blind["evidence"])
    rc = servers.wait_until(lambda: root_causes(stack.am_url, "img-aspm"), what="root cause")
    assert rc[0]["labels"]["root_cause"] == "no_guest_data"
    # Nothing is explained without facts: no detach alert is muted.
    assert am_alerts(stack.am_url, EXPLAINED) == []
    assert all(a["status"]["state"] == "active" for a in am_alerts(stack.am_url, DETACH))
    assert corr.metric("pciehp_correlator_prometheus_errors_total") >= 1

    prom = servers.prometheus(
        stack.correlator.workdir.parent / "prometheus", scrape_configs(fleet.guests), port=prom_port
    )
    stack.extra.append(prom)
    prom.start()
    wait_scraped(prom.url, len(fleet.guests))

    inc = wait_incident(corr, "img-aspm", cause_breakdown={"pcie_aspm_off": 3, "host_side": 1})
    assert inc["id"] == blind["id"] and inc["root_cause"] == "pcie_aspm_off"

    def only_new_labelset() -> bool:
        causes = [a["labels"]["root_cause"] for a in root_causes(stack.am_url, "img-aspm")]
        return causes == ["pcie_aspm_off"]

    servers.wait_until(only_new_labelset, what="no_guest_data resolved, pcie_aspm_off firing")


def test_alertmanager_delivers_with_the_bearer_token(make_stack, fleet: Fleet, tmp_path):
    token = tmp_path / "token"
    token.write_text("t0ken-for-alertmanager\n")
    config = {**FAST, "webhook": {"bearer_token_file": str(token)}}
    stack = make_stack(config=config, token_file=token)
    corr = stack.correlator
    post_alerts(stack.am_url, _flood(fleet.image("img-acpi"), "img-acpi", devices=("vdb",)))
    servers.wait_until(
        lambda: corr.metric("pciehp_correlator_webhooks_received_total", result="accepted") >= 1,
        what="an authenticated webhook",
    )
    assert corr.metric("pciehp_correlator_webhooks_received_total", result="unauthorized") == 0
    status, body = corr.post_webhook(webhook_payload([]))
    assert status == 401 and body["error"] == "missing or wrong bearer token"
    assert corr.post_webhook(webhook_payload([]), token="t0ken-for-alertmanager")[0] == 200
