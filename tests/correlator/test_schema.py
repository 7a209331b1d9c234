"""The published JSON Schemas: valid 2020-12, one text in docs/ and the wheel, true to the code."""

from __future__ import annotations

import dataclasses
import json

import pytest
import yaml
from jsonschema import Draft202012Validator

from correlator.config import (
    BUILTIN_CAUSES,
    CAUSES_SCHEMA,
    CAUSES_VALIDATOR,
    CONFIG_SCHEMA,
    CONFIG_VALIDATOR,
    EXAMPLE_CONFIG,
    SCHEMA_DIR,
    Config,
    ConfigError,
    Timings,
    from_dict,
)
from correlator.diagnosis import PREDICATES
from correlator.model import PORT_FIELDS, HostPortFacts
from tests.correlator.support import ROOT

NAMES = ("correlator-config.schema.json", "causes.schema.json")


@pytest.mark.parametrize("name", NAMES)
def test_the_docs_copy_is_the_packaged_copy(name):
    assert (ROOT / "docs" / "schema" / name).read_bytes() == (SCHEMA_DIR / name).read_bytes()


@pytest.mark.parametrize("schema", [CONFIG_SCHEMA, CAUSES_SCHEMA])
def test_the_schemas_are_valid_draft_2020_12_with_an_id_where_docs_publishes_them(schema):
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    name = schema["$id"].rsplit("/", 1)[1]
    assert schema["$id"].endswith(f"/main/docs/schema/{name}") and name in NAMES
    assert schema["description"]


def test_the_shipped_files_validate():
    CONFIG_VALIDATOR.validate(yaml.safe_load(EXAMPLE_CONFIG.read_text()))
    CAUSES_VALIDATOR.validate(yaml.safe_load(BUILTIN_CAUSES.read_text()))


def test_every_config_key_is_described_and_its_default_is_the_codes():
    props = CONFIG_SCHEMA["properties"]
    example = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    for section, body in props.items():
        assert body.get("description"), section
        for key, sub in body.get("properties", {}).items():
            assert sub.get("description"), f"{section}.{key}"
            if "default" in sub and key in (example.get(section) or {}):
                assert from_dict({section: {key: sub["default"]}}) == Config(), f"{section}.{key}"
    timing_keys = set(props["timings"]["properties"])
    assert timing_keys == {f.name for f in dataclasses.fields(Timings)}
    assert props["storage"]["properties"]["retention"]["default"] == "30d"


def test_the_condition_vocabulary_is_the_codes():
    conditions = CAUSES_SCHEMA["$defs"]["conditions"]["properties"]
    assert set(conditions) == set(PREDICATES)
    assert all(c.get("description") for c in conditions.values())
    assert tuple(conditions["any_port"]["properties"]) == PORT_FIELDS
    host = tuple(f.name for f in dataclasses.fields(HostPortFacts) if f.name != "address")
    assert tuple(conditions["host_any_port"]["properties"]) == host


def test_every_violation_is_reported_each_with_its_path():
    doc = {
        "timings": {"hold_down": True, "reconcile_intervl": "5s"},
        "storage": {"retention": "forever"},
        "diagnosis": {"causes": [{"id": "x", "severity": "page", "when": {"any_port": {}}}]},
    }
    with pytest.raises(ConfigError) as err:
        from_dict(doc)
    assert str(err.value).splitlines() == [
        "diagnosis.causes[0] (x).severity: expected one of critical, warning, info, got 'page'",
        "diagnosis.causes[0] (x).summary: missing",
        "diagnosis.causes[0] (x).when.any_port: expected a mapping of port fields to values, "
        "got {}",
        "storage.retention: expected a duration like 15s or 5m, got 'forever'",
        "timings.hold_down: expected a duration like 15s or 5m, got True",
        "timings.reconcile_intervl: unknown key (known: alert_ttl, hold_down, push_ttl, "
        "reconcile_interval, resend_interval, retry_initial, retry_max, webhook_debounce)",
    ]


def test_a_causes_file_is_checked_against_the_schema_naming_file_and_key(tmp_path):
    path = tmp_path / "causes.yml"
    path.write_text(json.dumps({"causes": [{"id": "a", "summary": "s", "severity": "info"}]}))
    with pytest.raises(ConfigError, match=rf"^{path}: causes\[0\] \(a\)\.when: missing$"):
        Config(causes_file=path).cause_rows()
    path.write_text("[]\n")
    with pytest.raises(ConfigError, match=rf"^{path}: top level: expected a mapping, got \[\]$"):
        Config(causes_file=path).cause_rows()


def test_deeply_nested_conditions_are_a_config_error_not_a_crash():
    when: dict[str, object] = {}
    for _ in range(5000):
        when = {"not": when}
    row = {"id": "no_guest_data", "summary": "s", "severity": "info", "when": when}
    with pytest.raises(ConfigError, match="nested too deeply"):
        from_dict({"diagnosis": {"causes": [row]}})


def test_storage_retention_takes_prometheus_durations():
    assert Config().retention == 30 * 86400
    assert from_dict({"storage": {"retention": "2w"}}).retention == 14 * 86400
    assert from_dict({"storage": {"retention": "1y"}}).retention == 365 * 86400
    assert from_dict({"storage": {"retention": "36h"}}).retention == 36 * 3600
    with pytest.raises(ConfigError, match=r"^storage\.retention: must be positive"):
        from_dict({"storage": {"retention": "0d"}})
