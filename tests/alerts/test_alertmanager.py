"""alerts/alertmanager.yml: amtool checks, routing cases, timing, and inhibition on a real
Alertmanager (the root cause reaches on-call, its image's detach alerts do not)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.alerts.pipeline import (
    ALERTMANAGER_CONFIG,
    ALERTS,
    DETACH_ALERTNAME,
    ONCALL_WAIT,
    RULE_FILES,
    Recorder,
    detach_alert,
    loopback_am_config,
    post_alerts,
    rfc3339,
)
from tests.support import servers

AMTOOL = shutil.which("amtool") or "/usr/bin/amtool"
ROUTE_CASES = yaml.safe_load((ALERTS / "tests" / "routes.yml").read_text())["cases"]
CONFIG = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
DETACH_MATCHER = 'alertname=~".*Detach.*(Timeout|Failed).*"'
EXPLAINED_MATCHER = 'alertname="PCIeHotplugDetachExplained"'
# The correlator's worst-case latency from a detach alert to its pushed root cause, with its
# defaults: webhook debounce (0.2 s) + one reconcile interval (15 s) + queries and the push.
CORRELATOR_LATENCY_SECONDS = 30


def amtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([AMTOOL, *args], capture_output=True, text=True, timeout=60, check=False)


def seconds(duration: str) -> float:
    """A Prometheus duration such as 2m or 500ms, in seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"(\d+)(ms|s|m|h)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(int(n) * units[u] for n, u in parts)


def routes_for(matcher: str) -> list[dict]:
    return [r for r in CONFIG["route"]["routes"] if matcher in r.get("matchers", [])]


def alert_names() -> set[str]:
    return {
        rule["alert"]
        for path in RULE_FILES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }


def test_amtool_check_config() -> None:
    result = amtool("check-config", str(ALERTMANAGER_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize("case", ROUTE_CASES, ids=[c["name"] for c in ROUTE_CASES])
def test_route(case: dict) -> None:
    labels = [f"{k}={v}" for k, v in case["labels"].items()]
    expected = ",".join(case["receivers"])
    result = amtool(
        "config", "routes", "test", f"--config.file={ALERTMANAGER_CONFIG}",
        f"--verify.receivers={expected}", *labels,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == expected


def test_route_verification_can_fail() -> None:
    """amtool exits non-zero when the receivers differ, so the cases above can fail."""
    result = amtool(
        "config", "routes", "test", f"--config.file={ALERTMANAGER_CONFIG}",
        "--verify.receivers=oncall", "alertname=NovaDeviceDetachFailed", "image_id=img",
    )  # fmt: skip
    assert result.returncode != 0


def test_detach_alerts_wait_for_the_correlator_before_paging() -> None:
    (to_correlator,) = [
        r for r in routes_for(DETACH_MATCHER) if r["receiver"] == "pciehp-correlator"
    ]
    (to_oncall,) = [r for r in routes_for(DETACH_MATCHER) if r["receiver"] == "oncall"]
    assert to_correlator["continue"] is True
    assert to_correlator["group_by"] == ["image_id"]
    # each instance's first alert opens its own group, so it waits group_wait for its marker
    assert to_oncall["group_by"] == ["image_id", "instance_uuid"]
    assert seconds(to_oncall["group_wait"]) > (
        seconds(to_correlator["group_wait"]) + CORRELATOR_LATENCY_SECONDS
    )


def test_root_cause_is_grouped_per_image_or_host_for_oncall() -> None:
    (route,) = routes_for('alertname="PCIeHotplugRootCause"')
    assert route["receiver"] == "oncall"
    assert route["group_by"] == ["image_id", "host"]


def test_explained_markers_notify_nobody_and_come_first() -> None:
    (route,) = routes_for(EXPLAINED_MATCHER)
    assert route["receiver"] == "blackhole" and not route.get("continue")
    assert CONFIG["route"]["routes"].index(route) == 0


def test_example_host_alerts_match_the_correlator_pattern() -> None:
    host = yaml.safe_load((ALERTS / "host-example.rules.yml").read_text())
    names = [r["alert"] for g in host["groups"] for r in g["rules"]]
    assert names and all(DETACH_ALERTNAME.fullmatch(n) for n in names)
    assert not any(DETACH_ALERTNAME.fullmatch(n) for n in alert_names() - set(names))


def test_inhibit_rules_name_existing_alerts() -> None:
    """A renamed alert must not silently escape inhibition."""
    known = alert_names() | {"PCIeHotplugRootCause", "PCIeHotplugDetachExplained"}
    rules = CONFIG["inhibit_rules"]
    (contract,) = [r for r in rules if DETACH_MATCHER in r["target_matchers"]]
    assert contract["source_matchers"] == [EXPLAINED_MATCHER, 'instance_uuid!=""']
    assert contract["equal"] == ["instance_uuid"]
    for rule in rules:
        (equal,) = rule["equal"]
        assert f'{equal}!=""' in rule["source_matchers"]
        for matcher in rule["source_matchers"] + rule["target_matchers"]:
            m = re.fullmatch(r'alertname(=~|=)"(.*)"', matcher)
            if m and matcher != DETACH_MATCHER:
                names = m.group(2).split("|") if m.group(1) == "=~" else [m.group(2)]
                assert set(names) <= known, matcher


def test_explained_marker_mutes_exactly_its_instances_detach_alerts(tmp_path: Path) -> None:
    """Real Alertmanager, our config: detach alerts of image A reach the correlator at once;
    the test (acting as the correlator) pushes PCIeHotplugRootCause for A and
    PCIeHotplugDetachExplained for u-1 only (u-2 has no facts). On-call gets the root cause,
    u-2's and image B's detach alerts, never u-1's, until the marker resolves."""
    recorder = Recorder().start()
    try:
        am = servers.alertmanager(
            tmp_path / "am",
            loopback_am_config(recorder.url + "/oncall", recorder.url + "/correlator", ONCALL_WAIT),
        )
        with servers.running(am):
            a_alerts = [
                detach_alert("NovaDeviceDetachEventTimeout", "img-a", "u-1", "vdb"),
                detach_alert("NovaDeviceDetachFailed", "img-a", "u-1", "vdc"),
                detach_alert("NovaDeviceDetachFailed", "img-a", "u-2", "vdc"),
            ]
            post_alerts(am.url, a_alerts)

            def correlator_has_a() -> bool:
                got = {a["labels"]["instance_uuid"] for a in recorder.alerts("/correlator")}
                return {"u-1", "u-2"} <= got

            servers.wait_until(correlator_has_a, timeout=20, what="detach alerts at correlator")

            root_cause = {
                "labels": {
                    "alertname": "PCIeHotplugRootCause",
                    "image_id": "img-a",
                    "root_cause": "pcie_aspm_off",
                    "severity": "critical",
                },
                "annotations": {"summary": "pcie_aspm=off", "runbook_url": "x"},
                "endsAt": rfc3339(300),
            }
            explained = {
                "labels": {
                    "alertname": "PCIeHotplugDetachExplained",
                    "instance_uuid": "u-1",
                    "image_id": "img-a",
                    "root_cause": "pcie_aspm_off",
                    "host": "cmp-1",
                },
                "annotations": {"summary": "explained"},
                "endsAt": rfc3339(300),
            }
            post_alerts(am.url, [root_cause, explained])
            post_alerts(am.url, [detach_alert("NovaDeviceDetachFailed", "img-b", "u-3", "vdd")])

            def oncall_has(uuid_or_image: str, alertname_re: str) -> bool:
                return any(
                    uuid_or_image in (a["labels"].get("image_id"), a["labels"].get("instance_uuid"))
                    and re.fullmatch(alertname_re, a["labels"]["alertname"])
                    for a in recorder.alerts("/oncall")
                )

            # B's group was created after A's with the same group_wait, so once B's detach
            # alerts are delivered, A's group has been flushed too (and u-1's muted).
            servers.wait_until(
                lambda: (
                    oncall_has("img-b", DETACH_ALERTNAME.pattern)
                    and oncall_has("u-2", DETACH_ALERTNAME.pattern)
                    and oncall_has("img-a", "PCIeHotplugRootCause")
                ),
                timeout=90,  # ONCALL_WAIT, then a generous bound
                what="root cause, u-2's and image B's detach alerts at on-call",
            )
            assert not oncall_has("u-1", DETACH_ALERTNAME.pattern)
            assert not oncall_has("u-1", "PCIeHotplugDetachExplained")

            listed = servers.http_json(am.url + '/api/v2/alerts?filter=image_id="img-a"')
            states = {
                (a["labels"]["alertname"], a["labels"].get("instance_uuid", "")): (
                    a["status"]["state"],
                    a["status"]["inhibitedBy"],
                )
                for a in listed  # type: ignore[union-attr]
            }
            assert states[("PCIeHotplugRootCause", "")] == ("active", [])
            for name in ("NovaDeviceDetachEventTimeout", "NovaDeviceDetachFailed"):
                state, by = states[(name, "u-1")]
                assert state == "suppressed" and len(by) == 1
            assert states[("NovaDeviceDetachFailed", "u-2")] == ("active", [])

            # Resolve the marker: u-1's detach alerts now page, so it was the inhibition (not
            # routing) that held them back.
            post_alerts(am.url, [{**explained, "endsAt": rfc3339(-1)}])
            servers.wait_until(
                lambda: oncall_has("u-1", DETACH_ALERTNAME.pattern),
                timeout=30,
                what="u-1's detach alerts after the marker resolved",
            )
    finally:
        recorder.stop()
