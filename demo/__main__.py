"""`./run demo`: a fleet where one image cannot hot-unplug, the control plane's alert flood, and
on-call receiving one incident per image with its cause and runbook. Everything on loopback."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from demo import pipeline, servers
from demo.player import FAILED_ALERT, TIMEOUT_ALERT, Player


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="./run demo", description=__doc__)
    ap.add_argument("--guests", type=int, default=300, help="fleet size (default 300)")
    ap.add_argument(
        "--attempt-seconds",
        type=float,
        default=1.0,
        help="time between Nova's detach attempts (Nova: 20 s; default 1)",
    )
    ap.add_argument(
        "--duration",
        type=float,
        default=0,
        help="stop after this many seconds (CI); default: run until Ctrl-C",
    )
    ap.add_argument("--workdir", type=Path, help="where servers keep their data (default: temp)")
    ap.add_argument("--summary-json", type=Path, help="also write the summary as JSON here")
    ap.add_argument(
        "--quiet-after",
        type=float,
        default=20.0,
        help="once every hung detach is in an incident: seconds without new on-call "
        "notifications before the summary",
    )
    return ap.parse_args(argv)


def summarize(p: pipeline.Pipeline, player: Player) -> dict:
    notifications = p.oncall_notifications()
    delivered = p.oncall_alerts()
    by_name = Counter(a["labels"]["alertname"] for a in delivered if a["status"] == "firing")
    root_causes = sorted(
        {
            (
                a["labels"].get("image_id") or f"host {a['labels'].get('host', '')}",
                a["labels"]["root_cause"],
                a["annotations"]["runbook_url"],
            )
            for a in delivered
            if a["labels"]["alertname"] == "PCIeHotplugRootCause"
        }
    )
    incidents = p.incidents()
    return {
        "guests": len(p.fleet.guests),
        "detached": player.detached,
        "hung": len(player.hung),
        "alerts_raised": player.raised,
        "distinct_alerts": player.firing(),
        "oncall_notifications": len(notifications),
        "oncall_alerts_by_name": dict(by_name),
        "root_cause_notifications": [
            {"image_id": i, "root_cause": c, "runbook_url": r} for i, c, r in root_causes
        ],
        "incidents": [
            {
                "id": inc["id"],
                "image_id": inc["image_id"] or f"host {inc['host']}",
                "root_cause": inc["root_cause"],
                "state": inc["state"],
                "counts": inc["counts"],
                "counter_evidence": inc["counter_evidence"],
                "runbook_url": inc["runbook_url"],
                "url": f"{p.correlator.url}/incidents/{inc['id']}",
            }
            for inc in incidents
        ],
        "incident_page": p.correlator.url + "/",
    }


def print_summary(s: dict) -> None:
    print()
    print("=" * 78)
    print(
        f"Fleet: {s['guests']} guests; volume detached from {s['detached']}; "
        f"{s['hung']} detaches hung (no DEVICE_DELETED: in the guest's real capture, "
        "or on the broken host)."
    )
    print(
        f"Control plane raised {s['alerts_raised']} detach alerts "
        f"({s['distinct_alerts']} distinct: {TIMEOUT_ALERT} per attempt, {FAILED_ALERT})."
    )
    print(
        f"On-call received {s['oncall_notifications']} notification(s): "
        + (", ".join(f"{n} x {k}" for k, n in s["oncall_alerts_by_name"].items()) or "none")
    )
    for rc in s["root_cause_notifications"]:
        print(f"  - {rc['image_id']}: {rc['root_cause']}  runbook {rc['runbook_url']}")
    print("Incidents:")
    for inc in s["incidents"]:
        c = inc["counts"]
        print(
            f"  - {inc['image_id']}: {inc['root_cause']} ({inc['state']}), "
            f"{c['alerts']} alerts, {c['instances']} instances, {c['hosts']} hosts; "
            f"{len(inc['counter_evidence'])} counter-evidence; {inc['url']}"
        )
    print(f"Incident page: {s['incident_page']}")
    print("=" * 78, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    deadline = time.monotonic() + args.duration if args.duration else None
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="pciehp-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    say(f"starting the pipeline in {workdir} ({args.guests} guests)")
    try:
        with pipeline.running(workdir, guests=args.guests) as p:
            say(
                f"Prometheus {p.prometheus.url}  Alertmanager {p.alertmanager.url}  "
                f"correlator {p.correlator.url}  fleet http://{p.fleet_server.address}/targets"
            )
            servers.wait_until(p.all_scraped, timeout=120, interval=0.5, what="every guest scraped")
            say(
                f"Prometheus scrapes {p.fleet.exporter_guests} guest exporters and the host "
                f"exporters' view of all {len(p.fleet.guests)} VMs"
            )
            player = Player(
                p.fleet,
                p.alertmanager.url,
                attempt_seconds=args.attempt_seconds,
                on_event=lambda m: None,
            )
            threading.Thread(target=player.run, daemon=True).start()
            say("control plane: detaching a volume from every guest")
            last_count, last_change = -1, time.monotonic()
            while not stop.is_set():
                if deadline and time.monotonic() > deadline:
                    say("duration reached")
                    break
                n = len(p.oncall_notifications())
                if n != last_count:
                    last_count, last_change = n, time.monotonic()
                incidents = p.incidents()
                say(
                    f"alerts raised {player.raised:5d} | hung detaches {len(player.hung):4d} | "
                    f"incidents {len(incidents)} | on-call notifications {n}"
                )
                explained = sum(i["counts"]["instances"] for i in incidents)
                if (
                    player.done.is_set()
                    and explained >= len(player.hung)
                    and time.monotonic() - last_change > args.quiet_after
                ):
                    break
                stop.wait(2.0)
            summary = summarize(p, player)
            player.stop()
            print_summary(summary)
            if args.summary_json:
                args.summary_json.write_text(json.dumps(summary, indent=2))
            if not args.duration:
                say("still running: open the incident page; Ctrl-C stops everything")
                while not stop.wait(1.0):
                    pass
    except KeyboardInterrupt:
        say("interrupted: stopping every process")
    return 0


if __name__ == "__main__":
    sys.exit(main())
