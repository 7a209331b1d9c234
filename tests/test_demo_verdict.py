"""`python -m demo.verdict` prints the verdict the exporter published for each port, not its own."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_demo_prints_the_exporters_verdicts() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "demo.verdict"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=True,
    ).stdout  # fmt: skip
    sections = dict(re.findall(r"^== (\S+ \([^)]*\)).*\n((?:   .*\n)*)", out, re.M))
    lines = {k: v.splitlines() for k, v in sections.items()}
    assert len(lines) == 8
    assert set(lines["q35_normal (boot)"]) == {
        f"   0000:00:0{d}.{f}  ready (pciehp_irq)" for d, n in ((2, 8), (3, 4)) for f in range(n)
    }
    assert lines["q35_aspm_off (after device_del)"][0] == (
        "   0000:00:02.0  not_ready (no_handler): unplug request pending (attention button latched)"
    )
    assert all("ready (acpi_hotplug)" in x for x in lines["q35_acpihp_normal (boot)"])
    assert lines["i440fx_normal (boot)"] == [
        "   no PCIe port to judge (ACPI hotplug on the root bus)"
    ]
