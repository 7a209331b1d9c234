"""The built .pyz on real interpreters other than ours: Debian bullseye's python3.9 and trixie's
python3.13 (debootstrapped, see tests/support/chroots.py), on every capture, against the golden
files; and the .deb installed with dpkg in bullseye, its wrapper choosing the interpreter."""

from __future__ import annotations

import gzip
import re
import shutil
import subprocess
import threading
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.exporter.conftest import GUEST_DIR, inside_args
from tests.exporter.test_dist import PYZ as INSTALLED_PYZ
from tests.exporter.test_dist import WRAPPER, golden
from tests.exporter.test_golden import VOLATILE
from tests.support import chroots
from tests.support.captures import ALL, Capture

GUEST_PYZ = f"{GUEST_DIR}/pciehp-exporter.pyz"
LISTENING = re.compile(rb"listening on (\S+) port (\d+)")
PROCESS = re.compile(r"^(# (HELP|TYPE) )?process_\S+.*\n", re.M)


def test_python_is_the_suites_own(debian_guest):
    out = debian_guest.run(
        ["python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2], sys.executable)"]
    )
    assert out.returncode == 0, out.stderr.decode()
    version, executable = out.stdout.decode().split()
    assert version == chroots.PYTHONS[debian_guest.suite]
    assert executable == "/usr/bin/python3"


@pytest.mark.parametrize("capture", ALL, ids=lambda c: f"{c.scenario}__{c.phase}")
def test_pyz_textfile_matches_golden(debian_guest, capture):
    prom = f"/tmp/{capture.scenario}__{capture.phase}.prom"
    out = debian_guest.run(["python3", GUEST_PYZ, "--textfile", prom, *inside_args(capture)])
    assert out.returncode == 0 and out.stderr == b"", out.stderr.decode()
    assert VOLATILE.sub("", debian_guest.inside(prom).read_text()) == golden(capture)


@pytest.fixture
def start() -> Iterator[Callable[[chroots.Guest, list[str]], tuple[int, str]]]:
    """start(guest, command) -> (pid, base URL) of a server inside the guest, once it logs where
    it listens; every server is stopped after the test."""
    procs: list[subprocess.Popen] = []

    def _start(guest: chroots.Guest, command: list[str]) -> tuple[int, str]:
        proc = guest.popen(command)
        procs.append(proc)
        watchdog = threading.Timer(60, proc.kill)  # a silent hang fails the test, not blocks it
        watchdog.start()
        try:
            seen = b""
            for line in proc.stderr:
                seen += line
                m = LISTENING.search(line)
                if m:
                    return proc.pid, f"http://{m.group(1).decode()}:{m.group(2).decode()}"
        finally:
            watchdog.cancel()
        raise AssertionError(f"server exited: {seen.decode()}")

    yield _start
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=10)
        proc.stdout.close()
        proc.stderr.close()


def test_pyz_serves_gzip_over_http(debian_guest, start):
    """Threaded HTTP server and gzip on the suite's Python: one scrape is golden plus process_*."""
    capture = Capture("q35_aspm_off")
    _pid, url = start(
        debian_guest,
        ["python3", GUEST_PYZ, "--web.listen-address", "127.0.0.1:0", *inside_args(capture)],
    )
    req = urllib.request.Request(f"{url}/metrics", headers={"Accept-Encoding": "gzip"})
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.headers["Content-Encoding"] == "gzip"
        text = gzip.decompress(r.read()).decode()
    assert "process_resident_memory_bytes " in text
    assert PROCESS.sub("", VOLATILE.sub("", text)) == golden(capture)


@pytest.fixture
def installed(artifacts, tmp_path) -> chroots.Guest:
    """A bullseye guest where `dpkg -i` installed the .deb; the q35_normal capture copied in."""
    guest = chroots.Guest("bullseye", tmp_path)
    deb = guest.inside(f"/tmp/{artifacts.deb.name}")
    deb.write_bytes(artifacts.deb.read_bytes())
    out = guest.run(["dpkg", "-i", f"/tmp/{deb.name}"])
    assert out.returncode == 0, (out.stdout + out.stderr).decode()
    status = guest.run(["dpkg-query", "-W", "-f", "${Status}", "pciehp-exporter"])
    assert status.stdout == b"install ok installed"
    tree = guest.inside(f"{GUEST_DIR}/guests/q35_normal/tree")
    shutil.copytree(Capture("q35_normal").tree, tree, symlinks=True)
    return guest


def cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]


def test_wrapper_runs_the_pyz_with_python3(installed, start):
    pid, url = start(installed, [WRAPPER, "--web.listen-address", "127.0.0.1:0"])
    assert cmdline(pid)[:2] == ["python3", INSTALLED_PYZ]
    with urllib.request.urlopen(f"{url}/-/healthy", timeout=30) as r:
        assert r.read() == b"OK\n"


def test_wrapper_falls_back_to_platform_python(installed, start):
    """RHEL 8: no python3 command, /usr/libexec/platform-python is the interpreter."""
    setup = installed.run(
        [
            "sh",
            "-c",
            "rm /usr/bin/python3 && mkdir -p /usr/libexec && "
            "ln -s /usr/bin/python3.9 /usr/libexec/platform-python && ! command -v python3",
        ]
    )
    assert setup.returncode == 0, setup.stderr.decode()
    capture = Capture("q35_normal")
    out = installed.run([WRAPPER, "--textfile", "/tmp/out.prom", *inside_args(capture)])
    assert out.returncode == 0 and out.stderr == b"", out.stderr.decode()
    assert VOLATILE.sub("", installed.inside("/tmp/out.prom").read_text()) == golden(capture)
    pid, _url = start(installed, [WRAPPER, "--web.listen-address", "127.0.0.1:0"])
    assert cmdline(pid)[:2] == ["/usr/libexec/platform-python", INSTALLED_PYZ]


def test_wrapper_without_any_interpreter_says_so(installed):
    assert installed.run(["rm", "/usr/bin/python3"]).returncode == 0
    out = installed.run([WRAPPER, "--once"])
    assert out.returncode == 127
    assert b"no python3 on PATH and no /usr/libexec/platform-python" in out.stderr
