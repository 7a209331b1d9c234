"""One exporter scrape (text exposition) as the GuestFacts the correlator would build from it.

For callers that hold an exporter's output rather than a Prometheus (pciehp-check-image, tests):
the samples are shaped as Prometheus instant-query results and selected as the fact queries
select them (handlers only where 1, collector_success only where 0), then joined by
PrometheusSource.join, so the diagnosis sees exactly what it would see in production.
"""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from correlator.model import GuestFacts
from correlator.sources.prometheus import GUEST_FAMILIES, PORT_FAMILIES, PrometheusSource

JOB, INSTANCE = "pciehp", "exporter"


def instant_results(text: str, job: str = JOB, instance: str = INSTANCE) -> list[dict]:
    """Exporter output as Prometheus instant-query results (what a scrape would store)."""
    out = []
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = {"__name__": s.name, **s.labels, "job": job, "instance": instance}
            out.append({"metric": labels, "value": [0.0, repr(float(s.value))]})
    return out


def facts_from_exposition(text: str, now: float = 0.0) -> GuestFacts:
    """The GuestFacts of the one guest whose scrape `text` is; ValueError when it names none."""
    rows = instant_results(text)

    def named(names: object) -> list[dict]:
        return [r for r in rows if r["metric"]["__name__"] in names]  # type: ignore[operator]

    handlers = [r for r in named({"pciehp_port_hotplug_handler"}) if r["value"][1] == "1.0"]
    failed = [r for r in named({"pciehp_collector_success"}) if r["value"][1] == "0.0"]
    src = PrometheusSource(session=None, url="http://unused")  # type: ignore[arg-type]
    joined = src.join(
        named({"pciehp_guest_info"}),
        named(PORT_FAMILIES) + handlers,
        named(GUEST_FAMILIES) + failed,
        now=now,
    )
    if len(joined) != 1:
        raise ValueError("the scrape has no pciehp_guest_info with an instance_uuid")
    return next(iter(joined.values()))
