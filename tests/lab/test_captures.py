"""Every capture under tests/data/guests has its README line, and the lab's lines give the exact
command in the capture's meta.json and the outcome in its result.json."""

from __future__ import annotations

import json
import re

from tests.support.captures import GUESTS, SCENARIOS


def readme_rows() -> dict[str, tuple[str, str]]:
    """capture -> (DEVICE_DELETED column, command), from the README table."""
    rows = {}
    for m in re.finditer(
        r"^\| `(\w+)` \| [^|]+ \| ([^|]+) \| `([^`]+)` \|$",
        (GUESTS / "README.md").read_text(),
        re.M,
    ):
        rows[m.group(1)] = (m.group(2).strip(), m.group(3))
    return rows


def test_every_capture_has_a_readme_line_and_is_in_the_test_set():
    dirs = {p.name for p in GUESTS.iterdir() if p.is_dir()}
    assert set(readme_rows()) == dirs
    assert set(SCENARIOS) == dirs


def test_lab_captures_name_the_command_that_made_them_and_what_happened():
    lab_made = 0
    for name, (deleted, command) in readme_rows().items():
        meta = json.loads((GUESTS / name / "meta.json").read_text())
        result = json.loads((GUESTS / name / "result.json").read_text())
        if "remake" not in meta:  # the shared fixtures' four: see the README's first lines
            continue
        lab_made += 1
        assert command == meta["remake"], name
        if result["device_deleted"]:
            assert deleted == f"after {result['device_deleted_after_s']:.1f} s", name
        else:
            assert deleted == "never", name
    assert lab_made >= 10
