"""High availability on existing engines: two correlator replicas and two Alertmanagers
clustered by their own gossip on loopback, each replica reading from and pushing to both
Alertmanagers, each Alertmanager delivering webhooks to both replicas. On-call gets one
notification per image; SIGKILL of one replica and one Alertmanager during a flood loses
nothing and doubles nothing."""

from __future__ import annotations

import signal
from collections import Counter
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.alerts.pipeline import Recorder
from tests.correlator.conftest import Fleet
from tests.correlator.support import DETACH, FAST, ROOT_CAUSE, Correlator, detach_alert
from tests.reliability.support import (
    ControlPlane,
    exact_incidents,
    flood,
    one_root_cause_per_image,
)
from tests.support import servers

PEER_TIMEOUT = "10s"
PEER_SECONDS = 10


def ha_am_config(replica_urls: list[str], oncall_url: str) -> dict:
    """Detach alerts to both replicas' webhook; incidents to on-call; the project's inhibit."""
    hooks = [{"url": f"{u}/api/v1/webhook", "send_resolved": True} for u in replica_urls]
    return {
        "route": {
            "receiver": "blackhole",
            "group_by": ["image_id"],
            "group_wait": "0s",
            "group_interval": "1s",
            "repeat_interval": "1h",
            "routes": [
                {"receiver": "correlators", "matchers": [f'alertname="{DETACH}"']},
                {"receiver": "oncall", "matchers": [f'alertname="{ROOT_CAUSE}"']},
            ],
        },
        "receivers": [
            {"name": "correlators", "webhook_configs": hooks},
            {"name": "oncall", "webhook_configs": [{"url": f"{oncall_url}/oncall"}]},
            {"name": "blackhole"},
        ],
        "inhibit_rules": [
            {
                "source_matchers": [f'alertname="{ROOT_CAUSE}"'],
                "target_matchers": [f'alertname="{DETACH}"'],
                "equal": ["image_id"],
            }
        ],
    }


def am_metric(am: servers.Server, name: str) -> float:
    """Sum of one metric of an Alertmanager's own /metrics."""
    status, body = servers.http_get(am.url + "/metrics")
    assert status == 200
    return sum(
        s.value
        for fam in text_string_to_metric_families(body.decode())
        for s in fam.samples
        if s.name == name
    )


def cluster_ready(am: servers.Server, peers: int) -> bool:
    """Alertmanager's own word (GET /api/v2/status): gossip settled, with `peers` members."""
    try:
        cluster = servers.http_json(am.url + "/api/v2/status")["cluster"]  # type: ignore[index]
    except OSError:
        return False
    return cluster["status"] == "ready" and len(cluster.get("peers") or []) == peers


def notifications(recorder: Recorder) -> Counter:
    """Firing on-call notifications per image."""
    return Counter(
        a["labels"]["image_id"] for a in recorder.alerts("/oncall") if a["status"] == "firing"
    )


def wait_dedup_rounds(ams: list[servers.Server], rounds: int = 5) -> None:
    """Wait until every Alertmanager ran `rounds` more notification-log lookups (its dedup
    stage, which the second runs only after its PEER_TIMEOUT wait): each on-call group has
    decided by then, so a duplicate notification would have been sent."""
    start = {am.name: am_metric(am, "alertmanager_nflog_queries_total") for am in ams}
    for am in ams:
        servers.wait_until(
            lambda a=am: am_metric(a, "alertmanager_nflog_queries_total") >= start[a.name] + rounds,
            timeout=PEER_SECONDS * (rounds + 1) + 60,
            what=f"{am.name} dedup rounds",
        )


def test_two_replicas_two_clustered_alertmanagers_one_notification_per_image(
    fleet: Fleet, tmp_path: Path
):
    recorder = Recorder().start()
    am_ports = [servers.free_port(), servers.free_port()]
    cluster_ports = [servers.free_port(), servers.free_port()]
    am_urls = [f"http://127.0.0.1:{p}" for p in am_ports]
    replicas = [
        Correlator(tmp_path / f"replica-{i}", fleet.prometheus.url, am_urls, FAST) for i in range(2)
    ]
    config = ha_am_config([r.url for r in replicas], recorder.url)
    ams = []
    for i in range(2):
        am = servers.alertmanager(
            tmp_path / f"am-{i}",
            config,
            port=am_ports[i],
            cluster_port=cluster_ports[i],
            peers=[f"127.0.0.1:{cluster_ports[1 - i]}"],
        )
        am.name = f"alertmanager-{i}"
        # The second waits PEER_TIMEOUT for the first's notification log to arrive by gossip,
        # then dedups: generous, so a loaded machine's slow gossip cannot double a page.
        am.argv.append(f"--cluster.peer-timeout={PEER_TIMEOUT}")
        ams.append(am)
    try:
        for r in replicas:
            r.start()
        for am in ams:
            am.start()
        for am in ams:
            servers.wait_until(lambda a=am: cluster_ready(a, 2), timeout=120, what="cluster")
        first = flood("ha", images=3, instances=10)
        with ControlPlane(am_urls) as cp:  # the control plane sends to both, like Prometheus
            cp.add(a for alerts in first.values() for a in alerts)
            for r in replicas:
                servers.wait_until(
                    lambda r=r: exact_incidents(r, first), timeout=120, what=f"{r.url}"
                )
            for url in am_urls:
                servers.wait_until(
                    lambda u=url: one_root_cause_per_image(u, first), timeout=120, what=url
                )
            servers.wait_until(
                lambda: set(notifications(recorder)) == set(first), timeout=120, what="paged"
            )
            wait_dedup_rounds(ams, rounds=len(first) + 1)  # one on-call group per image
            assert notifications(recorder) == dict.fromkeys(first, 1)
            verdicts = [
                {i["image_id"]: (i["root_cause"], i["counts"]) for i in r.incidents()}
                for r in replicas
            ]
            assert verdicts[0] == verdicts[1]  # identical labelsets: Alertmanager dedups them

            # One replica and one Alertmanager die during a flood.
            replicas[0].stop(signal.SIGKILL)
            ams[0].stop(signal.SIGKILL)
            second = flood("ha-late", images=2, instances=10)
            grown = {
                image: alerts
                + [
                    detach_alert(f"{image}-vm-{i}", image, host=f"cmp-{i % 5}", device="vdd")
                    for i in range(10)
                ]
                for image, alerts in first.items()
            }
            cp.add(a for image in grown for a in grown[image][len(first[image]) :])
            cp.add(a for alerts in second.values() for a in alerts)
            expected = grown | second
            survivor = replicas[1]
            incidents = servers.wait_until(
                lambda: exact_incidents(survivor, expected),
                timeout=120,
                what="survivor has everything",
            )
            assert {i: incidents[i]["counts"]["alerts"] for i in grown} == dict.fromkeys(grown, 30)
            servers.wait_until(
                lambda: one_root_cause_per_image(am_urls[1], expected),
                timeout=120,
                what="surviving AM",
            )
            servers.wait_until(
                lambda: set(notifications(recorder)) == set(expected),
                timeout=120,
                what="new images paged",
            )
            wait_dedup_rounds(ams[1:], rounds=len(expected) + 1)
            assert notifications(recorder) == dict.fromkeys(expected, 1)
    finally:
        recorder.stop()
        for server in [*ams, *(r.server for r in replicas if r.server)]:
            server.stop()
