"""Server-rendered HTML for on-call: the incident list and one incident's page.

Jinja2 templates beside this module, autoescaped: every label and fact value is escaped unless
a template says otherwise (none does). Self-contained (no external assets). An incident is drawn
by the templates `blocks/<name>.html` named in `INCIDENT_BLOCKS`, in order; a new block (say,
a table of hosts) is one more template and one more name there.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from correlator import __version__
from correlator.diagnosis import DiagnosisTable
from correlator.incidents import Incident
from correlator.model import format_time

MEMBER_ROWS = 500  # members listed on an incident page; the JSON API has them all
TIMELINE_HOSTS = 24  # host rows drawn; the rest share one "other hosts" row
INCIDENT_BLOCKS = ["header", "timeline", "breakdown", "evidence", "counter_evidence"]
PALETTE = ("#ef8f00", "#c62828", "#6a3d9a", "#1e6fbf", "#2e7d32")


def linkable(url: str) -> bool:
    """Only http(s) and relative URLs become links (never javascript: or data:)."""
    return urlsplit(url).scheme in ("http", "https", "")


@dataclass(frozen=True)
class Point:
    """One member alert on the timeline."""

    x: float
    y: float
    at: float
    host: str
    alertname: str


@dataclass(frozen=True)
class Row:
    """One host row of the timeline."""

    name: str
    y: float


@dataclass(frozen=True)
class Tick:
    """One axis tick: position and label like +30s."""

    x: float
    label: str


@dataclass(frozen=True)
class Timeline:
    """The geometry of an incident's timeline SVG; the template draws it."""

    points: list[Point]
    rows: list[Row]
    ticks: list[Tick]
    colors: dict[str, str]
    host_count: int
    incident_x: float
    left: int = 150
    right: int = 710
    top: int = 24
    bottom: int = 24
    width: int = 730
    height: int = 54


def _ticks(span: float) -> list[float]:
    """Round tick offsets (seconds) for an axis `span` long."""
    for step in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 86400):
        if span / step <= 8:
            return [i * step for i in range(int(span // step) + 1)]
    return [0.0, span]


def _offset(seconds: float) -> str:
    if seconds < 120:
        return f"+{seconds:.0f}s"
    if seconds < 7200:
        return f"+{seconds / 60:.0f}m"
    return f"+{seconds / 3600:.1f}h"


def timeline(inc: Incident) -> Timeline | None:
    """Each member alert's arrival on its host's row, against the incident's opening.

    Shows the flood collapse at a glance: many dots over many hosts, one incident line.
    """
    raw = [
        (m.starts_at if m.starts_at is not None else m.first_seen, m.host or "?", m.alertname)
        for m in inc.members.values()
    ]
    if not raw:
        return None
    hosts = sorted({h for _, h, _ in raw}, key=lambda h: (-sum(p[1] == h for p in raw), h))
    shown = hosts[:TIMELINE_HOSTS]
    names = shown + (["other hosts"] if len(hosts) > len(shown) else [])
    t0 = min(min(t for t, _, _ in raw), inc.opened_at)
    t1 = max(max(t for t, _, _ in raw), inc.opened_at)
    span = max(t1 - t0, 1.0)
    left, width, row_h, top = 150, 560, 14, 24

    def x(t: float) -> float:
        return left + width * (t - t0) / span

    def y(i: int) -> float:
        return top + row_h * i + row_h / 2

    index = {h: i for i, h in enumerate(shown)}
    alertnames = sorted({a for _, _, a in raw})
    return Timeline(
        points=[Point(x(t), y(index.get(h, len(shown))), t, h, a) for t, h, a in sorted(raw)],
        rows=[Row(name, y(i)) for i, name in enumerate(names)],
        ticks=[Tick(x(t0 + tick), _offset(tick)) for tick in _ticks(span)],
        colors={a: PALETTE[i % len(PALETTE)] for i, a in enumerate(alertnames)},
        host_count=len(hosts),
        incident_x=x(inc.opened_at),
        left=left,
        right=left + width,
        top=top,
        bottom=top + row_h * len(names),
        width=left + width + 20,
        height=top + row_h * len(names) + 30,
    )


ENV = Environment(
    loader=PackageLoader("correlator", "web"),
    autoescape=select_autoescape(["html"]),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
ENV.filters["time"] = lambda ts: format_time(ts) or ""
ENV.filters["linkable"] = linkable
ENV.globals["timeline"] = timeline


def base_path(external_url: str) -> str:
    """The path prefix of the external URL ("" at the root)."""
    return urlsplit(external_url).path.rstrip("/")


def _render(name: str, title: str, external_url: str, refresh: bool, **context: object) -> str:
    return ENV.get_template(name).render(
        title=title,
        base=base_path(external_url),
        version=__version__,
        rendered=format_time(time.time()),
        refresh=refresh,
        blocks=INCIDENT_BLOCKS,
        **context,
    )


def render_index(incidents: list[Incident], table: DiagnosisTable, external_url: str) -> str:
    """All incidents, open first."""
    return _render(
        "index.html",
        "PCIe hotplug incidents",
        external_url,
        refresh=True,
        table=table,
        open=[i for i in incidents if i.is_open],
        resolved=[i for i in incidents if not i.is_open],
    )


def render_incident(inc: Incident, table: DiagnosisTable, external_url: str) -> str:
    """One incident with its members and per-instance verdicts."""
    members = sorted(inc.members.values(), key=lambda m: (m.status != "firing", m.instance_uuid))
    verdicts = sorted(inc.instances.values(), key=lambda v: v.instance_uuid)
    return _render(
        "incident.html",
        f"{inc.image_id}: {inc.root_cause}",
        external_url,
        refresh=False,
        table=table,
        inc=inc,
        members=members[:MEMBER_ROWS],
        more_members=len(members) - MEMBER_ROWS,
        verdicts=verdicts[:MEMBER_ROWS],
    )
