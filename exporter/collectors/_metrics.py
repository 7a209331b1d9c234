"""Shorthands for building the exporter's metric families with the `pciehp_` prefix."""

from typing import Sequence

from exporter.exposition import CounterMetricFamily, GaugeMetricFamily
from exporter.registry import PORT_LABELS, PREFIX


def gauge(name: str, doc: str, labels: Sequence[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, doc, labels=list(labels))


def counter(name: str, doc: str, labels: Sequence[str] = ()) -> CounterMetricFamily:
    return CounterMetricFamily(PREFIX + name, doc, labels=list(labels))


def port_gauge(name: str, doc: str, extra: Sequence[str] = ()) -> GaugeMetricFamily:
    """A per-port gauge labelled like node_exporter's node_pcidevice_info, plus `extra`."""
    return gauge(name, doc, [*PORT_LABELS, *extra])


def port_counter(name: str, doc: str, extra: Sequence[str] = ()) -> CounterMetricFamily:
    return counter(name, doc, [*PORT_LABELS, *extra])
