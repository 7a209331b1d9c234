"""Which alerts fire: webhooks and poll snapshots merged by the newest observation (freezegun)."""

from __future__ import annotations

import time

from freezegun import freeze_time

from correlator.inbox import AlertInbox
from correlator.matchers import parse_matcher
from correlator.model import FIRING, RESOLVED, Alert

DETACH = parse_matcher('alertname=~".*Detach.*(Timeout|Failed).*"')


def alert(fp: str, status: str = FIRING, starts: float = 100.0, ends: float | None = None) -> Alert:
    return Alert(fp, {"alertname": "NovaDeviceDetachFailed", "i": fp}, status, starts, ends)


def inbox(ttl: float = 600) -> AlertInbox:
    return AlertInbox([DETACH], ttl)


def test_webhook_alerts_count_until_the_ttl_passes():
    box = inbox(ttl=600)
    with freeze_time("2026-11-25 12:00:00") as clock:
        box.add_webhook([alert("a")], time.time())
        assert set(box.firing(time.time())) == {"a"}
        clock.tick(599)
        assert set(box.firing(time.time())) == {"a"}
        clock.tick(2)
        assert box.firing(time.time()) == {}
        box.prune(time.time())
        assert len(box) == 0


def test_a_duplicate_refreshes_and_changes_nothing():
    box = inbox(ttl=600)
    with freeze_time("2026-11-25 12:00:00") as clock:
        assert box.add_webhook([alert("a"), alert("b")], time.time()).accepted == 2
        clock.tick(500)
        out = box.add_webhook([alert("a"), alert("b")], time.time())
        assert (out.accepted, out.duplicate, out.changed) == (0, 2, False)
        clock.tick(500)  # 1000 s after the first delivery, 500 after the duplicate
        assert set(box.firing(time.time())) == {"a", "b"}


def test_replays_of_an_older_state_are_stale():
    box = inbox()
    now = 1000.0
    box.add_webhook([alert("a")], now)
    assert box.add_webhook([alert("a", RESOLVED, ends=900.0)], now + 1).accepted == 1
    replay = box.add_webhook([alert("a")], now + 2)
    assert (replay.stale, replay.accepted) == (1, 0)
    assert box.firing(now + 3) == {}
    older_run = box.add_webhook([alert("a", starts=50.0)], now + 4)
    assert older_run.stale == 1
    refire = box.add_webhook([alert("a", starts=950.0)], now + 5)  # a new run of the alert
    assert refire.accepted == 1 and set(box.firing(now + 6)) == {"a"}


def test_alerts_the_matchers_do_not_select_are_ignored():
    box = inbox()
    other = Alert("x", {"alertname": "PCIeHotplugRootCause"}, FIRING, 1.0)
    out = box.add_webhook([other, alert("a")], 10.0)
    assert (out.ignored, out.accepted) == (1, 1)
    assert set(box.firing(11.0)) == {"a"}


def test_a_later_poll_overrides_a_webhook_and_vice_versa():
    box = inbox()
    box.add_webhook([alert("a"), alert("b")], 100.0)
    box.add_snapshot("am", [alert("b")], started_at=101.0)  # a is no longer active
    assert set(box.firing(102.0)) == {"b"}
    box.add_webhook([alert("b", RESOLVED, ends=103.0)], 103.0)  # newer than the poll
    assert box.firing(104.0) == {}
    box.add_snapshot("am", [alert("b")], started_at=105.0)  # still active after all
    assert set(box.firing(106.0)) == {"b"}
    box.add_webhook([alert("c")], 107.0)  # newer than every poll: counts until the next one
    assert set(box.firing(108.0)) == {"b", "c"}


def test_polls_of_an_ha_pair_are_merged_and_stale_snapshots_expire():
    box = inbox(ttl=60)
    box.add_snapshot("am1", [alert("a")], started_at=100.0)
    box.add_snapshot("am2", [alert("a"), alert("b")], started_at=100.0)
    assert set(box.firing(101.0)) == {"a", "b"}
    box.add_snapshot("am1", [], started_at=130.0)  # am2 unreachable since
    assert set(box.firing(131.0)) == {"a", "b"}
    assert box.firing(161.0) == {}  # am2's snapshot is older than the TTL
