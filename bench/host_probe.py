"""Cost of pciehp-host-exporter's probes, against real QEMU processes sitting in firmware.

A VM in firmware answers the same monitor commands as a booted one (identity, hotplug model,
MCFG, query-pci, one `xp /64wx` per port), so the cost per VM is the same. Prints:
- per-VM probe wall time over QMP for 12 and 28 pcie-root-ports (goal, issue 10: <= 20 ms for 12);
- the same through libvirt (`virsh qemu-monitor-command`, a test-started session libvirtd, TCG);
- the exporter's own CPU per scrape, and scrape wall time, with 50 VMs of 12 ports each.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
import statistics
import sys
import tempfile
import time
import uuid as uuidlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from host.cli import HostExporter  # noqa: E402
from host.probe import History, probe_with_deadline  # noqa: E402
from host.vms import libvirt_targets, qmp_targets  # noqa: E402
from tests.host.firmware import FirmwareVM, accel  # noqa: E402
from tests.host.libvirtd import Libvirtd, domain_xml  # noqa: E402


def cpu_seconds() -> float:
    """User + system CPU of this process so far."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def summary(values: list[float]) -> str:
    """p50 / p95 / max in milliseconds."""
    ms = sorted(v * 1000 for v in values)
    p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
    return f"p50 {statistics.median(ms):6.1f} ms  p95 {p95:6.1f} ms  max {ms[-1]:6.1f} ms"


async def probe_times(target, rounds: int) -> tuple[list[float], int]:
    """Wall time of `rounds` probes of one target, and the ports the last one found."""
    times, ports = [], 0
    history = History()
    for _ in range(rounds):
        r = await probe_with_deadline(target.name, target.open, 10.0, history, target.domain)
        if not r.success:
            raise RuntimeError(f"probe failed: {r.error}")
        times.append(r.duration)
        ports = len(r.ports)
    return times, ports


async def until_firmware_ran(target, ports: int) -> None:
    """Probe until the firmware has set MCFG and every port is readable (deadline 60 s)."""
    deadline = time.monotonic() + 60
    while (await probe_times(target, 1))[1] != ports:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{target.name}: ports never readable")


async def per_vm(workdir: Path, rounds: int) -> None:
    for ports in (12, 28):
        with FirmwareVM(workdir, ports=ports, name=f"p{ports}") as vm:
            [target] = qmp_targets([str(vm.qmp_socket)])
            await until_firmware_ran(target, ports)
            times, found = await probe_times(target, rounds)
            print(f"QMP     {found:2d} ports, {rounds} probes: {summary(times)}")


async def per_vm_libvirt(workdir: Path, rounds: int) -> None:
    with Libvirtd() as lv:
        for ports in (12, 28):
            name = f"bench-{ports}"
            xml = workdir / f"{name}.xml"
            xml.write_text(domain_xml(name, str(uuidlib.uuid4()), ports))
            lv.virsh("create", str(xml))
            target = next(t for t in await libvirt_targets(lv.uri) if t.name == name)
            await until_firmware_ran(target, ports)
            times, found = await probe_times(target, rounds)
            print(f"libvirt {found:2d} ports, {rounds} probes: {summary(times)}")


async def fleet(workdir: Path, vms: int, scrapes: int, concurrency: int) -> None:
    with contextlib.ExitStack() as stack:
        started = time.monotonic()
        fw = [
            stack.enter_context(FirmwareVM(workdir, ports=12, name=f"vm{i:02d}"))
            for i in range(vms)
        ]
        print(
            f"started {vms} QEMUs (12 ports each, {accel()}) in {time.monotonic() - started:.1f} s"
        )
        targets = qmp_targets([str(v.qmp_socket) for v in fw])

        async def discover():
            return targets

        exporter = HostExporter(discover, timeout=10.0, concurrency=concurrency)
        for t in targets:
            await until_firmware_ran(t, 12)
        cpu, wall = [], []
        for _ in range(scrapes):
            c0, w0 = cpu_seconds(), time.monotonic()
            body = await exporter.scrape()
            cpu.append(cpu_seconds() - c0)
            wall.append(time.monotonic() - w0)
        ok = sum(
            1
            for line in body.decode().splitlines()
            if line.startswith("pciehp_host_probe_success{") and line.endswith(" 1.0")
        )
        print(
            f"{vms} VMs, concurrency {concurrency}, {scrapes} scrapes ({ok} probes ok in the last, "
            f"{len(body)} bytes): exporter CPU per scrape {summary(cpu)}; wall {summary(wall)}"
        )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=30, help="probes per VM size")
    p.add_argument("--vms", type=int, default=50)
    p.add_argument("--scrapes", type=int, default=10)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--no-libvirt", action="store_true", help="skip the libvirt measurement")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="host-probe-") as tmp:
        workdir = Path(tmp)
        asyncio.run(per_vm(workdir, args.rounds))
        if not args.no_libvirt:
            asyncio.run(per_vm_libvirt(workdir, max(3, args.rounds // 5)))
        asyncio.run(fleet(workdir, args.vms, args.scrapes, args.concurrency))
    return 0


if __name__ == "__main__":
    sys.exit(main())
