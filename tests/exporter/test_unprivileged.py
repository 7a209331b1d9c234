"""The exporter run as `nobody` names, in its own output, every fact it could not read.

Against this machine's real /proc, /sys and /dev/kmsg, and against the captures as the kernel
serves them to a reader without CAP_SYS_ADMIN (config space cut to 64 bytes), plus a crontab
directory it may not list. Each time the same exporter also runs with the test's privileges: every
series the unprivileged run lost or changed must belong to a fact its pciehp_fact_unknown names.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.exporter.conftest import Samples, parse_samples, select
from tests.support.captures import ALL, Capture, tree_args, truncate_configs

ROOT = Path(__file__).resolve().parents[2]
# series -> the facts whose loss explains a difference in it (events are pre-set to 0 on every
# hotplug-capable port, so they follow that fact as well as the log)
FACT_OF = {
    "pciehp_port_hotplug_capable": {"hotplug_capable"},
    "pciehp_slot_button_pending": {"hotplug_capable"},
    "pciehp_slot_interrupt_enabled": {"hotplug_capable"},
    "pciehp_slot_unplug_unanswered": {"unplug_unanswered"},
    "pciehp_events_total": {"unplug_unanswered", "hotplug_capable"},
    "pciehp_kernel_log_reader_up": {"unplug_unanswered"},
    "pciehp_osc_info": {"osc"},
    "pciehp_osc_control": {"osc"},
    "pciehp_guest_info": {"instance_uuid"},
    "pciehp_rescan_workaround": {"rescan_workaround"},
    "pciehp_port_irq_registered": {"irq_registered"},
    "pciehp_port_interrupts_total": {"irq_registered"},
    "pciehp_kernel_param": {"kernel_params"},
    # the verdict rests on these (exporter/verdict.py), and says `unknown` without them
    "pciehp_port_unplug_verdict": {"hotplug_capable", "irq_registered", "kernel_params"},
}
# per-run values, not facts
VOLATILE = {
    "pciehp_collector_duration_seconds",
    "pciehp_collector_success",
    "pciehp_kernel_log_lines_total",
    "pciehp_fact_unknown",
}


def _nobody_python() -> list[str]:
    """A command prefix running a Python that `nobody` may execute, as `nobody` when we are root.

    The exporter needs only the standard library, so the system interpreter does when the venv's
    lives under a home directory nobody may enter.
    """
    prefix = ["runuser", "-u", "nobody", "--"] if os.geteuid() == 0 else []
    for python in (sys.executable, "/usr/bin/python3", "/usr/local/bin/python3"):
        probe = subprocess.run(
            [*prefix, python, "-c", "import exporter.cli"], cwd=ROOT, capture_output=True
        )
        if probe.returncode == 0:
            return [*prefix, python]
    raise AssertionError("no Python interpreter the unprivileged user can run")


NOBODY = _nobody_python()


def run(argv: list[str], unprivileged: bool) -> tuple[Samples, str]:
    """One `--once` scrape with these flags: (samples, stderr)."""
    python = NOBODY if unprivileged else [sys.executable]
    res = subprocess.run(
        [*python, "-m", "exporter.cli", "--once", *argv],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    return parse_samples(res.stdout), res.stderr


def unknown_facts(samples: Samples) -> set[str]:
    return {dict(lbl)["fact"] for lbl, v in select(samples, "pciehp_fact_unknown").items() if v}


def unexplained(privileged: Samples, unprivileged: Samples) -> dict[str, str]:
    """Series that differ between the runs and that no fact_unknown of the unprivileged run
    explains: {series: why}."""
    named = unknown_facts(unprivileged)
    out = {}
    for key in set(privileged) | set(unprivileged):
        name = key[0]
        if name in VOLATILE or privileged.get(key) == unprivileged.get(key):
            continue
        if not FACT_OF.get(name, set()) & named:
            out[f"{name}{dict(key[1])}"] = f"{privileged.get(key)} -> {unprivileged.get(key)}"
    return out


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A temporary directory the unprivileged user can read (pytest's tmp_path is mode 0700)."""
    path = Path(tempfile.mkdtemp(prefix="pciehp-nobody-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def readable_copy(capture: Capture, dest: Path) -> Path:
    """A copy of the capture tree every user may read."""
    shutil.copytree(capture.tree, dest, symlinks=True)
    for p in [dest, *dest.rglob("*")]:
        if not p.is_symlink():
            p.chmod(0o755 if p.is_dir() else 0o644)
    return dest


def test_this_machine_as_nobody_names_what_it_could_not_read():
    """Real /proc, /sys and /dev/kmsg: as nobody, each lost fact is named in the output."""
    privileged, _ = run([], unprivileged=False)
    unprivileged, stderr = run([], unprivileged=True)
    assert unexplained(privileged, unprivileged) == {}
    named = unknown_facts(unprivileged)
    (reader,) = select(unprivileged, "pciehp_kernel_log_reader_up").values()
    assert (reader == 0) == ("unplug_unanswered" in named), named
    # the unprivileged run lost something here and said so (dmesg_restrict, DMI, config space)
    if privileged != unprivileged:
        assert named, stderr


@pytest.mark.parametrize("capture", ALL, ids=str)
def test_captures_as_an_unprivileged_reader(shared_tmp, capture):
    """The capture as root reads it, and as nobody reads it from a kernel (config cut to 64 bytes),
    with a crontab directory nobody may list."""
    full = readable_copy(capture, shared_tmp / "full")
    cut = readable_copy(capture, shared_tmp / "cut")
    cut_configs = truncate_configs(cut)
    uuid = cut / "sys/devices/virtual/dmi/id/product_uuid"
    if uuid.is_file():
        uuid.chmod(0o400)  # as the kernel serves it: root only
    crontabs = cut / "var/spool/cron/crontabs"
    crontabs.mkdir(parents=True)
    crontabs.chmod(0o000)
    try:
        privileged, _ = run(tree_args(full), unprivileged=False)
        unprivileged, _ = run(tree_args(cut), unprivileged=True)
    finally:
        crontabs.chmod(0o755)
    assert unexplained(privileged, unprivileged) == {}
    named = unknown_facts(unprivileged)
    assert "rescan_workaround" in named
    why = {
        dict(k)["reason"] for k in select(unprivileged, "pciehp_fact_unknown", fact="instance_uuid")
    }
    assert why == ({"permission_denied"} if uuid.is_file() else {"dmi_missing"})
    ports = select(privileged, "pciehp_port_hotplug_capable")
    assert ("hotplug_capable" in named) == bool(ports and cut_configs)
    # never `ready` where the privileged reader says the port cannot unplug
    for labels, v in select(unprivileged, "pciehp_port_unplug_verdict").items():
        d = dict(labels)
        if v and d["verdict"] == "ready":
            same = {k: d[k] for k in ("segment", "bus", "device", "function")}
            assert select(privileged, "pciehp_port_unplug_verdict", verdict="ready", **same)
