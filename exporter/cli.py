"""pciehp-exporter command line: serve /metrics, print one scrape (--once) or write a textfile."""

import argparse
import contextlib
import gzip
import logging
import queue
import signal
import socket
import socketserver
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, Iterator, List, Optional, Sequence, Tuple, Type

from exporter import __version__
from exporter.boot_state import BootStateFile
from exporter.collectors import default_sources
from exporter.exposition import (
    CONTENT_TYPE,
    GaugeMetricFamily,
    Metric,
    render_metrics,
    write_textfile,
)
from exporter.kernel_log import KernelLog
from exporter.paths import Paths
from exporter.process import ProcessCollector
from exporter.registry import PREFIX, ExporterCollector

log = logging.getLogger("pciehp_exporter")

LANDING = b"""<!doctype html><html><head><title>pciehp-exporter</title></head><body>
<h1>pciehp-exporter</h1><p>PCIe hotplug readiness of this guest.</p>
<p><a href="/metrics">Metrics</a></p></body></html>
"""


class BuildInfo:
    """pciehp_exporter_build_info{version} = 1."""

    def collect(self) -> Iterator[Metric]:
        """The one build-info family."""
        g = GaugeMetricFamily(
            PREFIX + "exporter_build_info", "Exporter version.", labels=["version"]
        )
        g.add_metric([__version__], 1.0)
        yield g


class Registry:
    """The collectors one exporter process serves, scraped in order."""

    def __init__(self, collectors: Sequence[Any]) -> None:
        self.collectors = list(collectors)

    def collect(self) -> Iterator[Metric]:
        """Every family of every collector."""
        for collector in self.collectors:
            yield from collector.collect()


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
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
        "--collector.kernel_log.state-file",
        dest="state_file",
        metavar="PATH",
        help="keep this boot's _OSC facts from the kernel log in PATH (keyed by boot_id), so they "
        "survive a wrapped ring buffer and --textfile runs",
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


def build_registry(args: argparse.Namespace, process_metrics: bool = False) -> Registry:
    """A registry holding the exporter's collectors for the given roots and log source."""
    paths = Paths(Path(args.procfs), Path(args.sysfs), Path(args.rootfs))
    state = BootStateFile(args.state_file) if args.state_file else None
    collectors = [
        ExporterCollector(paths, default_sources(KernelLog(args.kernel_log), state=state)),
        BuildInfo(),
    ]  # type: List[Any]
    if process_metrics:
        collectors.append(ProcessCollector())
    return Registry(collectors)


def scrape(registry: Registry) -> bytes:
    """One scrape of every registered collector, in the text exposition format."""
    return render_metrics(registry.collect()).encode("utf-8")


def split_address(listen: str) -> Tuple[str, int]:
    """`:9860` / `127.0.0.1:9860` / `[::1]:9860` into (host, port)."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


class PlainHandler(BaseHTTPRequestHandler):
    """A GET handler that answers whole bodies and logs at debug level only."""

    def _send(self, code: int, ctype: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        if len(body) > GZIP_MIN and "gzip" in self.headers.get("Accept-Encoding", ""):
            body = gzip.compress(body, compresslevel=GZIP_LEVEL)
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Vary", "Accept-Encoding")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(body)  # the scraper gave up; nothing to do about it

    def log_message(self, fmt: str, *args: Any) -> None:
        log.debug("http: " + fmt, *args)


GZIP_MIN = 1024
"""Bodies shorter than this are sent as they are: gzip would not pay for its CPU."""
GZIP_LEVEL = 1
"""Fast compression: a scrape body shrinks ~10x at level 1, little more at 6, for twice the CPU."""


def make_handler(registry: Registry) -> Type[BaseHTTPRequestHandler]:
    """HTTP handler: /metrics, / (landing page), /-/healthy."""

    class Handler(PlainHandler):
        timeout = 10  # a stalled client holds one thread, never the server

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


class ThreadingServer(HTTPServer):
    """Each connection on a thread of its own, taken from idle workers (starting a thread per
    request cost a quarter of a small guest's scrape). Scrapes serialise on the collectors' lock;
    a slow client or a health probe never waits for another."""

    allow_reuse_address = True
    max_idle = 4
    """Workers kept waiting for connections; more start when all are busy, and exit when idle."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        HTTPServer.__init__(self, *args, **kwargs)
        self._lock = threading.Lock()
        self._idle = 0
        self._handoff = queue.Queue()  # type: queue.Queue

    def process_request(self, request: Any, client_address: Any) -> None:
        """Hand the connection to an idle worker (reserved here), else to a new one."""
        with self._lock:
            reserved = self._idle > 0
            if reserved:
                self._idle -= 1
        if reserved:
            self._handoff.put((request, client_address))
        else:
            threading.Thread(target=self._work, args=(request, client_address), daemon=True).start()

    def _work(self, request: Any, client_address: Any) -> None:
        while True:
            try:
                self.finish_request(request, client_address)
            except Exception:
                self.handle_error(request, client_address)
            finally:
                self.shutdown_request(request)
            with self._lock:
                if self._idle >= self.max_idle:
                    return
                self._idle += 1
            request, client_address = self._handoff.get()

    def server_bind(self) -> None:
        """Bind without HTTPServer's reverse DNS lookup of the address (slow in a guest)."""
        if self.address_family == socket.AF_INET6 and self.server_address[0] == "::":
            # `:9860` means every address: one IPv6 socket that also accepts IPv4
            with contextlib.suppress(OSError, AttributeError):
                self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[0], self.server_address[1]


def make_server(listen: str, handler: Type[BaseHTTPRequestHandler]) -> ThreadingServer:
    """A bound server: `[::]` for `:PORT` (IPv4 too; IPv4 only where IPv6 is off), else the host."""
    host, port = split_address(listen)
    wildcard = listen.rpartition(":")[0] == ""
    if wildcard and socket.has_ipv6:
        try:
            return _server(socket.AF_INET6, ("::", port), handler)
        except OSError as e:  # a guest booted with ipv6.disable=1
            log.debug("no IPv6 socket (%s), listening on IPv4 only", e)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET  # an IPv6 literal such as [::1]
    return _server(family, (host, port), handler)


def _server(
    family: int, address: Tuple[str, int], handler: Type[BaseHTTPRequestHandler]
) -> ThreadingServer:
    server_class = type("Server", (ThreadingServer,), {"address_family": family})
    return server_class(address, handler)


def serve(registry: Registry, listen: str) -> None:
    """Serve until SIGTERM/SIGINT."""
    server = make_server(listen, make_handler(registry))
    stop = threading.Event()

    def _stop(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    log.info("listening on %s port %d", server.server_address[0], server.server_address[1])
    stop.wait()
    server.shutdown()


def main(argv: Optional[List[str]] = None) -> int:
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
