"""Which VMs run on this host, and how to open each one's monitor (QMP sockets or libvirt)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from host.monitor import Monitor, QMPMonitor, VirshMonitor, run_virsh


@dataclass(frozen=True)
class Target:
    """One VM to probe: a name for logs and labels, and how to reach its monitor."""

    name: str
    open: Callable[[], Awaitable[Monitor]]
    domain: str = ""
    instance_uuid: str = ""


def qmp_targets(sockets: list[str]) -> list[Target]:
    """One target per QMP socket given with --qmp.socket (QEMU allows several monitors)."""

    def opener(path: str) -> Callable[[], Awaitable[Monitor]]:
        return lambda: QMPMonitor.connect(Path(path))

    return [Target(name=s, open=opener(s)) for s in sockets]


async def libvirt_targets(uri: str, virsh: str = "virsh") -> list[Target]:
    """Running domains of a libvirt connection, each probed through qemu-monitor-command."""
    out = await run_virsh(virsh, uri, "list", "--state-running", "--uuid", "--name")
    targets = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) != 2:
            continue
        uuid, name = parts

        def opener(name: str = name) -> Callable[[], Awaitable[Monitor]]:
            async def open_() -> Monitor:
                return VirshMonitor(uri, name, virsh)

            return open_

        targets.append(Target(name=name, open=opener(), domain=name, instance_uuid=uuid.lower()))
    return targets
