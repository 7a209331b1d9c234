"""The HTTP server as Prometheus meets it: `:PORT` answers on IPv4 and IPv6, a slow client does not
hold up other requests, and gzip is sent when asked for."""

from __future__ import annotations

import gzip
import re
import socket
import threading
import urllib.request
from collections.abc import Iterator

import pytest

from tests.exporter.conftest import serving
from tests.exporter.test_golden import VOLATILE
from tests.support import servers
from tests.support.captures import Capture

PROCESS = re.compile(r"^(# (HELP|TYPE) )?process_\S+.*\n", re.M)


@pytest.fixture
def port() -> Iterator[int]:
    """An exporter serving q35_normal on `:PORT`, the default form of --web.listen-address."""
    with serving(f":{servers.free_port()}", Capture("q35_normal").exporter_args()) as p:
        yield p


def get(url: str, headers: dict[str, str] | None = None) -> tuple[dict[str, str], bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(req, timeout=10) as r:
        return dict(r.headers), r.read()


def stable(body: bytes) -> str:
    """The scrape without what differs between two scrapes (durations, process_*)."""
    return PROCESS.sub("", VOLATILE.sub("", body.decode()))


def test_default_bind_answers_on_ipv4_and_ipv6(port):
    for host in ("127.0.0.1", "[::1]"):
        _headers, body = get(f"http://{host}:{port}/metrics")
        assert b"pciehp_port_info{" in body, host


def test_gzip_when_asked_and_the_same_scrape(port):
    headers, plain = get(f"http://127.0.0.1:{port}/metrics")
    assert "Content-Encoding" not in headers
    headers, packed = get(f"http://127.0.0.1:{port}/metrics", {"Accept-Encoding": "gzip, deflate"})
    assert headers["Content-Encoding"] == "gzip"
    assert int(headers["Content-Length"]) == len(packed) < len(plain) / 4
    assert stable(gzip.decompress(packed)) == stable(plain)


def test_slow_clients_do_not_block_a_scrape(port):
    """Six clients that send half a request and wait (more than the idle workers kept): a scrape
    and a concurrent second scrape are still answered at once."""
    stalled = []
    try:
        for _ in range(6):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # headers never finished
            stalled.append(s)
        bodies: list[bytes] = []
        both = [
            threading.Thread(target=lambda: bodies.append(get(f"http://[::1]:{port}/metrics")[1]))
            for _ in range(2)
        ]
        for t in both:
            t.start()
        for t in both:
            t.join(timeout=8)  # the handler's own timeout for the stalled ones is 10 s
        assert len(bodies) == 2 and all(b"pciehp_port_info{" in b for b in bodies)
    finally:
        for s in stalled:
            s.close()
