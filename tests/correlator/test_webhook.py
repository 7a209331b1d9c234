"""Webhook payload v4 parsing: the real Alertmanager 0.25 capture, newer fields, bad payloads."""

from __future__ import annotations

import copy
import json
import re

import pytest

from correlator.config import from_dict
from correlator.diagnosis import DiagnosisTable
from correlator.incidents import IncidentBook
from correlator.model import FIRING, parse_time
from correlator.webhook import PayloadError, parse_body, parse_payload
from tests.support.captures import DATA

CAPTURE = json.loads((DATA / "alertmanager" / "webhook_v4_am0.25.json").read_text())


def test_the_real_alertmanager_025_payload_parses():
    alerts = parse_payload(CAPTURE)
    assert [a.fingerprint for a in alerts] == ["d10af26c322a1ee7", "f0d9ab4181086fa9"]
    a = alerts[0]
    assert a.status == FIRING
    assert a.labels["alertname"] == "VolumeDetachTimeout"
    assert a.starts_at == parse_time("2026-11-25T17:13:21.508Z")
    assert a.ends_at is None  # Go's zero time means unset


def test_a_config_maps_the_captures_label_names():
    cfg = from_dict(
        {
            "alerts": {
                "matchers": ['alertname="VolumeDetachTimeout"'],
                "labels": {"instance_uuid": "instance", "image_id": "image"},
            }
        }
    )
    book = IncidentBook(cfg.labels, DiagnosisTable.from_config(cfg), hold_down=60)
    alerts = {a.fingerprint: a for a in parse_payload(CAPTURE)}
    assert all(m.matches(a.labels) for a in alerts.values() for m in cfg.matchers)
    changed = book.update(alerts, {}, {}, now=1000.0)
    assert len(changed) == 1
    inc = changed[0]
    assert inc.image_id == "img-7" and inc.key_source == "alert_label"
    assert sorted(m.instance_uuid for m in inc.members.values()) == ["sample-vm-0", "sample-vm-1"]
    assert inc.hosts() == ["h-0", "h-1"]
    assert {m.device for m in inc.members.values()} == {"vdb"}


def test_newer_fields_are_optional_and_ignored():
    doc = copy.deepcopy(CAPTURE)
    doc["notification_reason"] = "repeat"
    doc["alerts"][0]["newField"] = {"x": 1}
    del doc["groupKey"], doc["truncatedAlerts"], doc["alerts"][1]["fingerprint"]
    alerts = parse_payload(doc)
    assert alerts[1].fingerprint == "f0d9ab4181086fa9"  # computed as Alertmanager does


def _broken(path: str, value: object) -> dict:
    doc = copy.deepcopy(CAPTURE)
    node = doc
    *parents, last = path.split(".")
    for p in parents:
        node = node[int(p)] if p.isdigit() else node[p]
    if value is KeyError:
        del node[int(last) if last.isdigit() else last]
    else:
        node[int(last) if last.isdigit() else last] = value
    return doc


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (_broken("version", "3"), 'version: expected "4"'),
        (_broken("version", KeyError), 'version: expected "4"'),
        (_broken("alerts", {}), "alerts: expected a list"),
        (
            _broken("alerts.1.status", "pending"),
            'alerts[1].status: expected "firing" or "resolved"',
        ),
        (_broken("alerts.0.labels", {"a": 1}), "alerts[0].labels: expected an object mapping"),
        (_broken("alerts.0.labels", {}), "alerts[0].labels: an alert needs at least one label"),
        (_broken("alerts.0.startsAt", "yesterday"), "alerts[0].startsAt: "),
        (_broken("alerts.0.startsAt", "2026-11-25T17:13:21"), "has no time zone"),
        (_broken("alerts.0.startsAt", KeyError), "alerts[0].startsAt: expected an RFC 3339"),
        (_broken("alerts.1.fingerprint", "XYZ"), "alerts[1].fingerprint: expected 16"),
        (_broken("alerts.1.annotations", []), "alerts[1].annotations: expected an object"),
        (_broken("alerts.1.generatorURL", 5), "alerts[1].generatorURL: expected a string"),
        (_broken("alerts.0", "alert"), "alerts[0]: expected an object"),
        (_broken("truncatedAlerts", "0"), "truncatedAlerts: expected an integer"),
        (_broken("commonLabels", None), "commonLabels: expected an object"),
        ([], "payload: expected a JSON object"),
    ],
)
def test_malformed_payloads_are_rejected_with_the_reason(doc, message):
    with pytest.raises(PayloadError) as err:
        parse_payload(doc)
    assert message in str(err.value)


def test_bodies_that_are_not_json():
    for body in (b"", b"{", b"\xff\xfe", b"null"):
        with pytest.raises(PayloadError):
            parse_body(body)


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b'{"a":' * 5000 + b"1" + b"}" * 5000, "nested too deep"),
        (b"[" * 100000 + b"]" * 100000, "nested too deep"),
        (b'{"version":"4","alerts":[],"truncatedAlerts":' + b"9" * 5000 + b"}", "digits"),
        (b'{"version":"4","alerts":[],"truncatedAlerts":1e999}', "truncatedAlerts"),
        (b'{"version":"4","alerts":[],"truncatedAlerts":NaN}', "NaN is not a JSON value"),
        (b'{"version":"4","version":"4","alerts":[]}', "duplicate key 'version'"),
        (b'{"version":"4","alerts":[{"labels":{"a":"1","a":"2"}}]}', "duplicate key 'a'"),
        (b'{"version":4,"alerts":[]}', "version"),
        (b'{"version":"4","alerts":{}}', "alerts: expected a list"),
        (b'{"version":"4","alerts":[[]]}', "alerts[0]: expected an object"),
        (b'{"version":"4","alerts":[{"status":"firing","labels":{"a":1}}]}', "alerts[0].labels"),
    ],
)
def test_hostile_bodies_are_payload_errors_never_crashes(body, why):
    """Every parse error is a PayloadError (the handler's 400), never a 500."""
    with pytest.raises(PayloadError, match=re.escape(why)):
        parse_body(body)
