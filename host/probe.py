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
# this long after it was first seen is a button press nobody acknowledged.
BUTTON_CONFIRM_SECONDS = 2.0


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


class ButtonHistory:
    """When each (VM, port) was first seen with ABP set, across probes of a serving exporter."""

    def __init__(self) -> None:
        self._first_seen: dict[tuple[str, str], float] = {}

    def confirmed(self, uuid: str, bdf: str, now: float) -> bool:
        """ABP was already set at a probe at least BUTTON_CONFIRM_SECONDS ago."""
        first = self._first_seen.get((uuid, bdf))
        return first is not None and now - first >= BUTTON_CONFIRM_SECONDS

    def update(self, uuid: str, latched: dict[str, bool], now: float) -> None:
        """Record this probe's raw ABP readings of one VM."""
        for bdf, on in latched.items():
            if on:
                self._first_seen.setdefault((uuid, bdf), now)
            else:
                self._first_seen.pop((uuid, bdf), None)

    def forget_except(self, uuids: set[str]) -> None:
        """Drop VMs no longer probed, so the history does not grow with VM churn."""
        for key in [k for k in self._first_seen if k[0] not in uuids]:
            del self._first_seen[key]


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


async def probe_vm(mon: Monitor, report: VmReport, history: ButtonHistory | None) -> None:
    """Fill `report` from the monitor; raises MonitorError / ConfigReadError on failure."""
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
    latched: dict[str, bool] = {}
    regs: dict[PortAddress, PortRegisters] = {}
    if base is not None and not ecam_unset:
        for addr in bridges(await mon.execute("query-pci")):
            r = await read_port(mon, base, addr)
            if r is not None:
                regs[addr] = r
                latched[addr.bdf] = r.button_latched
    now = time.monotonic()
    confirmed = {
        bdf
        for bdf, on in latched.items()
        if on and history is not None and history.confirmed(report.instance_uuid, bdf, now)
    }
    recheck = [a for a, r in regs.items() if r.button_latched and a.bdf not in confirmed]
    if recheck:
        await asyncio.sleep(BUTTON_CONFIRM_SECONDS)
        for addr in recheck:
            again = await read_port(mon, base or 0, addr)
            if again is not None and again.button_latched:
                confirmed.add(addr.bdf)
    if history is not None:
        history.update(report.instance_uuid, latched, now)
    report.ports = [PortView(a, r, a.bdf in confirmed) for a, r in regs.items()]
    report.verdict = vm_verdict(running, report.hotplug, ecam_unset, report.ports)
    report.success = True


async def probe_with_deadline(
    target: str,
    opener,
    timeout: float,
    history: ButtonHistory | None,
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
