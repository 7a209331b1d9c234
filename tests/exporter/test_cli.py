"""The three modes: HTTP server, --once, --textfile (atomic)."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.exporter.conftest import parse_samples, port, value
from tests.support import servers
from tests.support.captures import Capture


def test_serve_mode_answers_metrics_and_landing_page(tmp_path):
    cap = Capture("q35_aspm_off", "after_unplug")
    p = servers.free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "exporter.cli",
            "--web.listen-address",
            f"127.0.0.1:{p}",
            *cap.exporter_args(),
        ],
        stderr=subprocess.PIPE,
    )
    try:
        url = f"http://127.0.0.1:{p}"
        servers.wait_until(
            lambda: servers.http_get(url + "/-/healthy")[0] == 200, what="exporter up"
        )
        status, body = servers.http_get(url + "/metrics")
        assert status == 200
        s = parse_samples(body.decode())
        assert value(s, "pciehp_slot_button_pending", **port("0000:00:02.0")) == 1
        assert value(s, "pciehp_exporter_build_info", version="0.1.0") == 1
        assert any(k[0] == "process_resident_memory_bytes" for k in s)
        assert servers.http_get(url + "/")[0] == 200
        assert servers.http_get(url + "/nope")[0] == 404
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0


def test_textfile_is_written_atomically(tmp_path):
    cap = Capture("q35_normal")
    target = tmp_path / "pciehp.prom"
    target.write_text("old\n")
    inode_before = target.stat().st_ino
    out = subprocess.run(
        [sys.executable, "-m", "exporter.cli", "--textfile", str(target), *cap.exporter_args()],
        capture_output=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert target.stat().st_ino != inode_before  # replaced by rename, never written in place
    s = parse_samples(target.read_text())
    assert value(s, "pciehp_port_hotplug_handler", handler="pciehp", **port("0000:00:02.0")) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["pciehp.prom"]  # no temp file left


def test_once_and_textfile_are_exclusive():
    out = subprocess.run(
        [sys.executable, "-m", "exporter.cli", "--once", "--textfile", os.devnull],
        capture_output=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert b"not allowed with" in out.stderr


def test_lean_writer_is_byte_identical_to_client_python():
    """exporter.exposition.render_metrics must not drift from generate_latest's format."""
    from prometheus_client import generate_latest

    from exporter.cli import build_registry, parse_args, scrape

    for scenario in ("q35_normal", "q35_aspm_off", "q35_acpihp_normal", "i440fx_normal"):
        cap = Capture(scenario, "after_unplug")
        a = build_registry(parse_args(cap.exporter_args()))
        b = build_registry(parse_args(cap.exporter_args()))
        ours = scrape(a).decode()
        theirs = generate_latest(b).decode()
        strip = [ln for ln in ours.splitlines() if "duration_seconds{" not in ln]
        assert strip == [ln for ln in theirs.splitlines() if "duration_seconds{" not in ln]


def test_hostile_label_values_are_escaped():
    from prometheus_client.core import GaugeMetricFamily

    from exporter.exposition import render_metrics

    g = GaugeMetricFamily("x", "doc\\with\nnewline", labels=["v"])
    g.add_metric(['a"b\\c\nd'], 1.0)
    text = render_metrics([g])
    assert text == ('# HELP x doc\\\\with\\nnewline\n# TYPE x gauge\nx{v="a\\"b\\\\c\\nd"} 1.0\n')
    assert parse_samples(text)[("x", frozenset({("v", 'a"b\\c\nd')}))] == 1.0
