"""pciehp-host-exporter command line: serve /metrics, print one scrape (--once), or a textfile."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.process_collector import ProcessCollector

from exporter.cli import split_address
from exporter.exposition import write_textfile
from host.metrics import render
from host.monitor import MonitorError
from host.probe import History, VmReport, probe_with_deadline
from host.vms import Target, libvirt_targets, qmp_targets

log = logging.getLogger("pciehp_host_exporter")

LANDING = b"""<!doctype html><html><head><title>pciehp-host-exporter</title></head><body>
<h1>pciehp-host-exporter</h1><p>PCIe slot registers of this host's QEMU VMs.</p>
<p><a href="/metrics">Metrics</a></p></body></html>
"""


class HostExporter:
    """Discovers VMs and probes them concurrently, each within its own deadline."""

    def __init__(
        self,
        discover: Callable[[], Awaitable[list[Target]]],
        timeout: float,
        concurrency: int,
    ) -> None:
        self.discover = discover
        self.timeout = timeout
        self.concurrency = concurrency
        self.history = History()
        self._lock = asyncio.Lock()

    async def probe_all(self) -> tuple[list[VmReport], bool]:
        """One probe of every VM; (reports, whether discovery worked). Scrapes serialise."""
        async with self._lock:
            try:
                targets = await self.discover()
            except MonitorError as e:
                log.error("VM discovery failed: %s", e)
                return [], False
            gate = asyncio.Semaphore(self.concurrency)

            async def one(t: Target) -> VmReport:
                async with gate:
                    return await probe_with_deadline(
                        t.name, t.open, self.timeout, self.history, t.domain, t.instance_uuid
                    )

            reports = await asyncio.gather(*(one(t) for t in targets))
            self.history.forget_except({r.instance_uuid for r in reports})
            return list(reports), True

    async def scrape(self, registry: CollectorRegistry | None = None) -> bytes:
        """One scrape in the text exposition format (plus process metrics when given)."""
        reports, ok = await self.probe_all()
        out = render(reports, ok)
        return out + (generate_latest(registry) if registry is not None else b"")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="pciehp-host-exporter",
        description="Prometheus exporter: can each QEMU VM on this host answer a hot-unplug?",
    )
    p.add_argument(
        "--libvirt.uri",
        dest="libvirt_uri",
        default="qemu:///system",
        help="libvirt connection whose running domains are probed (via virsh)",
    )
    p.add_argument(
        "--qmp.socket",
        dest="qmp_sockets",
        action="append",
        default=[],
        metavar="PATH",
        help="a VM's QMP unix socket (repeatable); when given, libvirt is not used",
    )
    p.add_argument(
        "--web.listen-address", dest="listen", default=":9862", help="address to serve /metrics on"
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="print one scrape to stdout and exit")
    mode.add_argument(
        "--textfile", metavar="PATH", help="write one scrape atomically to PATH and exit"
    )
    p.add_argument(
        "--probe.timeout",
        dest="timeout",
        type=float,
        default=5.0,
        help="seconds one VM may take to answer; slower VMs are skipped and reported",
    )
    p.add_argument(
        "--probe.concurrency",
        dest="concurrency",
        type=int,
        default=8,
        help="VMs probed at the same time",
    )
    p.add_argument(
        "--log.level", dest="log_level", default="info", choices=["debug", "info", "warn", "error"]
    )
    args = p.parse_args(argv)
    if args.timeout <= 0 or args.concurrency < 1:
        p.error("--probe.timeout must be > 0 and --probe.concurrency >= 1")
    return args


def build_exporter(args: argparse.Namespace) -> HostExporter:
    """The exporter for the VMs the flags name: QMP sockets if any, else libvirt's domains."""
    if args.qmp_sockets:
        targets = qmp_targets(args.qmp_sockets)

        async def discover() -> list[Target]:
            return targets

    else:

        async def discover() -> list[Target]:
            return await libvirt_targets(args.libvirt_uri)

    return HostExporter(discover, args.timeout, args.concurrency)


def make_app(exporter: HostExporter, registry: CollectorRegistry | None = None) -> web.Application:
    """HTTP routes: /metrics, / (landing page), /-/healthy, /-/ready."""

    async def metrics(_req: web.Request) -> web.Response:
        body = await exporter.scrape(registry)
        return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4"})

    async def landing(_req: web.Request) -> web.Response:
        return web.Response(body=LANDING, content_type="text/html")

    async def healthy(_req: web.Request) -> web.Response:
        return web.Response(text="OK\n")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/", landing)
    app.router.add_get("/-/healthy", healthy)
    app.router.add_get("/-/ready", healthy)
    return app


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper().replace("WARN", "WARNING")),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    exporter = build_exporter(args)
    if args.once:
        sys.stdout.buffer.write(asyncio.run(exporter.scrape()))
        return 0
    if args.textfile:
        write_textfile(args.textfile, asyncio.run(exporter.scrape()))
        return 0
    registry = CollectorRegistry(auto_describe=False)
    ProcessCollector(namespace="", registry=registry)
    host, port = split_address(args.listen)
    log.info("listening on %s:%d", host, port)
    web.run_app(make_app(exporter, registry), host=host, port=port, print=None, access_log=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
