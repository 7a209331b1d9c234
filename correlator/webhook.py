"""Alertmanager webhook payload (version 4) parsing and validation.

Validation is all-or-nothing: a payload with one bad alert is rejected whole with a reason
that names the field, so a malformed delivery never changes state halfway.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from correlator.model import FIRING, RESOLVED, Alert, labels_fingerprint, parse_time

_FINGERPRINT = re.compile(r"[0-9a-f]{16}")
# A \uD800-\uDFFF escape: the only way a strictly decoded UTF-8 body yields a surrogate.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
# Per-alert label limits, like Prometheus' label_limit / label_value_length_limit: a label set
# becomes incident labels pushed to Alertmanager and text on the incident page, so one hostile
# sender cannot make either huge. Alertmanager's own labels are far below these.
MAX_LABELS = 64
MAX_LABEL_BYTES = 4096


class PayloadError(ValueError):
    """The body is not a valid Alertmanager webhook payload; the message says where and why."""


def _utf8(text: str, where: str) -> bytes:
    # json.loads turns a "\\udc80" escape into a lone surrogate: not Unicode, so it could be
    # neither stored, nor rendered, nor forwarded to Alertmanager.
    try:
        return text.encode()
    except UnicodeEncodeError as e:
        raise PayloadError(f"{where}: not valid UTF-8 (lone surrogate escape)") from e


def _string_map(
    value: object, where: str, check_text: bool, labels: bool = False
) -> dict[str, str]:
    # JSON object keys are always strings; only the values need checking.
    if type(value) is not dict or not all(type(v) is str for v in value.values()):
        raise PayloadError(f"{where}: expected an object mapping strings to strings")
    if labels and len(value) > MAX_LABELS:
        raise PayloadError(f"{where}: {len(value)} labels, more than the limit of {MAX_LABELS}")
    if check_text:
        for k, v in value.items():
            _utf8(k, where)
            _utf8(v, f"{where}.{k}")
    # A character is at most 4 bytes: only maps with long values need measuring (map/max keep
    # the common case in C, which matters for 10,000-alert deliveries).
    if labels and value and max(map(len, value.values())) * 4 > MAX_LABEL_BYTES:
        for k, v in value.items():
            size = len(v.encode())
            if size > MAX_LABEL_BYTES:
                raise PayloadError(
                    f"{where}.{k}: label value of {size} bytes, more than the limit of "
                    f"{MAX_LABEL_BYTES}"
                )
    return value


def _time(value: object, where: str) -> float | None:
    if not isinstance(value, str):
        raise PayloadError(f"{where}: expected an RFC 3339 timestamp string")
    try:
        return parse_time(value)
    except ValueError as e:
        raise PayloadError(f"{where}: {e}") from e


def _alert(raw: object, where: str, check_text: bool) -> Alert:
    if not isinstance(raw, dict):
        raise PayloadError(f"{where}: expected an object")
    status = raw.get("status")
    if status not in (FIRING, RESOLVED):
        raise PayloadError(f'{where}.status: expected "firing" or "resolved", got {status!r}')
    labels = _string_map(raw.get("labels"), f"{where}.labels", check_text, labels=True)
    if not labels:
        raise PayloadError(f"{where}.labels: an alert needs at least one label")
    annotations = _string_map(raw.get("annotations", {}), f"{where}.annotations", check_text)
    starts_at = _time(raw.get("startsAt"), f"{where}.startsAt")
    # Optional fields may be absent, but not null: the document says string, as Alertmanager sends.
    ends_at = _time(raw["endsAt"], f"{where}.endsAt") if "endsAt" in raw else None
    generator = raw.get("generatorURL", "")
    if not isinstance(generator, str):
        raise PayloadError(f"{where}.generatorURL: expected a string")
    if check_text:
        _utf8(generator, f"{where}.generatorURL")
    fingerprint = raw.get("fingerprint")
    if "fingerprint" not in raw:
        fingerprint = labels_fingerprint(labels)
    elif not isinstance(fingerprint, str) or not _FINGERPRINT.fullmatch(fingerprint):
        raise PayloadError(f"{where}.fingerprint: expected 16 lower-case hex digits")
    return Alert(
        fingerprint=fingerprint,
        labels=labels,
        status=status,
        starts_at=starts_at,
        ends_at=ends_at,
        annotations=annotations,
        generator_url=generator,
    )


def parse_payload(doc: Any, check_text: bool = True) -> list[Alert]:
    """Validate a decoded payload and return its alerts; raises PayloadError.

    `check_text` verifies that every label, annotation and URL is valid Unicode; parse_body
    skips it for bodies without a surrogate escape, where json.loads cannot have made one.
    """
    if not isinstance(doc, Mapping):
        raise PayloadError("payload: expected a JSON object")
    version = doc.get("version")
    if version != "4":
        raise PayloadError(f'version: expected "4" (Alertmanager webhook payload), got {version!r}')
    for key in ("receiver", "status", "groupKey", "externalURL"):
        if key in doc and not isinstance(doc[key], str):
            raise PayloadError(f"{key}: expected a string")
    for key in ("groupLabels", "commonLabels", "commonAnnotations"):
        if key in doc:
            _string_map(doc[key], key, check_text)
    if "truncatedAlerts" in doc and (
        isinstance(doc["truncatedAlerts"], bool) or not isinstance(doc["truncatedAlerts"], int)
    ):
        raise PayloadError("truncatedAlerts: expected an integer")
    alerts = doc.get("alerts")
    if not isinstance(alerts, list):
        raise PayloadError("alerts: expected a list")
    return [_alert(a, f"alerts[{i}]", check_text) for i, a in enumerate(alerts)]


def parse_body(body: bytes) -> list[Alert]:
    """Decode JSON bytes and validate them as a webhook payload; raises PayloadError.

    The body must be UTF-8 (RFC 8259, and what Alertmanager sends); json.loads alone would also
    take UTF-16 and UTF-32.
    """
    try:
        doc = json.loads(body.decode(), object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PayloadError(f"body is not JSON in UTF-8: {e}") from e
    except RecursionError as e:  # arrays or objects nested thousands deep
        raise PayloadError("body is not a webhook payload: JSON nested too deep") from e
    except ValueError as e:  # an integer of more digits than int() takes, a duplicate key, NaN
        raise PayloadError(f"body is not a webhook payload: {e}") from e
    return parse_payload(doc, check_text=_SURROGATE_ESCAPE.search(body) is not None)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object whose keys repeat is refused: which value counts would be a guess."""
    doc = dict(pairs)
    if len(doc) != len(pairs):
        seen: set[str] = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise ValueError(f"duplicate key {dup[:64]!r} in an object")
    return doc


def _no_constant(name: str) -> float:
    """NaN and Infinity are not JSON (RFC 8259); json.loads would take them."""
    raise ValueError(f"{name} is not a JSON value")
