"""Metric families and the Prometheus text format (0.0.4), with the standard library only.

The guest may have nothing but CPython 3.6, so client_python is not used here. The writer's output
is byte-identical to client_python's generate_latest for these families (tested against it): label
names sorted, values formatted like its floatToGoString, only label values and help text escaped
(our metric and label names are fixed and valid).
"""

import math
import os
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Sample = Tuple[Tuple[str, ...], float]


class Metric:
    """One metric family: name, help, type, label names and its (label values, value) samples."""

    __slots__ = ("documentation", "labels", "name", "samples", "type")

    def __init__(
        self, name: str, documentation: str, typ: str, labels: Optional[Sequence[str]] = None
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.type = typ
        self.labels = tuple(labels or ())
        self.samples = []  # type: List[Sample]

    def add_metric(self, values: Sequence[str], value: float) -> None:
        """Add one sample; `values` are the label values in the order of `labels`."""
        self.samples.append((tuple(values), value))


def GaugeMetricFamily(
    name: str, documentation: str, value: Optional[float] = None, labels: Sequence[str] = ()
) -> Metric:
    """A gauge family; with `value`, one unlabelled sample."""
    m = Metric(name, documentation, "gauge", labels)
    if value is not None:
        m.add_metric((), value)
    return m


def CounterMetricFamily(
    name: str, documentation: str, value: Optional[float] = None, labels: Sequence[str] = ()
) -> Metric:
    """A counter family (name without `_total`, as client_python takes it)."""
    if name.endswith("_total"):
        name = name[: -len("_total")]
    m = Metric(name, documentation, "counter", labels)
    if value is not None:
        m.add_metric((), value)
    return m


def format_value(d: float) -> str:
    """A sample value as client_python's floatToGoString writes it."""
    d = float(d)
    if d == math.inf:
        return "+Inf"
    if d == -math.inf:
        return "-Inf"
    if d != d:
        return "NaN"
    s = repr(d)
    dot = s.find(".")
    if d > 0 and dot > 6:  # Go switches to exponents sooner than Python
        mantissa = f"{s[0]}.{s[1:dot]}{s[dot + 1 :]}".rstrip("0.")
        return f"{mantissa}e+0{dot - 1}"
    return s


_FIXED = {0.0: "0.0", 1.0: "1.0"}


def escape(value: str) -> str:
    """A label value escaped for the text format (backslash, newline, double quote)."""
    if "\\" in value or "\n" in value or '"' in value:
        return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
    return value


_SERIES: Dict[Tuple[str, Tuple[str, ...]], Dict[Tuple[str, ...], str]] = {}
"""Per family (name, label names): label values -> rendered `name{...} `. A scrape repeats the
previous one's series, so rendering is mostly lookups; each family keeps at most _SERIES_MAX."""
_SERIES_MAX = 4096


def _series(name: str, labels: Tuple[str, ...], values: Tuple[str, ...]) -> str:
    """`name{label="value",...} ` with label pairs sorted by name, as client_python writes them."""
    pairs = sorted(zip(labels, values))
    return name + "{" + ",".join(k + '="' + escape(v) + '"' for k, v in pairs) + "} "


_FAMILIES: Dict[Tuple[str, str, Tuple[str, ...]], Tuple[str, List[Sample], str]] = {}
"""(name, type, label names) -> (help, samples, text) of the family as last rendered: most
families (event counters, handlers, verdicts) come out of a scrape exactly as from the last one."""


def render_metrics(metrics: Iterable[Metric]) -> str:
    """Exposition text of gauge and counter families, in the order given."""
    out: List[str] = []
    for metric in metrics:
        key = (metric.name, metric.type, metric.labels)
        last = _FAMILIES.get(key)
        if last is not None and last[0] == metric.documentation and last[1] == metric.samples:
            out.append(last[2])
            continue
        text = _render_family(metric)
        if last is not None or len(_FAMILIES) < _SERIES_MAX:
            _FAMILIES[key] = (metric.documentation, list(metric.samples), text)
        out.append(text)
    return "".join(out)


def _render_family(metric: Metric) -> str:
    out: List[str] = []
    append = out.append
    fixed = _FIXED
    name = metric.name + "_total" if metric.type == "counter" else metric.name
    doc = metric.documentation.replace("\\", r"\\").replace("\n", r"\n")
    append(f"# HELP {name} {doc}\n# TYPE {name} {metric.type}\n")
    labels = metric.labels
    if not labels:
        for _values, v in metric.samples:
            append(f"{name} {fixed.get(v) or format_value(v)}\n")
        return "".join(out)
    known = _SERIES.get((name, labels))
    if known is None or len(known) > _SERIES_MAX:
        known = _SERIES[(name, labels)] = {}
    for values, v in metric.samples:
        series = known.get(values)
        if series is None:
            series = known[values] = _series(name, labels, values)
        append(series + (fixed.get(v) or format_value(v)) + "\n")
    return "".join(out)


def write_textfile(path: str, data: bytes) -> None:
    """Write atomically (temp file in the same directory, then rename), mode 0644."""
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
