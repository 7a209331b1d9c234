"""The set of host-side alerts firing now, merged from Alertmanager polls and webhooks.

Each source is an observation with a time: a poll snapshot says "these alerts were active when
I asked", a webhook says "this alert was firing/resolved when I was sent". The newest
observation of an alert wins, so a lost webhook or a restart only delays the truth, a
duplicated or replayed webhook changes nothing, and a webhook-only deployment still works
(webhook alerts count until `alert_ttl` passes without a newer word on them).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from correlator.matchers import Matcher, match_all
from correlator.model import FIRING, Alert


@dataclass
class _Heard:
    alert: Alert
    received_at: float


@dataclass(frozen=True)
class Snapshot:
    """The active alerts one Alertmanager returned, and when we asked."""

    started_at: float
    alerts: dict[str, Alert]


@dataclass
class WebhookOutcome:
    """How the alerts of one webhook delivery were taken."""

    accepted: int = 0
    duplicate: int = 0
    stale: int = 0
    ignored: int = 0

    @property
    def changed(self) -> bool:
        """Whether the delivery said anything new (worth an early reconcile)."""
        return self.accepted > 0


@dataclass
class AlertInbox:
    """Merges webhook deliveries and poll snapshots into the alerts firing now."""

    matchers: Sequence[Matcher]
    ttl: float
    _heard: dict[str, _Heard] = field(default_factory=dict)
    _snapshots: dict[str, Snapshot] = field(default_factory=dict)

    def add_webhook(self, alerts: Iterable[Alert], now: float) -> WebhookOutcome:
        """Take the alerts of one webhook delivery (already validated)."""
        out = WebhookOutcome()
        for alert in alerts:
            if not match_all(self.matchers, alert.labels):
                out.ignored += 1
                continue
            prev = self._heard.get(alert.fingerprint)
            if prev is not None:
                old = prev.alert
                same = (old.status, old.starts_at, old.ends_at) == (
                    alert.status,
                    alert.starts_at,
                    alert.ends_at,
                )
                if same:
                    prev.received_at = max(prev.received_at, now)
                    out.duplicate += 1
                    continue
                older_run = (alert.starts_at or 0) < (old.starts_at or 0)
                replayed = alert.starts_at == old.starts_at and alert.status == FIRING
                if older_run or (replayed and old.status != FIRING):
                    out.stale += 1
                    continue
            self._heard[alert.fingerprint] = _Heard(alert, now)
            out.accepted += 1
        return out

    def add_snapshot(self, source: str, alerts: Iterable[Alert], started_at: float) -> None:
        """Record what one Alertmanager reported active at `started_at` (matchers applied there)."""
        self._snapshots[source] = Snapshot(started_at, {a.fingerprint: a for a in alerts})

    def firing(self, now: float) -> dict[str, Alert]:
        """Alerts firing by the newest observation of each, keyed by fingerprint."""
        snaps = [s for s in self._snapshots.values() if now - s.started_at <= self.ttl]
        result: dict[str, Alert] = {}
        seen_at: dict[str, float] = {}
        for snap in sorted(snaps, key=lambda s: s.started_at):
            for fp, alert in snap.alerts.items():
                result[fp] = alert
                seen_at[fp] = snap.started_at
        for fp, heard in self._heard.items():
            alert = heard.alert
            if fp in result:
                if alert.status != FIRING and heard.received_at > seen_at[fp]:
                    del result[fp]
                continue
            if alert.status != FIRING or now - heard.received_at > self.ttl:
                continue
            if alert.ends_at is not None and alert.ends_at < now:
                continue
            if any(s.started_at > heard.received_at for s in snaps):
                continue  # a later poll no longer lists it
            result[fp] = alert
        return result

    def prune(self, now: float) -> None:
        """Forget webhook alerts older than the TTL (they can no longer count or block a replay)."""
        for fp in [fp for fp, h in self._heard.items() if now - h.received_at > self.ttl]:
            del self._heard[fp]

    def __len__(self) -> int:
        return len(self._heard)
