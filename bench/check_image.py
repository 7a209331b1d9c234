"""pciehp-check-image over the done-when matrix of issue 12, with the wall time of each check.

For each Debian kernel series (bullseye 5.10, bookworm 6.1, trixie 6.12): on q35 with native
PCIe hotplug, the plain command line (can), `pcie_aspm=off` (pcie_aspm_off), `pci=nomsi`
(msi_disabled) and `pcie_ports=compat` (port_services_disabled); on q35 with QEMU's ACPI
hotplug, plain and `pcie_aspm=off` (both can). Each check runs the installed console script
as a pipeline would, one at a time. Prints one line per check (exit code, verdict, cause,
wall time, boot/probe/unplug split) and exits 1 when any answer differs from the expected one.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lab.kernels import SERIES, fetch_kernel  # noqa: E402
from lab.qemu import accel  # noqa: E402

# (machine, extra cmdline, expected exit, expected cause)
MATRIX = (
    ("q35-native", "", 0, None),
    ("q35-native", "pcie_aspm=off", 1, "pcie_aspm_off"),
    ("q35-native", "pci=nomsi", 1, "msi_disabled"),
    ("q35-native", "pcie_ports=compat", 1, "port_services_disabled"),
    ("q35-acpi", "", 0, None),
    ("q35-acpi", "pcie_aspm=off", 0, None),
)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--series", nargs="*", default=["bullseye", "bookworm", "trixie"])
    args = p.parse_args()
    exe = Path(sys.executable).with_name("pciehp-check-image")
    print(f"accel {accel()}; {len(args.series) * len(MATRIX)} checks, one at a time")
    failures = 0
    times = []
    for series in args.series:
        kernel = fetch_kernel(series)
        for machine, extra, want_code, want_cause in MATRIX:
            cmdline = f"console=ttyS0 {extra}".strip()
            argv = [str(exe), "--json", "--kernel", str(kernel.vmlinuz), "--append", cmdline]
            t0 = time.monotonic()
            proc = subprocess.run([*argv, "--machine", machine], capture_output=True, text=True)
            wall = time.monotonic() - t0
            times.append(wall)
            report = json.loads(proc.stdout) if proc.stdout.strip() else {}
            ok = proc.returncode == want_code and report.get("cause") == want_cause
            failures += not ok
            t = report.get("timings", {})
            print(
                f"{'ok  ' if ok else 'FAIL'} {series} {SERIES[series]:5} {machine:10} "
                f"{cmdline:34} exit {proc.returncode} {report.get('verdict')!s:6} "
                f"{report.get('cause')!s:23} {wall:5.1f} s (boot {t.get('boot_s')}, "
                f"probe {t.get('probe_s')}, unplug {t.get('unplug_s')})",
                flush=True,
            )
            if not ok:
                print(proc.stderr[-2000:], report.get("error", ""), file=sys.stderr)
    print(
        f"{len(times)} checks: wall min {min(times):.1f} s, median "
        f"{sorted(times)[len(times) // 2]:.1f} s, max {max(times):.1f} s; {failures} wrong"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
