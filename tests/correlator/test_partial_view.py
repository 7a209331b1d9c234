"""Issue 9 done-when 1: the shared captures as a fleet shows them, through the real exporter and
the built-in cause table: config space cut to 64 bytes (an unprivileged reader), the kernel log cut
to its last 25 lines (a wrapped ring buffer), and both; with and without the boot state file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.correlator.support import exporter_once
from tests.correlator.test_diagnosis import diagnose
from tests.support.captures import (
    ALL,
    SCENARIOS,
    Capture,
    cut_log,
    truncate_configs,
    with_boot_id,
)

BOOT_ID = "3a5e0b7c-9f1d-4e2a-8c6b-1d2e3f4a5b6c"
# every phase of the four shared captures, and the lab's captures after their unplug attempt
# (each view is up to two exporter processes: 24 captures x 6 views, not 48 x 6)
CAPTURES = [c for c in ALL if c.scenario in SCENARIOS[:4] or c.phase == "after_unplug"]
# what the whole view says, per scenario (every phase): the cause; whether the guest can unplug is
# the capture's own ground truth (did QEMU emit DEVICE_DELETED after the real device_del?)
FULL = {
    "q35_normal": "host_side",
    "q35_aspm_off": "pcie_aspm_off",
    "q35_acpihp_normal": "host_side",
    "i440fx_normal": "host_side",
    "q35_nomsi": "msi_disabled",
    "q35_pcie_ports_compat": "port_services_disabled",
    "q35_poll_mode": "host_side",
    "q35_aspm_off_ports_native": "host_side",
    "q35_acpihp_aspm_off": "host_side",
    "i440fx_aspm_off": "host_side",
    "q35_switch_normal": "host_side",
    "bullseye_q35_normal": "host_side",
    "bullseye_q35_aspm_off": "pcie_aspm_off",
    "trixie_q35_normal": "host_side",
    "trixie_q35_aspm_off": "pcie_aspm_off",
    "trixie_q35_acpihp_normal": "host_side",
}
# causes the command line decides without config space (kernel-facts 2.2: no _OSC request)
DECIDED_BY_CMDLINE = {"pcie_aspm_off", "msi_disabled", "port_services_disabled"}
# causes that say the guest cannot answer an unplug
BROKEN = {
    "port_services_disabled",
    "pcie_aspm_off",
    "msi_disabled",
    "aspm_unsupported",
    "osc_denied",
    "pciehp_unavailable",
    "guest_no_hotplug_driver",
}


def device_deleted(capture: Capture) -> bool:
    """The capture's result.json: did the real device_del end in DEVICE_DELETED?"""
    d = capture.tree
    while not (d / "result.json").is_file():
        d = d.parent
    return json.loads((d / "result.json").read_text())["device_deleted"]


def view(capture: Capture, tmp: Path, config_cut: bool, log_cut: bool, state: bool) -> str:
    """The exporter's scrape of a copy of the capture as that reader sees it."""
    tree = tmp / "tree"
    shutil.copytree(capture.tree, tree, symlinks=True)
    for p in tree.rglob("*"):
        if not p.is_symlink():
            p.chmod(p.stat().st_mode | 0o200)
    with_boot_id(tree, BOOT_ID)
    extra: list[str] = []
    if state:
        extra = ["--collector.kernel_log.state-file", str(tmp / "boot.json")]
        exporter_once(tree, None, extra)  # an earlier run that still saw the boot lines
    if config_cut:
        assert truncate_configs(tree) > 0
    return exporter_once(tree, cut_log(tree) if log_cut else None, extra)


@pytest.mark.parametrize("state", [False, True], ids=["no_state", "state_file"])
@pytest.mark.parametrize(
    "config_cut, log_cut",
    [(False, True), (True, False), (True, True)],
    ids=["log_cut", "config_cut", "both_cut"],
)
@pytest.mark.parametrize("capture", CAPTURES, ids=str)
def test_partial_view(tmp_path, capture, config_cut, log_cut, state):
    want, can_unplug = FULL[capture.scenario], device_deleted(capture)
    assert (want in BROKEN) != can_unplug  # the table agrees with what QEMU saw
    assert diagnose(exporter_once(capture)).cause == want
    v = diagnose(view(capture, tmp_path, config_cut, log_cut, state))
    if can_unplug:
        assert v.cause not in BROKEN, v  # no guest that can unplug is called broken
    else:
        assert v.cause not in ("host_side", "guest_unresponsive"), v  # nor one that cannot, able
    if not config_cut:
        assert v.cause == want, v  # with the boot lines gone every cause is still exact
    elif want in DECIDED_BY_CMDLINE:
        # the command line alone says no native hotplug was ever requested: exact
        assert v.cause == want, v
    else:
        # exact where cmdline, _OSC and sysfs name it (i440fx: no PCIe port to read, so its
        # host_side is exact), otherwise an explicit unknown, never a guess such as host_side
        assert v.cause == want or "unknown" in v.cause, v


def test_an_unreadable_kernel_log_is_never_host_side(tmp_path):
    """Without /dev/kmsg (no CAP_SYSLOG under dmesg_restrict) an unanswered press is invisible:
    the guest's cause is unknown, not host_side."""
    text = exporter_once(Capture("q35_normal"), tmp_path / "no-kmsg")
    assert 'pciehp_fact_unknown{fact="unplug_unanswered",reason="kernel_log_unreadable"} 1' in text
    v = diagnose(text)
    assert v.cause == "guest_facts_unknown", v
    assert "unplug_unanswered (kernel_log_unreadable)" in " ".join(v.evidence)


def test_facts_that_decide_nothing_leave_the_cause_exact():
    """An unreadable crontab directory (rescan workaround) or DMI UUID does not hide the cause."""
    text = exporter_once(Capture("q35_normal")) + (
        'pciehp_fact_unknown{fact="rescan_workaround",reason="permission_denied"} 1.0\n'
    )
    assert diagnose(text).cause == "host_side"
