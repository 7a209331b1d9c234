"""The three modes: HTTP server, --once, --textfile (atomic)."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.exporter.conftest import parse_samples, port, serving, value
from tests.support import servers
from tests.support.captures import Capture


def test_serve_mode_answers_metrics_and_landing_page():
    cap = Capture("q35_aspm_off", "after_unplug")
    with serving(f"127.0.0.1:{servers.free_port()}", cap.exporter_args()) as p:
        url = f"http://127.0.0.1:{p}"
        status, body = servers.http_get(url + "/metrics")
        assert status == 200
        s = parse_samples(body.decode())
        assert value(s, "pciehp_slot_button_pending", **port("0000:00:02.0")) == 1
        assert value(s, "pciehp_exporter_build_info", version="0.1.0") == 1
        assert any(k[0] == "process_resident_memory_bytes" for k in s)
        assert servers.http_get(url + "/")[0] == 200
        assert servers.http_get(url + "/nope")[0] == 404


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


def _as_client_python(metric):
    """The same family built with client_python, to compare writers."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    cls = CounterMetricFamily if metric.type == "counter" else GaugeMetricFamily
    family = cls(metric.name, metric.documentation, labels=list(metric.labels))
    for values, v in metric.samples:
        family.add_metric(list(values), v)
    return family


class _Static:
    """A registry-shaped holder of built families, for generate_latest."""

    def __init__(self, families):
        self.families = families

    def collect(self):
        return self.families


def test_stdlib_writer_is_byte_identical_to_client_python():
    """exporter.exposition.render_metrics must not drift from generate_latest's format."""
    from prometheus_client import generate_latest

    from exporter.cli import build_registry, parse_args
    from exporter.exposition import render_metrics

    for scenario in ("q35_normal", "q35_aspm_off", "q35_acpihp_normal", "i440fx_normal"):
        cap = Capture(scenario, "after_unplug")
        families = list(build_registry(parse_args(cap.exporter_args()), True).collect())
        assert len(families) > 20
        theirs = generate_latest(_Static([_as_client_python(m) for m in families])).decode()
        assert render_metrics(families) == theirs
        assert render_metrics(families) == theirs  # again: the series text comes from the cache


def test_hostile_label_values_are_escaped():
    from exporter.exposition import GaugeMetricFamily, render_metrics

    g = GaugeMetricFamily("x", "doc\\with\nnewline", labels=["v"])
    g.add_metric(['a"b\\c\nd'], 1.0)
    text = render_metrics([g])
    assert text == ('# HELP x doc\\\\with\\nnewline\n# TYPE x gauge\nx{v="a\\"b\\\\c\\nd"} 1.0\n')
    assert parse_samples(text)[("x", frozenset({("v", 'a"b\\c\nd')}))] == 1.0


def test_values_are_formatted_like_client_python():
    from prometheus_client.utils import floatToGoString

    from exporter.exposition import format_value

    for v in (0, 1, -1, 0.5, 1e-9, 123456789.0, 12345678.5, 1e22, float("inf"), -float("inf")):
        assert format_value(v) == floatToGoString(v)
    assert format_value(float("nan")) == "NaN"
