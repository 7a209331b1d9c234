"""Plain data types shared by the correlator's layers: alerts, guest facts, verdicts, timestamps."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

FIRING = "firing"
RESOLVED = "resolved"


@functools.lru_cache(maxsize=8192)
def parse_time(value: str) -> float | None:
    """RFC 3339 text to epoch seconds; Go's zero time (year 1) means "unset" and gives None.

    Raises ValueError on anything that is not an RFC 3339 timestamp with a zone.
    """
    dt = datetime.fromisoformat(value)
    if dt.tzinfo is None:
        raise ValueError(f"timestamp {value!r} has no time zone")
    if dt.year <= 1:
        return None
    return dt.timestamp()


def format_time(ts: float | None) -> str | None:
    """Epoch seconds to RFC 3339 UTC with milliseconds (Alertmanager's style); None stays None."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def labels_fingerprint(labels: Mapping[str, str]) -> str:
    """Alertmanager's fingerprint of a label set (FNV-1a 64 over sorted name/value pairs).

    Matches `model.LabelSet.Fingerprint()` in prometheus/common, so alerts keyed by it line
    up with the `fingerprint` field Alertmanager puts in webhooks and in `/api/v2/alerts`.
    """
    h = 0xCBF29CE484222325
    for name in sorted(labels):
        for part in (name.encode(), b"\xff", labels[name].encode(), b"\xff"):
            for byte in part:
                h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


@dataclass(slots=True)
class Alert:
    """One host-side alert as Alertmanager reports it (webhook or API)."""

    fingerprint: str
    labels: Mapping[str, str]
    status: str
    starts_at: float | None
    ends_at: float | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)
    generator_url: str = ""
    suppressed: bool = False


@dataclass(frozen=True)
class PortFacts:
    """What the guest exporter says about one PCIe port (labels segment/bus/device/function)."""

    address: str
    slot: str = ""
    port_type: str = ""
    hotplug_capable: float | None = None
    handler: str | None = None
    service_bound: float | None = None
    irq_registered: float | None = None
    button_pending: float | None = None
    interrupt_enabled: float | None = None
    unplug_unanswered: float | None = None
    # the exporter's pciehp_port_unplug_verdict: ready | not_ready | unknown, and why; empty
    # for a port the exporter gives no verdict (neither a slot nor hotplug-capable)
    verdict: str = ""
    reason: str = ""


PORT_FIELDS = (
    "slot",
    "port_type",
    "hotplug_capable",
    "handler",
    "service_bound",
    "irq_registered",
    "button_pending",
    "interrupt_enabled",
    "unplug_unanswered",
    "verdict",
    "reason",
)


@dataclass(frozen=True)
class OscFacts:
    """The `_OSC` negotiation outcome of one host bridge."""

    bridge: str
    outcome: str
    missing_support: tuple[str, ...] = ()
    denied: tuple[str, ...] = ()
    source: str = "log"
    """Where the exporter had it: log, state (its boot state file), cmdline (implied), unknown."""


@dataclass(frozen=True)
class HostPortFacts:
    """What the host exporter read from one of the VM's emulated PCIe ports (DESIGN.md host/)."""

    address: str
    port_id: str = ""
    hotplug_capable: float | None = None
    driver_armed: float | None = None
    interrupt_enabled: float | None = None
    adapter_present: float | None = None
    button_pending: float | None = None
    unplug_ready: float | None = None


@dataclass(frozen=True)
class HostFacts:
    """The host's view of one VM: hotplug model offered, slot registers, the host's verdict."""

    instance_uuid: str
    hotplug: str = ""
    machine: str = ""
    domain: str = ""
    verdict: str = "unknown"
    reason: str = "no_verdict"
    probe_success: float | None = None
    ports: tuple[HostPortFacts, ...] = ()
    observed_at: float = 0.0


@dataclass(frozen=True)
class GuestFacts:
    """Everything known about one guest, joined from its exporter's series in Prometheus."""

    instance_uuid: str
    machine: str = ""
    kernel: str = ""
    job: str = ""
    target: str = ""
    image_id: str = ""
    ports: tuple[PortFacts, ...] = ()
    osc: tuple[OscFacts, ...] = ()
    cmdline: Mapping[str, str] = field(default_factory=dict)
    rescan_workarounds: tuple[str, ...] = ()
    collectors_failed: tuple[str, ...] = ()
    # facts the exporter could not read, as "fact (reason)" (pciehp_fact_unknown)
    facts_unknown: tuple[str, ...] = ()
    observed_at: float = 0.0
    # False when only the host's view of the VM is known (no guest exporter series)
    guest_data: bool = True
    host: HostFacts | None = None

    def boot_fingerprint(self) -> str:
        """A short stable hash of kernel release and boot parameters (image key of last resort)."""
        text = self.kernel + "\n" + "\n".join(f"{k}={v}" for k, v in sorted(self.cmdline.items()))
        return labels_fingerprint({"boot": text})[:12]


@dataclass(frozen=True)
class Verdict:
    """The diagnosis of one instance: which cause matched and the facts that made it match."""

    cause: str
    evidence: tuple[str, ...]
    guest_can_unplug: bool = False
    # the guest's and the host's view of the VM contradict each other (empty: they agree)
    disagreement: str = ""
