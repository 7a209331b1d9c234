"""Property tests for the correlator's input parsers on generated and mutated real input: the
webhook payload (Alertmanager 0.25's own delivery, captured) and the YAML configuration
(`config.example.yml`). Either the input is taken whole or it gets the parser's own error; no
other exception escapes, and one bad alert never lets the rest of its payload through."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from correlator.config import BUILTIN_CAUSES, EXAMPLE_CONFIG, Config, ConfigError, from_dict, load
from correlator.diagnosis import DiagnosisTable
from correlator.model import labels_fingerprint
from correlator.webhook import PayloadError, parse_body, parse_payload

ROOT = Path(__file__).resolve().parents[2]
REAL_PAYLOAD_BYTES = (ROOT / "tests/data/alertmanager/webhook_v4_am0.25.json").read_bytes()
REAL_PAYLOAD = json.loads(REAL_PAYLOAD_BYTES)
EXAMPLE_TEXT = EXAMPLE_CONFIG.read_text()
EXAMPLE_DOC = yaml.safe_load(EXAMPLE_TEXT)
CAUSES_DOC = {"diagnosis": {"causes": yaml.safe_load(BUILTIN_CAUSES.read_text())["causes"]}}
FAST = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Any JSON value, including strings with lone surrogates (what `\udc80` escapes decode to).
json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)


def paths(doc: object, prefix: tuple = ()) -> list[tuple]:
    """Every path (tuple of keys/indexes) into a JSON/YAML document, the root included."""
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += paths(v, (*prefix, i))
    return out


def mutated(doc: object, path: tuple, action: str, value: object) -> object:
    """A copy of doc with the node at path replaced by value, or deleted."""
    if not path:
        return value
    new = copy.deepcopy(doc)
    parent = new
    for key in path[:-1]:
        parent = parent[key]
    if action == "delete":
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return new


def mutations(doc: object):
    """Strategy: (path, action, value) edits of a real document."""
    return st.tuples(
        st.sampled_from(paths(doc)), st.sampled_from(["delete", "replace"]), json_values
    )


def assert_valid_alerts(alerts: list) -> None:
    """What every accepted alert must hold, whatever the input was."""
    for a in alerts:
        assert re.fullmatch(r"[0-9a-f]{16}", a.fingerprint)
        assert a.status in ("firing", "resolved")
        assert a.labels and all(isinstance(v, str) for v in a.labels.values())
        # Accepted text is valid Unicode: it can be stored, rendered and pushed.
        for text in (*a.labels, *a.labels.values(), *a.annotations.values()):
            text.encode()


# --- webhook payloads ---------------------------------------------------------------------------


def test_the_real_payload_parses():
    alerts = parse_body(REAL_PAYLOAD_BYTES)
    assert [a.fingerprint for a in alerts] == ["d10af26c322a1ee7", "f0d9ab4181086fa9"]
    # Alertmanager's fingerprint and ours agree, so webhook and poll alerts line up.
    assert [labels_fingerprint(a.labels) for a in alerts] == [a.fingerprint for a in alerts]


@FAST
@given(json_values)
def test_any_json_value_is_a_payload_or_a_payload_error(doc):
    try:
        alerts = parse_payload(doc)
    except PayloadError as e:
        assert str(e)
        return
    assert_valid_alerts(alerts)


@FAST
@given(mutations(REAL_PAYLOAD))
def test_mutated_real_payload_is_taken_whole_or_rejected_whole(edit):
    doc = mutated(REAL_PAYLOAD, *edit)
    try:
        alerts = parse_payload(doc)
    except PayloadError as e:
        assert str(e)
        return
    assert_valid_alerts(alerts)
    assert isinstance(doc, dict) and len(alerts) == len(doc["alerts"])


@FAST
@given(st.integers(0, 1), st.sampled_from(paths(REAL_PAYLOAD["alerts"][0])[1:]), json_values)
def test_one_bad_alert_never_lets_the_others_through(which, path, value):
    good = parse_payload(REAL_PAYLOAD)
    doc = copy.deepcopy(REAL_PAYLOAD)
    doc["alerts"][which] = mutated(doc["alerts"][which], path, "replace", value)
    try:
        alerts = parse_payload(doc)
    except PayloadError as e:
        assert f"alerts[{which}]" in str(e), str(e)  # the reason names the bad alert
        return
    assert len(alerts) == 2
    # The untouched alert parses exactly as before the edit of its neighbour.
    assert alerts[1 - which] == good[1 - which]


@FAST
@given(st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), max_size=20))
def test_mutated_real_payload_bytes(edits):
    body = bytearray(REAL_PAYLOAD_BYTES)
    for pos, val in edits:
        body[pos % len(body)] = val
    try:
        assert_valid_alerts(parse_body(bytes(body)))
    except PayloadError as e:
        assert str(e)


@FAST
@given(st.binary(max_size=2048))
def test_random_bytes_are_a_payload_error(body):
    try:
        parse_body(body)
    except PayloadError:
        return
    raise AssertionError(f"random bytes accepted as a payload: {body!r}")


@FAST
@given(st.sampled_from(["labels", "annotations"]), st.text(st.characters(), min_size=1))
def test_lone_surrogates_in_alert_text_are_rejected_not_crashing(field, text):
    """JSON may escape a lone surrogate (`"\\udc80"`): not Unicode, so it cannot be stored,
    rendered or forwarded. Such a payload is a clear 400, whatever else the text holds."""
    doc = copy.deepcopy(REAL_PAYLOAD)
    # "-" keeps the escape lone: a generated text ending in a high surrogate would pair with it
    doc["alerts"][1][field]["instance"] = text + "-\udc80"
    body = json.dumps(doc).encode()  # ensure_ascii: the surrogate travels as \udc80
    try:
        parse_body(body)
    except PayloadError as e:
        assert "alerts[1]" in str(e) and "UTF-8" in str(e)
        return
    raise AssertionError("a lone surrogate was accepted")


def test_label_limits_reject_an_oversized_alert_and_name_it():
    doc = copy.deepcopy(REAL_PAYLOAD)
    doc["alerts"][0]["labels"]["image"] = "x" * 5000
    try:
        parse_payload(doc)
    except PayloadError as e:
        assert str(e).startswith("alerts[0].labels.image: label value of 5000 bytes")
    else:
        raise AssertionError("an oversized label value was accepted")
    doc = copy.deepcopy(REAL_PAYLOAD)
    doc["alerts"][1]["labels"] = {f"l{i}": "v" for i in range(200)}
    try:
        parse_payload(doc)
    except PayloadError as e:
        assert str(e).startswith("alerts[1].labels: 200 labels")
    else:
        raise AssertionError("an alert with 200 labels was accepted")
    # At the limit is fine.
    doc = copy.deepcopy(REAL_PAYLOAD)
    doc["alerts"][0]["labels"]["image"] = "é" * 2048
    assert parse_payload(doc)[0].labels["image"] == "é" * 2048


# --- the YAML configuration ---------------------------------------------------------------------


def test_the_example_config_is_the_defaults():
    assert from_dict(EXAMPLE_DOC, base_dir=EXAMPLE_CONFIG.parent) == Config()


def _valid_or_config_error(doc: object, base: Path) -> tuple[Config, DiagnosisTable] | None:
    """from_dict plus the diagnosis table compile; None when rejected with ConfigError."""
    try:
        config = from_dict(doc, base_dir=base)  # type: ignore[arg-type]
        table = DiagnosisTable.from_config(config)
    except ConfigError as e:
        assert str(e)
        return None
    # Whatever the table says, a guest without facts is no_guest_data, never a guess.
    assert table.diagnose(None).cause == "no_guest_data"
    return config, table


@FAST
@given(mutations(EXAMPLE_DOC))
def test_mutated_example_config_is_valid_or_names_the_key(edit):
    doc = mutated(EXAMPLE_DOC, *edit)
    valid = _valid_or_config_error(doc, EXAMPLE_CONFIG.parent)
    if valid is not None:
        config = valid[0]
        t = config.timings
        assert t.push_ttl > t.resend_interval and t.retry_max >= t.retry_initial
        assert all(v > 0 for v in vars(t).values())
        assert config.max_body_bytes > 0 and config.history_limit > 0


@FAST
@given(mutations(CAUSES_DOC))
def test_mutated_cause_table_compiles_or_is_a_config_error(edit):
    _valid_or_config_error(mutated(CAUSES_DOC, *edit), EXAMPLE_CONFIG.parent)


@FAST
@given(st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), max_size=10))
def test_mutated_example_config_text_loads_or_is_a_config_error(tmp_path_factory, edits):
    path = tmp_path_factory.mktemp("cfg") / "correlator.yml"
    text = bytearray(EXAMPLE_TEXT.encode())
    for pos, val in edits:
        text[pos % len(text)] = val
    path.write_bytes(bytes(text))
    try:
        config = load(path)
        DiagnosisTable.from_config(config)
    except ConfigError as e:
        assert str(e)


@FAST
@given(json_values)
def test_any_yaml_document_is_a_config_or_a_config_error(doc):
    _valid_or_config_error(doc, EXAMPLE_CONFIG.parent)


@FAST
@given(st.text(max_size=200))
def test_any_yaml_text_is_a_config_or_a_config_error(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("cfg") / "correlator.yml"
    path.write_text(text, errors="surrogatepass")
    try:
        load(path)
    except ConfigError as e:
        assert str(e)


def test_config_files_that_are_not_utf8_are_a_config_error(tmp_path):
    """Regression: a Latin-1 config or causes file raised UnicodeDecodeError at start."""
    bad = tmp_path / "correlator.yml"
    bad.write_bytes(b"external_url: http://caf\xe9.example\n")
    try:
        load(bad)
    except ConfigError as e:
        assert str(e).startswith(f"config file {bad} is not UTF-8 text")
    else:
        raise AssertionError("a Latin-1 config file was accepted")
    causes = tmp_path / "causes.yml"
    causes.write_bytes(b"causes: [{id: caf\xe9}]\n")
    config = from_dict({"diagnosis": {"causes_file": str(causes)}})
    try:
        config.cause_rows()
    except ConfigError as e:
        assert str(e).startswith(f"diagnosis.causes_file: {causes} is not UTF-8")
    else:
        raise AssertionError("a Latin-1 causes file was accepted")


def test_null_for_an_optional_string_is_rejected_as_the_document_says():
    """Regression (found by schemathesis): `"fingerprint": null` or `"endsAt": null` was taken
    although the OpenAPI document says string; absent is fine, null is a 400."""
    for key in ("fingerprint", "endsAt"):
        doc = copy.deepcopy(REAL_PAYLOAD)
        doc["alerts"][0][key] = None
        try:
            parse_payload(doc)
        except PayloadError as e:
            assert str(e).startswith(f"alerts[0].{key}: expected")
        else:
            raise AssertionError(f"null {key} accepted")
        del doc["alerts"][0][key]
        assert len(parse_payload(doc)) == 2


def test_a_body_in_utf16_is_rejected():
    """Regression: json.loads took UTF-16/32 bodies; RFC 8259 and Alertmanager say UTF-8."""
    for encoding in ("utf-16", "utf-32"):
        try:
            parse_body(REAL_PAYLOAD_BYTES.decode().encode(encoding))
        except PayloadError as e:
            assert str(e).startswith("body is not JSON in UTF-8")
        else:
            raise AssertionError(f"a {encoding} body was accepted")
