"""A detach-timeout flood through a real Alertmanager into pciehp-correlator, facts in Prometheus.

10,000 detach alerts from 2,000 instances across 50 images are POSTed to Alertmanager, which
routes them by webhook to the correlator (group_by image_id); the correlator reads the alerts
back from Alertmanager, queries the guests' facts from Prometheus and pushes one
PCIeHotplugRootCause per image. Guests: the real exporter's output on the bundled captures
(40 images of q35_aspm_off guests, 5 of q35_acpihp_normal, 5 of q35_normal), each guest with
its own instance UUID, trimmed to two root ports to keep Prometheus small, served as static
files and scraped by Prometheus as 2,000 targets.

Prints: time from Alertmanager's last webhook delivery until all 50 incidents are visible in
Alertmanager; the correlator's CPU seconds and peak RSS; PromQL queries per reconcile; and,
side by side, Alertmanager's ingestion rate of the alerts (POST /api/v2/alerts) and the
correlator's (POST /api/v1/webhook, a second correlator instance). Goals (issue 3): <= 2 s;
queries per reconcile constant in N; correlator ingestion >= Alertmanager's.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from correlator.model import labels_fingerprint  # noqa: E402
from tests.support import servers  # noqa: E402
from tests.support.captures import Capture  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
DETACH = "NovaDeviceDetachFailed"
ROOT_CAUSE = "PCIeHotplugRootCause"
TEMPLATES = {"aspm": "q35_aspm_off", "acpi": "q35_acpihp_normal", "normal": "q35_normal"}
KEEP_PORTS = re.compile(r'device="02",(?:[a-z_]+="[^"]*",)*function="[01]"')


def template_text(scenario: str) -> str:
    """The real exporter's scrape of a capture, trimmed to root ports 00:02.0 and 00:02.1."""
    out = subprocess.run(
        [sys.executable, "-m", "exporter.cli", "--once", *Capture(scenario).exporter_args()],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    lines = [
        line
        for line in out.splitlines()
        if 'segment="' not in line or KEEP_PORTS.search(line) or line.startswith("#")
    ]
    return "\n".join(lines) + "\n"


def image_kind(image: int, n_images: int) -> str:
    """80 % of the images boot with pcie_aspm=off, 10 % use ACPI hotplug, 10 % are healthy."""
    share = image / n_images
    return "aspm" if share < 0.8 else "acpi" if share < 0.9 else "normal"


def write_guests(work: Path, n_instances: int, n_images: int) -> list[dict]:
    """One static /guests/<n>/metrics per instance; returns the guests."""
    texts = {kind: template_text(scenario) for kind, scenario in TEMPLATES.items()}
    guests = []
    for i in range(n_instances):
        image = i % n_images
        kind = image_kind(image, n_images)
        uid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"pciehp-watch-bench/{i}"))
        text = re.sub(r'instance_uuid="[^"]*"', f'instance_uuid="{uid}"', texts[kind])
        d = work / "www" / "guests" / str(i)
        d.mkdir(parents=True)
        (d / "metrics").write_text(text)
        guests.append({"n": i, "uuid": uid, "image": f"img-{image:02d}", "kind": kind})
    return guests


def stamp(alerts: list[dict]) -> list[dict]:
    """Set startsAt to now (as the control plane posting them would) and endsAt an hour on.

    Stamped per POST: an alert whose startsAt is older than group_wait makes Alertmanager
    flush its group at once, before the rest of the group has arrived.
    """
    now = time.time()
    starts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"
    ends = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(now + 3600))
    for a in alerts:
        a["startsAt"], a["endsAt"] = starts, ends
    return alerts


def alerts_for(guests: list[dict], per_instance: int, hosts: int) -> list[dict]:
    """`per_instance` failed detaches (one per volume) for every guest."""
    out = []
    for g in guests:
        for v in range(per_instance):
            out.append(
                {
                    "labels": {
                        "alertname": DETACH,
                        "instance_uuid": g["uuid"],
                        "image_id": g["image"],
                        "host": f"cmp-{g['n'] % hosts:03d}",
                        "device": f"vd{chr(ord('b') + v)}",
                    },
                    "annotations": {"summary": "Run out of retry while detaching device"},
                }
            )
    return out


def post_json(url: str, doc: object, timeout: float = 60) -> int:
    req = urllib.request.Request(
        url, data=json.dumps(doc).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=timeout) as r:
        r.read()
        return r.status


def root_causes(am_url: str) -> list[dict]:
    q = urllib.parse.quote(f'alertname="{ROOT_CAUSE}"')
    return servers.http_json(f"{am_url}/api/v2/alerts?filter={q}")  # type: ignore[return-value]


def metrics(url: str) -> dict[str, float]:
    """Unlabelled and summed samples of the correlator's /metrics."""
    _, body = servers.http_get(url + "/metrics")
    out: dict[str, float] = {}
    for line in body.decode().splitlines():
        if line.startswith("#") or not line:
            continue
        name_labels, value = line.rsplit(" ", 1)
        name = name_labels.split("{", 1)[0]
        out[name] = out.get(name, 0.0) + float(value)
    return out


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def correlator(work: Path, name: str, prom: str, am: str) -> servers.Server:
    port = servers.free_port()
    d = work / name
    d.mkdir()
    argv = [
        sys.executable,
        "-m",
        "correlator.app",
        "--web.listen-address",
        f"127.0.0.1:{port}",
        "--prometheus.url",
        prom,
        "--alertmanager.url",
        am,
        "--storage.path",
        str(d / "incidents.sqlite"),
        "--log.level",
        os.environ.get("BENCH_LOG_LEVEL", "warning"),
    ]
    return servers.Server(name, argv, port, d)


def am_config(correlator_url: str) -> dict:
    return {
        "route": {
            "receiver": "blackhole",
            "group_by": ["image_id"],
            "group_wait": "1s",
            "group_interval": "5m",
            "repeat_interval": "4h",
            "routes": [
                {
                    "receiver": "correlator",
                    "matchers": ['alertname=~".*Detach.*(Timeout|Failed).*"'],
                }
            ],
        },
        "receivers": [
            {
                "name": "correlator",
                "webhook_configs": [
                    {"url": f"{correlator_url}/api/v1/webhook", "send_resolved": True}
                ],
            },
            {"name": "blackhole"},
        ],
        "inhibit_rules": [
            {
                "source_matchers": [f'alertname="{ROOT_CAUSE}"', 'image_id!=""'],
                "target_matchers": ['alertname=~".*Detach.*(Timeout|Failed).*"'],
                "equal": ["image_id"],
            }
        ],
    }


def webhook_payloads(alerts: list[dict]) -> list[dict]:
    """The alerts as Alertmanager would deliver them: one v4 notification per image."""
    by_image: dict[str, list[dict]] = {}
    for a in alerts:
        by_image.setdefault(a["labels"]["image_id"], []).append(
            {
                "status": "firing",
                "labels": a["labels"],
                "annotations": a["annotations"],
                "startsAt": a["startsAt"],
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "",
                "fingerprint": labels_fingerprint(a["labels"]),
            }
        )
    return [
        {
            "version": "4",
            "receiver": "correlator",
            "status": "firing",
            "groupLabels": {"image_id": image},
            "commonLabels": {"alertname": DETACH, "image_id": image},
            "commonAnnotations": {},
            "externalURL": "http://alertmanager",
            "groupKey": f'{{}}:{{image_id="{image}"}}',
            "truncatedAlerts": 0,
            "alerts": items,
        }
        for image, items in by_image.items()
    ]


def run(args: argparse.Namespace, work: Path) -> None:
    n_images, n_instances = args.images, args.instances
    per_instance = args.alerts // n_instances
    print(f"building {n_instances} guests of {n_images} images from the real exporter output ...")
    guests = write_guests(work, n_instances, n_images)
    www_port = servers.free_port()
    www = subprocess.Popen(
        [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(www_port)],
        cwd=work / "www",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    started: list[servers.Server] = []
    try:
        groups = [
            {
                "targets": [f"127.0.0.1:{www_port}"],
                "labels": {
                    "__metrics_path__": f"/guests/{g['n']}/metrics",
                    "instance": f"guest-{g['n']}",
                    "image_id": g["image"],
                },
            }
            for g in guests
        ]
        prom = servers.prometheus(
            work / "prometheus",
            [{"job_name": "pciehp", "static_configs": groups}],
            scrape_interval="10s",
        )
        prom.start()
        started.append(prom)

        def all_scraped() -> bool:
            doc = servers.http_json(f"{prom.url}/api/v1/query?query=count(pciehp_guest_info)")
            res = doc["data"]["result"]  # type: ignore[index]
            return bool(res) and int(float(res[0]["value"][1])) == n_instances

        servers.wait_until(all_scraped, timeout=180, interval=0.5, what="all guests scraped")
        series = servers.http_json(f"{prom.url}/api/v1/query?query=count({{job=%22pciehp%22}})")
        n_series = int(float(series["data"]["result"][0]["value"][1]))  # type: ignore[index]
        print(f"Prometheus holds {n_series} series of {n_instances} guests")

        am_port = servers.free_port()
        am_url = f"http://127.0.0.1:{am_port}"
        corr = correlator(work, "correlator", prom.url, am_url)
        am = servers.alertmanager(work / "alertmanager", am_config(corr.url), port=am_port)
        corr.start()
        started.append(corr)
        am.start()
        started.append(am)
        assert corr.proc is not None
        cpu_before = cpu_seconds(corr.proc.pid)

        alerts = alerts_for(guests, per_instance, args.hosts)
        print(f"posting {len(alerts)} detach alerts to Alertmanager ...")
        t0 = time.monotonic()
        for i in range(0, len(alerts), args.batch):
            post_json(f"{am_url}/api/v2/alerts", stamp(alerts[i : i + args.batch]))
        am_ingest = time.monotonic() - t0
        posted_at = time.time()

        queries_seen: set[float] = set()
        first_all: float | None = None
        complete: float | None = None
        deadline = time.monotonic() + args.timeout
        want = f"{per_instance * (n_instances // n_images)} detach alert(s)"
        polls = 0
        while time.monotonic() < deadline:
            rc = root_causes(am_url)
            now = time.time()
            polls += 1
            if polls % 10 == 0:  # sample the gauge now and then, not to load the correlator
                q = metrics(corr.url).get("pciehp_correlator_prometheus_queries_per_reconcile")
                if q:
                    queries_seen.add(q)
            images = {a["labels"]["image_id"] for a in rc}
            if first_all is None and len(images) == n_images:
                first_all = now
            full = [a for a in rc if a["annotations"]["description"].startswith(want)]
            if len({a["labels"]["image_id"] for a in full}) == n_images:
                complete = now
                break
            time.sleep(0.02)
        # Let the reconcile that pushed them finish (it writes SQLite after queuing the pushes).
        servers.wait_until(
            lambda: (
                metrics(corr.url).get("pciehp_correlator_last_reconcile_timestamp_seconds", 0)
                > posted_at
            ),
            timeout=60,
            what="the reconcile to finish",
        )
        m = metrics(corr.url)
        if m.get("pciehp_correlator_prometheus_queries_per_reconcile"):
            queries_seen.add(m["pciehp_correlator_prometheus_queries_per_reconcile"])
        last_webhook = m.get("pciehp_correlator_last_webhook_timestamp_seconds", float("nan"))
        cpu = cpu_seconds(corr.proc.pid) - cpu_before
        rss = peak_rss_mib(corr.proc.pid)
        rc = root_causes(am_url)
        causes: dict[str, int] = {}
        for a in rc:
            causes[a["labels"]["root_cause"]] = causes.get(a["labels"]["root_cause"], 0) + 1
        reconciles = m.get("pciehp_correlator_reconcile_duration_seconds_count", 0)
        recon_sum = m.get("pciehp_correlator_reconcile_duration_seconds_sum", 0)

        # Side by side: the correlator's own webhook ingestion of the same alerts.
        corr2 = correlator(work, "correlator-ingest", prom.url, "http://127.0.0.1:9")
        corr2.start()
        started.append(corr2)
        payloads = webhook_payloads(alerts)
        t1 = time.monotonic()
        for p in payloads:
            post_json(f"{corr2.url}/api/v1/webhook", p)
        corr_ingest = time.monotonic() - t1
        m2 = metrics(corr2.url)
        accepted = m2.get("pciehp_correlator_alerts_received_total", 0)

        def fmt(t: float | None, ref: float) -> str:
            return "not reached" if t is None else f"{t - ref:.2f} s"

        print()
        print(
            f"alerts {len(alerts)}, instances {n_instances}, images {n_images}, hosts {args.hosts}"
        )
        print(f"root causes in Alertmanager: {dict(sorted(causes.items()))}")
        print(
            f"webhooks received by the correlator: "
            f"{m.get('pciehp_correlator_webhooks_received_total', 0):.0f}"
        )
        print(
            f"last webhook -> all {n_images} incidents in Alertmanager: "
            f"{fmt(first_all, last_webhook)}   (goal <= 2 s)"
        )
        print(
            f"last webhook -> all {n_images} incidents with every member counted: "
            f"{fmt(complete, last_webhook)}"
        )
        print(f"  (last webhook arrived {last_webhook - posted_at:+.2f} s after the last POST)")
        print(f"correlator CPU: {cpu:.2f} s over the flood; peak RSS {rss:.0f} MiB")
        print(
            f"reconciles: {reconciles:.0f} (one at start-up), "
            f"{1000 * recon_sum / max(reconciles, 1):.0f} ms on average; "
            f"PromQL queries per reconcile seen: {sorted(int(q) for q in queries_seen)} "
            f"(total {m.get('pciehp_correlator_prometheus_queries_total', 0):.0f})"
        )
        print(
            f"ingestion: Alertmanager {len(alerts) / am_ingest:,.0f} alerts/s "
            f"({am_ingest:.2f} s, batches of {args.batch}) | correlator "
            f"{accepted / corr_ingest:,.0f} alerts/s ({corr_ingest:.2f} s, "
            f"{len(payloads)} webhooks)"
        )
        if os.environ.get("BENCH_LOG_LEVEL"):
            print(corr.log_tail(3000))
    finally:
        for s in reversed(started):
            s.stop()
        www.terminate()
        www.wait(timeout=10)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--alerts", type=int, default=10_000)
    p.add_argument("--instances", type=int, default=2_000)
    p.add_argument("--images", type=int, default=50)
    p.add_argument("--hosts", type=int, default=100)
    p.add_argument("--batch", type=int, default=200, help="alerts per POST to Alertmanager")
    p.add_argument("--timeout", type=float, default=120.0)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="correlator-bench-") as tmp:
        run(args, Path(tmp))


if __name__ == "__main__":
    main()
