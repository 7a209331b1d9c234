"""The rule generator: committed rule files are current, --check notices drift, a selector
setting lands in every guest selector and the result is still valid for promtool."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from alerts.generate import SOURCES, main, outputs, substitute
from tests.alerts.pipeline import ALERTS, RULE_FILES

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def test_committed_rule_files_are_current() -> None:
    assert main(["--check"]) == 0


def test_every_rule_file_has_a_source() -> None:
    assert {p.name for p in RULE_FILES} == {f"{s.stem}.rules.yml" for s in SOURCES.glob("*.yml")}


def test_check_fails_on_a_stale_or_orphan_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for path in RULE_FILES:
        shutil.copy(path, tmp_path / path.name)
    assert main(["--check", "--out", str(tmp_path)]) == 0
    stale = tmp_path / "guest.rules.yml"
    stale.write_text(stale.read_text().replace("for: 10m", "for: 1m", 1))
    (tmp_path / "old.rules.yml").write_text("groups: []\n")
    assert main(["--check", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "guest.rules.yml" in err and "old.rules.yml" in err


def test_default_rules_select_by_metric_name_not_by_job() -> None:
    """No guest or host exporter selector names a job: both scrape routes match."""
    for path in RULE_FILES:
        if path.name == "correlator.rules.yml":
            continue
        assert not re.search(r"\bjob\s*=~?\s*\"", path.read_text()), path.name


def test_selector_setting_reaches_every_exporter_selector(tmp_path: Path) -> None:
    sel = 'job=~"pciehp-exporter|node"'
    assert main(["--selector", sel, "--out", str(tmp_path)]) == 0
    exprs = [
        r["expr"]
        for name in ("guest.rules.yml", "fleet.rules.yml")
        for g in yaml.safe_load((tmp_path / name).read_text())["groups"]
        for r in g["rules"]
    ]
    metrics = re.findall(r"(?<![:\w])(pciehp_(?!host_)[a-z_]+)(\{[^}]*\}|\[)?", "\n".join(exprs))
    assert metrics
    for name, sel_text in metrics:
        assert sel_text.startswith("{" + sel), f"{name}{sel_text}"
    for path in tmp_path.glob("*.rules.yml"):
        check = subprocess.run(
            [PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True, check=False
        )
        assert check.returncode == 0, check.stdout + check.stderr


def test_host_selector_is_separate(tmp_path: Path) -> None:
    text = substitute("a{SELECTOR} b{HOST_SELECTOR, x=\"1\"} c{HOST_SELECTOR}", {
        "selector": 'job="g"', "host_selector": 'job="h"'
    })  # fmt: skip
    assert text == 'a{job="g"} b{job="h", x="1"} c{job="h"}'
    assert substitute(text, {"selector": "", "host_selector": ""}) == text
    empty = substitute('a{SELECTOR} b{SELECTOR, x="1"}', {"selector": "", "host_selector": ""})
    assert empty == 'a b{x="1"}'


@pytest.mark.parametrize("bad", ['job="x"} or vector(1) #', "job=x", '{job="x"}'])
def test_a_selector_that_is_not_label_matchers_is_refused(
    bad: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--selector", bad, "--out", str(tmp_path)]) == 2
    assert "expected label matchers" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_stray_placeholder_is_an_error() -> None:
    with pytest.raises(ValueError, match="placeholder"):
        substitute("up == 0 # SELECTOR", {"selector": "", "host_selector": ""})


def test_generated_files_keep_the_source_rules() -> None:
    for name, text in outputs({"selector": "", "host_selector": ""}).items():
        source = yaml.safe_load((SOURCES / name.replace(".rules.yml", ".yml")).read_text())
        generated = yaml.safe_load(text)
        names = [r.get("alert") or r.get("record") for g in generated["groups"] for r in g["rules"]]
        assert names == [
            r.get("alert") or r.get("record") for g in source["groups"] for r in g["rules"]
        ]
    assert (ALERTS / "config.yml").is_file()
