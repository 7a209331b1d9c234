"""The generator reproduces the committed JSON, and --check notices a stale file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import Dashboard

from dashboards.generate import main
from tests.dashboards.common import NAMES, json_path, load


def test_committed_json_is_current() -> None:
    assert main(["--check"]) == 0


def test_generate_reproduces_committed_json(tmp_path: Path) -> None:
    assert main(["--out", str(tmp_path)]) == 0
    for name in NAMES:
        assert (tmp_path / f"{name}.json").read_text() == json_path(name).read_text()


def test_check_fails_on_a_stale_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name in NAMES:
        shutil.copy(json_path(name), tmp_path / f"{name}.json")
    stale = tmp_path / "guest.json"
    stale.write_text(stale.read_text().replace("Ports nobody serves", "Ports"))
    assert main(["--check", "--out", str(tmp_path)]) == 1
    assert "guest.json" in capsys.readouterr().err


@pytest.mark.parametrize("name", NAMES)
def test_json_round_trips_through_the_sdk_model(name: str) -> None:
    """Every key is one the foundation SDK's dashboard model knows (unknown keys are dropped)."""
    raw = load(name)
    again = json.loads(json.dumps(Dashboard.from_json(raw), cls=JSONEncoder))
    assert again == raw
    raw["panels"][1]["titel"] = "typo"
    assert json.loads(json.dumps(Dashboard.from_json(raw), cls=JSONEncoder)) != raw
