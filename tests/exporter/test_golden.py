"""Golden end-to-end output: `pciehp-exporter --once` on every capture tree, like node_exporter's
e2e-output.txt. Regenerate with `PCIEHP_UPDATE_GOLDEN=1 ./run test tests/exporter/test_golden.py`.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.captures import ALL, Capture

GOLDEN = Path(__file__).parent / "golden"
VOLATILE = re.compile(r"^pciehp_collector_duration_seconds\{.*$\n", re.M)
UPDATE = os.environ.get("PCIEHP_UPDATE_GOLDEN") == "1"


def run_once(capture: Capture) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "exporter.cli", "--once", *capture.exporter_args()],
        capture_output=True,
        check=True,
        timeout=60,
    )
    assert out.stderr == b"", out.stderr.decode()  # quiet on good input
    return out.stdout.decode()


@pytest.mark.parametrize("capture", ALL, ids=lambda c: f"{c.scenario}__{c.phase}")
def test_once_output_matches_golden(capture):
    text = run_once(capture)
    golden = GOLDEN / f"{capture.scenario}__{capture.phase}.prom"
    stable = VOLATILE.sub("", text)
    if UPDATE:
        golden.write_text(stable)
    assert stable == golden.read_text()
    check = subprocess.run(
        ["promtool", "check", "metrics"], input=text.encode(), capture_output=True, timeout=60
    )
    assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()
