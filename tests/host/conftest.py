"""Shared helpers for the host exporter's tests: run it, parse what it prints."""

from __future__ import annotations

import subprocess
import sys

from prometheus_client.parser import text_string_to_metric_families


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    """(name, labels) -> value for every sample of an exposition."""
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def find(parsed: dict, name: str, **labels: str) -> dict[frozenset, float]:
    """The samples of `name` whose labels include `labels`."""
    want = set(labels.items())
    return {k[1]: v for k, v in parsed.items() if k[0] == name and want <= k[1]}


def run_once(*args: str, timeout: float = 120) -> tuple[str, str]:
    """`pciehp-host-exporter --once ARGS`: (stdout, stderr); it must exit 0."""
    proc = subprocess.run(
        [sys.executable, "-m", "host.cli", "--once", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout, proc.stderr


def verdict_of(parsed: dict, uuid: str) -> tuple[str, str]:
    """(verdict, reason) of one VM's pciehp_host_vm_verdict series (exactly one)."""
    [labels] = find(parsed, "pciehp_host_vm_verdict", instance_uuid=uuid)
    d = dict(labels)
    return d["verdict"], d["reason"]


def port_values(parsed: dict, name: str, uuid: str) -> dict[str, float]:
    """port_id -> value of a per-port metric of one VM."""
    return {dict(k)["port_id"]: v for k, v in find(parsed, name, instance_uuid=uuid).items()}
