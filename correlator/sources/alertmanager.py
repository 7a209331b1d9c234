"""Alertmanager API v2: read the firing host-side alerts, push incident alerts with retries.

Reading asks for active, silenced, inhibited and unprocessed alerts alike: once the root-cause
alert fires, the inhibit rule suppresses the per-VM detach alerts, and they must still count
as the incident's members. Pushing keeps an outbox per Alertmanager: the newest desired state
of each incident labelset waits there until that Alertmanager accepts it, retried with
exponential backoff, so an Alertmanager outage delays an incident but never loses it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import aiohttp

from correlator.matchers import Matcher
from correlator.model import FIRING, Alert, format_time, labels_fingerprint, parse_time

log = logging.getLogger(__name__)
_FORGET_RESOLVED = 3600.0  # seconds a delivered resolution is remembered (blocks re-sending it)


class AlertmanagerError(Exception):
    """An Alertmanager did not answer, or answered with an error."""


def _alert_from_api(raw: Mapping[str, object]) -> Alert:
    labels = raw["labels"]
    if not isinstance(labels, dict):
        raise ValueError("labels is not an object")
    status = raw.get("status") or {}
    starts = raw.get("startsAt")
    ends = raw.get("endsAt")
    return Alert(
        fingerprint=str(raw.get("fingerprint") or labels_fingerprint(labels)),
        labels=labels,
        status=FIRING,
        starts_at=parse_time(starts) if isinstance(starts, str) else None,
        ends_at=parse_time(ends) if isinstance(ends, str) else None,
        annotations=raw.get("annotations") or {},  # type: ignore[arg-type]
        generator_url=str(raw.get("generatorURL") or ""),
        suppressed=isinstance(status, dict) and status.get("state") == "suppressed",
    )


class AlertmanagerClient:
    """HTTP calls to one Alertmanager."""

    def __init__(self, session: aiohttp.ClientSession, url: str, timeout: float = 10.0) -> None:
        self.session = session
        self.url = url.rstrip("/")
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self._known: dict[tuple[object, ...], Alert] = {}

    def _alerts(self, raw: list[dict[str, object]]) -> list[Alert]:
        """Parse the API's alerts, reusing the Alert of any alert unchanged since the last poll."""
        known: dict[tuple[object, ...], Alert] = {}
        out = []
        for item in raw:
            status = item.get("status")
            state = status.get("state") if isinstance(status, dict) else None
            key = (item.get("fingerprint"), item.get("startsAt"), item.get("endsAt"), state)
            alert = self._known.get(key) if key[0] else None
            if alert is None:
                alert = _alert_from_api(item)
            known[key] = alert
            out.append(alert)
        self._known = known
        return out

    async def active_alerts(self, matchers: Sequence[Matcher]) -> list[Alert]:
        """Every active alert (including silenced, inhibited, unprocessed) passing the matchers."""
        params = [
            ("active", "true"),
            ("silenced", "true"),
            ("inhibited", "true"),
            ("unprocessed", "true"),
        ] + [("filter", m.text()) for m in matchers]
        body = await self._request("GET", params=params)
        try:
            return await asyncio.to_thread(lambda: self._alerts(json.loads(body)))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise AlertmanagerError(f"{self.url} returned malformed alerts: {e}") from e

    async def post_alerts(self, alerts: list[dict[str, object]]) -> None:
        """POST /api/v2/alerts; raises AlertmanagerError unless Alertmanager accepted them."""
        await self._request("POST", json=alerts)

    async def _request(self, method: str, **kwargs: object) -> bytes:
        """One call to /api/v2/alerts; the body on HTTP 200, else AlertmanagerError."""
        try:
            async with self.session.request(
                method, f"{self.url}/api/v2/alerts", timeout=self.timeout, **kwargs
            ) as resp:
                body = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as e:
            raise AlertmanagerError(f"{self.url} unreachable: {e or type(e).__name__}") from e
        if status != 200:
            raise AlertmanagerError(
                f"{self.url} {method} /api/v2/alerts: HTTP {status}: {body[:200]!r}"
            )
        return body


@dataclass(frozen=True)
class OutgoingAlert:
    """The desired state of one incident alert in Alertmanager.

    `ends_at` None means firing: endsAt is set to send time + push TTL, so an alert that stops
    being re-sent expires by itself. A resolved alert carries its resolution time.
    """

    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    starts_at: float
    generator_url: str
    ends_at: float | None = None

    @property
    def key(self) -> str:
        """Identity in Alertmanager: the label set's fingerprint."""
        return labels_fingerprint(self.labels)

    def signature(self) -> str:
        """What must be re-sent when it changes (everything but the rolling endsAt)."""
        return json.dumps(
            [self.labels, self.annotations, self.starts_at, self.generator_url, self.ends_at],
            sort_keys=True,
        )

    def payload(self, now: float, ttl: float) -> dict[str, object]:
        """The JSON object for POST /api/v2/alerts."""
        return {
            "labels": dict(self.labels),
            "annotations": dict(self.annotations),
            "startsAt": format_time(self.starts_at),
            "endsAt": format_time(self.ends_at if self.ends_at is not None else now + ttl),
            "generatorURL": self.generator_url,
        }


@dataclass
class _Pending:
    alert: OutgoingAlert
    enqueued_at: float


@dataclass
class Pusher:
    """The outbox and retry loop for one Alertmanager."""

    client: AlertmanagerClient
    push_ttl: float
    retry_initial: float
    retry_max: float
    on_error: Callable[[], None] = lambda: None
    on_delivered: Callable[[float], None] = lambda latency: None
    pending: dict[str, _Pending] = field(default_factory=dict)
    last_sent: dict[str, tuple[str, float, bool]] = field(default_factory=dict)
    failures: int = 0
    _wake: asyncio.Event = field(default_factory=asyncio.Event)

    def offer(self, alerts: Sequence[OutgoingAlert], now: float, resend_interval: float) -> int:
        """Queue alerts that changed, or fire and are due for a re-send; returns how many."""
        queued = 0
        for key in [k for k, s in self.last_sent.items() if s[2] and now - s[1] > _FORGET_RESOLVED]:
            del self.last_sent[key]
        for alert in alerts:
            key, sig = alert.key, alert.signature()
            waiting = self.pending.get(key)
            if waiting is not None:
                if waiting.alert.signature() != sig:
                    self.pending[key] = _Pending(alert, now)
                continue
            sent = self.last_sent.get(key)
            unchanged = sent is not None and sent[0] == sig
            if unchanged and (alert.ends_at is not None or now - sent[1] < resend_interval):
                continue
            self.pending[key] = _Pending(alert, now)
            queued += 1
        if self.pending:
            self._wake.set()
        return queued

    async def flush_once(self) -> bool:
        """Try to deliver everything pending in one request; True when the outbox emptied."""
        batch = dict(self.pending)
        if not batch:
            return True
        now = time.time()
        payload = [p.alert.payload(now, self.push_ttl) for p in batch.values()]
        try:
            await self.client.post_alerts(payload)
        except AlertmanagerError as e:
            self.failures += 1
            self.on_error()
            level = logging.WARNING if self.failures == 1 else logging.DEBUG
            log.log(level, "push of %d incident alert(s) failed, will retry: %s", len(payload), e)
            return False
        log.debug("pushed %d incident alert(s) to %s", len(payload), self.client.url)
        if self.failures:
            log.warning("push to %s works again after %d failures", self.client.url, self.failures)
        self.failures = 0
        done = time.time()
        for key, item in batch.items():
            resolved = item.alert.ends_at is not None
            self.last_sent[key] = (item.alert.signature(), done, resolved)
            if self.pending.get(key) is item:
                del self.pending[key]
            self.on_delivered(done - item.enqueued_at)
        return not self.pending

    def backoff(self) -> float:
        """Seconds to wait after the current run of failures."""
        return min(self.retry_max, self.retry_initial * 2 ** max(0, self.failures - 1))

    async def run(self) -> None:
        """Deliver forever: wait for work, send, back off after failures."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while not await self.flush_once():
                if self.failures:
                    await asyncio.sleep(self.backoff())
