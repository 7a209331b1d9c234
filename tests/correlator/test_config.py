"""Configuration: defaults equal the shipped example, every bad key is named, matchers parse."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from correlator.config import EXAMPLE_CONFIG, Config, ConfigError, from_dict, load, parse_duration
from correlator.matchers import MatcherError, parse_matcher
from tests.correlator.support import PYTHON, ROOT


def test_the_example_file_is_the_builtin_defaults():
    assert load(EXAMPLE_CONFIG) == Config() == load(None)


def test_durations():
    assert parse_duration("15s", "k") == 15
    assert parse_duration("1h30m", "k") == 5400
    assert parse_duration("200ms", "k") == 0.2
    assert parse_duration(2.5, "k") == 2.5
    for bad in ("", "5x", "-1s", 0, True, "1.5s"):
        with pytest.raises(ConfigError, match=r"^k: "):
            parse_duration(bad, "k")


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"timings": {"reconcile_intervl": "5s"}}, r"^timings\.reconcile_intervl: unknown key"),
        ({"timings": {"hold_down": "soon"}}, r"^timings\.hold_down: expected a duration"),
        ({"timings": {"push_ttl": "30s", "resend_interval": "1m"}}, r"^timings\.push_ttl"),
        ({"alerts": {"matchers": ["alertname=~[("]}}, r"^alerts\.matchers\[0\]: "),
        ({"alerts": {"matchers": []}}, r"^alerts\.matchers: expected a non-empty list"),
        ({"alerts": {"labels": {"instance_uuid": "bad-label"}}}, r"^alerts\.labels\.instance_uuid"),
        ({"alerts": {"labels": {"image": "x"}}}, r"^alerts\.labels\.image: unknown key"),
        ({"prometheus": {"selector": "job=pciehp"}}, r"^prometheus\.selector"),
        ({"webhook": {"max_body_bytes": -1}}, r"^webhook\.max_body_bytes"),
        ({"runbook_base_url": "wiki/runbooks"}, r"^runbook_base_url: expected an http"),
        ({"diagnosis": {"causes": "x"}}, r"^diagnosis\.causes: expected a non-empty list"),
        ({"diagnosis": {"causes_fle": "x"}}, r"^diagnosis\.causes_fle: unknown key"),
        ({"promethus": {}}, r"^promethus: unknown key"),
        ({"timings": []}, r"^timings: expected a mapping"),
    ],
)
def test_bad_values_name_their_key(doc, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(doc)


def test_a_partial_file_keeps_the_other_defaults(tmp_path: Path):
    (tmp_path / "c.yml").write_text(
        "alerts:\n  labels: {instance_uuid: instance, image_id: image}\n"
        "timings: {hold_down: 1m}\n"
        "prometheus: {selector: 'job=\"pciehp\"'}\n"
        "diagnosis: {causes_file: mine.yml}\n"
    )
    cfg = load(tmp_path / "c.yml")
    assert (cfg.labels.instance_uuid, cfg.labels.image_id, cfg.labels.host) == (
        "instance",
        "image",
        "host",
    )
    assert cfg.timings.hold_down == 60 and cfg.timings.reconcile_interval == 15
    assert cfg.prometheus_selector == 'job="pciehp"'
    assert cfg.causes_file == tmp_path / "mine.yml"
    with pytest.raises(ConfigError, match=r"diagnosis\.causes_file: cannot read"):
        cfg.cause_rows()


def test_unreadable_and_non_yaml_files_are_clear_errors(tmp_path: Path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load(tmp_path / "missing.yml")
    (tmp_path / "bad.yml").write_text("timings: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load(tmp_path / "bad.yml")


def test_the_command_line_refuses_a_bad_config_naming_the_key(tmp_path: Path):
    (tmp_path / "c.yml").write_text("timings:\n  reconcile_interval: fast\n")
    res = subprocess.run(
        [PYTHON, "-m", "correlator.app", "--config", str(tmp_path / "c.yml")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert res.returncode == 1
    assert "timings.reconcile_interval: expected a duration like 15s or 5m, got 'fast'" in (
        res.stderr
    )
    assert "Traceback" not in res.stderr


def test_matchers_parse_match_and_print_like_alertmanager():
    m = parse_matcher('alertname=~".*Detach.*(Timeout|Failed).*"')
    assert m.matches({"alertname": "NovaDeviceDetachFailed"})
    assert m.matches({"alertname": "VolumeDetachTimeout"})
    assert not m.matches({"alertname": "PCIeHotplugRootCause"})
    assert not m.matches({})
    assert m.text() == 'alertname=~".*Detach.*(Timeout|Failed).*"'
    assert parse_matcher("severity!=info").matches({"severity": "critical"})
    assert parse_matcher('image_id!~"img-.*"').matches({"image_id": "other"})
    assert parse_matcher(r'summary="say \"hi\""').value == 'say "hi"'
    anchored = parse_matcher('host=~"cmp"')
    assert not anchored.matches({"host": "cmp-1"})
    for bad in ("alertname", '="x"', 'a=~"("', "a b"):
        with pytest.raises(MatcherError):
            parse_matcher(bad)
