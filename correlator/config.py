"""Configuration: built-in defaults, YAML loading, and validation that names the offending key.

The defaults here are the ones documented in `config.example.yml`; a test keeps the two equal.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator, ValidationError
from referencing import Registry, Resource

from correlator.matchers import Matcher, MatcherError, parse_matcher

PACKAGE_DIR = Path(__file__).resolve().parent
BUILTIN_CAUSES = PACKAGE_DIR / "causes.yml"
EXAMPLE_CONFIG = PACKAGE_DIR / "config.example.yml"
# the published JSON Schemas (docs/schema/ holds identical copies for editors)
SCHEMA_DIR = PACKAGE_DIR / "schema"

_DURATION = re.compile(
    r"(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+)s)?(?:(\d+)ms)?"
)
_UNIT_SECONDS = (365 * 86400, 7 * 86400, 86400, 3600, 60, 1, 0.001)


class ConfigError(ValueError):
    """A configuration value is missing, unknown or malformed; the message names the key."""


def parse_duration(value: object, key: str) -> float:
    """Prometheus-style duration ("15s", "5m", "1h30m", "200ms", "30d") or a number of seconds."""
    if isinstance(value, bool):
        raise ConfigError(f"{key}: expected a duration like 15s or 5m, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and value and (m := _DURATION.fullmatch(value.strip())):
        seconds = sum(int(g) * unit for g, unit in zip(m.groups(), _UNIT_SECONDS, strict=True) if g)
    else:
        raise ConfigError(f"{key}: expected a duration like 15s or 5m, got {value!r}")
    if seconds <= 0:
        raise ConfigError(f"{key}: must be positive, got {value!r}")
    return seconds


@dataclass(frozen=True)
class LabelMap:
    """Which label of a host-side alert holds the instance UUID, image, host and device."""

    instance_uuid: str = "instance_uuid"
    image_id: str = "image_id"
    host: str = "host"
    device: str = "device"


@dataclass(frozen=True)
class Timings:
    """Every interval the correlator waits on, in seconds."""

    reconcile_interval: float = 15.0
    webhook_debounce: float = 0.2
    alert_ttl: float = 600.0
    hold_down: float = 300.0
    resend_interval: float = 60.0
    push_ttl: float = 300.0
    retry_initial: float = 0.5
    retry_max: float = 30.0


DEFAULT_MATCHERS = ('alertname=~".*Detach.*(Timeout|Failed).*"',)


@dataclass(frozen=True)
class Config:
    """The whole validated configuration."""

    matchers: tuple[Matcher, ...] = field(
        default_factory=lambda: tuple(parse_matcher(m) for m in DEFAULT_MATCHERS)
    )
    labels: LabelMap = field(default_factory=LabelMap)
    image_label: str = "image_id"
    prometheus_selector: str = ""
    prometheus_timeout: float = 10.0
    facts_max_age: float = 600.0
    alertmanager_timeout: float = 10.0
    bearer_token_file: str = ""
    max_body_bytes: int = 8 * 1024 * 1024
    timings: Timings = field(default_factory=Timings)
    runbook_base_url: str = (
        "https://github.com/pciehp-watch/pciehp-watch/blob/main/alerts/runbooks/"
    )
    external_url: str = ""
    history_limit: int = 500
    retention: float = 30 * 86400.0
    causes_file: Path = BUILTIN_CAUSES
    causes: tuple[Mapping[str, Any], ...] = ()
    fallback_cause: str = "guest_facts_unknown"

    def runbook_url(self, cause_id: str) -> str:
        """The runbook of a cause: `<runbook_base_url><cause_id>.md`."""
        base = self.runbook_base_url
        return f"{base}{'' if base.endswith('/') else '/'}{cause_id}.md"

    def cause_rows(self) -> list[Mapping[str, Any]]:
        """The diagnosis table checked against causes.schema.json: inline, else the file."""
        if self.causes:
            doc: object = {"causes": list(self.causes)}
            prefix = "diagnosis."
        else:
            path = self.causes_file
            try:
                doc = yaml.safe_load(path.read_text())
            except OSError as e:
                raise ConfigError(f"diagnosis.causes_file: cannot read {path}: {e}") from e
            except UnicodeDecodeError as e:
                raise ConfigError(f"diagnosis.causes_file: {path} is not UTF-8: {e}") from e
            except yaml.YAMLError as e:
                raise ConfigError(f"diagnosis.causes_file: {path} is not YAML: {e}") from e
            prefix = f"{path}: "
        check_schema(CAUSES_VALIDATOR, doc, prefix, "top level")
        return doc["causes"]  # type: ignore[index]


# --- validation against the published JSON Schemas ---------------------------------------------


def _schema(name: str) -> dict[str, Any]:
    return json.loads((SCHEMA_DIR / name).read_text())


CONFIG_SCHEMA = _schema("correlator-config.schema.json")
CAUSES_SCHEMA = _schema("causes.schema.json")
_REGISTRY: Registry = Registry().with_resources(
    (s["$id"], Resource.from_contents(s)) for s in (CONFIG_SCHEMA, CAUSES_SCHEMA)
)
CONFIG_VALIDATOR = Draft202012Validator(CONFIG_SCHEMA, registry=_REGISTRY)
CAUSES_VALIDATOR = Draft202012Validator(CAUSES_SCHEMA, registry=_REGISTRY)
_TYPE_WORDS = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
}


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _key_path(doc: object, path: Sequence[object]) -> str:
    """`a.b[2].c`, with a cause row's id after its index: `causes[1] (pcie_aspm_off).when`."""
    out, node = "", doc
    for i, step in enumerate(path):
        if isinstance(step, int):
            out += f"[{step}]"
        else:
            out += f".{step}" if out else str(step)
        node = node[step]  # type: ignore[index]
        if path[i - 1 : i] == ["causes"] and isinstance(step, int) and isinstance(node, dict):
            cid = node.get("id")
            if isinstance(cid, str) and re.fullmatch(r"[a-z][a-z0-9_]*", cid):
                out += f" ({cid})"
    return out


def _describe(error: ValidationError, doc: object, prefix: str, root: str) -> str:
    """One schema violation as `<path to the bad key>: <what was expected>`."""
    path = list(error.absolute_path)
    where = _key_path(doc, path)
    kind, schema = error.validator, error.schema
    if kind == "additionalProperties" and isinstance(error.instance, dict):
        known = sorted(schema.get("properties", {}))
        extra = next(str(k) for k in error.instance if k not in known)
        key = f"{where}.{extra}" if where else extra
        return f"{prefix}{key}: unknown key (known: {', '.join(known)})"
    if kind == "required" and isinstance(error.instance, dict):
        missing = next(k for k in error.validator_value if k not in error.instance)
        key = f"{where}.{missing}" if where else missing
        return f"{prefix}{key}: missing"
    where = where or root
    types = error.validator_value if kind == "type" else None
    if types and "object" in types:
        expected = "a mapping"
    elif "title" in schema and path:
        expected = schema["title"]
    elif kind == "type":
        names = [types] if isinstance(types, str) else types
        expected = " or ".join(_TYPE_WORDS.get(t, t) for t in names)
    else:
        return f"{prefix}{where}: {error.message}"
    return f"{prefix}{where}: expected {expected}, got {_shown(error.instance)}"


def check_schema(
    validator: Draft202012Validator, doc: object, prefix: str = "", root: str = "config"
) -> None:
    """Raise ConfigError listing every violation, one per line, in document order."""
    try:
        errors = list(validator.iter_errors(doc))
    except RecursionError as e:
        raise ConfigError(f"{prefix}{root}: nested too deeply") from e
    if errors:
        lines = sorted({_describe(e, doc, prefix, root) for e in errors})
        raise ConfigError("\n".join(lines))


def from_dict(doc: Mapping[str, Any], base_dir: Path | None = None) -> Config:
    """Validate a parsed YAML document into a Config; defaults fill whatever it leaves out.

    The schema says what each key may be; here only what it cannot: durations above zero,
    matchers that compile, and the timings that must be ordered.
    """
    check_schema(CONFIG_VALIDATOR, doc)
    cfg = Config()
    changes: dict[str, object] = {}

    def section(name: str) -> Mapping[str, Any]:
        return doc.get(name) or {}

    alerts = section("alerts")
    if "matchers" in alerts:
        matchers = []
        for i, m in enumerate(alerts["matchers"]):
            try:
                matchers.append(parse_matcher(m))
            except MatcherError as e:
                raise ConfigError(f"alerts.matchers[{i}]: {e}") from e
        changes["matchers"] = tuple(matchers)
    if alerts.get("labels"):
        changes["labels"] = replace(cfg.labels, **alerts["labels"])

    prom = section("prometheus")
    for k, attr in {"image_label": "image_label", "selector": "prometheus_selector"}.items():
        if k in prom:
            changes[attr] = prom[k]
    for k, attr in {"timeout": "prometheus_timeout", "facts_max_age": "facts_max_age"}.items():
        if k in prom:
            changes[attr] = parse_duration(prom[k], f"prometheus.{k}")
    if "timeout" in section("alertmanager"):
        changes["alertmanager_timeout"] = parse_duration(
            section("alertmanager")["timeout"], "alertmanager.timeout"
        )
    hook = section("webhook")
    if "bearer_token_file" in hook:
        changes["bearer_token_file"] = hook["bearer_token_file"]
    if "max_body_bytes" in hook:
        changes["max_body_bytes"] = int(hook["max_body_bytes"])
    if "retention" in section("storage"):
        changes["retention"] = parse_duration(section("storage")["retention"], "storage.retention")

    timings = {k: parse_duration(v, f"timings.{k}") for k, v in section("timings").items()}
    t = replace(cfg.timings, **timings)
    if t.push_ttl <= t.resend_interval:
        raise ConfigError(
            "timings.push_ttl: must be longer than timings.resend_interval, or pushed "
            "incidents expire in Alertmanager between re-sends"
        )
    if t.retry_max < t.retry_initial:
        raise ConfigError("timings.retry_max: must not be shorter than timings.retry_initial")
    changes["timings"] = t

    if "runbook_base_url" in doc:
        changes["runbook_base_url"] = doc["runbook_base_url"]
    if "external_url" in doc:
        changes["external_url"] = doc["external_url"].rstrip("/")
    if "history_limit" in doc:
        changes["history_limit"] = int(doc["history_limit"])

    diag = section("diagnosis")
    if "causes_file" in diag:
        path = Path(diag["causes_file"])
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        changes["causes_file"] = path
    if "causes" in diag:
        changes["causes"] = tuple(diag["causes"])
    if "fallback_cause" in diag:
        changes["fallback_cause"] = diag["fallback_cause"]
    return replace(cfg, **changes)


def load(path: str | Path | None) -> Config:
    """The configuration from a YAML file (None: the built-in defaults)."""
    if path is None:
        return Config()
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {path} is not UTF-8 text: {e}") from e
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from e
    return from_dict(doc or {}, base_dir=path.parent)
