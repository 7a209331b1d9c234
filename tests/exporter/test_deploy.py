"""Shipped systemd units: flags the exporter accepts, and the documented privileges."""

from __future__ import annotations

import configparser
import shlex
from pathlib import Path

import pytest

from exporter.cli import parse_args

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
CAPS = {"CAP_SYS_ADMIN", "CAP_SYSLOG", "CAP_DAC_READ_SEARCH"}


def unit(name: str) -> configparser.ConfigParser:
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.optionxform = str  # keep systemd's key case
    cp.read(DEPLOY / name)
    return cp


@pytest.mark.parametrize("name", ["pciehp-exporter.service", "pciehp-exporter-textfile.service"])
def test_unit_execstart_flags_parse_and_privileges_are_minimal(name):
    svc = unit(name)["Service"]
    argv = shlex.split(svc["ExecStart"])
    assert argv[0].endswith("pciehp-exporter")
    args = parse_args(argv[1:])
    assert args.kernel_log == "/dev/kmsg"
    # the boot state file lives in the unit's own (dynamic-user writable) state directory
    assert args.state_file == f"/var/lib/{svc['StateDirectory']}/boot-state.json"
    assert svc["DynamicUser"] == "yes" and svc["NoNewPrivileges"] == "yes"
    assert set(svc["AmbientCapabilities"].split()) == CAPS
    assert set(svc["CapabilityBoundingSet"].split()) == CAPS
    # every capability is explained in the unit's header comment
    text = (DEPLOY / name).read_text()
    header = (DEPLOY / "pciehp-exporter.service").read_text()
    for cap in CAPS:
        assert cap in header.split("[Unit]")[0]
    assert "ProtectSystem=strict" in text


def test_timer_refreshes_the_textfile():
    timer = unit("pciehp-exporter-textfile.timer")["Timer"]
    assert timer["OnUnitActiveSec"] == "60s"
