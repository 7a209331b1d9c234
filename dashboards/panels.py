"""Shared building blocks: datasource references, template variables, PromQL targets and
panel defaults, so both dashboards follow the same conventions (and the lint tests)."""

from __future__ import annotations

from grafana_foundation_sdk.builders import common, prometheus
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

PROMETHEUS = model.DataSourceRef(type_val="prometheus", uid="${datasource}")
ALERTMANAGER = model.DataSourceRef(type_val="alertmanager", uid="${alertmanager}")

# Label selectors every raw exporter query carries, so no query hard-codes a job or instance.
JOB = 'job=~"$job"'
IMAGE = 'image_id=~"$image_id"'
INSTANCE = 'instance=~"$instance"'
PORT_LABELS = "job, instance, segment, bus, device, function"
DETACH_MATCHER = 'alertname=~".*Detach.*(Timeout|Failed).*"'
ROOT_CAUSE_MATCHER = 'alertname="PCIeHotplugRootCause"'

# Reds and greens Grafana users know.
GREEN, RED, ORANGE = "green", "red", "orange"


def project_dashboard(title: str) -> db.Dashboard:
    """A dashboard with the settings every pciehp-watch dashboard shares."""
    return (
        db.Dashboard(title)
        .tags(["pciehp-watch"])
        .editable()
        .time("now-6h", "now")
        .refresh("1m")
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
    )


def sibling_link(title: str) -> db.DashboardLink:
    """A link to the other pciehp-watch dashboards, carrying variables and time range."""
    return (
        db.DashboardLink(title)
        .type(model.DashboardLinkType.DASHBOARDS)
        .tags(["pciehp-watch"])
        .as_dropdown(False)
        .include_vars(True)
        .keep_time(True)
    )


def datasource_variable() -> db.DatasourceVariable:
    """The Prometheus datasource picker every panel uses."""
    return db.DatasourceVariable("datasource").label("Prometheus").type("prometheus")


def alertmanager_variable() -> db.DatasourceVariable:
    """The Alertmanager datasource picker for the alert-group panels."""
    return db.DatasourceVariable("alertmanager").label("Alertmanager").type("alertmanager")


def label_variable(
    name: str, label: str, query: str, multi: bool = True, include_all: bool = True
) -> db.QueryVariable:
    """A variable filled from `label_values(...)`, refreshed when the time range changes."""
    v = (
        db.QueryVariable(name)
        .label(label)
        .query(query)
        .datasource(PROMETHEUS)
        .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(model.VariableSort.ALPHABETICAL_ASC)
        .multi(multi)
        .include_all(include_all)
    )
    if include_all:
        v = v.all_value(".*")
    return v


def job_variable() -> db.QueryVariable:
    """The exporter's scrape job (pciehp-exporter by convention; node for the textfile mode)."""
    return label_variable(
        "job", "Job", "label_values(pciehp_exporter_build_info, job)", multi=False
    )


def query(expr: str, legend: str = "", ref: str = "A") -> prometheus.Dataquery:
    """A range query drawn over time."""
    q = prometheus.Dataquery().expr(expr).ref_id(ref).datasource(PROMETHEUS).range()
    return q.legend_format(legend) if legend else q


def table_query(expr: str, ref: str = "A") -> prometheus.Dataquery:
    """An instant query returned as a table (one row per series, labels as columns)."""
    return (
        prometheus.Dataquery()
        .expr(expr)
        .ref_id(ref)
        .datasource(PROMETHEUS)
        .instant()
        .format(PromQueryFormat.TABLE)
    )


def last_value() -> common.ReduceDataOptions:
    """Stat panels show the latest value of their (instant) query."""
    return common.ReduceDataOptions().calcs(["lastNotNull"]).values(False)


def thresholds(*steps: tuple[float | None, str]) -> db.ThresholdsConfig:
    """Absolute thresholds: (lower bound or None for the base, colour)."""
    return (
        db.ThresholdsConfig()
        .mode(model.ThresholdsMode.ABSOLUTE)
        .steps([model.Threshold(value=v, color=c) for v, c in steps])
    )


def flag_mappings(zero: str, one: str, bad: int | None = None) -> list[model.ValueMapping]:
    """Map a 0/1 gauge to words; `bad` (0 or 1) is shown red, the other green."""
    colours = {0: GREEN, 1: GREEN}
    if bad is not None:
        colours[bad] = RED
    return [
        model.ValueMap(
            options={
                "0": model.ValueMappingResult(text=zero, color=colours[0], index=0),
                "1": model.ValueMappingResult(text=one, color=colours[1], index=1),
            }
        )
    ]


def organize(
    exclude: list[str], rename: dict[str, str], order: list[str]
) -> model.DataTransformerConfig:
    """The `organize` transformation: hide, rename and order table columns."""
    return model.DataTransformerConfig(
        id_val="organize",
        options={
            "excludeByName": dict.fromkeys(exclude, True),
            "renameByName": rename,
            "indexByName": {name: i for i, name in enumerate(order)},
        },
    )


MERGE = model.DataTransformerConfig(id_val="merge", options={})
