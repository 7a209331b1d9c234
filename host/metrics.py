"""Prometheus metric families from probe reports (prefix pciehp_host_, DESIGN.md section host/)."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

from host.probe import VmReport
from host.slots import port_unplug_ready

PREFIX = "pciehp_host_"
PORT_LABELS = ["instance_uuid", "segment", "bus", "device", "function", "port_id"]


def _gauge(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, doc, labels=labels)


def families(reports: Iterable[VmReport], discovery_ok: bool) -> list[Metric]:
    """Every family for one scrape, built fresh (a VM that went away simply disappears)."""
    discovery = _gauge("discovery_success", "1 if the list of running VMs could be read.", [])
    discovery.add_metric([], 1.0 if discovery_ok else 0.0)
    vm_info = _gauge(
        "vm_info",
        "1 per probed VM: machine type and hotplug model the host offers.",
        ["instance_uuid", "domain", "machine", "hotplug"],
    )
    verdict = _gauge(
        "vm_verdict",
        "1 per VM: will a device_del be answered (ready|not_ready|unknown) and why.",
        ["instance_uuid", "verdict", "reason"],
    )
    success = _gauge(
        "probe_success",
        "1 if the VM's monitor answered every read within --probe.timeout.",
        ["instance_uuid", "domain"],
    )
    duration = _gauge(
        "probe_duration_seconds", "Wall time of the VM's probe.", ["instance_uuid", "domain"]
    )
    per_port = {
        "port_hotplug_capable": "Slot Capabilities HPC (Slot Implemented and Hot-Plug Capable).",
        "port_driver_armed": "The guest wrote Slot Control to listen (ABPE or PDCE set).",
        "port_interrupt_enabled": "Slot Control HPIE (0 also in pciehp poll mode).",
        "slot_adapter_present": "Slot Status PDS (reads 0 on QEMU's ACPI-hotplug ports).",
        "slot_button_pending": "Slot Status ABP latched across two reads: a press nobody acked.",
        "port_unplug_ready": "1 a device_del behind this port will be answered, 0 it will not.",
    }
    port_fams = {k: _gauge(k, doc, PORT_LABELS) for k, doc in per_port.items()}
    for r in reports:
        success.add_metric([r.instance_uuid, r.domain], 1.0 if r.success else 0.0)
        duration.add_metric([r.instance_uuid, r.domain], r.duration)
        if not r.instance_uuid:
            continue  # nothing joins a VM without identity; probe_success already says it failed
        verdict.add_metric([r.instance_uuid, r.verdict.verdict, r.verdict.reason], 1.0)
        if not r.success:
            continue
        vm_info.add_metric([r.instance_uuid, r.domain, r.machine, r.hotplug or "unknown"], 1.0)
        for p in r.ports:
            a = p.address
            labels = [
                r.instance_uuid,
                "0000",
                f"{a.bus:02x}",
                f"{a.device:02x}",
                f"{a.function:x}",
                a.port_id,
            ]
            port_fams["port_hotplug_capable"].add_metric(labels, float(p.regs.hotplug_capable))
            if not p.regs.hotplug_capable:
                continue  # no slot registers worth showing
            values = {
                "port_driver_armed": p.regs.driver_armed,
                "port_interrupt_enabled": p.regs.interrupt_enabled,
                "slot_adapter_present": p.regs.adapter_present,
                "slot_button_pending": p.button_pending,
                "port_unplug_ready": port_unplug_ready(r.verdict, r.hotplug, p),
            }
            for key, value in values.items():
                if value is not None:
                    port_fams[key].add_metric(labels, 1.0 if value else 0.0)
    return [vm_info, verdict, *port_fams.values(), success, duration, discovery]


class _Built:
    """Already built families, shaped as a registry for generate_latest."""

    def __init__(self, fams: list[Metric]) -> None:
        self._fams = fams

    def collect(self) -> Iterable[Metric]:
        return iter(self._fams)


def render(reports: Iterable[VmReport], discovery_ok: bool) -> bytes:
    """One scrape of these reports in the text exposition format."""
    return generate_latest(_Built(families(reports, discovery_ok)))  # type: ignore[arg-type]
