"""A lean text-format (0.0.4) writer for the exporter's own metric families.

client_python's generate_latest validates and escapes every label name of every sample (UTF-8
metric-name support); our names are fixed and valid, so this writer only escapes label values.
Its output is byte-identical to generate_latest's for these families (tested), at a third of
the cost, which matters for an exporter installed in thousands of guests.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from prometheus_client.core import Metric
from prometheus_client.utils import floatToGoString as _value

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _escape(value: str) -> str:
    if "\\" in value or "\n" in value or '"' in value:
        return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
    return value


def render_metrics(metrics: Iterable[Metric]) -> str:
    """Exposition text for gauge and counter families (others are not produced here)."""
    out: list[str] = []
    for metric in metrics:
        name = metric.name + "_total" if metric.type == "counter" else metric.name
        doc = metric.documentation.replace("\\", r"\\").replace("\n", r"\n")
        out.append(f"# HELP {name} {doc}\n# TYPE {name} {metric.type}\n")
        for s in metric.samples:
            if s.labels:
                labels = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(s.labels.items()))
                out.append(f"{s.name}{{{labels}}} {_value(s.value)}\n")
            else:
                out.append(f"{s.name} {_value(s.value)}\n")
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
