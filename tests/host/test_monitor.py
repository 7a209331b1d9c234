"""The probe sends only read-only commands, and decodes a recorded real monitor session."""

from __future__ import annotations

import pytest

from host.monitor import ForbiddenCommand, check_command, xp_arguments
from host.probe import VmReport, probe_vm
from tests.host.transcript import DATA, ReplayMonitor


@pytest.mark.parametrize(
    ("command", "arguments"),
    [
        ("human-monitor-command", {"command-line": "info mtree -f"}),
        ("human-monitor-command", {"command-line": "info mtree"}),
        ("human-monitor-command", {"command-line": "xp /64wx 0xb0010000; info mtree"}),
        ("human-monitor-command", {"command-line": "xp /64wx 0xb0010000\ninfo mtree"}),
        ("human-monitor-command", {"command-line": "xp /1024wx 0xb0010000"}),
        ("human-monitor-command", {"command-line": "system_reset"}),
        ("human-monitor-command", {"command-line": ["xp /64wx 0x1"]}),
        ("human-monitor-command", None),
        ("device_del", {"id": "disk1"}),
        ("qom-set", {"path": "/machine", "property": "x", "value": 1}),
        ("system_reset", None),
        ("stop", None),
        ("quit", None),
    ],
)
def test_anything_but_the_allowlist_is_refused(command, arguments) -> None:
    with pytest.raises(ForbiddenCommand):
        check_command(command, arguments)


def test_the_probe_reads_are_allowed() -> None:
    check_command("human-monitor-command", xp_arguments(0xB000_0000 + (3 << 20 | 1 << 15)))
    for c in ("qmp_capabilities", "query-pci", "qom-get", "query-status", "query-uuid"):
        check_command(c, None)


async def test_probe_of_a_recorded_firmware_session() -> None:
    mon = ReplayMonitor(DATA / "firmware_q35_12ports.json")
    report = VmReport(target="recorded")
    await probe_vm(mon, report, None)
    assert report.success
    assert report.instance_uuid == "27506bd6-929b-5567-b6a0-5856ba566f78"
    assert (report.machine, report.hotplug, report.domain) == ("pc-q35-7.2", "native", "vm-test")
    assert len(report.ports) == 12
    assert report.verdict == ("unknown", "booting")
    sent = [c for c, _ in mon.sent]
    assert sent.count("human-monitor-command") == 12  # one 256-byte read per port
    assert "qmp_capabilities" not in sent  # QMPMonitor.connect sends it, the probe does not
