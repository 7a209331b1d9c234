"""The diagnosis table: an ordered list of causes with declarative conditions over guest facts.

`causes.yml` beside this module is the built-in table. Each condition is a predicate name
with an argument (`any_port: {hotplug_capable: 1, handler: none}`, `cmdline: {pcie_aspm:
"off"}`, ...); a cause matches when all its conditions hold, and the first matching cause wins.
Every predicate returns a sentence describing the fact it looked at, and the sentences of a
matching cause are its evidence. Adding a cause is a YAML edit, never a Python one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from correlator.config import Config, ConfigError
from correlator.model import GuestFacts, HostPortFacts, PortFacts, Verdict

NO_GUEST_DATA = "no_guest_data"

Scalar = str | int | float
Check = Callable[[GuestFacts, Any], tuple[bool, str]]


# --- value comparison and wording ---------------------------------------------------------------


def _values(spec: object) -> list[Scalar]:
    return list(spec) if isinstance(spec, list) else [spec]  # type: ignore[arg-type]


def _same(actual: object, wanted: Scalar) -> bool:
    if actual is None:
        return False
    if isinstance(actual, int | float) and not isinstance(wanted, str):
        return float(actual) == float(wanted)
    return str(actual) == str(wanted)


def _one_of(actual: object, spec: object) -> bool:
    return any(_same(actual, w) for w in _values(spec))


def _fmt(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _spec_text(spec: Mapping[str, object]) -> str:
    parts = []
    for name, want in spec.items():
        vals = _values(want)
        parts.append(
            f"{name}={_fmt(vals[0])}"
            if len(vals) == 1
            else f"{name} in {{{', '.join(_fmt(v) for v in vals)}}}"
        )
    return ", ".join(parts)


def _port_matches(port: PortFacts | HostPortFacts, spec: Mapping[str, object]) -> bool:
    return all(_one_of(getattr(port, name), want) for name, want in spec.items())


# --- predicates ---------------------------------------------------------------------------------


def _p_any_port(facts: GuestFacts, spec: Mapping[str, object]) -> tuple[bool, str]:
    hits = [p for p in facts.ports if _port_matches(p, spec)]
    n = len(facts.ports)
    if hits:
        first = hits[0]
        slot = f" (slot {first.slot})" if first.slot else ""
        why = f", verdict {first.verdict} because {first.reason}" if first.reason else ""
        return (
            True,
            f"{len(hits)} of {n} ports have {_spec_text(spec)}, e.g. {first.address}{slot}{why}",
        )
    return False, f"no port has {_spec_text(spec)} ({n} ports reported)"


def _p_no_port(facts: GuestFacts, spec: Mapping[str, object]) -> tuple[bool, str]:
    hit, text = _p_any_port(facts, spec)
    return not hit, text


def _p_machine(facts: GuestFacts, spec: object) -> tuple[bool, str]:
    return _one_of(facts.machine, spec), f"machine is {facts.machine or 'unknown'}"


def _p_guest_data(facts: GuestFacts, want: bool) -> tuple[bool, str]:
    if facts.guest_data:
        return want, "the guest exporter reports (pciehp_guest_info present)"
    return not want, "no guest exporter series for this instance (no pciehp_guest_info)"


def _p_fact_unknown(facts: GuestFacts, want: bool) -> tuple[bool, str]:
    if facts.facts_unknown:
        return want, "the exporter could not read: " + ", ".join(facts.facts_unknown)
    return not want, "the exporter read every fact (no pciehp_fact_unknown)"


def _p_host_data(facts: GuestFacts, want: bool) -> tuple[bool, str]:
    h = facts.host
    if h is None:
        return not want, "no host exporter series for this VM (no pciehp_host_vm_info)"
    return want, f"host view of the VM: machine {h.machine or '?'}, {h.hotplug or '?'} hotplug"


def _p_host_hotplug(facts: GuestFacts, spec: object) -> tuple[bool, str]:
    h = facts.host
    have = h.hotplug if h else None
    return _one_of(have, spec), f"the host offers {have or 'unknown'} hotplug to the VM"


def _p_host_verdict(facts: GuestFacts, spec: Mapping[str, object]) -> tuple[bool, str]:
    h = facts.host
    if h is None:
        return False, "no host verdict for this VM"
    ok = all(_one_of(getattr(h, k), v) for k, v in spec.items())
    return ok, f"host verdict {h.verdict} because {h.reason or '?'}"


def _p_host_any_port(facts: GuestFacts, spec: Mapping[str, object]) -> tuple[bool, str]:
    ports = facts.host.ports if facts.host else ()
    hits = [p for p in ports if _port_matches(p, spec)]
    if hits:
        first = hits[0]
        port_id = f" ({first.port_id})" if first.port_id else ""
        return True, (
            f"host reads {len(hits)} of {len(ports)} ports with {_spec_text(spec)}, "
            f"e.g. {first.address}{port_id}"
        )
    return False, f"host reads no port with {_spec_text(spec)} ({len(ports)} ports read)"


def _p_host_no_port(facts: GuestFacts, spec: Mapping[str, object]) -> tuple[bool, str]:
    hit, text = _p_host_any_port(facts, spec)
    return not hit, text


def _p_collector_failed(facts: GuestFacts, names: Sequence[str]) -> tuple[bool, str]:
    failed = [n for n in names if n in facts.collectors_failed]
    if failed:
        return True, f"exporter collector(s) {', '.join(failed)} failing (collector_success 0)"
    return False, f"exporter collectors {', '.join(names)} succeed"


def _osc_pick(facts: GuestFacts, test: Callable[[Any], bool]) -> Any:
    return next((o for o in facts.osc if test(o)), None)


def _bridge(osc: Any) -> str:
    """The bridge an `_OSC` fact is about, and where it came from unless the boot's log."""
    if osc.source == "cmdline":
        return "every host bridge (implied by the kernel command line)"
    if osc.source == "state":
        return f"{osc.bridge} (from the exporter's boot state file)"
    return osc.bridge


def _p_osc_outcome(facts: GuestFacts, spec: object) -> tuple[bool, str]:
    hit = _osc_pick(facts, lambda o: _one_of(o.outcome, spec))
    if hit:
        return True, f"_OSC on {_bridge(hit)}: outcome {hit.outcome}"
    seen = ", ".join(f"{_bridge(o)} {o.outcome}" for o in facts.osc) or "no _OSC facts"
    return False, f"_OSC outcome not {_fmt(spec)} ({seen})"


def _p_osc_missing(facts: GuestFacts, token: str) -> tuple[bool, str]:
    hit = _osc_pick(facts, lambda o: token in o.missing_support)
    if hit:
        missing = " ".join(hit.missing_support)
        return True, f"_OSC on {_bridge(hit)}: the OS lacks {token} support (missing: {missing})"
    return False, f"_OSC: no host bridge lacks {token} support"


def _p_osc_denied(facts: GuestFacts, token: str) -> tuple[bool, str]:
    hit = _osc_pick(facts, lambda o: token in o.denied)
    if hit:
        denied = " ".join(hit.denied)
        return True, f"_OSC on {_bridge(hit)}: the platform refused {token} (denied: {denied})"
    return False, f"_OSC: no host bridge refused {token}"


def _p_cmdline(facts: GuestFacts, spec: Mapping[str, object]) -> tuple[bool, str]:
    for name, want in spec.items():
        have = facts.cmdline.get(name)
        if not _one_of(have, want):
            shown = f"{name}={have}" if have is not None else f"no {name}"
            return False, f"kernel command line has {shown}"
    return True, "kernel command line has " + " ".join(f"{n}={facts.cmdline[n]}" for n in spec)


def _p_cmdline_contains(facts: GuestFacts, spec: Mapping[str, object]) -> tuple[bool, str]:
    for name, want in spec.items():
        have = facts.cmdline.get(name)
        parts = (have or "").split(",")
        if not any(_one_of(p, want) for p in parts):
            shown = f"{name}={have}" if have is not None else f"no {name}"
            return False, f"kernel command line has {shown}"
    return True, "kernel command line has " + " ".join(f"{n}={facts.cmdline[n]}" for n in spec)


def _p_cmdline_not(facts: GuestFacts, spec: Mapping[str, object]) -> tuple[bool, str]:
    for name, want in spec.items():
        have = facts.cmdline.get(name)
        if _one_of(have, want):
            return False, f"kernel command line has {name}={have}"
    return True, "kernel command line has no " + " ".join(
        f"{n}={_fmt(_values(w)[0])}" for n, w in spec.items()
    )


def _p_rescan(facts: GuestFacts, want: bool) -> tuple[bool, str]:
    have = bool(facts.rescan_workarounds)
    text = (
        f"a PCI rescan workaround is installed ({', '.join(facts.rescan_workarounds)})"
        if have
        else "no PCI rescan workaround installed"
    )
    return have == want, text


def _p_any_of(facts: GuestFacts, branches: Sequence[Mapping[str, Any]]) -> tuple[bool, str]:
    ok, lines = _any_of_lines(facts, branches)
    return ok, "; ".join(lines)


def _p_not(facts: GuestFacts, inner: Mapping[str, Any]) -> tuple[bool, str]:
    ok, lines = evaluate(inner, facts)
    return not ok, "; ".join(lines)


# Each condition's argument is checked by causes.schema.json (`$defs/conditions`).
PREDICATES: dict[str, Check] = {
    "guest_data": _p_guest_data,
    "fact_unknown": _p_fact_unknown,
    "host_data": _p_host_data,
    "host_hotplug": _p_host_hotplug,
    "host_verdict": _p_host_verdict,
    "host_any_port": _p_host_any_port,
    "host_no_port": _p_host_no_port,
    "collector_failed": _p_collector_failed,
    "machine": _p_machine,
    "any_port": _p_any_port,
    "no_port": _p_no_port,
    "osc_outcome": _p_osc_outcome,
    "osc_missing_support_contains": _p_osc_missing,
    "osc_denied_contains": _p_osc_denied,
    "cmdline": _p_cmdline,
    "cmdline_contains": _p_cmdline_contains,
    "cmdline_not": _p_cmdline_not,
    "rescan_workaround": _p_rescan,
    "any_of": _p_any_of,
    "not": _p_not,
}


def evaluate(when: Mapping[str, Any], facts: GuestFacts) -> tuple[bool, list[str]]:
    """All conditions of `when` against the facts: (all hold, one sentence per condition)."""
    lines: list[str] = []
    for name, arg in when.items():
        if name == "any_of":  # the matching branch's sentences, one by one
            ok, branch = _any_of_lines(facts, arg)
            if not ok:
                return False, branch
            lines += branch
            continue
        ok, text = PREDICATES[name](facts, arg)
        if not ok:
            return False, [text]
        lines.append(text)
    return True, lines


def _any_of_lines(
    facts: GuestFacts, branches: Sequence[Mapping[str, Any]]
) -> tuple[bool, list[str]]:
    texts = []
    for branch in branches:
        ok, lines = evaluate(branch, facts)
        if ok:
            return True, lines
        texts.append("; ".join(lines))
    return False, ["none of: " + " | ".join(texts)]


# --- the table ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cause:
    """One row of the table."""

    id: str
    summary: str
    severity: str
    runbook_url: str
    when: Mapping[str, Any]
    action: str = ""
    guest_can_unplug: bool = False

    @property
    def kind(self) -> str:
        """How incidents group it: `host` (one per host), `unknown` (facts missing), `guest`."""
        if self.guest_can_unplug:
            return "host"
        if self.id == NO_GUEST_DATA or "unknown" in self.id:
            return "unknown"
        return "guest"


def cross_check(facts: GuestFacts) -> str:
    """Where guest and host both gave a verdict on the VM, the sentence saying they disagree."""
    h = facts.host
    if not facts.guest_data or h is None or h.verdict not in ("ready", "not_ready"):
        return ""
    verdicts = {p.verdict for p in facts.ports}
    if "not_ready" in verdicts:
        guest = "not_ready"
    elif verdicts == {"ready"}:
        guest = "ready"
    else:
        return ""
    if guest == h.verdict:
        return ""
    return (
        f"guest and host disagree: the guest exporter says its ports are {guest}, the host "
        f"reads the VM's slot registers as {h.verdict} ({h.reason or '?'})"
    )


class DiagnosisTable:
    """The validated, ordered cause table; diagnoses one guest at a time."""

    def __init__(self, causes: Sequence[Cause], fallback: str) -> None:
        self.causes = list(causes)
        self.by_id = {c.id: c for c in self.causes}
        self.fallback = self.by_id[fallback]
        self.order = {c.id: i for i, c in enumerate(self.causes)}

    @classmethod
    def from_config(cls, config: Config) -> DiagnosisTable:
        """Build and validate the table named by the configuration; raises ConfigError."""
        where = "diagnosis.causes" if config.causes else f"{config.causes_file}: causes"
        causes = [_cause(row, config) for row in config.cause_rows()]
        ids = [c.id for c in causes]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ConfigError(f"{where}: duplicate cause id(s) {', '.join(dupes)}")
        if NO_GUEST_DATA not in ids:
            raise ConfigError(f"{where}: the table needs a cause with id {NO_GUEST_DATA}")
        if config.fallback_cause not in ids:
            raise ConfigError(
                f"diagnosis.fallback_cause: {config.fallback_cause!r} is not a cause id "
                "in the table"
            )
        fallback = next(c for c in causes if c.id == config.fallback_cause)
        if fallback.kind != "unknown":
            raise ConfigError(
                f"diagnosis.fallback_cause: {fallback.id!r} names a cause the facts did not "
                "match; it must be an unknown cause (an id containing `unknown`), never one "
                "that blames the guest or the host"
            )
        return cls(causes, config.fallback_cause)

    def diagnose(self, facts: GuestFacts | None, why_none: str = "") -> Verdict:
        """The first cause whose conditions all hold; `no_guest_data` when there are no facts."""
        if facts is None:
            reason = why_none or "no pciehp_guest_info series for this instance in Prometheus"
            return Verdict(NO_GUEST_DATA, (reason,))
        disagreement = cross_check(facts)
        for cause in self.causes:
            ok, lines = evaluate(cause.when, facts)
            if ok:
                extra = (disagreement,) if disagreement else ()
                return Verdict(cause.id, (*lines, *extra), cause.guest_can_unplug, disagreement)
        fb = self.fallback
        return Verdict(
            fb.id,
            ("no cause in the table matched these facts",),
            fb.guest_can_unplug,
            disagreement,
        )


def _cause(row: Mapping[str, Any], config: Config) -> Cause:
    """A row already checked against causes.schema.json."""
    cid = row["id"]
    return Cause(
        cid,
        row["summary"].strip(),
        row["severity"],
        row.get("runbook_url", config.runbook_url(cid)),
        row["when"],
        row.get("action", "").strip(),
        row.get("guest_can_unplug", False),
    )
