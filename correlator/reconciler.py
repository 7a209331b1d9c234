"""The control loop: firing alerts + guest facts -> verdicts -> incidents -> Alertmanager.

Level-triggered: every reconcile re-reads what fires (each Alertmanager's `/api/v2/alerts`,
plus webhook alerts not yet contradicted) and what guests say (Prometheus), and makes the
incidents agree. A webhook only makes the next reconcile come sooner; bursts coalesce.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from correlator.config import Config
from correlator.diagnosis import DiagnosisTable
from correlator.inbox import AlertInbox, WebhookOutcome
from correlator.incidents import UNKNOWN_IMAGE, Incident, IncidentBook
from correlator.metrics import Metrics
from correlator.model import Alert, GuestFacts, Verdict, format_time
from correlator.sources.alertmanager import (
    AlertmanagerClient,
    AlertmanagerError,
    OutgoingAlert,
    Pusher,
)
from correlator.sources.prometheus import PrometheusError, PrometheusSource
from correlator.store import Store

log = logging.getLogger(__name__)
ALERTNAME = "PCIeHotplugRootCause"
EXPLAINED = "PCIeHotplugDetachExplained"
T = TypeVar("T")


@dataclass
class Upstream:
    """One Alertmanager: read from, and pushed to through its own outbox."""

    client: AlertmanagerClient
    pusher: Pusher


class Reconciler:
    """Owns the inbox, the incident book and the loop that reconciles them."""

    def __init__(
        self,
        config: Config,
        table: DiagnosisTable,
        store: Store,
        prometheus: PrometheusSource,
        upstreams: Sequence[Upstream],
        metrics: Metrics,
        external_url: str,
    ) -> None:
        self.config = config
        self.table = table
        self.store = store
        self.prometheus = prometheus
        self.upstreams = list(upstreams)
        self.metrics = metrics
        self.external_url = external_url.rstrip("/")
        self.inbox = AlertInbox(config.matchers, config.timings.alert_ttl)
        self.book = IncidentBook(config.labels, table, config.timings.hold_down)
        self.facts_cache: dict[str, GuestFacts] = {}
        self._peers_at = float("-inf")
        self.reconciles = 0
        self.last_queries = 0
        self._trigger = asyncio.Event()
        self._gauge_rows: set[tuple[str, str]] = set()
        self._failing: dict[str, bool] = {}
        self._verdicts: dict[str, tuple[GuestFacts, Verdict]] = {}
        for up in self.upstreams:
            up.pusher.on_error = metrics.push_failures.labels(up.client.url).inc
            metrics.am_errors.labels(up.client.url)  # a 0 series, so increase() sees the first
            up.pusher.on_delivered = metrics.push_latency.labels(up.client.url).observe
            metrics.push_queue.labels(up.client.url).set_function(
                lambda p=up.pusher: len(p.pending)
            )

    def restore(self) -> None:
        """Load incidents from storage; open ones take part in the next reconcile."""
        incidents, seq = self.store.load(self.config.history_limit)
        self.book.restore(incidents, seq)
        self._update_gauges()

    @property
    def ready(self) -> bool:
        """True once a first reconcile has completed."""
        return self.reconciles > 0

    # --- input -------------------------------------------------------------------------------

    def ingest_webhook(self, alerts: Sequence[Alert]) -> WebhookOutcome:
        """Take one validated webhook delivery; wakes the loop when it said something new."""
        out = self.inbox.add_webhook(alerts, time.time())
        m = self.metrics.alerts_received
        for result in ("accepted", "duplicate", "stale", "ignored"):
            n = getattr(out, result)
            if n:
                m.labels("webhook", result).inc(n)
        self.metrics.last_webhook.set_to_current_time()
        if out.changed:
            self.trigger()
        return out

    # --- the loop ----------------------------------------------------------------------------

    def trigger(self) -> None:
        """Ask for a reconcile soon (debounced)."""
        self._trigger.set()

    async def run(self) -> None:
        """Reconcile every `reconcile_interval`, or sooner (debounced) after webhooks."""
        t = self.config.timings
        while True:
            try:
                await asyncio.wait_for(self._trigger.wait(), timeout=t.reconcile_interval)
            except TimeoutError:
                pass
            else:
                await asyncio.sleep(t.webhook_debounce)
            self._trigger.clear()
            try:
                await self.reconcile_once()
            except Exception:
                log.exception("reconcile failed; retrying at the next interval")

    async def reconcile_once(self) -> list[Incident]:
        """One pass; returns the incidents that changed."""
        started = time.monotonic()
        now = time.time()
        queries_before = self.prometheus.queries_total
        # Facts of the instances already known (webhooks, last poll) load while Alertmanager
        # is read; instances the poll adds get theirs right after.
        known = {self.book.instance_of(a) for a in self.inbox.firing(now).values()}

        async def timed(what: str, work: Awaitable[T]) -> T:
            t = time.monotonic()
            try:
                return await work
            finally:
                log.debug("%s took %.0f ms", what, 1000 * (time.monotonic() - t))

        _, (stale, error) = await asyncio.gather(
            timed("reading Alertmanager", self._poll_alertmanagers(now)),
            timed(f"facts of {len(known)} known instances", self._refresh_facts(known, now)),
        )
        firing = self.inbox.firing(now)
        self.inbox.prune(now)
        uuids = {self.book.instance_of(a) for a in firing.values()}
        more, more_error = await self._refresh_facts(uuids - known, now)
        stale |= more
        error = error or more_error
        self._report("query Prometheus", error)
        self.last_queries = self.prometheus.queries_total - queries_before
        self.metrics.prom_queries.inc(self.last_queries)
        self.metrics.prom_queries_last.set(self.last_queries)
        # CPU-bound and touching nothing the HTTP handlers read: off the event loop.
        fetched = time.monotonic()
        facts, verdicts = await asyncio.to_thread(self._diagnose, uuids, stale, error, now)
        diagnosed = time.monotonic()
        changed = {i.id: i for i in self.book.update(firing, verdicts, facts, now)}
        for inc in await self._refresh_peers(now):
            changed[inc.id] = inc
        outgoing: list[OutgoingAlert] = []
        for inc in list({**{i.id: i for i in self.book.open.values()}, **changed}.values()):
            alerts, touched = self._outgoing(inc)
            outgoing += alerts
            if touched:
                changed[inc.id] = inc
        for up in self.upstreams:
            up.pusher.offer(outgoing, now, self.config.timings.resend_interval)
        queued = time.monotonic()
        if changed:  # pushes go out while this writes; a crash before it re-derives the same ids
            await asyncio.to_thread(self.store.save, list(changed.values()))
        log.debug(
            "reconcile: %d alerts, %d instances, %d queries, %d incidents changed; "
            "alerts+facts %.0f ms, diagnose %.0f ms, incidents %.0f ms, store %.0f ms",
            len(firing),
            len(uuids),
            self.last_queries,
            len(changed),
            1000 * (fetched - started),
            1000 * (diagnosed - fetched),
            1000 * (queued - diagnosed),
            1000 * (time.monotonic() - queued),
        )
        self.book.trim_history(self.config.history_limit)
        self.reconciles += 1
        self.metrics.firing_alerts.set(len(firing))
        self.metrics.reconcile_duration.observe(time.monotonic() - started)
        self.metrics.last_reconcile.set_to_current_time()
        self._update_gauges()
        return list(changed.values())

    async def _refresh_peers(self, now: float) -> list[Incident]:
        """Counter-evidence among guests without alerts: one query for every open incident's
        image, at most once per reconcile_interval. Returns the incidents that changed."""
        if now - self._peers_at < self.config.timings.reconcile_interval:
            return []
        incidents = [
            i
            for i in self.book.open.values()
            if i.kind == "image"
            and i.key_source in ("alert_label", "guest_label")
            and i.key != UNKNOWN_IMAGE
        ]
        if not incidents:
            return []
        try:
            peers = await self.prometheus.healthy_peers({i.key for i in incidents})
        except PrometheusError as e:
            self.metrics.prom_errors.inc()
            self._report("query Prometheus", str(e))
            return []
        self._peers_at = now
        return [i for i in incidents if i.set_healthy_peers(peers.get(i.key, set()))]

    async def _poll_alertmanagers(self, now: float) -> None:
        matchers = self.config.matchers
        results = await asyncio.gather(
            *(up.client.active_alerts(matchers) for up in self.upstreams), return_exceptions=True
        )
        for up, result in zip(self.upstreams, results, strict=True):
            if isinstance(result, AlertmanagerError):
                self.metrics.am_errors.labels(up.client.url).inc()
                self._report(f"read {up.client.url}", str(result))
            elif isinstance(result, BaseException):
                raise result
            else:
                self._report(f"read {up.client.url}", "")
                self.inbox.add_snapshot(up.client.url, result, now)
                self.metrics.alerts_received.labels("alertmanager", "polled").inc(len(result))

    async def _refresh_facts(self, uuids: set[str], now: float) -> tuple[set[str], str]:
        """Query facts of the instances whose cached facts are missing or old.

        Facts are cached per instance and re-queried once they are `reconcile_interval` old,
        so a webhook-triggered reconcile only asks Prometheus about instances it has no fresh
        facts for. Returns (the instances it tried, the error if Prometheus failed).
        """
        cache = self.facts_cache
        refresh = self.config.timings.reconcile_interval
        stale = {
            u for u in uuids if u and (u not in cache or now - cache[u].observed_at >= refresh)
        }
        if not stale:
            return stale, ""
        try:
            fresh = await self.prometheus.facts(stale, now)
        except PrometheusError as e:
            self.metrics.prom_errors.inc()
            return stale, str(e)
        for uuid in stale - fresh.keys():
            cache.pop(uuid, None)
        cache.update(fresh)
        return stale, ""

    def _diagnose(
        self, uuids: set[str], stale: set[str], error: str, now: float
    ) -> tuple[dict[str, GuestFacts], dict[str, Verdict]]:
        """Facts and verdicts for the affected instances (cached verdicts for unchanged facts)."""
        cache = self.facts_cache
        for uuid in [u for u in cache if u not in uuids]:
            del cache[uuid]
            self._verdicts.pop(uuid, None)
        facts: dict[str, GuestFacts] = {}
        verdicts: dict[str, Verdict] = {}
        for uuid in uuids:
            if not uuid:
                label = self.config.labels.instance_uuid
                verdicts[uuid] = self.table.diagnose(
                    None, f"the alert has no {label} label (config alerts.labels.instance_uuid)"
                )
                continue
            f = cache.get(uuid)
            unrefreshed = bool(error) and uuid in stale
            if f is not None and unrefreshed and now - f.observed_at > self.config.facts_max_age:
                f = None
            if f is None:
                why = f"Prometheus unreachable: {error}" if unrefreshed else ""
                verdicts[uuid] = self.table.diagnose(None, why)
                continue
            facts[uuid] = f
            known = self._verdicts.get(uuid)
            if known is not None and known[0] is f:
                v = known[1]
            else:
                v = self.table.diagnose(f)
                self._verdicts[uuid] = (f, v)
            if unrefreshed:
                note = (
                    f"facts as of {format_time(f.observed_at)}; "
                    f"Prometheus unreachable since: {error}"
                )
                v = Verdict(v.cause, (*v.evidence, note), v.guest_can_unplug)
            verdicts[uuid] = v
        return facts, verdicts

    def _report(self, what: str, error: str) -> None:
        """Log a source failing, and recovering, once per transition (not every reconcile)."""
        was = self._failing.get(what)
        if error and not was:
            log.warning("cannot %s: %s", what, error)
        elif not error and was:
            log.warning("can %s again", what)
        self._failing[what] = bool(error)

    # --- output ------------------------------------------------------------------------------

    def incident_url(self, inc: Incident) -> str:
        """The incident's HTML page (the pushed alert's generatorURL)."""
        return f"{self.external_url}/incidents/{inc.id}"

    def _outgoing(self, inc: Incident) -> tuple[list[OutgoingAlert], bool]:
        """Desired Alertmanager state for one incident; resolves labelsets it no longer uses.

        While open: the incident's PCIeHotplugRootCause (labelled by image, or by host for a
        host incident), and one non-notifying PCIeHotplugDetachExplained per instance whose
        detach alerts the incident explains; Alertmanager's inhibit rule mutes exactly those.
        """
        cause = self.table.by_id.get(inc.root_cause, self.table.fallback)
        labels = {"alertname": ALERTNAME, "root_cause": inc.root_cause, "severity": cause.severity}
        if inc.kind == "host":
            labels["host"] = inc.host
        else:
            labels["image_id"] = inc.image_id
        annotations = {
            "summary": cause.summary,
            "description": inc.description(self.table),
            "runbook_url": cause.runbook_url,
        }
        url = self.incident_url(inc)
        current: dict[str, OutgoingAlert] = {}
        if inc.is_open:
            alert = OutgoingAlert(labels, annotations, inc.first_seen, url)
            current[alert.key] = alert
            note = {"summary": f"detach alerts explained by incident {inc.id}: {cause.summary}"}
            for uuid, hosts in inc.explained().items():
                v = inc.instances[uuid]
                explained = OutgoingAlert(
                    {
                        "alertname": EXPLAINED,
                        "instance_uuid": uuid,
                        "image_id": inc.instance_images.get(uuid, ""),
                        "root_cause": v.cause,
                        "host": hosts,
                    },
                    note,
                    inc.first_seen,
                    url,
                )
                current[explained.key] = explained
        out = list(current.values())
        touched = False
        end = inc.resolved_at if not inc.is_open else time.time()
        for key, old in list(inc.pushed.items()):
            if key in current:
                continue
            out.append(OutgoingAlert(old, annotations, inc.first_seen, url, end))
            del inc.pushed[key]
            touched = True
        for key, alert in current.items():
            if key not in inc.pushed:
                inc.pushed[key] = dict(alert.labels)
                touched = True
        return out, touched

    def _update_gauges(self) -> None:
        rows = [(i.state, i.root_cause) for i in self.book.all()]
        self.metrics.set_incidents(rows, self._gauge_rows)
        self._gauge_rows |= set(rows)
