"""Guest facts from Prometheus with a fixed set of instant queries per reconcile.

However many alerts fire, one reconcile runs at most four PromQL queries: the guests'
`pciehp_guest_info` for the affected instance UUIDs, then three metric-family queries
restricted to those guests' (job, instance) targets. The results are joined in Python into
one GuestFacts per instance UUID.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

import aiohttp

from correlator.model import GuestFacts, OscFacts, PortFacts
from correlator.sources import decode_json

PORT_FAMILIES = (
    "pciehp_port_info",
    "pciehp_port_hotplug_capable",
    "pciehp_port_service_bound",
    "pciehp_port_irq_registered",
    "pciehp_slot_button_pending",
    "pciehp_slot_interrupt_enabled",
)
# Which series a port field comes from (slot and port_type: pciehp_port_info, always queried).
FIELD_SOURCES = {
    "hotplug_capable": "pciehp_port_hotplug_capable",
    "service_bound": "pciehp_port_service_bound",
    "irq_registered": "pciehp_port_irq_registered",
    "button_pending": "pciehp_slot_button_pending",
    "interrupt_enabled": "pciehp_slot_interrupt_enabled",
    "handler": "pciehp_port_hotplug_handler",
    "attention_buttons": "pciehp_events_total",
    "power_off_requests": "pciehp_events_total",
}
GUEST_FAMILIES = ("pciehp_osc_info", "pciehp_kernel_param", "pciehp_rescan_workaround")
EVENTS = {"attention_button": "attention_buttons", "power_off_request": "power_off_requests"}
_PORT_VALUES = {
    "pciehp_port_hotplug_capable": "hotplug_capable",
    "pciehp_port_service_bound": "service_bound",
    "pciehp_port_irq_registered": "irq_registered",
    "pciehp_slot_button_pending": "button_pending",
    "pciehp_slot_interrupt_enabled": "interrupt_enabled",
}
_REGEX_SPECIAL = set("\\.+*?()|[]{}^$")


class PrometheusError(Exception):
    """Prometheus did not answer a query (unreachable, timeout, or an API error)."""


def regex_alternatives(values: Collection[str]) -> str:
    """An RE2 alternation matching exactly the given strings."""
    return "|".join(
        "".join("\\" + ch if ch in _REGEX_SPECIAL else ch for ch in v) for v in sorted(values)
    )


def promql_string(text: str) -> str:
    """A PromQL double-quoted string literal."""
    return json.dumps(text)


@dataclass
class _Guest:
    info: Mapping[str, str]
    ports: dict[str, dict[str, object]] = field(default_factory=lambda: defaultdict(dict))
    osc: list[OscFacts] = field(default_factory=list)
    cmdline: dict[str, str] = field(default_factory=dict)
    rescan: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def _address(labels: Mapping[str, str]) -> str:
    return f"{labels.get('segment', '')}:{labels.get('bus', '')}:{labels.get('device', '')}." + (
        labels.get("function", "")
    )


def _value(sample: Mapping[str, object]) -> float:
    return float(sample["value"][1])  # type: ignore[index]


class PrometheusSource:
    """Runs the bounded fact queries against one Prometheus and joins the answers."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        image_label: str = "image_id",
        selector: str = "",
        timeout: float = 10.0,
        port_fields: Collection[str] | None = None,
    ) -> None:
        fields_ = (
            set(FIELD_SOURCES) | {"slot", "port_type"} if port_fields is None else set(port_fields)
        )
        self.families = [
            f for f in PORT_FAMILIES if any(FIELD_SOURCES.get(x) == f for x in fields_)
        ]
        slot_families = {"pciehp_slot_button_pending", "pciehp_slot_interrupt_enabled"}
        if "port_type" in fields_ or ("slot" in fields_ and not slot_families & {*self.families}):
            self.families.insert(0, "pciehp_port_info")
        self.families = self.families or ["pciehp_port_info"]
        self.handler = "handler" in fields_
        self.events = [e for e, field_name in EVENTS.items() if field_name in fields_]
        self.session = session
        self.url = url.rstrip("/")
        self.image_label = image_label
        self.selector = selector.strip().rstrip(",")
        self.timeout = timeout
        self.queries_total = 0

    def guest_query(self, uuids: Collection[str]) -> str:
        """First query: the guests (and their targets) of these instance UUIDs."""
        extra = f", {self.selector}" if self.selector else ""
        return (
            f"pciehp_guest_info{{instance_uuid=~{promql_string(regex_alternatives(uuids))}{extra}}}"
        )

    def fact_queries(self, targets: Collection[tuple[str, str]]) -> list[str]:
        """The family queries (ports, guest metadata, events if needed) for these targets.

        Selecting by target label keeps Prometheus from touching the rest of the fleet, and
        `max by` drops the labels the join does not need, which keeps the answer small.
        """
        jobs = promql_string(regex_alternatives({j for j, _ in targets}))
        instances = promql_string(regex_alternatives({i for _, i in targets}))
        sel = f"job=~{jobs}, instance=~{instances}" + (
            f", {self.selector}" if self.selector else ""
        )
        port = "__name__, job, instance, segment, bus, device, function"
        ports = f'{{__name__=~"{"|".join(self.families)}", {sel}}}'
        if self.handler:
            ports = f"({ports} or pciehp_port_hotplug_handler{{{sel}}} == 1)"
        meta = "|".join(GUEST_FAMILIES)
        out = [
            f"max by ({port}, slot, port_type, handler) {ports}",
            f'{{__name__=~"{meta}", {sel}}} or pciehp_collector_success{{{sel}}} == 0',
        ]
        if self.events:
            events = "|".join(self.events)
            out.append(f'sum by ({port}, event) (pciehp_events_total{{event=~"{events}", {sel}}})')
        return out

    def peers_query(self, images: Collection[str]) -> str:
        """Guests of these images that can hot-unplug: no hotplug-capable port without a handler.

        Computed by Prometheus, so the answer is one series per healthy guest, whatever the size
        of the fleet. These are the incident's counter-evidence among guests with no alert.
        """
        il = self.image_label
        extra = f", {self.selector}" if self.selector else ""
        sel = f"{il}=~{promql_string(regex_alternatives(images))}{extra}"
        port = "job, instance, segment, bus, device, function"
        return (
            f"max by (job, instance, instance_uuid, {il}) (pciehp_guest_info{{{sel}}}) "
            f'unless on (job, instance) (pciehp_port_hotplug_handler{{handler="none", {sel}}} == 1 '
            f"and on ({port}) pciehp_port_hotplug_capable{{{sel}}} == 1)"
        )

    async def healthy_peers(self, images: Collection[str]) -> dict[str, set[str]]:
        """image -> instance UUIDs of its guests that can hot-unplug (one query)."""
        if not images:
            return {}
        out: dict[str, set[str]] = {}
        for sample in await self._query(self.peers_query(images)):
            labels: Mapping[str, str] = sample["metric"]  # type: ignore[assignment]
            uuid = labels.get("instance_uuid", "")
            if uuid:
                out.setdefault(labels.get(self.image_label, ""), set()).add(uuid)
        return out

    async def _query(self, promql: str) -> list[Mapping[str, object]]:
        self.queries_total += 1
        try:
            async with self.session.post(
                f"{self.url}/api/v1/query",
                data={"query": promql},
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            ) as resp:
                body = await resp.read()
        except (aiohttp.ClientError, TimeoutError) as e:
            raise PrometheusError(f"{self.url} unreachable: {e or type(e).__name__}") from e
        try:
            doc = await decode_json(body)
        except ValueError as e:
            raise PrometheusError(f"{self.url} answered HTTP {resp.status}, not JSON") from e
        if resp.status != 200 or doc.get("status") != "success":
            raise PrometheusError(
                f"{self.url} query failed (HTTP {resp.status}): "
                f"{doc.get('errorType', '')} {doc.get('error', '')}".strip()
            )
        data = doc.get("data", {})
        if data.get("resultType") != "vector":
            raise PrometheusError(f"{self.url} returned {data.get('resultType')}, not a vector")
        return data.get("result", [])

    async def facts(self, uuids: Collection[str], now: float) -> dict[str, GuestFacts]:
        """Facts for every instance UUID that has a guest exporter in Prometheus.

        At most four queries, whatever the number of UUIDs: the guests first, then the metric
        families of their targets in parallel. Only the port facts the diagnosis table reads
        are asked for.
        """
        if not uuids:
            return {}
        guests = await self._query(self.guest_query(uuids))
        targets = {
            (g["metric"].get("job", ""), g["metric"].get("instance", ""))  # type: ignore[union-attr]
            for g in guests
        }
        if not targets:
            return {}
        ports, meta, *events = await asyncio.gather(
            *(self._query(q) for q in self.fact_queries(targets))
        )
        return await asyncio.to_thread(
            self.join, guests, ports, events[0] if events else [], meta, now
        )

    def join(
        self,
        guests: list[Mapping[str, object]],
        ports: list[Mapping[str, object]],
        events: list[Mapping[str, object]],
        meta: list[Mapping[str, object]],
        now: float,
    ) -> dict[str, GuestFacts]:
        """Turn the four query results into GuestFacts keyed by instance UUID."""
        by_target: dict[tuple[str, str], _Guest] = {}
        for sample in sorted(guests, key=lambda s: sorted(s["metric"].items())):  # type: ignore[union-attr]
            labels: Mapping[str, str] = sample["metric"]  # type: ignore[assignment]
            by_target[(labels.get("job", ""), labels.get("instance", ""))] = _Guest(labels)

        def guest_of(labels: Mapping[str, str]) -> _Guest | None:
            return by_target.get((labels.get("job", ""), labels.get("instance", "")))

        for sample in ports:
            labels = sample["metric"]  # type: ignore[assignment]
            g = guest_of(labels)
            if g is None:
                continue
            port = g.ports[_address(labels)]
            name = labels.get("__name__", "")
            value = _value(sample)
            if name == "pciehp_port_info":
                port["slot"] = labels.get("slot", "")
                port["port_type"] = labels.get("port_type", "")
            elif name == "pciehp_port_hotplug_handler":
                if value == 1:
                    port["handler"] = labels.get("handler", "")
            elif name in _PORT_VALUES:
                port[_PORT_VALUES[name]] = value
                if labels.get("slot"):
                    port.setdefault("slot", labels["slot"])
        for sample in events:
            labels = sample["metric"]  # type: ignore[assignment]
            g = guest_of(labels)
            field_name = EVENTS.get(labels.get("event", ""))
            if g is None or field_name is None:
                continue
            port = g.ports[_address(labels)]
            port[field_name] = float(port.get(field_name, 0.0)) + _value(sample)  # type: ignore[arg-type]
        for sample in meta:
            labels = sample["metric"]  # type: ignore[assignment]
            g = guest_of(labels)
            if g is None:
                continue
            name = labels.get("__name__", "")
            if name == "pciehp_osc_info":
                g.osc.append(
                    OscFacts(
                        bridge=labels.get("bridge", ""),
                        outcome=labels.get("outcome", ""),
                        missing_support=tuple(labels.get("missing_support", "").split()),
                        denied=tuple(labels.get("denied", "").split()),
                    )
                )
            elif name == "pciehp_kernel_param":
                g.cmdline[labels.get("param", "")] = labels.get("value", "")
            elif name == "pciehp_rescan_workaround":
                g.rescan.append(labels.get("source", ""))
            elif name == "pciehp_collector_success" and _value(sample) == 0:
                g.failed.append(labels.get("collector", ""))

        out: dict[str, GuestFacts] = {}
        for (job, target), g in by_target.items():
            uuid = g.info.get("instance_uuid", "")
            if not uuid or uuid in out:
                continue
            out[uuid] = GuestFacts(
                instance_uuid=uuid,
                machine=g.info.get("machine", ""),
                kernel=g.info.get("kernel", ""),
                job=job,
                target=target,
                image_id=g.info.get(self.image_label, ""),
                ports=tuple(
                    PortFacts(address=addr, **fields)  # type: ignore[arg-type]
                    for addr, fields in sorted(g.ports.items())
                ),
                osc=tuple(sorted(g.osc, key=lambda o: o.bridge)),
                cmdline=dict(sorted(g.cmdline.items())),
                rescan_workarounds=tuple(sorted(g.rescan)),
                collectors_failed=tuple(sorted(g.failed)),
                observed_at=now,
            )
        return out
