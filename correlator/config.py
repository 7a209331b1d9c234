"""Configuration: built-in defaults, YAML loading, and validation that names the offending key.

The defaults here are the ones documented in `config.example.yml`; a test keeps the two equal.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from correlator.matchers import Matcher, MatcherError, parse_matcher

PACKAGE_DIR = Path(__file__).resolve().parent
BUILTIN_CAUSES = PACKAGE_DIR / "causes.yml"
EXAMPLE_CONFIG = PACKAGE_DIR / "config.example.yml"

_DURATION = re.compile(r"(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+)s)?(?:(\d+)ms)?")


class ConfigError(ValueError):
    """A configuration value is missing, unknown or malformed; the message names the key."""


def parse_duration(value: object, key: str) -> float:
    """Prometheus-style duration ("15s", "5m", "1h30m", "200ms") or a number of seconds."""
    if isinstance(value, bool):
        raise ConfigError(f"{key}: expected a duration like 15s or 5m, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and value and (m := _DURATION.fullmatch(value.strip())):
        h, mi, s, ms = (int(g) if g else 0 for g in m.groups())
        seconds = h * 3600 + mi * 60 + s + ms / 1000
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
    causes_file: Path = BUILTIN_CAUSES
    causes: tuple[Mapping[str, Any], ...] = ()
    fallback_cause: str = "guest_facts_unknown"

    def runbook_url(self, cause_id: str) -> str:
        """The runbook of a cause: `<runbook_base_url><cause_id>.md`."""
        base = self.runbook_base_url
        return f"{base}{'' if base.endswith('/') else '/'}{cause_id}.md"

    def cause_rows(self) -> list[Mapping[str, Any]]:
        """The raw diagnosis table: inline `diagnosis.causes`, else the causes file."""
        if self.causes:
            return list(self.causes)
        try:
            doc = yaml.safe_load(self.causes_file.read_text())
        except OSError as e:
            raise ConfigError(f"diagnosis.causes_file: cannot read {self.causes_file}: {e}") from e
        except UnicodeDecodeError as e:
            raise ConfigError(f"diagnosis.causes_file: {self.causes_file} is not UTF-8: {e}") from e
        except yaml.YAMLError as e:
            raise ConfigError(f"diagnosis.causes_file: {self.causes_file} is not YAML: {e}") from e
        if not isinstance(doc, dict) or not isinstance(doc.get("causes"), list):
            raise ConfigError(f"diagnosis.causes_file: {self.causes_file} needs a `causes:` list")
        return doc["causes"]


# --- validation helpers -------------------------------------------------------------------------


def _mapping(value: object, key: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
    return value


def _check_keys(section: Mapping[str, Any], known: set[str], prefix: str) -> None:
    for k in section:
        if k not in known:
            where = f"{prefix}.{k}" if prefix else str(k)
            raise ConfigError(f"{where}: unknown key (known: {', '.join(sorted(known))})")


def _string(value: object, key: str, allow_empty: bool = True) -> str:
    if not isinstance(value, str) or (not allow_empty and not value):
        raise ConfigError(f"{key}: expected a {'non-empty ' if not allow_empty else ''}string")
    return value


def _positive_int(value: object, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{key}: expected a positive integer, got {value!r}")
    return value


def _url(value: object, key: str, allow_empty: bool = True) -> str:
    text = _string(value, key)
    if text and not re.match(r"https?://[^/\s]+", text):
        raise ConfigError(f"{key}: expected an http(s) URL, got {text!r}")
    if not text and not allow_empty:
        raise ConfigError(f"{key}: expected an http(s) URL")
    return text


def _label_name(value: object, key: str) -> str:
    text = _string(value, key, allow_empty=False)
    if not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", text):
        raise ConfigError(f"{key}: {text!r} is not a valid label name")
    return text


def _section(
    doc: Mapping[str, Any],
    name: str,
    parsers: Mapping[str, Callable[[object, str], object]],
    parent: str = "",
) -> dict[str, object]:
    where = f"{parent}.{name}" if parent else name
    section = _mapping(doc.get(name), where)
    _check_keys(section, set(parsers), where)
    return {k: parsers[k](v, f"{where}.{k}") for k, v in section.items()}


def from_dict(doc: Mapping[str, Any], base_dir: Path | None = None) -> Config:
    """Validate a parsed YAML document into a Config; defaults fill whatever it leaves out."""
    doc = _mapping(doc, "config")
    top = {
        "alerts",
        "prometheus",
        "alertmanager",
        "webhook",
        "timings",
        "diagnosis",
        "runbook_base_url",
        "external_url",
        "history_limit",
    }
    _check_keys(doc, top, "")
    cfg = Config()
    changes: dict[str, object] = {}

    alerts = _mapping(doc.get("alerts"), "alerts")
    _check_keys(alerts, {"matchers", "labels"}, "alerts")
    if "matchers" in alerts:
        raw = alerts["matchers"]
        if not isinstance(raw, list) or not raw:
            raise ConfigError("alerts.matchers: expected a non-empty list of matchers")
        matchers = []
        for i, m in enumerate(raw):
            try:
                matchers.append(parse_matcher(_string(m, f"alerts.matchers[{i}]")))
            except MatcherError as e:
                raise ConfigError(f"alerts.matchers[{i}]: {e}") from e
        changes["matchers"] = tuple(matchers)
    if "labels" in alerts:
        names = {f.name for f in fields(LabelMap)}
        labels = _section(alerts, "labels", dict.fromkeys(names, _label_name), "alerts")
        changes["labels"] = replace(cfg.labels, **labels)

    prom = _section(
        doc,
        "prometheus",
        {
            "image_label": _label_name,
            "selector": _string,
            "timeout": parse_duration,
            "facts_max_age": parse_duration,
        },
    )
    for k, attr in {
        "image_label": "image_label",
        "selector": "prometheus_selector",
        "timeout": "prometheus_timeout",
        "facts_max_age": "facts_max_age",
    }.items():
        if k in prom:
            changes[attr] = prom[k]
    if "prometheus_selector" in changes:
        _check_selector(str(changes["prometheus_selector"]))

    am = _section(doc, "alertmanager", {"timeout": parse_duration})
    if "timeout" in am:
        changes["alertmanager_timeout"] = am["timeout"]

    hook = _section(doc, "webhook", {"bearer_token_file": _string, "max_body_bytes": _positive_int})
    changes.update(hook)

    timing_names = {f.name for f in fields(Timings)}
    timings = _section(doc, "timings", dict.fromkeys(timing_names, parse_duration))
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
        changes["runbook_base_url"] = _url(doc["runbook_base_url"], "runbook_base_url", False)
    if "external_url" in doc:
        changes["external_url"] = _url(doc["external_url"], "external_url").rstrip("/")
    if "history_limit" in doc:
        changes["history_limit"] = _positive_int(doc["history_limit"], "history_limit")

    diag = _mapping(doc.get("diagnosis"), "diagnosis")
    _check_keys(diag, {"causes_file", "causes", "fallback_cause"}, "diagnosis")
    if "causes_file" in diag:
        path = Path(_string(diag["causes_file"], "diagnosis.causes_file", allow_empty=False))
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        changes["causes_file"] = path
    if "causes" in diag:
        rows = diag["causes"]
        if not isinstance(rows, list) or not rows:
            raise ConfigError("diagnosis.causes: expected a non-empty list of causes")
        changes["causes"] = tuple(rows)
    if "fallback_cause" in diag:
        changes["fallback_cause"] = _string(diag["fallback_cause"], "diagnosis.fallback_cause")
    return replace(cfg, **changes)


def _check_selector(selector: str) -> None:
    """The extra PromQL matchers must look like `name="v", other=~"w"` (no braces)."""
    if not selector:
        return
    item = r'\s*[a-zA-Z_][a-zA-Z0-9_]*\s*(=|!=|=~|!~)\s*"(?:[^"\\]|\\.)*"\s*'
    if not re.fullmatch(rf"{item}(,{item})*,?\s*", selector):
        raise ConfigError(
            f'prometheus.selector: expected label matchers like job="pciehp", got {selector!r}'
        )


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
