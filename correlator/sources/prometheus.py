"""Guest and host facts from Prometheus with a fixed set of instant queries per reconcile.

However many alerts fire, one reconcile runs at most four PromQL queries: the guests'
`pciehp_guest_info` and the host exporters' `pciehp_host_*` series for the affected instance
UUIDs, then two metric-family queries restricted to those guests' (job, instance) targets:
ports with the exporter's own unplug verdict, and guest metadata. The results are joined in
Python into one GuestFacts per instance UUID.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

import aiohttp

from correlator.model import GuestFacts, HostFacts, HostPortFacts, OscFacts, PortFacts
from correlator.sources import decode_json

PORT_FAMILIES = (
    "pciehp_port_info",
    "pciehp_port_unplug_verdict",
    "pciehp_port_hotplug_capable",
    "pciehp_port_service_bound",
    "pciehp_port_irq_registered",
    "pciehp_slot_button_pending",
    "pciehp_slot_interrupt_enabled",
    "pciehp_slot_unplug_unanswered",
)
GUEST_FAMILIES = (
    "pciehp_osc_info",
    "pciehp_kernel_param",
    "pciehp_rescan_workaround",
    "pciehp_fact_unknown",
)
HOST_FAMILIES = (
    "pciehp_host_vm_info",
    "pciehp_host_vm_verdict",
    "pciehp_host_probe_success",
    "pciehp_host_port_hotplug_capable",
    "pciehp_host_port_driver_armed",
    "pciehp_host_port_interrupt_enabled",
    "pciehp_host_slot_adapter_present",
    "pciehp_host_slot_button_pending",
    "pciehp_host_port_unplug_ready",
)
_PORT_VALUES = {
    "pciehp_port_hotplug_capable": "hotplug_capable",
    "pciehp_port_service_bound": "service_bound",
    "pciehp_port_irq_registered": "irq_registered",
    "pciehp_slot_button_pending": "button_pending",
    "pciehp_slot_interrupt_enabled": "interrupt_enabled",
    "pciehp_slot_unplug_unanswered": "unplug_unanswered",
}
_HOST_PORT_VALUES = {
    "pciehp_host_port_hotplug_capable": "hotplug_capable",
    "pciehp_host_port_driver_armed": "driver_armed",
    "pciehp_host_port_interrupt_enabled": "interrupt_enabled",
    "pciehp_host_slot_adapter_present": "adapter_present",
    "pciehp_host_slot_button_pending": "button_pending",
    "pciehp_host_port_unplug_ready": "unplug_ready",
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
    unknown: list[str] = field(default_factory=list)
    verdicts: bool = False


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
    ) -> None:
        self.session = session
        self.url = url.rstrip("/")
        self.image_label = image_label
        self.selector = selector.strip().rstrip(",")
        self.timeout = timeout
        self.queries_total = 0

    def _extra(self) -> str:
        return f", {self.selector}" if self.selector else ""

    def guest_query(self, uuids: Collection[str]) -> str:
        """First query: the guests (and their targets) of these instance UUIDs."""
        return (
            f"pciehp_guest_info{{instance_uuid=~{promql_string(regex_alternatives(uuids))}"
            f"{self._extra()}}}"
        )

    def host_query(self, uuids: Collection[str]) -> str:
        """The host exporters' view of these VMs (DESIGN.md host/), in one query."""
        names = "|".join(HOST_FAMILIES)
        return (
            f'{{__name__=~"{names}", '
            f"instance_uuid=~{promql_string(regex_alternatives(uuids))}{self._extra()}}}"
        )

    def fact_queries(self, targets: Collection[tuple[str, str]]) -> list[str]:
        """The family queries (ports with their verdicts, guest metadata) for these targets.

        Selecting by target label keeps Prometheus from touching the rest of the fleet, and
        `max by` drops the labels the join does not need, which keeps the answer small.
        """
        jobs = promql_string(regex_alternatives({j for j, _ in targets}))
        instances = promql_string(regex_alternatives({i for _, i in targets}))
        sel = f"job=~{jobs}, instance=~{instances}{self._extra()}"
        port = "__name__, job, instance, segment, bus, device, function"
        ports = (
            f'({{__name__=~"{"|".join(PORT_FAMILIES)}", {sel}}} '
            f"or pciehp_port_hotplug_handler{{{sel}}} == 1)"
        )
        meta = "|".join(GUEST_FAMILIES)
        return [
            f"max by ({port}, slot, port_type, handler, verdict, reason) {ports}",
            f'{{__name__=~"{meta}", {sel}}} or pciehp_collector_success{{{sel}}} == 0',
        ]

    def peers_query(self, images: Collection[str]) -> str:
        """Guests of these images that can hot-unplug: every port's verdict is `ready`.

        Computed by Prometheus, so the answer is one series per healthy guest, whatever the size
        of the fleet. These are the incident's counter-evidence among guests with no alert. A
        guest with any fact unknown, or without the exporter's verdict, is never counted.
        """
        il = self.image_label
        sel = f"{il}=~{promql_string(regex_alternatives(images))}{self._extra()}"
        ready = (
            f'(pciehp_port_unplug_verdict{{verdict="ready", {sel}}} '
            f'unless on (job, instance) pciehp_port_unplug_verdict{{verdict!="ready", {sel}}})'
        )
        return (
            f"(max by (job, instance, instance_uuid, {il}) (pciehp_guest_info{{{sel}}}) "
            f"and on (job, instance) {ready}) "
            f"unless on (job, instance) pciehp_fact_unknown{{{sel}}}"
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
        """Facts for every instance UUID that has a guest exporter or a host exporter.

        At most four queries, whatever the number of UUIDs: the guests and the hosts' view
        first, then the metric families of the guests' targets in parallel.
        """
        if not uuids:
            return {}
        guests, hosts = await asyncio.gather(
            self._query(self.guest_query(uuids)), self._query(self.host_query(uuids))
        )
        targets = {
            (g["metric"].get("job", ""), g["metric"].get("instance", ""))  # type: ignore[union-attr]
            for g in guests
        }
        ports: list[Mapping[str, object]] = []
        meta: list[Mapping[str, object]] = []
        if targets:
            ports, meta = await asyncio.gather(
                *(self._query(q) for q in self.fact_queries(targets))
            )
        return await asyncio.to_thread(self.join, guests, ports, meta, now, hosts)

    def join(
        self,
        guests: list[Mapping[str, object]],
        ports: list[Mapping[str, object]],
        meta: list[Mapping[str, object]],
        now: float,
        hosts: list[Mapping[str, object]] | None = None,
    ) -> dict[str, GuestFacts]:
        """Turn the query results into GuestFacts keyed by instance UUID.

        An instance seen only by its host exporter gets GuestFacts with `guest_data` False and
        the host's view attached.
        """
        by_target: dict[tuple[str, str], _Guest] = {}
        for sample in sorted(guests, key=lambda s: sorted(s["metric"].items())):  # type: ignore[union-attr]
            labels: Mapping[str, str] = sample["metric"]  # type: ignore[assignment]
            by_target[(labels.get("job", ""), labels.get("instance", ""))] = _Guest(labels)

        def guest_of(labels: Mapping[str, str]) -> _Guest | None:
            return by_target.get((labels.get("job", ""), labels.get("instance", "")))

        by_slot: list[tuple[_Guest, Mapping[str, str], float]] = []
        for sample in ports:
            labels = sample["metric"]  # type: ignore[assignment]
            g = guest_of(labels)
            if g is None:
                continue
            name = labels.get("__name__", "")
            value = _value(sample)
            if "bus" not in labels and labels.get("slot"):
                by_slot.append((g, labels, value))  # a slot series without the port's address
                continue
            port = g.ports[_address(labels)]
            if name == "pciehp_port_info":
                port["slot"] = labels.get("slot", "")
                port["port_type"] = labels.get("port_type", "")
            elif name == "pciehp_port_hotplug_handler":
                if value == 1:
                    port["handler"] = labels.get("handler", "")
            elif name == "pciehp_port_unplug_verdict":
                if value == 1:
                    port["verdict"] = labels.get("verdict", "") or "unknown"
                    port["reason"] = labels.get("reason", "")
                    g.verdicts = True
            elif name in _PORT_VALUES:
                port[_PORT_VALUES[name]] = value
                if labels.get("slot"):
                    port.setdefault("slot", labels["slot"])
        for g, labels, value in by_slot:
            name = _PORT_VALUES.get(labels.get("__name__", ""))
            for port in g.ports.values():
                if name and port.get("slot") == labels["slot"]:
                    port[name] = value
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
                        source=labels.get("source", "log"),
                    )
                )
            elif name == "pciehp_kernel_param":
                g.cmdline[labels.get("param", "")] = labels.get("value", "")
            elif name == "pciehp_rescan_workaround":
                g.rescan.append(labels.get("source", ""))
            elif name == "pciehp_fact_unknown" and _value(sample) == 1:
                g.unknown.append(f"{labels.get('fact', '?')} ({labels.get('reason', '?')})")
            elif name == "pciehp_collector_success" and _value(sample) == 0:
                g.failed.append(labels.get("collector", ""))

        host_facts = join_hosts(hosts or [], now)
        out: dict[str, GuestFacts] = {}
        for (job, target), g in by_target.items():
            uuid = g.info.get("instance_uuid", "")
            if not uuid or uuid in out:
                continue
            judged = [p for p in g.ports.values() if p.get("hotplug_capable") != 0 or p.get("slot")]
            if judged and not g.verdicts:
                # the exporter publishes a verdict for every port that has a slot or may be
                # hotplug-capable: such ports without one are unknown, never healthy
                g.unknown.append("port_unplug_verdict (not_published)")
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
                facts_unknown=tuple(sorted(set(g.unknown))),
                observed_at=now,
                host=host_facts.get(uuid),
            )
        for uuid, hf in host_facts.items():
            if uuid not in out:
                out[uuid] = GuestFacts(
                    instance_uuid=uuid, observed_at=now, guest_data=False, host=hf
                )
        return out


def join_hosts(samples: list[Mapping[str, object]], now: float) -> dict[str, HostFacts]:
    """The host exporters' series (pciehp_host_*) as one HostFacts per instance UUID."""
    vms: dict[str, dict[str, object]] = {}
    ports: dict[str, dict[str, dict[str, object]]] = defaultdict(lambda: defaultdict(dict))
    for sample in samples:
        labels: Mapping[str, str] = sample["metric"]  # type: ignore[assignment]
        uuid = labels.get("instance_uuid", "")
        if not uuid:
            continue
        vm = vms.setdefault(uuid, {})
        name = labels.get("__name__", "")
        value = _value(sample)
        if name == "pciehp_host_vm_info":
            vm.update(
                hotplug=labels.get("hotplug", ""),
                machine=labels.get("machine", ""),
                domain=labels.get("domain", ""),
            )
        elif name == "pciehp_host_vm_verdict" and value == 1:
            vm.update(
                verdict=labels.get("verdict", "") or "unknown", reason=labels.get("reason", "")
            )
        elif name == "pciehp_host_probe_success":
            vm["probe_success"] = value
        elif name in _HOST_PORT_VALUES:
            port = ports[uuid][_address(labels)]
            port[_HOST_PORT_VALUES[name]] = value
            if labels.get("port_id"):
                port["port_id"] = labels["port_id"]
    return {
        uuid: HostFacts(
            instance_uuid=uuid,
            ports=tuple(
                HostPortFacts(address=addr, **fields)  # type: ignore[arg-type]
                for addr, fields in sorted(ports[uuid].items())
            ),
            observed_at=now,
            **vm,  # type: ignore[arg-type]
        )
        for uuid, vm in vms.items()
    }
