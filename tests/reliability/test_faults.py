"""Faults during floods, with real Alertmanager, Prometheus, exporters and correlator processes:
Alertmanager stopped for 60 s, the correlator SIGKILLed and restarted, Prometheus stopped and
started, webhooks reordered, duplicated and replayed. Each ends with exactly one incident per
image holding exactly its alerts, reached within one reconcile once the fault is over.

Exporter faults (kernel log rotated, truncated, /dev/kmsg overrun) are in
tests/exporter/test_kernel_log_tail.py and test_kernel_log_kmsg.py."""

from __future__ import annotations

import random
import signal
import time

from correlator.model import labels_fingerprint
from tests.correlator.conftest import Fleet, wait_scraped
from tests.correlator.support import (
    FAST,
    Correlator,
    detach_alert,
    scrape_configs,
    wait_incident,
    webhook_payload,
)
from tests.reliability.support import (
    ControlPlane,
    detach_count,
    exact_incidents,
    flood,
    one_root_cause_per_image,
    reconciles,
    wait_converged,
)
from tests.support import servers

DEAD = "http://127.0.0.1:9"  # nothing listens there


def _all(images: dict[str, list[dict]]) -> list[dict]:
    return [a for alerts in images.values() for a in alerts]


def _converge_within_one_reconcile(corr: Correlator, am_url: str, expected: dict) -> dict:
    """Once Alertmanager holds every alert again (recovery), the incidents are exact after at
    most one full reconcile (the one running at that moment may have started before).

    Counted in reconciles, never in seconds: each check reads the reconcile counter first, and
    a check that finds the incidents not yet exact although reconcile `recovered_at + 2` had
    already finished when it began fails the test. A slow check (a loaded machine) can only
    see the exact state later, never make the correlator look slower than it is.
    """
    total = sum(len(v) for v in expected.values())
    servers.wait_until(lambda: detach_count(am_url) == total, timeout=120, what="AM holds all")
    recovered_at = reconciles(corr)
    late_misses: list[float] = []

    def exact() -> dict | None:
        began_after = reconciles(corr)
        found = exact_incidents(corr, expected)
        if found is None and began_after >= recovered_at + 2:
            late_misses.append(began_after)
        return found

    incidents = servers.wait_until(exact, timeout=120, what="exact incidents")
    assert late_misses == [], (recovered_at, late_misses)
    servers.wait_until(
        lambda: one_root_cause_per_image(am_url, expected), timeout=120, what="AM root causes"
    )
    return incidents


def test_alertmanager_stopped_60s_during_a_flood_loses_nothing_and_doubles_nothing(make_stack):
    config = {"timings": {**FAST["timings"], "alert_ttl": "5m", "hold_down": "5m"}}
    stack = make_stack(config=config)
    corr, am = stack.correlator, stack.alertmanager
    before = flood("am-out", images=4, instances=25)  # 200 alerts
    during = flood("am-new", images=4, instances=25)  # 200 more, of new images
    extra = {  # and a third volume of every instance of the first images
        image: [
            detach_alert(f"{image}-vm-{i}", image, host=f"cmp-{i % 5}", device="vdd")
            for i in range(25)
        ]
        for image in before
    }
    with ControlPlane([stack.am_url]) as cp:
        cp.add(_all(before))
        first = wait_converged(corr, stack.am_url, before)
        ids = {image: inc["id"] for image, inc in first.items()}

        am.stop()
        stopped = time.monotonic()
        cp.add(_all(during) + _all(extra))
        am_errors = corr.metric("pciehp_correlator_alertmanager_errors_total")
        first = reconciles(corr)
        # Sixty seconds, and at least 30 reconciles however slow the machine, without
        # Alertmanager while the flood goes on: after every reconcile the correlator still
        # holds each incident, firing, with the same members.
        while time.monotonic() - stopped < 60 or reconciles(corr) < first + 30:
            done = reconciles(corr)
            servers.wait_until(lambda d=done: reconciles(corr) > d, what="a reconcile")
            now = exact_incidents(corr, before)
            assert now is not None, corr.incidents()
            assert {image: inc["id"] for image, inc in now.items()} == ids
        # every reconcile in the outage tried Alertmanager and counted the failure (the first
        # may have read it just before it stopped)
        outage = reconciles(corr) - first
        assert corr.metric("pciehp_correlator_alertmanager_errors_total") >= am_errors + outage - 1
        assert corr.metric("pciehp_correlator_push_failures_total") >= 1

        am.start()
        expected = {i: before[i] + extra[i] for i in before} | during
        incidents = _converge_within_one_reconcile(corr, stack.am_url, expected)
    assert {image: incidents[image]["id"] for image in before} == ids
    servers.wait_until(
        lambda: corr.metric("pciehp_correlator_push_queue_length") == 0, what="outbox drained"
    )


def test_correlator_sigkilled_mid_flood_keeps_its_incidents_and_doubles_none(make_stack):
    stack = make_stack()
    corr = stack.correlator
    images = flood("kill", images=8, instances=15)  # 240 alerts
    names = list(images)
    with ControlPlane([stack.am_url], interval=0.3) as cp:
        for name in names[:4]:
            cp.add(images[name])
        servers.wait_until(lambda: len(corr.incidents()) >= 2, what="first incidents")
        cp.add(images[names[4]])
        ids = {inc["image_id"]: inc["id"] for inc in corr.incidents()}
        corr.stop(signal.SIGKILL)
        for name in names[5:]:
            cp.add(images[name])
        corr.start()
        incidents = _converge_within_one_reconcile(corr, stack.am_url, images)
    assert len(ids) >= 2
    assert {image: incidents[image]["id"] for image in ids} == ids


def test_prometheus_stopped_then_started_keeps_verdicts_and_flaps_nothing(
    make_stack, fleet: Fleet, tmp_path
):
    prom = servers.prometheus(tmp_path / "prometheus", scrape_configs(fleet.guests))
    prom.start()
    try:
        wait_scraped(prom.url, len(fleet.guests))
        stack = make_stack(prometheus_url=prom.url)
        corr = stack.correlator
        guests = fleet.image("img-aspm")
        alerts = [detach_alert(g, "img-prom", host=f"cmp-{i}") for i, g in enumerate(guests)]
        with ControlPlane([stack.am_url]) as cp:
            cp.add(alerts)
            inc = wait_incident(
                corr, "img-prom", cause_breakdown={"pcie_aspm_off": 3, "host_side": 1}
            )

            prom.stop()
            errors = corr.metric("pciehp_correlator_prometheus_errors_total")
            # New alerts while Prometheus is down: known guests keep their verdicts (facts
            # younger than facts_max_age), a guest never seen is no_guest_data, not a guess.
            more = [detach_alert(g, "img-prom", host="cmp-9", device="vdd") for g in guests]
            ghost = detach_alert("ghost-vm", "img-prom", host="cmp-9")
            cp.add([*more, ghost])
            down = wait_incident(
                corr,
                "img-prom",
                cause_breakdown={"pcie_aspm_off": 3, "host_side": 1, "no_guest_data": 1},
            )
            assert down["id"] == inc["id"] and down["root_cause"] == "pcie_aspm_off"
            # 9 alerts; the healthy guest's 2 are host-side, in its hosts' incidents
            assert down["counts"]["alerts"] == 7
            assert corr.metric("pciehp_correlator_prometheus_errors_total") > errors

            prom.start()
            wait_scraped(prom.url, len(fleet.guests))
            recovered_at = reconciles(corr)
            errors = corr.metric("pciehp_correlator_prometheus_errors_total")
            servers.wait_until(lambda: reconciles(corr) >= recovered_at + 2, what="2 reconciles")
            assert corr.metric("pciehp_correlator_prometheus_errors_total") <= errors + 1
            after = corr.incidents("img-prom")
            assert [(i["id"], i["root_cause"], i["cause_breakdown"]) for i in after] == [
                (inc["id"], "pcie_aspm_off", down["cause_breakdown"])
            ]
            rc = servers.wait_until(
                lambda: one_root_cause_per_image(stack.am_url, ["img-prom"]), what="one root cause"
            )
            assert rc
    finally:
        prom.stop()


def _histories() -> tuple[list[dict], dict[str, set[str]]]:
    """Webhook deliveries of alerts over time (firing; firing then resolved; firing, resolved,
    firing again), and the fingerprints firing at the end by the newest word, per image."""
    now = time.time()
    deliveries: list[dict] = []
    want: dict[str, set[str]] = {}
    for k in range(5):
        image = f"order-{k}"
        for i in range(12):
            a = detach_alert(f"{image}-vm-{i}", image, host=f"cmp-{i % 3}")
            deliveries.append(webhook_payload([a]))
            if i % 3:
                resolved = dict(a, endsAt=_ts(now - 30))
                deliveries.append(webhook_payload([resolved], status="resolved"))
            if i % 3 == 2:
                deliveries.append(webhook_payload([dict(a, startsAt=_ts(now - 10))]))
            if i % 3 != 1:
                want.setdefault(image, set()).add(labels_fingerprint(a["labels"]))
    return deliveries, want


def _ts(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".000Z"


def _firing_members(corr: Correlator) -> dict[str, set[str]] | None:
    """Firing member fingerprints of each open incident; None while an image has two."""
    out: dict[str, set[str]] = {}
    for inc in corr.incidents():
        if inc["state"] == "resolved":
            continue
        if inc["image_id"] in out:
            return None
        members = corr.incident(inc["id"])["members"]
        out[inc["image_id"]] = {m["fingerprint"] for m in members if m["status"] == "firing"}
    return {k: v for k, v in out.items() if v}


def test_reordered_duplicated_and_replayed_webhooks_end_where_in_order_ones_do(tmp_path):
    deliveries, want = _histories()
    shuffled = deliveries * 2
    random.Random(6).shuffle(shuffled)
    shuffled += deliveries[: len(deliveries) // 2]  # late replays of old deliveries
    config = {"timings": {**FAST["timings"], "hold_down": "1m"}}
    in_order = Correlator(tmp_path / "in-order", DEAD, [DEAD], config).start()
    mixed = Correlator(tmp_path / "mixed", DEAD, [DEAD], config).start()
    try:
        for payload in deliveries:
            assert in_order.post_webhook(payload)[0] == 200
        for payload in shuffled:
            assert mixed.post_webhook(payload)[0] == 200
        for corr in (in_order, mixed):
            servers.wait_until(lambda c=corr: _firing_members(c) == want, what="final state")
            assert len(corr.incidents()) == 5
        assert mixed.metric("pciehp_correlator_alerts_received_total", result="stale") >= 1
        assert mixed.metric("pciehp_correlator_alerts_received_total", result="duplicate") >= 1
    finally:
        in_order.stop()
        mixed.stop()
