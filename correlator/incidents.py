"""Incidents: one per VM image for guest-side causes, one per host for host-side causes.

Each firing detach alert is grouped by its instance's verdict: a host-side cause (the guest can
hot-unplug) joins the incident of the alert's `host`, whatever the image, so one broken compute
host is one incident naming it; any other cause joins its image's incident. A member is
*explained* when its instance's cause is the incident's kind (guest-side in an image incident,
host-side in a host incident); only explained members are muted (through one
PCIeHotplugDetachExplained alert per instance). Instances whose facts are missing or unknown
stay unexplained members of their image's incident, so their detach alerts still page.

Lifecycle: `firing` while any member alert fires; `resolving` once none does; `resolved`
after `hold_down` seconds without a firing member. A member that fires again during the
hold-down reopens the same incident, so a flapping VM never opens a second incident.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from correlator.config import LabelMap
from correlator.diagnosis import NO_GUEST_DATA, DiagnosisTable
from correlator.model import FIRING, RESOLVED, Alert, GuestFacts, Verdict, format_time

OPEN_STATES = ("firing", "resolving")
UNKNOWN_IMAGE = "unknown"
HOST_KEY = "host:"  # key prefix of host incidents


@dataclass
class Member:
    """One host-side alert that belongs to an incident."""

    fingerprint: str
    alertname: str
    instance_uuid: str
    host: str
    device: str
    labels: dict[str, str]
    starts_at: float | None
    first_seen: float
    last_seen: float
    status: str = FIRING
    resolved_at: float | None = None
    suppressed: bool = False
    explained: bool = False

    def to_json(self) -> dict[str, Any]:
        """API/storage form (timestamps as RFC 3339)."""
        return {
            "fingerprint": self.fingerprint,
            "alertname": self.alertname,
            "instance_uuid": self.instance_uuid,
            "host": self.host,
            "device": self.device,
            "labels": self.labels,
            "status": self.status,
            "suppressed": self.suppressed,
            "explained": self.explained,
            "startsAt": format_time(self.starts_at),
            "firstSeen": format_time(self.first_seen),
            "lastSeen": format_time(self.last_seen),
            "resolvedAt": format_time(self.resolved_at),
        }


@dataclass
class InstanceVerdict:
    """The latest diagnosis of one affected instance."""

    instance_uuid: str
    cause: str
    evidence: list[str]
    guest_can_unplug: bool
    diagnosed_at: float
    facts_observed_at: float | None = None
    disagreement: str = ""

    @classmethod
    def of(cls, uuid: str, v: Verdict, now: float, facts_at: float | None) -> InstanceVerdict:
        """From a fresh Verdict."""
        return cls(
            uuid, v.cause, list(v.evidence), v.guest_can_unplug, now, facts_at, v.disagreement
        )


@dataclass
class Incident:
    """One image's incident: its members, verdicts, root cause and state."""

    id: str
    key: str
    key_source: str
    state: str
    opened_at: float
    first_seen: float
    last_seen: float
    root_cause: str = NO_GUEST_DATA
    quiet_since: float | None = None
    resolved_at: float | None = None
    updated_at: float = 0.0
    members: dict[str, Member] = field(default_factory=dict)
    instances: dict[str, InstanceVerdict] = field(default_factory=dict)
    pushed: dict[str, dict[str, str]] = field(default_factory=dict)
    dirty_members: set[str] = field(default_factory=set)
    # guests of the image that can hot-unplug and raised no alert (from Prometheus)
    healthy_peers: list[str] = field(default_factory=list)
    healthy_peers_total: int = 0
    kind: str = "image"  # "image" (guest-side and unknown causes) or "host" (host-side)
    # instance UUID -> the image its alerts name (host incidents span images)
    instance_images: dict[str, str] = field(default_factory=dict)

    @property
    def image_id(self) -> str:
        """The `image_id` label value of the pushed alert ("" for a host incident)."""
        return "" if self.kind == "host" else self.key

    @property
    def host(self) -> str:
        """The host a host incident is about ("" for an image incident)."""
        return self.key[len(HOST_KEY) :] if self.kind == "host" else ""

    def images(self) -> list[str]:
        """Distinct images of the members' instances."""
        return sorted({i for i in self.instance_images.values() if i})

    def explained(self) -> dict[str, str]:
        """Firing explained members' instances -> the hosts of their alerts (comma-separated)."""
        hosts: dict[str, set[str]] = {}
        for m in self.firing_members():
            if m.explained and m.instance_uuid:
                hosts.setdefault(m.instance_uuid, set()).add(m.host)
        return {u: ",".join(sorted(h for h in hs if h)) for u, hs in sorted(hosts.items())}

    def facts_summary(self) -> dict[str, int]:
        """How many affected instances had facts (guest's or host's view) and how many not."""
        n = len(self.instances)
        with_facts = sum(v.facts_observed_at is not None for v in self.instances.values())
        return {"instances": n, "with_facts": with_facts, "without_facts": n - with_facts}

    @property
    def is_open(self) -> bool:
        """Firing or within its hold-down."""
        return self.state in OPEN_STATES

    def firing_members(self) -> list[Member]:
        """Members whose alert fires now."""
        return [m for m in self.members.values() if m.status == FIRING]

    def hosts(self) -> list[str]:
        """Distinct hosts of all members."""
        return sorted({m.host for m in self.members.values() if m.host})

    def breakdown(self) -> dict[str, int]:
        """Instances per cause."""
        return dict(Counter(v.cause for v in self.instances.values()).most_common())

    def evidence(self) -> list[dict[str, Any]]:
        """The root cause's evidence sentences, each with how many instances showed it."""
        counts: Counter[str] = Counter()
        for v in self.instances.values():
            if v.cause == self.root_cause:
                counts.update(dict.fromkeys(v.evidence, 1))
        return [{"text": text, "instances": n} for text, n in counts.items()]

    def disagreements(self) -> list[dict[str, str]]:
        """Instances whose guest exporter and host exporter contradict each other."""
        return [
            {"instance_uuid": v.instance_uuid, "text": v.disagreement}
            for v in sorted(self.instances.values(), key=lambda v: v.instance_uuid)
            if v.disagreement
        ]

    def counter_evidence(self) -> list[dict[str, Any]]:
        """Instances of this image whose guests can hot-unplug, when the root cause says not."""
        root = next((v for v in self.instances.values() if v.cause == self.root_cause), None)
        if root is None or root.guest_can_unplug:
            return []
        hosts: dict[str, set[str]] = {}
        for m in self.members.values():
            hosts.setdefault(m.instance_uuid, set()).add(m.host)
        members = [
            {
                "instance_uuid": v.instance_uuid,
                "cause": v.cause,
                "hosts": sorted(h for h in hosts.get(v.instance_uuid, ()) if h),
                "evidence": v.evidence,
            }
            for v in sorted(self.instances.values(), key=lambda v: v.instance_uuid)
            if v.guest_can_unplug
        ]
        peers = [
            {
                "instance_uuid": uuid,
                "cause": "not_affected",
                "hosts": [],
                "evidence": [
                    "same image, every hotplug-capable port has a hotplug handler, no detach alert"
                ],
            }
            for uuid in self.healthy_peers
            if uuid not in self.instances
        ]
        return members + peers

    def set_healthy_peers(self, peers: set[str], limit: int = 50) -> bool:
        """Record the image's healthy guests without alerts; True if that changed anything."""
        others = sorted(peers - self.instances.keys())
        shown = others[:limit]
        if shown == self.healthy_peers and len(others) == self.healthy_peers_total:
            return False
        self.healthy_peers, self.healthy_peers_total = shown, len(others)
        return True

    def counts(self) -> dict[str, int]:
        """Alerts (all and firing), instances and hosts."""
        return {
            "alerts": len(self.members),
            "firing_alerts": len(self.firing_members()),
            "explained_alerts": sum(m.explained for m in self.members.values()),
            "instances": len({m.instance_uuid for m in self.members.values()}),
            "hosts": len(self.hosts()),
        }

    def description(self, table: DiagnosisTable) -> str:
        """One paragraph for on-call: counts, root cause share, and the rest of the breakdown."""
        c = self.counts()
        breakdown = self.breakdown()
        share = breakdown.get(self.root_cause, 0)
        others = ", ".join(f"{k} {n}" for k, n in breakdown.items() if k != self.root_cause)
        cause = table.by_id.get(self.root_cause)
        if self.kind == "host":
            images = self.images()
            text = (
                f"{c['alerts']} detach alert(s) ({c['firing_alerts']} firing) on host "
                f"{self.host} from {c['instances']} instance(s) of {len(images)} image(s) "
                f"({', '.join(images[:10])}{', ...' if len(images) > 10 else ''}); "
                f"{share} of {len(self.instances)} instance(s) diagnosed {self.root_cause}"
            )
        else:
            f = self.facts_summary()
            text = (
                f"{c['alerts']} detach alert(s) ({c['firing_alerts']} firing) from "
                f"{c['instances']} instance(s) on {c['hosts']} host(s) of image {self.image_id}; "
                f"{share} of {len(self.instances)} instance(s) diagnosed {self.root_cause}, "
                f"{f['with_facts']} had facts"
            )
        if others:
            text += f" (others: {others})"
        unexplained = c["alerts"] - c["explained_alerts"]
        if unexplained:
            text += f"; {unexplained} alert(s) not explained, not muted"
        text += "."
        if cause and cause.action:
            text += " " + cause.action
        return text

    def summary_json(self, table: DiagnosisTable) -> dict[str, Any]:
        """The list-view form: everything but members and per-instance verdicts."""
        cause = table.by_id.get(self.root_cause)
        return {
            "id": self.id,
            "kind": self.kind,
            "image_id": self.image_id,
            "host": self.host,
            "images": self.images(),
            "key_source": self.key_source,
            "state": self.state,
            "root_cause": self.root_cause,
            "severity": cause.severity if cause else "warning",
            "summary": cause.summary if cause else self.root_cause,
            "description": self.description(table),
            "runbook_url": cause.runbook_url if cause else "",
            "counts": self.counts(),
            "hosts": self.hosts(),
            "cause_breakdown": self.breakdown(),
            "facts": self.facts_summary(),
            "disagreements": self.disagreements(),
            "evidence": self.evidence(),
            "counter_evidence": self.counter_evidence(),
            "opened_at": format_time(self.opened_at),
            "first_seen": format_time(self.first_seen),
            "last_seen": format_time(self.last_seen),
            "resolved_at": format_time(self.resolved_at),
            "updated_at": format_time(self.updated_at),
        }

    def detail_json(self, table: DiagnosisTable) -> dict[str, Any]:
        """The single-incident form: the summary plus members and per-instance verdicts."""
        doc = self.summary_json(table)
        doc["members"] = [m.to_json() for m in self._sorted_members()]
        doc["instances"] = [
            {
                "instance_uuid": v.instance_uuid,
                "cause": v.cause,
                "evidence": v.evidence,
                "guest_can_unplug": v.guest_can_unplug,
                "disagreement": v.disagreement,
                "diagnosed_at": format_time(v.diagnosed_at),
                "facts_observed_at": format_time(v.facts_observed_at),
            }
            for v in sorted(self.instances.values(), key=lambda v: v.instance_uuid)
        ]
        return doc

    def _sorted_members(self) -> list[Member]:
        return sorted(self.members.values(), key=lambda m: (m.status != FIRING, m.instance_uuid))

    def state_json(self) -> dict[str, Any]:
        """Everything but the members, for storage (members are stored row by row)."""
        doc = asdict(self)
        del doc["members"], doc["dirty_members"]
        return doc

    @classmethod
    def from_state(cls, doc: Mapping[str, Any], members: Iterable[Mapping[str, Any]]) -> Incident:
        """Rebuild from storage."""
        fields_ = dict(doc)
        fields_["instances"] = {
            k: InstanceVerdict(**v) for k, v in doc.get("instances", {}).items()
        }
        inc = cls(**fields_)
        inc.members = {m["fingerprint"]: Member(**m) for m in members}
        return inc


def incident_id(key: str, seq: int) -> str:
    """Deterministic id: a hash of the image key and the how-many-th incident of that image."""
    return f"{hashlib.sha256(key.encode()).hexdigest()[:12]}-{seq}"


@dataclass
class IncidentBook:
    """All incidents; turns (firing alerts, verdicts, facts) into incident changes."""

    labels: LabelMap
    table: DiagnosisTable
    hold_down: float
    open: dict[str, Incident] = field(default_factory=dict)
    history: dict[str, Incident] = field(default_factory=dict)
    seq: dict[str, int] = field(default_factory=dict)

    def restore(self, incidents: Iterable[Incident], seq: Mapping[str, int]) -> None:
        """Load incidents from storage (open ones become live again)."""
        self.seq.update(seq)
        for inc in incidents:
            if inc.is_open:
                self.open[inc.key] = inc
            else:
                self.history[inc.id] = inc

    def get(self, incident_id_: str) -> Incident | None:
        """An incident by id (open or in memory history)."""
        for inc in self.open.values():
            if inc.id == incident_id_:
                return inc
        return self.history.get(incident_id_)

    def all(self) -> list[Incident]:
        """Open incidents first, then history, newest first within each."""
        live = sorted(self.open.values(), key=lambda i: -i.opened_at)
        old = sorted(self.history.values(), key=lambda i: -(i.resolved_at or 0))
        return live + old

    def image_key(self, alert: Alert, facts: GuestFacts | None) -> tuple[str, str]:
        """(key, where it came from): the alert's image label, the guest's, a boot fingerprint."""
        image = alert.labels.get(self.labels.image_id, "")
        if image:
            return image, "alert_label"
        if facts is not None and facts.image_id:
            return facts.image_id, "guest_label"
        if facts is not None:
            return f"boot-{facts.boot_fingerprint()}", "boot_fingerprint"
        return UNKNOWN_IMAGE, "unknown"

    def instance_of(self, alert: Alert) -> str:
        """The instance UUID an alert is about ("" when the label is missing)."""
        return alert.labels.get(self.labels.instance_uuid, "")

    def update(
        self,
        firing: Mapping[str, Alert],
        verdicts: Mapping[str, Verdict],
        facts: Mapping[str, GuestFacts],
        now: float,
    ) -> list[Incident]:
        """Apply one reconcile's view; returns the incidents that changed (to store and push)."""
        changed: dict[str, Incident] = {}
        where: dict[str, Incident] = {}
        for inc in self.open.values():
            for fp in inc.members:
                where[fp] = inc

        groups: dict[str, list[Alert]] = {}
        sources: dict[str, str] = {}
        image_of: dict[str, str] = {}  # instance -> image key
        by_image: dict[str, set[str]] = {}  # image key -> every affected instance
        for alert in firing.values():
            uuid = self.instance_of(alert)
            image, source = self.image_key(alert, facts.get(uuid))
            image_of.setdefault(uuid, image)
            by_image.setdefault(image, set()).add(uuid)
            if self.kind_of(verdicts.get(uuid)) == "host":
                key, source = HOST_KEY + (alert.labels.get(self.labels.host) or "unknown"), "host"
            else:
                key = image
            groups.setdefault(key, []).append(alert)
            sources.setdefault(key, source)

        for key, alerts in groups.items():
            inc = self.open.get(key)
            if inc is None:
                inc = self._open_incident(key, sources[key], alerts, now)
                changed[inc.id] = inc
            for alert in alerts:
                old = where.get(alert.fingerprint)
                if old is not None and old is not inc:
                    del old.members[alert.fingerprint]
                    old.dirty_members.add(alert.fingerprint)
                    changed[old.id] = old
                if self._take_member(inc, alert, now):
                    changed[inc.id] = inc

        for inc in list(self.open.values()):
            for m in inc.firing_members():
                if m.fingerprint not in firing:
                    m.status, m.resolved_at = RESOLVED, now
                    inc.dirty_members.add(m.fingerprint)
                    changed[inc.id] = inc
            affected = {m.instance_uuid for m in inc.firing_members()}
            if inc.kind == "image":
                affected |= by_image.get(inc.key, set())
            if self._rediagnose(inc, affected, verdicts, facts, now):
                changed[inc.id] = inc
            if self._explain(inc, image_of):
                changed[inc.id] = inc
            if self._advance(inc, now):
                changed[inc.id] = inc
        for inc in changed.values():
            inc.updated_at = now
        return list(changed.values())

    def kind_of(self, verdict: Verdict | None) -> str:
        """The group kind of a verdict's cause: host, guest, or unknown (no verdict: unknown)."""
        if verdict is None:
            return "unknown"
        cause = self.table.by_id.get(verdict.cause)
        return cause.kind if cause else "unknown"

    def _explain(self, inc: Incident, image_of: Mapping[str, str]) -> bool:
        """Mark the members this incident explains; record each member instance's image."""
        want = "host" if inc.kind == "host" else "guest"
        changed = False
        for m in inc.members.values():
            v = inc.instances.get(m.instance_uuid)
            explained = v is not None and self.kind_of(Verdict(v.cause, ())) == want
            if m.status == FIRING and explained != m.explained:
                m.explained = explained
                inc.dirty_members.add(m.fingerprint)
                changed = True
            image = image_of.get(m.instance_uuid)
            if image and inc.instance_images.get(m.instance_uuid) != image:
                inc.instance_images[m.instance_uuid] = image
                changed = True
        for uuid in [u for u in inc.instance_images if u not in inc.instances]:
            del inc.instance_images[uuid]
            changed = True
        return changed

    def _open_incident(self, key: str, source: str, alerts: list[Alert], now: float) -> Incident:
        self.seq[key] = self.seq.get(key, 0) + 1
        starts = [a.starts_at for a in alerts if a.starts_at is not None]
        inc = Incident(
            id=incident_id(key, self.seq[key]),
            key=key,
            key_source=source,
            state="firing",
            opened_at=now,
            first_seen=min(starts, default=now),
            last_seen=now,
            kind="host" if source == "host" else "image",
        )
        self.open[key] = inc
        return inc

    def _take_member(self, inc: Incident, alert: Alert, now: float) -> bool:
        m = inc.members.get(alert.fingerprint)
        if m is None:
            labels = dict(alert.labels)
            m = Member(
                fingerprint=alert.fingerprint,
                alertname=labels.get("alertname", ""),
                instance_uuid=self.instance_of(alert),
                host=labels.get(self.labels.host, ""),
                device=labels.get(self.labels.device, ""),
                labels=labels,
                starts_at=alert.starts_at,
                first_seen=now,
                last_seen=now,
                suppressed=alert.suppressed,
            )
            inc.members[alert.fingerprint] = m
            inc.dirty_members.add(alert.fingerprint)
            if alert.starts_at is not None:
                inc.first_seen = min(inc.first_seen, alert.starts_at)
            return True
        m.last_seen = now
        change = (m.status, m.starts_at, m.suppressed) != (
            FIRING,
            alert.starts_at,
            alert.suppressed,
        )
        if change:
            m.status, m.resolved_at = FIRING, None
            m.starts_at, m.suppressed = alert.starts_at, alert.suppressed
            inc.dirty_members.add(alert.fingerprint)
        return change

    def _rediagnose(
        self,
        inc: Incident,
        affected: set[str],
        verdicts: Mapping[str, Verdict],
        facts: Mapping[str, GuestFacts],
        now: float,
    ) -> bool:
        changed = False
        for uuid in affected:
            v = verdicts.get(uuid)
            if v is None:
                continue
            old = inc.instances.get(uuid)
            if old is None or (old.cause, tuple(old.evidence), old.disagreement) != (
                v.cause,
                v.evidence,
                v.disagreement,
            ):
                f = facts.get(uuid)
                inc.instances[uuid] = InstanceVerdict.of(uuid, v, now, f.observed_at if f else None)
                changed = True
        present = {m.instance_uuid for m in inc.members.values()} | affected
        for uuid in [u for u in inc.instances if u not in present]:
            del inc.instances[uuid]
            changed = True
        root = self.dominant(inc)
        if root != inc.root_cause:
            inc.root_cause = root
            changed = True
        return changed

    def dominant(self, inc: Incident) -> str:
        """The cause of most member instances, preferring the incident's own kind of cause.

        An image incident names a guest-side cause when any member has one, else the commonest
        unknown one; `no_guest_data` only when no member instance has facts.
        """
        members = {m.instance_uuid for m in inc.members.values()}
        causes = [v.cause for u, v in inc.instances.items() if u in members]
        prefer = ("host",) if inc.kind == "host" else ("guest", "unknown")
        order = self.table.order
        for kind in prefer:
            counts = Counter(
                c for c in causes if c != NO_GUEST_DATA and self.kind_of(Verdict(c, ())) == kind
            )
            if counts:
                return min(counts, key=lambda c: (-counts[c], order.get(c, len(order))))
        return NO_GUEST_DATA

    def _advance(self, inc: Incident, now: float) -> bool:
        if inc.firing_members():
            inc.last_seen = now
            if inc.state != "firing":
                inc.state, inc.quiet_since = "firing", None
                return True
            return False
        if inc.state == "firing":
            inc.state, inc.quiet_since = "resolving", now
            return True
        if inc.state == "resolving" and now - (inc.quiet_since or now) >= self.hold_down:
            inc.state, inc.resolved_at = "resolved", now
            del self.open[inc.key]
            self.history[inc.id] = inc
            return True
        return False

    def forget_resolved_before(self, before: float) -> None:
        """Drop from memory the resolved incidents the store's retention deleted."""
        self.history = {
            iid: inc for iid, inc in self.history.items() if (inc.resolved_at or 0) >= before
        }

    def trim_history(self, limit: int) -> None:
        """Keep only the newest `limit` resolved incidents in memory (storage keeps all)."""
        if len(self.history) > limit:
            keep = sorted(self.history.values(), key=lambda i: -(i.resolved_at or 0))[:limit]
            self.history = {i.id: i for i in keep}
