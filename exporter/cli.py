"""pciehp-exporter command line: serve /metrics, print one scrape (--once) or write a textfile."""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.process_collector import ProcessCollector

from exporter import __version__
from exporter.collectors import default_sources
from exporter.exposition import CONTENT_TYPE, render_metrics, write_textfile
from exporter.kernel_log import KernelLog
from exporter.paths import Paths
from exporter.registry import PREFIX, ExporterCollector

log = logging.getLogger("pciehp_exporter")

LANDING = b"""<!doctype html><html><head><title>pciehp-exporter</title></head><body>
<h1>pciehp-exporter</h1><p>PCIe hotplug readiness of this guest.</p>
<p><a href="/metrics">Metrics</a></p></body></html>
"""


class BuildInfo:
    """pciehp_exporter_build_info{version} = 1."""

    def collect(self):
        g = GaugeMetricFamily(
            PREFIX + "exporter_build_info", "Exporter version.", labels=["version"]
        )
        g.add_metric([__version__], 1.0)
        yield g

    def describe(self):
        return []


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="pciehp-exporter",
        description="Prometheus exporter: can each PCIe port of this guest answer a hot-unplug?",
    )
    p.add_argument("--path.procfs", dest="procfs", default="/proc", help="procfs mountpoint")
    p.add_argument("--path.sysfs", dest="sysfs", default="/sys", help="sysfs mountpoint")
    p.add_argument(
        "--path.rootfs",
        dest="rootfs",
        default="/",
        help="root filesystem (crontabs, systemd units)",
    )
    p.add_argument(
        "--kernel-log",
        default="/dev/kmsg",
        help="/dev/kmsg, or a file: dmesg output, kern.log, messages, raw kmsg records",
    )
    p.add_argument(
        "--web.listen-address", dest="listen", default=":9860", help="address to serve /metrics on"
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="print one scrape to stdout and exit")
    mode.add_argument(
        "--textfile",
        metavar="PATH",
        help="write one scrape atomically to PATH (node_exporter textfile) and exit",
    )
    p.add_argument(
        "--log.level", dest="log_level", default="info", choices=["debug", "info", "warn", "error"]
    )
    return p.parse_args(argv)


def build_registry(args: argparse.Namespace, process_metrics: bool = False) -> CollectorRegistry:
    """A registry holding the exporter's collectors for the given roots and log source."""
    paths = Paths(Path(args.procfs), Path(args.sysfs), Path(args.rootfs))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ExporterCollector(paths, default_sources(KernelLog(args.kernel_log))))
    registry.register(BuildInfo())
    if process_metrics:
        ProcessCollector(namespace="", registry=registry)
    return registry


def scrape(registry: CollectorRegistry) -> bytes:
    """One scrape of every registered collector, in the text exposition format."""
    return render_metrics(registry.collect()).encode("utf-8")


def split_address(listen: str) -> tuple[str, int]:
    """`:9860` / `127.0.0.1:9860` / `[::1]:9860` into (host, port)."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


class PlainHandler(BaseHTTPRequestHandler):
    """A GET handler that answers whole bodies and logs at debug level only."""

    def _send(self, code: int, ctype: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(body)  # the scraper gave up; nothing to do about it

    def log_message(self, fmt: str, *args: object) -> None:
        log.debug("http: " + fmt, *args)


def make_handler(registry: CollectorRegistry) -> type[BaseHTTPRequestHandler]:
    """HTTP handler: /metrics, / (landing page), /-/healthy."""

    class Handler(PlainHandler):
        timeout = 10  # a stalled client must not hold the (single-threaded) server

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, CONTENT_TYPE, scrape(registry))
            elif path == "/":
                self._send(200, "text/html; charset=utf-8", LANDING)
            elif path == "/-/healthy":
                self._send(200, "text/plain", b"OK\n")
            else:
                self._send(404, "text/plain", b"not found\n")

    return Handler


class HTTPServerV6(HTTPServer):
    """HTTPServer on an IPv6 socket."""

    address_family = socket.AF_INET6


def serve(registry: CollectorRegistry, listen: str) -> None:
    """Serve until SIGTERM/SIGINT."""
    host, port = split_address(listen)
    # One request at a time: scrapes serialise on the collector lock anyway, and a thread per
    # request costs more CPU than the scrape's own sysfs reads.
    server_class = HTTPServerV6 if ":" in host else HTTPServer  # an IPv6 literal such as [::]
    server = server_class((host, port), make_handler(registry))
    stop = threading.Event()

    def _stop(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    log.info("listening on %s:%d", host, server.server_address[1])
    stop.wait()
    server.shutdown()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper().replace("WARN", "WARNING")),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if args.once:
        sys.stdout.buffer.write(scrape(build_registry(args)))
        return 0
    if args.textfile:
        write_textfile(args.textfile, scrape(build_registry(args)))
        return 0
    registry = build_registry(args, process_metrics=True)
    scrape(registry)  # first poll of the kernel log happens now, not on the first scrape
    serve(registry, args.listen)
    return 0


if __name__ == "__main__":
    sys.exit(main())
