"""Kernel-log parsing speed: a 10 MB log in one poll, then the cost of a poll with 100 new lines.

Run: ./run bench kernel_log_parse [--mb 10] [--rounds 50]. Prints figures; asserts nothing
timed (the counts are checked so a broken parser cannot look fast).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from exporter.kernel_log import KernelLog

EVENT = "pcieport 0000:00:02.0: pciehp: Slot(1): Attention button pressed"
FILLER = (
    "pci 0000:00:01.0: [8086:7000] type 00 class 0x060100",
    "virtio_blk virtio0: [vda] 32768 512-byte logical blocks (16.8 MB/16.0 MiB)",
    "acpi PNP0A08:00: _OSC: OS supports [ExtendedConfig ASPM ClockPM Segments MSI HPX-Type3]",
    "pcieport 0000:00:02.1: AER: enabled with IRQ 25",
    "EXT4-fs (vda1): mounted filesystem with ordered data mode. Quota mode: none.",
)

FORMATS: dict[str, Callable[[int, str], str]] = {
    "kmsg": lambda n, m: f"6,{n},{n * 1000},-;{m}\n SUBSYSTEM=pci\n",
    "dmesg": lambda n, m: f"[{n / 1000:12.6f}] {m}\n",
    "syslog": lambda n, m: f"Nov 25 18:06:01 guest kernel: [{n / 1000:12.6f}] {m}\n",
}


def line(fmt: str, n: int) -> str:
    """Log line number n: one in 50 a pciehp event, the rest ordinary kernel chatter."""
    return FORMATS[fmt](n, EVENT if n % 50 == 0 else FILLER[n % len(FILLER)])


def bench(fmt: str, megabytes: int, rounds: int, tmp: Path) -> None:
    """Print the figures for one log format."""
    path = tmp / f"{fmt}.log"
    parts, size, n = [], 0, 0
    while size < megabytes << 20:
        text = line(fmt, n)
        parts.append(text)
        size += len(text)
        n += 1
    path.write_text("".join(parts))

    log = KernelLog(path)
    start = time.perf_counter()
    log.poll()
    first = time.perf_counter() - start
    assert log.reader_up and log.lines_total == n, (log.last_error, log.lines_total, n)

    idle = []
    for _ in range(rounds):
        start = time.perf_counter()
        log.poll()
        idle.append(time.perf_counter() - start)

    costs = []
    for _ in range(rounds):
        batch = "".join(line(fmt, n + i) for i in range(100))
        n += 100
        with path.open("a") as f:
            f.write(batch)
        start = time.perf_counter()
        log.poll()
        costs.append(time.perf_counter() - start)
    assert log.lines_total == n
    expected = sum(1 for i in range(n) if i % 50 == 0)
    assert log.events()[("0000:00:02.0", "1")]["attention_button"] == expected

    costs.sort()
    idle.sort()
    print(
        f"{fmt:7s} {size / 1e6:5.1f} MB, {log.lines_total - 100 * rounds:7d} lines: "
        f"first poll {first:6.3f} s = {(log.lines_total - 100 * rounds) / first:9,.0f} lines/s "
        f"({size / first / 1e6:5.1f} MB/s); poll of 100 new lines: median "
        f"{costs[len(costs) // 2] * 1e6:6.0f} us, max {costs[-1] * 1e6:6.0f} us; "
        f"poll with nothing new: median {idle[len(idle) // 2] * 1e6:4.0f} us"
    )


def main() -> None:
    """Run the benchmark for every format."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--mb", type=int, default=10, help="size of the initial log in MB")
    ap.add_argument("--rounds", type=int, default=50, help="polls measured after the first")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in FORMATS:
            bench(fmt, args.mb, args.rounds, Path(tmp))


if __name__ == "__main__":
    main()
