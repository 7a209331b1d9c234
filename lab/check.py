"""`pciehp-check-image`: can this kernel and command line answer a hot-unplug on this machine type?

Boots the kernel (given, or the default GRUB entry of a disk image) in a lab guest with a disk
behind the first hotplug port, runs the real exporter (`pciehp-exporter --once`) on the guest's
captured view, asks QEMU for `device_del` of the disk and waits (bounded) for DEVICE_DELETED.
The answer rests on both: the exporter's verdict on the disk's port (exporter/verdict.py) must
agree with what the unplug did. When it cannot, the cause, summary and runbook come from the
correlator's cause table (correlator/causes.yml through correlator.diagnosis), applied to the
same facts the correlator would read from Prometheus. Exit 0 = can, 1 = cannot, 2 = could not
check (bad arguments, no boot, timeout, or verdict and unplug disagree).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from correlator.config import Config
from correlator.diagnosis import DiagnosisTable
from correlator.sources.exposition import facts_from_exposition
from lab.diskimage import ImageError, default_boot
from lab.qemu import DISK_ID, Guest, GuestSpec, LabError, accel

MACHINES = ("q35-native", "q35-acpi", "pc")
CAN, CANNOT, COULD_NOT = 0, 1, 2
PORTS = 4
# the report's leading keys, in this order (DESIGN.md's --json contract first)
FIRST = ("verdict", "cause", "machine", "kernel", "cmdline", "evidence", "summary", "runbook_url")


class CheckError(RuntimeError):
    """The check could not be made (exit 2)."""


@dataclass
class Progress:
    """Progress lines on stderr with the seconds since the check started."""

    quiet: bool = False
    t0: float = field(default_factory=time.monotonic)

    def __call__(self, phase: str, msg: str) -> None:
        if not self.quiet:
            print(f"[{self.elapsed():6.1f}s] {phase}: {msg}", file=sys.stderr, flush=True)

    def elapsed(self) -> float:
        return time.monotonic() - self.t0


@dataclass
class Target:
    """What to boot: kernel, optional initrds, command line, and where they came from."""

    kernel: Path
    cmdline: str
    initrds: tuple[Path, ...] = ()
    source: dict[str, str] = field(default_factory=dict)


def scrape(tree: Path) -> str:
    """One run of the real exporter CLI (`--once`) over the captured guest view."""
    argv = [sys.executable, "-m", "exporter.cli", "--once"]
    argv += ["--path.procfs", str(tree / "proc"), "--path.sysfs", str(tree / "sys")]
    argv += ["--path.rootfs", str(tree), "--kernel-log", str(tree / "kmsg.txt")]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise CheckError(f"the exporter failed on the captured tree: {out.stderr.strip()[-500:]}")
    return out.stdout


def pci_address(buses: list[dict[str, Any]], qdev_id: str) -> str | None:
    """The guest's PCI address of QEMU device `qdev_id`, from QMP query-pci."""
    for bus in buses:
        for dev in bus.get("devices", []):
            if dev.get("qdev_id") == qdev_id:
                return f"0000:{dev['bus']:02x}:{dev['slot']:02x}.{dev['function']:x}"
            below = dev.get("pci_bridge", {}).get("devices")
            found = pci_address([{"devices": below}], qdev_id) if below else None
            if found:
                return found
    return None


def _concat(parts: tuple[Path, ...], dest: Path) -> Path:
    """Several initrds as the one file GRUB would load them as (4-byte aligned)."""
    with open(dest, "wb") as out:
        for p in parts:
            out.write(p.read_bytes())
            out.write(b"\x00" * (-out.tell() % 4))
    return dest


def check(
    target: Target,
    machine: str,
    workdir: Path,
    progress: Progress,
    boot_timeout: float = 300.0,
    unplug_timeout: float = 20.0,
    table: DiagnosisTable | None = None,
) -> dict[str, Any]:
    """Boot, probe, unplug; the report (its `exit` key is the exit code)."""
    table = table or DiagnosisTable.from_config(Config())
    initrd = _concat(target.initrds, workdir / "initrd.img") if target.initrds else None
    spec = GuestSpec(target.kernel, append=target.cmdline, machine=machine, ports=PORTS)
    spec.initrd = initrd
    report: dict[str, Any] = {"machine": machine, "accel": accel(), **target.source}
    report["cmdline"] = spec.cmdline
    timings: dict[str, float] = {}
    port_id = spec.port_ids()[0]
    progress("boot", f"{machine} ({accel()}), kernel {target.kernel}, cmdline {spec.cmdline!r}")
    with Guest(spec) as g:
        g.wait_ready(boot_timeout)
        timings["boot_s"] = round(progress.elapsed(), 1)
        progress("boot", "guest ready")
        progress("probe", "capturing the guest's view and running the exporter on it")
        tree = g.capture(workdir / "tree")
        facts = facts_from_exposition(scrape(tree))
        address = pci_address(g.qmp("query-pci"), port_id if machine != "pc" else DISK_ID)
        timings["probe_s"] = round(progress.elapsed() - timings["boot_s"], 1)
        port = next((p for p in facts.ports if p.address == address), None)
        verdict = table.diagnose(facts)
        cause = table.by_id.get(verdict.cause)
        predicted = _predict(port, cause.guest_can_unplug if cause else False)
        where = f"port {address} ({port_id})" if port else f"disk {address} (root bus, no port)"
        said = (
            f"{port.verdict} because {port.reason}"
            if port
            else f"no port verdict; the cause table's row is {verdict.cause}"
        )
        progress("probe", f"exporter on {where}: {said}")
        progress("unplug", f"device_del {DISK_ID}, waiting up to {unplug_timeout:g} s")
        t0 = time.monotonic()
        deleted = g.device_del(DISK_ID, unplug_timeout)
        timings["unplug_s"] = round(time.monotonic() - t0, 1)
        progress("unplug", "DEVICE_DELETED" if deleted else "no DEVICE_DELETED")
    timings["total_s"] = round(progress.elapsed(), 1)
    unplug_line = (
        f"device_del {DISK_ID}: DEVICE_DELETED after {timings['unplug_s']} s"
        if deleted
        else f"device_del {DISK_ID}: no DEVICE_DELETED within {unplug_timeout:g} s"
    )
    exporter_line = f"exporter verdict on {where}: {said}"
    report.update(
        kernel=facts.kernel,
        port={"address": address, "qemu_id": port_id if machine != "pc" else None},
        exporter_verdict={"verdict": port.verdict, "reason": port.reason} if port else None,
        device_deleted=deleted,
        timings=timings,
    )
    if predicted is None or predicted != deleted:
        why = "an unknown verdict" if predicted is None else "disagree"
        report.update(
            verdict=None,
            cause=verdict.cause,
            evidence=[exporter_line, unplug_line, *verdict.evidence],
            error=f"could not check: the exporter's verdict and the unplug {why}",
            exit=COULD_NOT,
        )
        return report
    report["verdict"] = "can" if deleted else "cannot"
    report["exit"] = CAN if deleted else CANNOT
    report["cause"] = None if deleted else verdict.cause
    if not deleted and cause is not None:
        report.update(summary=cause.summary, runbook_url=cause.runbook_url, action=cause.action)
    report["evidence"] = [exporter_line, unplug_line, *([] if deleted else verdict.evidence)]
    return report


def _predict(port: Any, table_says_can: bool) -> bool | None:
    """The exporter's verdict on the disk's port as can (True) / cannot (False) / unknown.

    A disk on i440fx's root bus has no port, so no port verdict: there the table's row for the
    guest's facts says whether it can (its ACPI slots are served or the facts name a cause).
    """
    if port is None:
        return table_says_can
    return {"ready": True, "not_ready": False}.get(port.verdict)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line (argparse exits 2 on a bad one, the 'could not check' code)."""
    p = argparse.ArgumentParser(
        prog="pciehp-check-image",
        description="Can this image (kernel + command line) hot-unplug on this machine type? "
        "Exit 0 = can, 1 = cannot, 2 = could not check.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--kernel", type=Path, metavar="VMLINUZ")
    src.add_argument("--disk", type=Path, metavar="IMAGE", help="raw or qcow2; read, never mounted")
    p.add_argument("--initrd", type=Path, metavar="FILE", help="with --kernel")
    p.add_argument("--append", metavar="CMDLINE", help="with --kernel: the kernel command line")
    p.add_argument("--machine", choices=MACHINES, default="q35-native")
    p.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    p.add_argument("--boot-timeout", type=float, default=300.0, metavar="S")
    p.add_argument("--unplug-timeout", type=float, default=20.0, metavar="S")
    args = p.parse_args(argv)
    if args.kernel is not None and args.append is None:
        p.error("--kernel needs --append CMDLINE (use --append '' for none)")
    if args.disk is not None and (args.append is not None or args.initrd is not None):
        p.error("--disk takes kernel, initrd and command line from the image's grub.cfg")
    for path in (args.kernel, args.initrd, args.disk):
        if path is not None and not path.is_file():
            p.error(f"{path}: no such file")
    return args


def _target(args: argparse.Namespace, workdir: Path, progress: Progress) -> Target:
    if args.kernel is not None:
        initrds = (args.initrd,) if args.initrd else ()
        return Target(args.kernel, args.append, initrds, {"kernel_image": str(args.kernel)})
    progress("image", f"reading the default boot entry of {args.disk}")
    boot = default_boot(args.disk, workdir)
    progress("image", f"{boot.grub_cfg}: {boot.entry.title!r}: {boot.entry.kernel}")
    source = {
        "image": str(args.disk),
        "boot_entry": boot.entry.title,
        "grub_cfg": boot.grub_cfg,
        "kernel_image": boot.entry.kernel,
    }
    return Target(boot.kernel, boot.entry.cmdline, boot.initrds, source)


def render(report: dict[str, Any]) -> str:
    """The human answer."""
    if report.get("verdict") == "can":
        head = f"CAN hot-unplug on {report['machine']}"
    elif report.get("verdict") == "cannot":
        head = f"CANNOT hot-unplug on {report['machine']}: {report['cause']}"
        head += f"\n  {report.get('summary', '')}\n  runbook: {report.get('runbook_url', '')}"
    else:
        head = f"COULD NOT CHECK ({report.get('error', '')})"
    lines = [head]
    if report.get("kernel"):
        lines.append(f"  kernel {report['kernel']}, cmdline {report.get('cmdline', '')!r}")
    lines += [f"  - {e}" for e in report.get("evidence", [])]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of pciehp-check-image."""
    args = parse_args(argv)
    progress = Progress()
    with tempfile.TemporaryDirectory(prefix="pciehp-check-") as tmp:
        try:
            target = _target(args, Path(tmp), progress)
            report = check(
                target,
                args.machine,
                Path(tmp),
                progress,
                boot_timeout=args.boot_timeout,
                unplug_timeout=args.unplug_timeout,
            )
        except (LabError, ImageError, CheckError, ValueError, OSError) as e:
            progress("error", str(e).splitlines()[0] if str(e) else type(e).__name__)
            report = {
                "verdict": None,
                "cause": None,
                "machine": args.machine,
                "kernel": None,
                "cmdline": None,
                "evidence": [],
                "error": f"could not check: {e}",
                "exit": COULD_NOT,
            }
    code = report.pop("exit")
    first = {k: report.pop(k) for k in FIRST if k in report}
    report = {**first, **report}
    print(json.dumps(report, indent=2) if args.json else render(report))
    return code


if __name__ == "__main__":
    sys.exit(main())
