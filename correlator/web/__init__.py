"""Server-rendered HTML for on-call: the incident list and one incident's page.

Self-contained (no external assets). Every piece of label or fact text goes through `esc`.
An incident is drawn by the functions in `INCIDENT_BLOCKS`, in order; a new block (a
timeline, say) is one more function appended there.
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from string import Template
from urllib.parse import urlsplit

from correlator import __version__
from correlator.diagnosis import DiagnosisTable
from correlator.incidents import Incident
from correlator.model import format_time

_PAGE = Template((Path(__file__).parent / "page.html").read_text())
MEMBER_ROWS = 500  # members listed on an incident page; the JSON API has them all


def esc(value: object) -> str:
    """HTML-escape any value (quotes included, safe inside attributes)."""
    return html.escape(str(value), quote=True)


def _link(url: str, text: str) -> str:
    scheme = urlsplit(url).scheme
    if scheme not in ("http", "https", ""):
        return esc(text)
    return f'<a href="{esc(url)}">{esc(text)}</a>'


def _list(items: Iterable[str], empty: str) -> str:
    rows = [f"<li>{i}</li>" for i in items]
    return f"<ul>{''.join(rows)}</ul>" if rows else f'<p class="empty">{esc(empty)}</p>'


def _table(headers: list[str], rows: list[list[str]], empty: str) -> str:
    if not rows:
        return f'<p class="empty">{esc(empty)}</p>'
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


# --- blocks of one incident ---------------------------------------------------------------------


def block_header(inc: Incident, table: DiagnosisTable, base: str) -> str:
    """Title line: image, root cause, severity, state, summary and runbook."""
    cause = table.by_id.get(inc.root_cause, table.fallback)
    c = inc.counts()
    return (
        f'<h2><a href="{esc(base)}/incidents/{esc(inc.id)}">{esc(inc.image_id)}</a>: '
        f"<code>{esc(inc.root_cause)}</code></h2>"
        f'<p class="meta"><span class="badge">{esc(inc.state)}</span>'
        f'<span class="badge">{esc(cause.severity)}</span>'
        f"{c['firing_alerts']}/{c['alerts']} alerts firing &middot; {c['instances']} instances "
        f"&middot; {c['hosts']} hosts &middot; first seen {esc(format_time(inc.first_seen))} "
        f"&middot; last seen {esc(format_time(inc.last_seen))}"
        + (f" &middot; resolved {esc(format_time(inc.resolved_at))}" if inc.resolved_at else "")
        + f"</p><p><strong>{esc(cause.summary)}</strong> {esc(cause.action)}</p>"
        f"<p>Runbook: {_link(cause.runbook_url, cause.runbook_url)}</p>"
    )


def block_breakdown(inc: Incident, table: DiagnosisTable, base: str) -> str:
    """Instances per cause, with each cause's runbook."""
    rows = []
    for cause_id, n in inc.breakdown().items():
        cause = table.by_id.get(cause_id)
        runbook = _link(cause.runbook_url, "runbook") if cause else ""
        rows.append([f"<code>{esc(cause_id)}</code>", esc(n), runbook])
    return "<h3>Cause breakdown</h3>" + _table(
        ["cause", "instances", ""], rows, "not diagnosed yet"
    )


def block_evidence(inc: Incident, table: DiagnosisTable, base: str) -> str:
    """The facts behind the root cause, with how many instances showed each."""
    items = [
        f'{esc(e["text"])} <span class="meta">({e["instances"]} instances)</span>'
        for e in inc.evidence()
    ]
    return "<h3>Evidence</h3>" + _list(items, "no evidence yet")


def block_counter_evidence(inc: Incident, table: DiagnosisTable, base: str) -> str:
    """Instances of the same image whose guests can hot-unplug."""
    items = [
        f"<code>{esc(c['instance_uuid'])}</code> on {esc(', '.join(c['hosts']) or '?')}: "
        f"{esc(c['cause'])} &mdash; {esc('; '.join(c['evidence']))}"
        for c in inc.counter_evidence()
    ]
    return "<h3>Counter-evidence</h3>" + _list(
        items, "no instance of this image shows a guest that can hot-unplug"
    )


TIMELINE_HOSTS = 24  # host rows drawn; the rest share one "other hosts" row


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


def block_timeline(inc: Incident, table: DiagnosisTable, base: str) -> str:
    """Inline SVG: each member alert's arrival on its host's row, against the one incident.

    Shows the flood collapse at a glance: many dots over many hosts, one incident line.
    """
    points = [
        (m.starts_at if m.starts_at is not None else m.first_seen, m.host or "?", m.alertname)
        for m in inc.members.values()
    ]
    if not points:
        return ""
    hosts = sorted({h for _, h, _ in points}, key=lambda h: (-sum(p[1] == h for p in points), h))
    shown = hosts[:TIMELINE_HOSTS]
    rows = shown + (["other hosts"] if len(hosts) > len(shown) else [])
    t0 = min(min(t for t, _, _ in points), inc.opened_at)
    t1 = max(max(t for t, _, _ in points), inc.opened_at)
    span = max(t1 - t0, 1.0)
    left, width, row_h, top = 150, 560, 14, 24
    height = top + row_h * len(rows) + 30
    names = sorted({a for _, _, a in points})
    palette = ["#ef8f00", "#c62828", "#6a3d9a", "#1e6fbf", "#2e7d32"]
    color = {a: palette[i % len(palette)] for i, a in enumerate(names)}

    def x(t: float) -> float:
        return left + width * (t - t0) / span

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" class="timeline" '
        f'width="{left + width + 20}" height="{height}" '
        f'viewBox="0 0 {left + width + 20} {height}" font-size="11" font-family="sans-serif">',
        f"<title>{esc(len(points))} detach alerts from {esc(len(hosts))} hosts, "
        f"one incident</title>",
    ]
    for i, host in enumerate(rows):
        y = top + row_h * i + row_h / 2
        parts.append(
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{esc(host[:22])}</text>'
            f'<line x1="{left}" x2="{left + width}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e8edf2"/>'
        )
    index = {h: i for i, h in enumerate(shown)}
    for t, host, alertname in sorted(points):
        i = index.get(host, len(shown))
        y = top + row_h * i + row_h / 2
        parts.append(
            f'<circle cx="{x(t):.1f}" cy="{y:.1f}" r="3" fill="{color[alertname]}" '
            f'fill-opacity=".75"><title>{esc(alertname)} on {esc(host)} at '
            f"{esc(format_time(t))}</title></circle>"
        )
    xi = x(inc.opened_at)
    bottom = top + row_h * len(rows)
    parts.append(
        f'<line class="incident-line" x1="{xi:.1f}" x2="{xi:.1f}" y1="{top - 14}" '
        f'y2="{bottom}" stroke="#0b5cad" stroke-width="2"/>'
        f'<text x="{xi + 4:.1f}" y="{top - 6}" fill="#0b5cad" font-weight="600">'
        f"1 incident: {esc(inc.root_cause)}</text>"
    )
    for tick in _ticks(span):
        tx = x(t0 + tick)
        parts.append(
            f'<line x1="{tx:.1f}" x2="{tx:.1f}" y1="{bottom}" y2="{bottom + 4}" stroke="#56626e"/>'
            f'<text x="{tx:.1f}" y="{bottom + 16}" text-anchor="middle" fill="#56626e">'
            f"{esc(_offset(tick))}</text>"
        )
    parts.append("</svg>")
    legend = " ".join(
        f'<span class="badge" style="color:{color[a]}">&#9679; {esc(a)}</span>' for a in names
    )
    return (
        f"<h3>Timeline: {len(points)} alerts from {len(hosts)} hosts, one incident</h3>"
        + "".join(parts)
        + f'<p class="meta">{legend} <span class="badge" style="color:#0b5cad">| incident '
        f"opened {esc(format_time(inc.opened_at))}</span></p>"
    )


INCIDENT_BLOCKS: list[Callable[[Incident, DiagnosisTable, str], str]] = [
    block_header,
    block_timeline,
    block_breakdown,
    block_evidence,
    block_counter_evidence,
]


def _section(inc: Incident, table: DiagnosisTable, base: str) -> str:
    cause = table.by_id.get(inc.root_cause, table.fallback)
    klass = "resolved" if inc.state == "resolved" else cause.severity
    inner = "".join(block(inc, table, base) for block in INCIDENT_BLOCKS)
    return f'<section class="incident {esc(klass)}" id="{esc(inc.id)}">{inner}</section>'


def _page(title: str, heading: str, body: str, base: str, refresh: bool) -> str:
    return _PAGE.substitute(
        title=esc(title),
        heading=heading,
        body=body,
        base=esc(base),
        version=esc(__version__),
        rendered=esc(format_time(time.time())),
        refresh='<meta http-equiv="refresh" content="30">' if refresh else "",
    )


def base_path(external_url: str) -> str:
    """The path prefix of the external URL ("" at the root)."""
    return urlsplit(external_url).path.rstrip("/")


def render_index(incidents: list[Incident], table: DiagnosisTable, external_url: str) -> str:
    """All incidents, open first."""
    base = base_path(external_url)
    open_ = [i for i in incidents if i.is_open]
    done = [i for i in incidents if not i.is_open]
    body = f"<h2>Open ({len(open_)})</h2>"
    body += "".join(_section(i, table, base) for i in open_) or '<p class="empty">none</p>'
    body += f"<h2>Resolved ({len(done)})</h2>"
    body += "".join(_section(i, table, base) for i in done) or '<p class="empty">none</p>'
    return _page("PCIe hotplug incidents", "PCIe hotplug incidents", body, base, refresh=True)


def render_incident(inc: Incident, table: DiagnosisTable, external_url: str) -> str:
    """One incident with its members and per-instance verdicts."""
    base = base_path(external_url)
    members = sorted(inc.members.values(), key=lambda m: (m.status != "firing", m.instance_uuid))
    rows = [
        [
            esc(m.alertname),
            f"<code>{esc(m.instance_uuid)}</code>",
            esc(m.host),
            esc(m.device),
            esc(m.status + (" (suppressed)" if m.suppressed else "")),
            esc(format_time(m.starts_at) or ""),
        ]
        for m in members[:MEMBER_ROWS]
    ]
    more = len(members) - MEMBER_ROWS
    verdicts = [
        [
            f"<code>{esc(v.instance_uuid)}</code>",
            f"<code>{esc(v.cause)}</code>",
            esc("; ".join(v.evidence)),
        ]
        for v in sorted(inc.instances.values(), key=lambda v: v.instance_uuid)[:MEMBER_ROWS]
    ]
    body = _section(inc, table, base)
    body += "<h3>Member alerts</h3>" + _table(
        ["alert", "instance", "host", "device", "status", "startsAt"], rows, "no members"
    )
    if more > 0:
        body += f'<p class="meta">{more} more in the JSON API</p>'
    body += "<h3>Instances</h3>" + _table(["instance", "cause", "evidence"], verdicts, "none")
    heading = f'<a href="{esc(base)}/">Incidents</a> / {esc(inc.image_id)}'
    return _page(f"{inc.image_id}: {inc.root_cause}", heading, body, base, refresh=False)
