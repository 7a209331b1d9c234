"""Scrape cost of pciehp-exporter next to node_exporter's interrupts collector, same procfs.

Two guests: the q35_normal capture as it is (2 vCPU, its real /proc/interrupts) and the same sysfs
with a synthetic 96-vCPU /proc/interrupts (~1,500 rows in the 6.1 x86 format). The exporter runs as
the built zipapp (pkg/build.py), on this Python (3.11) and on Debian bullseye's python3.9 in the
test suite's cached chroot (tests/support/chroots.py, the trees bind-mounted so that reads cost
the same inside and out); node_exporter 1.5 (Debian's) runs with
`--collector.disable-defaults --collector.interrupts --path.procfs` on the same tree. Each server
is scraped over HTTP N times (fewer if a run exceeds its time budget: node_exporter takes over a
second per scrape at 96 vCPU). Prints CPU ms per scrape (utime+stime from /proc/<pid>/stat),
client latency p50/p99 and RSS, then the goals of issue 11: small guest <= 1.5x node_exporter's
CPU per scrape, 96 vCPU <= 8 ms, RSS <= 30 MiB.
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
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support import chroots, servers  # noqa: E402
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


def make_guest(base: Path, ncpu: int | None) -> Path:
    """The q35_normal capture with live-like symlinks; with `ncpu`, a synthetic /proc/interrupts."""
    tree = base / f"guest-{ncpu or 'capture'}"
    shutil.copytree(Capture("q35_normal").tree, tree)
    materialize_links(tree)  # read like a live sysfs, not like the flattened capture
    if ncpu:
        (tree / "proc" / "interrupts").write_text(interrupts_text(ncpu, 1450))
    return tree


def stat_fields(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    fields = stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_mib(pid: int) -> tuple[float, float]:
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(status["VmRSS"].split()[0]) / 1024, int(status["VmHWM"].split()[0]) / 1024


def measure(
    start: Callable[[], subprocess.Popen], port: int, scrapes: int, budget: float
) -> dict[str, float]:
    """Scrape a started server `scrapes` times (or for `budget` seconds) after 5 warm-up scrapes."""
    proc = start()
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        servers.wait_until(lambda: servers.http_get(url)[0] == 200, timeout=60, what=url)
        for _ in range(5):
            servers.http_get(url, timeout=60)
        cpu0 = cpu_seconds(proc.pid)
        lat = []
        deadline = time.monotonic() + budget
        while len(lat) < scrapes and (len(lat) < 5 or time.monotonic() < deadline):
            t0 = time.perf_counter()
            status, body = servers.http_get(url, timeout=60)
            lat.append(time.perf_counter() - t0)
            assert status == 200 and body
        cpu = cpu_seconds(proc.pid) - cpu0
        rss, hwm = rss_mib(proc.pid)
        lat.sort()
        return {
            "n": len(lat),
            "cpu_ms": cpu * 1000 / len(lat),
            "p50_ms": statistics.median(lat) * 1000,
            "p99_ms": lat[max(0, int(len(lat) * 0.99) - 1)] * 1000,
            "rss_mib": rss,
            "hwm_mib": hwm,
            "bytes": len(body),
        }
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def quiet(argv: list[str]) -> Callable[[], subprocess.Popen]:
    return lambda: subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scrapes", type=int, default=300)
    ap.add_argument(
        "--budget", type=float, default=30.0, help="seconds of scraping per run, at most"
    )
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="pciehp-bench-"))
    results = []
    try:
        subprocess.run(
            [sys.executable, str(ROOT / "pkg" / "build.py"), "--out", str(base / "dist")],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        pyz = base / "dist" / "pciehp-exporter.pyz"
        trees = {ncpu: make_guest(base, ncpu) for ncpu in (None, 96)}
        old = chroots.Guest(
            "bullseye", base / "bullseye", [(t, f"/opt/{t.name}") for t in trees.values()]
        )
        shutil.copy(pyz, old.inside("/opt/pciehp-exporter.pyz"))
        probe = old.run(["python3", "-c", "import platform; print(platform.python_version())"])
        old_version = probe.stdout.decode().strip()

        def here(flags: list[str]) -> Callable[[], subprocess.Popen]:
            return quiet([sys.executable, str(pyz), *flags])

        def in_bullseye(flags: list[str]) -> Callable[[], subprocess.Popen]:
            return lambda: old.popen(["python3", "/opt/pciehp-exporter.pyz", *flags])

        pythons = [(platform_version(), here, ""), (old_version, in_bullseye, "/opt")]
        for label, ncpu in (("2 vCPU", None), ("96 vCPU", 96)):
            tree = trees[ncpu]
            nrows = len((tree / "proc/interrupts").read_text().splitlines()) - 1
            port = servers.free_port()
            node = measure(
                quiet(
                    [
                        NODE_EXPORTER,
                        "--collector.disable-defaults",
                        "--collector.interrupts",
                        f"--path.procfs={tree / 'proc'}",
                        f"--web.listen-address=127.0.0.1:{port}",
                    ]
                ),
                port,
                args.scrapes,
                args.budget,
            )
            results.append((label, nrows, "node_exporter 1.5", node, node))
            for version, launcher, prefix in pythons:
                port = servers.free_port()
                seen = Path(f"{prefix}/{tree.name}") if prefix else tree
                flags = ["--web.listen-address", f"127.0.0.1:{port}", *tree_args(seen)]
                ours = measure(launcher(flags), port, args.scrapes, args.budget)
                results.append((label, nrows, f"pciehp py{version}", ours, node))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    report(results, args.scrapes)
    return 0


def platform_version() -> str:
    return ".".join(map(str, sys.version_info[:3]))


def report(results: list[tuple[str, int, str, dict[str, float], dict[str, float]]], n: int) -> None:
    """The table, then each goal of issue 11 with its verdict."""
    print(f"up to {n} scrapes each; CPU = user+sys of the server process per scrape")
    print(
        f"{'guest':8} {'rows':>5} {'exporter':18} {'n':>4} {'cpu ms':>8} {'x node':>7} "
        f"{'p50 ms':>8} {'p99 ms':>8} {'RSS MiB':>8} {'peak':>6} {'bytes':>9}"
    )
    for label, nrows, name, m, node in results:
        print(
            f"{label:8} {nrows:5d} {name:18} {m['n']:4d} {m['cpu_ms']:8.2f} "
            f"{m['cpu_ms'] / node['cpu_ms']:7.3f} {m['p50_ms']:8.2f} {m['p99_ms']:8.2f} "
            f"{m['rss_mib']:8.1f} {m['hwm_mib']:6.1f} {m['bytes']:9d}"
        )
    print("goals:")
    for label, _nrows, name, m, node in results:
        if name.startswith("node_exporter"):
            continue
        if label == "2 vCPU":
            ratio = m["cpu_ms"] / node["cpu_ms"]
            goal = f"CPU <= 1.5x node_exporter: {ratio:.2f}x"
            ok = ratio <= 1.5
        else:
            goal = f"CPU <= 8 ms per scrape: {m['cpu_ms']:.2f} ms"
            ok = m["cpu_ms"] <= 8
        print(f"  {label:8} {name:18} {goal:40} {'ok' if ok else 'MISSED'}")
        rss = f"RSS <= 30 MiB: {m['hwm_mib']:.1f} MiB peak"
        print(f"  {label:8} {name:18} {rss:40} {'ok' if m['hwm_mib'] <= 30 else 'MISSED'}")


if __name__ == "__main__":
    sys.exit(main())
