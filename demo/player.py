"""The host control plane, replayed: detach a volume from every guest, the way Nova does.

For each guest the player sends the equivalent of `device_del` (the guest is shown as its real
capture looked after the host's unplug request) and, where QEMU never emitted DEVICE_DELETED in
that capture (or the guest runs on the broken host, whose device_del never reaches QEMU), raises
what a cloud's log-based alerting raises for Nova
(kernel-facts §7.2-7.3): `NovaDeviceDetachEventTimeout` on each of the 8 attempts, then
`NovaDeviceDetachFailed`. Attempts are `attempt_seconds` apart (Nova: 20 s; compressed here).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from demo.fleet import BROKEN_HOST, Fleet, FleetGuest, would_hang
from demo.plane import post_alerts, rfc3339

ATTEMPTS = 8  # Nova [libvirt]device_detach_attempts
TIMEOUT_ALERT = "NovaDeviceDetachEventTimeout"
FAILED_ALERT = "NovaDeviceDetachFailed"


def nova_alert(alertname: str, guest: FleetGuest, reason: str, ttl: float) -> dict:
    """One host-side alert with the labels of kernel-facts §7.3 (what the correlator expects)."""
    return {
        "labels": {
            "alertname": alertname,
            "severity": "warning",
            "service": "nova-compute",
            "host": guest.host,
            "instance_uuid": guest.instance_uuid,
            "domain": f"instance-{guest.name}",
            "device": "vdb",
            "device_alias": "virtio-disk1",
            "device_type": "volume",
            "image_id": guest.image_id,
            "machine_type": "pc-q35-6.0" if guest.capture.scenario != "i440fx_normal" else "pc",
            "reason": reason,
        },
        "annotations": {
            "summary": f"Detach of vdb from {guest.instance_uuid} timed out",
            "description": (
                f"Waiting for libvirt event about the detach of device vdb with device alias "
                f"virtio-disk1 from instance {guest.instance_uuid} is timed out."
            ),
        },
        "startsAt": rfc3339(),
        "endsAt": rfc3339(ttl),
        "generatorURL": f"http://nova-logs.invalid/{guest.host}",
    }


@dataclass
class Player:
    """Replays detach requests and the resulting alert flood against one Alertmanager."""

    fleet: Fleet
    alertmanager_url: str
    attempt_seconds: float = 1.0
    spread_seconds: float = 10.0
    seed: int = 7
    on_event: Callable[[str], None] = lambda _msg: None
    raised: int = 0  # alert notifications sent (one per attempt, as Nova logs them)
    detached: int = 0
    hung: list[str] = field(default_factory=list)
    _firing: dict[tuple[str, str], dict] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        """Detach from every guest (in a shuffled order over spread_seconds), then keep the
        firing alerts alive until stop(): Alertmanager forgets alerts that are not re-sent."""
        order = list(self.fleet.guests.values())
        random.Random(self.seed).shuffle(order)
        start = time.monotonic()
        pending: list[tuple[float, FleetGuest, int]] = []
        for i, guest in enumerate(order):
            at = start + self.spread_seconds * i / max(1, len(order))
            pending.append((at, guest, 0))
        pending.sort(key=lambda p: p[0])
        while pending and not self._stop.is_set():
            at, guest, attempt = pending.pop(0)
            self._stop.wait(max(0.0, at - time.monotonic()))
            if self._stop.is_set():
                break
            if attempt == 0:
                if guest.host != BROKEN_HOST:
                    self.fleet.advance(guest.name, "after_unplug")  # the host sent device_del
                self.detached += 1
                if not would_hang(guest):
                    continue
                self.hung.append(guest.name)
                self.on_event(f"detach of vdb from {guest.name} ({guest.image_id}) hangs")
            attempt += 1
            self._fire(guest, TIMEOUT_ALERT, "event_timeout")
            if attempt == ATTEMPTS:
                self._fire(guest, FAILED_ALERT, "run_out_of_retry")
            else:
                pending.append((at + self.attempt_seconds, guest, attempt))
                pending.sort(key=lambda p: p[0])
        self.done.set()
        while not self._stop.wait(5.0):
            self._resend()

    def _fire(self, guest: FleetGuest, alertname: str, reason: str) -> None:
        alert = nova_alert(alertname, guest, reason, ttl=300)
        with self._lock:
            key = (guest.name, alertname)
            if key in self._firing:
                alert["startsAt"] = self._firing[key]["startsAt"]
            self._firing[key] = alert
            self.raised += 1
        post_alerts(self.alertmanager_url, [alert])

    def _resend(self) -> None:
        with self._lock:
            alerts = [dict(a, endsAt=rfc3339(300)) for a in self._firing.values()]
        for i in range(0, len(alerts), 500):
            post_alerts(self.alertmanager_url, alerts[i : i + 500])

    def firing(self) -> int:
        with self._lock:
            return len(self._firing)

    def stop(self) -> None:
        self._stop.set()
