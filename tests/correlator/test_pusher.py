"""The push outbox: what is (re-)sent when, and the backoff after failures."""

from __future__ import annotations

import asyncio

from correlator.sources.alertmanager import AlertmanagerClient, OutgoingAlert, Pusher

LABELS = {"alertname": "PCIeHotplugRootCause", "image_id": "img", "root_cause": "x"}


def pusher() -> Pusher:
    client = AlertmanagerClient(session=None, url="http://127.0.0.1:1")  # type: ignore[arg-type]
    return Pusher(client, push_ttl=300, retry_initial=0.5, retry_max=30)


def sent(p: Pusher, now: float) -> None:
    """Record everything pending as delivered at `now` (what a successful flush does)."""
    for key, item in list(p.pending.items()):
        p.last_sent[key] = (item.alert.signature(), now, item.alert.ends_at is not None)
        del p.pending[key]


def test_firing_alerts_are_resent_after_the_interval_and_changes_go_at_once():
    p = pusher()
    firing = OutgoingAlert(LABELS, {"summary": "s"}, 1.0, "http://c/incidents/1")
    assert p.offer([firing], now=10.0, resend_interval=60) == 1
    assert p.offer([firing], now=11.0, resend_interval=60) == 0  # already waiting
    sent(p, 12.0)
    assert p.offer([firing], now=30.0, resend_interval=60) == 0
    assert p.offer([firing], now=72.0, resend_interval=60) == 1  # due for a re-send
    sent(p, 72.0)
    changed = OutgoingAlert(LABELS, {"summary": "new"}, 1.0, "http://c/incidents/1")
    assert p.offer([changed], now=73.0, resend_interval=60) == 1


def test_a_newer_state_replaces_the_pending_one_and_resolutions_go_once():
    p = pusher()
    firing = OutgoingAlert(LABELS, {}, 1.0, "u")
    resolved = OutgoingAlert(LABELS, {}, 1.0, "u", ends_at=50.0)
    p.offer([firing], now=10.0, resend_interval=60)
    p.offer([resolved], now=11.0, resend_interval=60)
    assert len(p.pending) == 1 and p.pending[firing.key].alert is resolved
    sent(p, 12.0)
    assert p.offer([resolved], now=500.0, resend_interval=60) == 0


def test_payload_has_a_rolling_ends_at_for_firing_and_a_fixed_one_when_resolved():
    firing = OutgoingAlert(LABELS, {"summary": "s"}, 0.0, "u").payload(now=100.0, ttl=300)
    assert firing["endsAt"] == "1970-01-01T00:06:40.000Z"
    assert firing["startsAt"] == "1970-01-01T00:00:00.000Z"
    resolved = OutgoingAlert(LABELS, {}, 0.0, "u", ends_at=42.0).payload(now=100.0, ttl=300)
    assert resolved["endsAt"] == "1970-01-01T00:00:42.000Z"


def test_failures_back_off_exponentially_up_to_the_maximum_and_nothing_is_dropped():
    p = pusher()
    p.offer([OutgoingAlert(LABELS, {}, 0.0, "u")], now=1.0, resend_interval=60)
    errors = []
    p.on_error = lambda: errors.append(1)

    async def fail_three_times() -> None:
        import aiohttp

        async with aiohttp.ClientSession() as session:
            p.client = AlertmanagerClient(session, "http://127.0.0.1:9", timeout=2)
            for _ in range(3):
                assert await p.flush_once() is False

    asyncio.run(fail_three_times())
    assert len(errors) == 3 and len(p.pending) == 1
    assert p.backoff() == 2.0
    p.failures = 10
    assert p.backoff() == 30
