"""The README's metrics reference is kept true against the exporter's real output."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "exporter" / "golden"


def readme_metrics() -> dict[str, set[str]]:
    """metric name (with prefix) -> documented extra labels, from the README's metrics table."""
    text = (ROOT / "README.md").read_text()
    section = text.split("### Metrics", 1)[1].split("\n## ", 1)[0]
    out: dict[str, set[str]] = {}
    for m in re.finditer(r"^\| `(\w+)` \| (\w+) \|([^|]*)\|", section, re.M):
        labels = {x.strip() for x in m.group(3).split(",") if x.strip()}
        out["pciehp_" + m.group(1)] = labels
    return out


def exported() -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for golden in GOLDEN.glob("*.prom"):
        for fam in text_string_to_metric_families(golden.read_text()):
            for s in fam.samples:
                out.setdefault(s.name, set()).update(s.labels)
    return out


def test_every_exported_metric_is_documented_with_its_labels():
    documented = readme_metrics()
    port = {"segment", "bus", "device", "function"}
    for name, labels in exported().items():
        assert name in documented, f"{name} missing from README"
        assert labels - port == documented[name], name


def test_every_documented_metric_is_exported():
    got = exported()
    missing = [
        n
        for n in readme_metrics()
        if n not in got
        and n != "pciehp_collector_duration_seconds"  # stripped from goldens
        and n != "pciehp_rescan_workaround"  # no capture has one; covered by test_rescan
    ]
    assert missing == []
