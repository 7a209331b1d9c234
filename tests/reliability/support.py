"""Helpers for the fault and HA tests: a control plane that keeps re-sending its detach alerts
to Alertmanager (as Prometheus re-sends firing alerts), floods over many images, and checks
that every image has exactly one incident holding exactly its alerts."""

from __future__ import annotations

import contextlib
import threading
import urllib.error
from collections.abc import Iterable, Sequence

from tests.correlator.support import DETACH, Correlator, am_alerts, detach_alert, post_alerts
from tests.support import servers


def flood(prefix: str, images: int, instances: int, devices: Sequence[str] = ("vdb", "vdc")):
    """Detach alerts of `instances` instances per image over 5 hosts; {image_id: [alerts]}."""
    out: dict[str, list[dict]] = {}
    for k in range(images):
        image = f"{prefix}-{k}"
        out[image] = [
            detach_alert(f"{image}-vm-{i}", image, host=f"cmp-{i % 5}", device=d)
            for i in range(instances)
            for d in devices
        ]
    return out


class ControlPlane:
    """Re-sends every alert it holds to each Alertmanager every `interval` seconds; an
    Alertmanager that is down simply misses those rounds, as with Prometheus."""

    def __init__(self, am_urls: Iterable[str], interval: float = 0.5) -> None:
        self.am_urls = list(am_urls)
        self.interval = interval
        self.alerts: list[dict] = []
        self.rounds = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def add(self, alerts: Iterable[dict]) -> None:
        """Hold more alerts (sent from the next round on)."""
        with self._lock:
            self.alerts += list(alerts)

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                batch = list(self.alerts)
            for url in self.am_urls:
                if batch:
                    with contextlib.suppress(urllib.error.URLError, OSError):
                        post_alerts(url, batch)
            self.rounds += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> ControlPlane:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def detach_count(am_url: str) -> int:
    """How many detach alerts an Alertmanager holds (0 when it does not answer)."""
    try:
        return len(am_alerts(am_url, DETACH))
    except (urllib.error.URLError, OSError):
        return 0


def reconciles(corr: Correlator) -> float:
    """How many reconciles the correlator has finished."""
    return corr.metric("pciehp_correlator_reconcile_duration_seconds_count")


def exact_incidents(corr: Correlator, expected: dict[str, list[dict]]) -> dict[str, dict] | None:
    """Incidents by image when each expected image has exactly one incident, firing, whose
    member count equals its alerts, and no other incident exists; else None."""
    try:
        incidents = corr.incidents()
    except (urllib.error.URLError, OSError):
        return None
    by_image: dict[str, list[dict]] = {}
    for inc in incidents:
        by_image.setdefault(inc["image_id"], []).append(inc)
    if set(by_image) != set(expected):
        return None
    out = {}
    for image, alerts in expected.items():
        found = by_image[image]
        if len(found) != 1 or found[0]["state"] != "firing":
            return None
        if found[0]["counts"]["alerts"] != len(alerts):
            return None
        if found[0]["counts"]["firing_alerts"] != len(alerts):
            return None
        out[image] = found[0]
    return out


def one_root_cause_per_image(am_url: str, images: Iterable[str]) -> bool:
    """Alertmanager holds exactly one PCIeHotplugRootCause per image, and no other."""
    try:
        alerts = am_alerts(am_url, "PCIeHotplugRootCause")
    except (urllib.error.URLError, OSError):
        return False
    # host incidents (host-side causes) carry `host`, not `image_id`
    got = sorted(a["labels"]["image_id"] for a in alerts if "image_id" in a["labels"])
    return got == sorted(images)


def wait_converged(
    corr: Correlator, am_url: str, expected: dict[str, list[dict]], timeout: float = 60
) -> dict[str, dict]:
    """Wait for exactly one incident per image in the correlator and in Alertmanager."""
    incidents = servers.wait_until(
        lambda: exact_incidents(corr, expected), timeout=timeout, what="one incident per image"
    )
    servers.wait_until(
        lambda: one_root_cause_per_image(am_url, expected),
        timeout=timeout,
        what="one root cause per image in Alertmanager",
    )
    return incidents
