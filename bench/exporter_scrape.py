"""Scrape cost of pciehp-exporter next to node_exporter's interrupts collector, same procfs.

Two synthetic guests in the real /proc/interrupts format, built on the q35_normal capture's sysfs:
a 2-vCPU guest (~60 rows) and a 96-vCPU guest (~1,500 rows). Both exporters run as servers; each
is scraped N times over HTTP. Prints CPU ms per scrape (from /proc/<pid>/stat), client latency
p50/p99 and RSS. Goals (issue 2): small guest <= 1.5x node_exporter's CPU per scrape; large guest
<= 10 ms CPU per scrape; RSS <= 30 MiB.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support import servers  # noqa: E402
from tests.support.captures import Capture, materialize_links, tree_args  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
NODE_EXPORTER = shutil.which("prometheus-node-exporter") or "/usr/bin/prometheus-node-exporter"


def interrupts_text(ncpu: int, extra_msi: int) -> str:
    """/proc/interrupts as a 6.1 x86 kernel prints it, with the capture's 12 root-port rows."""
    w = len(str(max(200 + extra_msi, 999)))
    out = [" " * (w + 1) + "".join(f"CPU{c:<8d}" for c in range(ncpu))]

    def row(name: str, counts: list[int], tail: str) -> str:
        return f"{name:>{w}}:" + "".join(f" {c:10d}" for c in counts) + tail

    legacy = [
        (0, "IO-APIC   2-edge      timer"),
        (1, "IO-APIC   1-edge      i8042"),
        (4, "IO-APIC   4-edge      ttyS0"),
        (8, "IO-APIC   8-edge      rtc0"),
        (9, "IO-APIC   9-fasteoi   acpi"),
        (12, "IO-APIC  12-edge      i8042"),
    ]
    for irq, tail in legacy:
        out.append(row(str(irq), [irq * 3 + c for c in range(ncpu)], "   " + tail))
    for i in range(12):
        hw = (16 + i) * 2048
        out.append(
            row(
                str(24 + i),
                [1 if c == i % ncpu else 0 for c in range(ncpu)],
                f"   PCI-MSI {hw}-edge      PCIe PME, aerdrv, pciehp",
            )
        )
    for j in range(extra_msi):
        out.append(
            row(
                str(36 + j),
                [(j * 7 + c) % 1000 for c in range(ncpu)],
                f"   PCI-MSI {524288 + j}-edge      nvme0q{j}",
            )
        )
    for name, desc in [
        ("NMI", "Non-maskable interrupts"),
        ("LOC", "Local timer interrupts"),
        ("SPU", "Spurious interrupts"),
        ("PMI", "Performance monitoring"),
        ("IWI", "IRQ work interrupts"),
        ("RTR", "APIC ICR read retries"),
        ("RES", "Rescheduling interrupts"),
        ("CAL", "Function call interrupts"),
        ("TLB", "TLB shootdowns"),
        ("TRM", "Thermal event interrupts"),
        ("THR", "Threshold APIC interrupts"),
        ("DFR", "Deferred Error APIC"),
        ("MCE", "Machine check exceptions"),
        ("MCP", "Machine check polls"),
    ]:
        out.append(row(name, [c for c in range(ncpu)], "   " + desc))
    out.append(f"{'ERR':>{w}}: {0:10d}")
    out.append(f"{'MIS':>{w}}: {0:10d}")
    return "\n".join(out) + "\n"


def make_guest(base: Path, ncpu: int, extra_msi: int) -> Path:
    tree = base / f"guest-{ncpu}cpu"
    shutil.copytree(Capture("q35_normal").tree, tree)
    materialize_links(tree)  # read like a live sysfs, not like the flattened capture
    text = interrupts_text(ncpu, extra_msi)
    (tree / "proc" / "interrupts").write_text(text)
    return tree


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_mib(pid: int) -> tuple[float, float]:
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(status["VmRSS"].split()[0]) / 1024, int(status["VmHWM"].split()[0]) / 1024


def measure(argv: list[str], port: int, scrapes: int) -> dict[str, float]:
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        servers.wait_until(lambda: servers.http_get(url)[0] == 200, timeout=30, what=url)
        for _ in range(5):  # warm-up
            servers.http_get(url)
        cpu0 = cpu_seconds(proc.pid)
        lat = []
        for _ in range(scrapes):
            t0 = time.perf_counter()
            status, body = servers.http_get(url)
            lat.append(time.perf_counter() - t0)
            assert status == 200 and body
        cpu = cpu_seconds(proc.pid) - cpu0
        rss, hwm = rss_mib(proc.pid)
        lat.sort()
        return {
            "cpu_ms": cpu * 1000 / scrapes,
            "p50_ms": statistics.median(lat) * 1000,
            "p99_ms": lat[int(len(lat) * 0.99) - 1] * 1000,
            "rss_mib": rss,
            "hwm_mib": hwm,
            "bytes": len(body),
        }
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scrapes", type=int, default=300)
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="pciehp-bench-"))
    rows = []
    try:
        for label, ncpu, extra in (("2 vCPU", 2, 22), ("96 vCPU", 96, 1450)):
            tree = make_guest(base, ncpu, extra)
            nrows = len((tree / "proc/interrupts").read_text().splitlines()) - 1
            p1, p2 = servers.free_port(), servers.free_port()
            ours = measure(
                [
                    sys.executable,
                    "-m",
                    "exporter.cli",
                    "--web.listen-address",
                    f"127.0.0.1:{p1}",
                    *tree_args(tree),
                ],
                p1,
                args.scrapes,
            )
            node = measure(
                [
                    NODE_EXPORTER,
                    "--collector.disable-defaults",
                    "--collector.interrupts",
                    f"--path.procfs={tree / 'proc'}",
                    f"--web.listen-address=127.0.0.1:{p2}",
                ],
                p2,
                args.scrapes,
            )
            rows.append((label, nrows, ours, node))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"{args.scrapes} scrapes each; CPU = user+sys of the exporter process per scrape")
    print(
        f"{'guest':8} {'rows':>5} {'exporter':16} {'cpu ms':>7} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'RSS MiB':>8} {'peak':>6} {'bytes':>8}"
    )
    for label, nrows, ours, node in rows:
        for name, m in (("pciehp-exporter", ours), ("node_exporter", node)):
            print(
                f"{label:8} {nrows:5d} {name:16} {m['cpu_ms']:7.2f} {m['p50_ms']:7.2f} "
                f"{m['p99_ms']:7.2f} {m['rss_mib']:8.1f} {m['hwm_mib']:6.1f} {m['bytes']:8d}"
            )
        print(f"{'':14} ratio pciehp/node CPU per scrape: {ours['cpu_ms'] / node['cpu_ms']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
