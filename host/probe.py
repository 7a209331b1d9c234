"""Probe one VM through its monitor: identity, hotplug model, ECAM base, every port's registers."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from host.monitor import Monitor, MonitorError, xp_arguments
from host.slots import (
    ECAM_UNSET,
    ConfigReadError,
    PortAddress,
    PortRegisters,
    PortView,
    Verdict,
    bridges,
    decode,
    ecam_address,
    parse_xp,
    vm_verdict,
)

log = logging.getLogger("pciehp_host_exporter")

# pciehp clears ABP within a millisecond, its poll mode within about a second: an ABP still set
# this long after it was first seen is a button press nobody acknowledged. The same interval
# confirms "nothing armed": a booting Linux enables its ports ~0.5 s (TCG) before pciehp arms them.
CONFIRM_SECONDS = 2.0


@dataclass
class VmReport:
    """Everything one probe learnt about a VM (uuid etc. empty when the probe failed early)."""

    target: str
    success: bool = False
    duration: float = 0.0
    error: str = ""
    instance_uuid: str = ""
    domain: str = ""
    machine: str = ""
    hotplug: str | None = None
    ports: list[PortView] = field(default_factory=list)
    verdict: Verdict = field(default_factory=lambda: Verdict("unknown", "probe_failed"))


class History:
    """Since when each finding was seen without a break, across the probes of a serving exporter.

    Keys are (instance_uuid, what): what is a port's BDF for a latched ABP, or "not_ready" for
    the VM-level not-ready reading. A finding seen for CONFIRM_SECONDS needs no re-read.
    """

    def __init__(self) -> None:
        self._since: dict[tuple[str, str], float] = {}

    def confirmed(self, uuid: str, what: str, now: float) -> bool:
        """`what` was already seen at a probe at least CONFIRM_SECONDS ago, and ever since."""
        first = self._since.get((uuid, what))
        return first is not None and now - first >= CONFIRM_SECONDS

    def update(self, uuid: str, seen: dict[str, bool], now: float) -> None:
        """Record this probe's raw readings of one VM."""
        for what, on in seen.items():
            if on:
                self._since.setdefault((uuid, what), now)
            else:
                self._since.pop((uuid, what), None)

    def forget_except(self, uuids: set[str]) -> None:
        """Drop VMs no longer probed, so the history does not grow with VM churn."""
        for key in [k for k in self._since if k[0] not in uuids]:
            del self._since[key]


async def _qom_get(mon: Monitor, path: str, prop: str) -> object:
    return await mon.execute("qom-get", {"path": path, "property": prop})


async def hotplug_model(mon: Monitor) -> str | None:
    """`acpi` or `native`, from the ACPI device's (ICH9-LPC / PIIX4_PM) hotplug property."""
    try:
        acpi_dev = await _qom_get(mon, "/machine", "acpi-device")
        if not isinstance(acpi_dev, str) or not acpi_dev:
            return None
        acpi = await _qom_get(mon, acpi_dev, "acpi-pci-hotplug-with-bridge-support")
    except MonitorError as e:
        log.debug("hotplug model unreadable: %s", e)
        return None
    return "acpi" if acpi is True else "native" if acpi is False else None


async def ecam_base(mon: Monitor) -> int | None:
    """ECAM base as the firmware set it; None on a machine without one (i440fx)."""
    try:
        base = await _qom_get(mon, "/machine/q35", "MCFG")
    except MonitorError:
        return None
    if not isinstance(base, int) or base < 0:
        raise MonitorError(f"MCFG is not an address: {base!r}")
    return base


async def read_port(mon: Monitor, base: int, addr: PortAddress) -> PortRegisters | None:
    """One port's 256 config bytes, decoded (None: not a root or downstream port)."""
    where = ecam_address(base, addr.bus, addr.device, addr.function)
    text = await mon.execute("human-monitor-command", xp_arguments(where))
    if not isinstance(text, str):
        raise ConfigReadError(f"{addr.bdf}: xp answered {type(text).__name__}")
    return decode(parse_xp(text, where))


async def read_ports(
    mon: Monitor, base: int, addrs: list[PortAddress]
) -> dict[PortAddress, PortRegisters]:
    """Registers of every root and downstream port among `addrs`."""
    regs = {}
    for addr in addrs:
        r = await read_port(mon, base, addr)
        if r is not None:
            regs[addr] = r
    return regs


def _views(regs: dict[PortAddress, PortRegisters], pending: set[str]) -> list[PortView]:
    return [PortView(a, r, a.bdf in pending) for a, r in regs.items()]


async def probe_vm(mon: Monitor, report: VmReport, history: History | None) -> None:
    """Fill `report` from the monitor; raises MonitorError / ConfigReadError on failure.

    A latched ABP counts only when a second reading CONFIRM_SECONDS later (or the serving
    exporter's history) still shows it; so does a not-ready verdict. Otherwise the ports are
    read once more after that interval, and a reading that changed meanwhile is `booting`.
    """
    status = await mon.execute("query-status")
    running = isinstance(status, dict) and status.get("status") == "running"
    uuid = await mon.execute("query-uuid")
    report.instance_uuid = str(uuid.get("UUID", "")).lower() if isinstance(uuid, dict) else ""
    name = await mon.execute("query-name")
    if not report.domain and isinstance(name, dict):
        report.domain = str(name.get("name", ""))
    machine = await _qom_get(mon, "/machine", "type")
    report.machine = str(machine).removesuffix("-machine")
    report.hotplug = await hotplug_model(mon)
    base = await ecam_base(mon)
    ecam_unset = base == ECAM_UNSET
    addrs: list[PortAddress] = []
    regs: dict[PortAddress, PortRegisters] = {}
    if base is not None and not ecam_unset:
        addrs = bridges(await mon.execute("query-pci"))
        regs = await read_ports(mon, base, addrs)
    uid, now = report.instance_uuid, time.monotonic()
    latched = {a.bdf for a, r in regs.items() if r.button_latched}
    verdict = vm_verdict(running, report.hotplug, ecam_unset, _views(regs, latched))
    seen = {bdf: True for bdf in latched} | {"not_ready": verdict.verdict == "not_ready"}
    seen |= {a.bdf: False for a in regs if a.bdf not in latched}
    if history is not None:
        history.update(uid, seen, now)
    confirmed = {w for w, on in seen.items() if on and history and history.confirmed(uid, w, now)}
    if {w for w, on in seen.items() if on} - confirmed and base is not None:
        await asyncio.sleep(CONFIRM_SECONDS)
        again = await read_ports(mon, base, addrs)
        still = {a.bdf for a, r in again.items() if r.button_latched}
        confirmed = {w for w in confirmed if w == "not_ready" or w in still} | (latched & still)
        second = vm_verdict(running, report.hotplug, ecam_unset, _views(again, confirmed))
        if second.verdict == "not_ready" and verdict.verdict == "not_ready":
            confirmed.add("not_ready")
        regs = again
    report.ports = _views(regs, confirmed)
    report.verdict = vm_verdict(running, report.hotplug, ecam_unset, report.ports)
    if report.verdict.verdict == "not_ready" and "not_ready" not in confirmed:
        report.verdict = Verdict("unknown", "booting")  # a reading that changed or is too fresh
    report.success = True


async def probe_with_deadline(
    target: str,
    opener,
    timeout: float,
    history: History | None,
    domain: str = "",
    instance_uuid: str = "",
) -> VmReport:
    """Probe one VM within `timeout` seconds: a silent VM is reported, never waited on."""
    report = VmReport(target=target, domain=domain, instance_uuid=instance_uuid)
    start = time.monotonic()
    mon: Monitor | None = None

    async def run() -> None:
        nonlocal mon
        mon = await opener()
        await probe_vm(mon, report, history)

    try:
        await asyncio.wait_for(run(), timeout)
    except TimeoutError:
        report.error = f"no answer within {timeout:g}s"
    except (MonitorError, ConfigReadError) as e:
        report.error = str(e)
    finally:
        if mon is not None:
            await mon.close()
    report.duration = time.monotonic() - start
    report.domain = report.domain or target  # a QMP socket without -name: its path names it
    if not report.success:
        report.ports = []
        report.verdict = Verdict("unknown", "probe_failed")
        log.warning("probe of %s failed: %s", target, report.error)
    return report
