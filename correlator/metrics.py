"""The correlator's own metrics (`pciehp_correlator_*`), in a registry of their own."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from correlator import __version__

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300)


class Metrics:
    """Counters, gauges and histograms exposed on /metrics."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        p = "pciehp_correlator_"
        self.webhooks = Counter(
            p + "webhooks_received",
            "Webhook deliveries received, by outcome (accepted, invalid, unauthorized, too_large).",
            ["result"],
            registry=r,
        )
        self.alerts_received = Counter(
            p + "alerts_received",
            "Host-side alerts received, by source (webhook, alertmanager) and how they were taken.",
            ["source", "result"],
            registry=r,
        )
        self.last_webhook = Gauge(
            p + "last_webhook_timestamp_seconds",
            "When the last valid webhook delivery arrived.",
            registry=r,
        )
        self.firing_alerts = Gauge(
            p + "firing_alerts", "Host-side alerts firing as of the last reconcile.", registry=r
        )
        self.reconcile_duration = Histogram(
            p + "reconcile_duration_seconds",
            "Time one reconcile took (poll, query, diagnose, store, queue pushes).",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.last_reconcile = Gauge(
            p + "last_reconcile_timestamp_seconds",
            "When the last reconcile finished.",
            registry=r,
        )
        self.incidents = Gauge(
            p + "incidents",
            "Incidents in memory, by state and root cause.",
            ["state", "root_cause"],
            registry=r,
        )
        self.prom_queries = Counter(
            p + "prometheus_queries", "PromQL queries sent to Prometheus.", registry=r
        )
        self.prom_queries_last = Gauge(
            p + "prometheus_queries_per_reconcile",
            "PromQL queries the last reconcile needed (constant in the number of alerts).",
            registry=r,
        )
        self.prom_errors = Counter(
            p + "prometheus_errors", "Reconciles whose Prometheus queries failed.", registry=r
        )
        self.am_errors = Counter(
            p + "alertmanager_errors",
            "Failed reads of GET /api/v2/alerts, by Alertmanager.",
            ["alertmanager"],
            registry=r,
        )
        self.push_failures = Counter(
            p + "push_failures",
            "Failed pushes of incident alerts (each is retried with backoff), by Alertmanager.",
            ["alertmanager"],
            registry=r,
        )
        self.push_latency = Histogram(
            p + "push_latency_seconds",
            "From queuing an incident alert to its acceptance by an Alertmanager.",
            ["alertmanager"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.push_queue = Gauge(
            p + "push_queue_length",
            "Incident alerts waiting for delivery, by Alertmanager.",
            ["alertmanager"],
            registry=r,
        )
        self.prune_runs = Counter(
            p + "history_prunes",
            "Runs of the history pruning (storage.retention).",
            registry=r,
        )
        self.pruned = Counter(
            p + "history_pruned_incidents",
            "Resolved incidents deleted from the history for being older than storage.retention.",
            registry=r,
        )
        self.build_info = Gauge(
            p + "build_info", "Always 1; the version as a label.", ["version"], registry=r
        )
        self.build_info.labels(__version__).set(1)

    def set_incidents(
        self, rows: Iterable[tuple[str, str]], known: Iterable[tuple[str, str]]
    ) -> None:
        """Set incident gauges from (state, root_cause) pairs; `known` pairs not seen read 0."""
        counts: dict[tuple[str, str], int] = dict.fromkeys(known, 0)
        for row in rows:
            counts[row] = counts.get(row, 0) + 1
        for (state, cause), n in counts.items():
            self.incidents.labels(state, cause).set(n)
