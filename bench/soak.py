"""Soak: continuous detach floods against pciehp-correlator and scrapes against the exporter.

Real parts on loopback: two guest exporters on the bundled captures (each tailing a kernel log
that keeps growing), a Prometheus scraping them, an Alertmanager routing detach alerts to the
correlator by webhook, and the correlator. For `--minutes` (default 10) the script alternates
firing and resolving floods over a bounded pool of instances and images (so a healthy process
holds a bounded state), POSTs them both to Alertmanager and straight to the correlator's webhook,
and scrapes each exporter as fast as it answers. It prints RSS, open file descriptors and task
(thread) count of the correlator and of one exporter at start, every minute and at the end, and
every error it met. Flat figures mean no leak.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.correlator.support import (  # noqa: E402
    FAST,
    Correlator,
    Guest,
    am_config,
    detach_alert,
    guest_uuid,
    scrape_configs,
    webhook_payload,
)
from tests.support import servers  # noqa: E402

PAGE = os.sysconf("SC_PAGE_SIZE")
KMSG_LINE = "6,{seq},{usec},-;pcieport 0000:00:02.2: pciehp: Slot(0-2): Attention button pressed\n"


def proc_stats(pid: int) -> dict[str, float]:
    """RSS (MiB), open file descriptors and tasks (threads) of a process, from /proc."""
    with open(f"/proc/{pid}/statm") as f:
        rss_pages = int(f.read().split()[1])
    return {
        "rss_mib": rss_pages * PAGE / 2**20,
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "tasks": len(os.listdir(f"/proc/{pid}/task")),
    }


def fmt(stats: dict[str, float]) -> str:
    """One line of process figures."""
    return f"rss={stats['rss_mib']:.1f}MiB fds={stats['fds']:.0f} tasks={stats['tasks']:.0f}"


def log_lines(guest: Guest) -> float:
    """The exporter's pciehp_kernel_log_lines_total (-1 when the scrape fails)."""
    status, body = servers.http_get(f"http://{guest.target}/metrics", timeout=10)
    m = re.search(rb"^pciehp_kernel_log_lines_total (\S+)$", body, re.M)
    return float(m.group(1)) if status == 200 and m else -1.0


def post(url: str, doc: object) -> int:
    """POST JSON, return the status code (0 when nothing answered)."""
    req = urllib.request.Request(
        url, data=json.dumps(doc).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


class Soak:
    """The running parts and the counters of what the load loops did."""

    def __init__(self, work: Path, args: argparse.Namespace) -> None:
        self.work = work
        self.args = args
        self.errors: list[str] = []
        self.floods = 0
        self.alerts_sent = 0
        self.scrapes = 0
        self.kmsg_lines = 0  # per guest
        self.stop = threading.Event()
        self.lock = threading.Lock()

    def error(self, text: str) -> None:
        """Record an error (printed at the end, the first few also as they happen)."""
        with self.lock:
            self.errors.append(text)
            if len(self.errors) <= 10:
                print(f"ERROR: {text}", flush=True)

    def flood_loop(self, corr: Correlator, am_url: str) -> None:
        """Alternate firing and resolving floods over a bounded pool of instances and images."""
        rounds = 0
        while not self.stop.is_set():
            shift = (rounds // 2) * 37
            alerts = []
            for i in range(self.args.alerts):
                n = (i + shift) % self.args.instances
                image = f"soak-img-{n % self.args.images}"
                alerts.append(detach_alert(guest_uuid(f"soak-{n}"), image, host=f"cmp-{n % 7}"))
            resolving = rounds % 2 == 1
            if resolving:
                for a in alerts:
                    a["endsAt"] = a["startsAt"]
            status = post(f"{am_url}/api/v2/alerts", alerts)
            if status != 200:
                self.error(f"Alertmanager POST /api/v2/alerts answered {status}")
            payload = webhook_payload(alerts, status="resolved" if resolving else "firing")
            status = post(f"{corr.url}/api/v1/webhook", payload)
            if status != 200:
                self.error(f"correlator webhook answered {status}")
            with self.lock:
                self.floods += 1
                self.alerts_sent += len(alerts)
            rounds += 1
            self.stop.wait(self.args.flood_interval)

    def scrape_loop(self, guests: list[Guest]) -> None:
        """Scrape every exporter in turn, as fast as they answer."""
        while not self.stop.is_set():
            for g in guests:
                status, body = servers.http_get(f"http://{g.target}/metrics", timeout=10)
                if status != 200 or b"pciehp_exporter_build_info" not in body:
                    self.error(f"exporter {g.name} scrape answered {status}")
                with self.lock:
                    self.scrapes += 1

    def kmsg_loop(self, guests: list[Guest]) -> None:
        """Keep appending pciehp records to each guest's kernel log (the exporter tails it)."""
        seq = 10**6
        while not self.stop.is_set():
            for g in guests:
                assert g.tree is not None
                with open(g.tree / "kmsg.txt", "a") as f:
                    f.write(KMSG_LINE.format(seq=seq, usec=seq * 1000))
            seq += 1
            with self.lock:
                self.kmsg_lines += 1
            self.stop.wait(0.05)


def run(args: argparse.Namespace, work: Path) -> int:
    """Start the parts, load them for the given minutes, print figures; 1 when errors occurred."""
    guests = [Guest("soak-aspm", "q35_aspm_off", "img-a"), Guest("soak-ok", "q35_normal", "img-b")]
    for g in guests:
        g.prepare(work)
        g.start(work)
    try:
        for g in guests:
            g.wait_ready(work)
        prom = servers.prometheus(work / "prometheus", scrape_configs(guests))
        am_port = servers.free_port()
        corr = Correlator(work / "corr", "", [f"http://127.0.0.1:{am_port}"], FAST)
        corr.prometheus_url = prom.url
        am = servers.alertmanager(work / "alertmanager", am_config(corr.url), port=am_port)
        with servers.running(prom, am):
            corr.start()
            try:
                return soak(args, corr, am.url, guests)
            finally:
                corr.stop()
    finally:
        for g in guests:
            g.stop()


def soak(args: argparse.Namespace, corr: Correlator, am_url: str, guests: list[Guest]) -> int:
    """The load loops and the periodic figures."""
    state = Soak(corr.workdir, args)
    assert corr.server is not None and corr.server.proc is not None
    assert guests[0].proc is not None
    pids = {"correlator": corr.server.proc.pid, "exporter": guests[0].proc.pid}
    start = {name: proc_stats(pid) for name, pid in pids.items()}
    lines_at_start = log_lines(guests[0])
    for name, s in start.items():
        print(f"start  {name:10s} {fmt(s)}", flush=True)
    threads = [
        threading.Thread(target=state.flood_loop, args=(corr, am_url), daemon=True),
        threading.Thread(target=state.scrape_loop, args=(guests,), daemon=True),
        threading.Thread(target=state.kmsg_loop, args=(guests,), daemon=True),
    ]
    for t in threads:
        t.start()
    t0 = time.monotonic()
    end = t0 + args.minutes * 60
    while not state.stop.wait(min(60.0, max(0.0, end - time.monotonic()))):
        elapsed = time.monotonic() - t0
        for name, pid in pids.items():
            if not os.path.exists(f"/proc/{pid}"):
                state.error(f"{name} (pid {pid}) exited")
                state.stop.set()
                break
            print(f"{elapsed:5.0f}s {name:10s} {fmt(proc_stats(pid))}", flush=True)
        if time.monotonic() >= end:
            state.stop.set()
    for t in threads:
        t.join(timeout=60)
    final = {name: proc_stats(pid) for name, pid in pids.items()}
    elapsed = time.monotonic() - t0
    print(f"\nran {elapsed:.0f}s: {state.floods} floods ({state.alerts_sent} alerts), ", end="")
    print(f"{state.scrapes} exporter scrapes, {state.kmsg_lines} kernel-log lines per guest")
    for name in pids:
        print(f"{name:10s} start {fmt(start[name])}")
        print(f"{'':10s} end   {fmt(final[name])}")
    # The exporter's line counter must account for every appended line, no more, no less.
    want = lines_at_start + state.kmsg_lines
    try:
        servers.wait_until(lambda: log_lines(guests[0]) == want, timeout=30, what="tail")
    except TimeoutError:
        state.error(f"kernel_log_lines_total {log_lines(guests[0])}, expected {want}")
    print(f"exporter kernel_log_lines_total: {lines_at_start:.0f} -> {log_lines(guests[0]):.0f}")
    incidents = corr.incidents()
    print(f"correlator: {len(incidents)} incidents (bounded by the {args.images} soak images)")
    print(f"errors: {len(state.errors)}")
    for e in sorted(set(state.errors)):
        print(f"  {state.errors.count(e)}x {e}")
    return 1 if state.errors else 0


def main() -> int:
    """Parse flags and run the soak in a scratch directory."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--alerts", type=int, default=500, help="alerts per flood")
    p.add_argument("--instances", type=int, default=2000, help="instance pool size")
    p.add_argument("--images", type=int, default=20, help="image pool size")
    p.add_argument("--flood-interval", type=float, default=0.5, help="seconds between floods")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="pciehp-soak-") as d:
        return run(args, Path(d))


if __name__ == "__main__":
    sys.exit(main())
