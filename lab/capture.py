"""A capture scenario: boot, guest view, device_del of the disk, view again, device_add, view again.

Writes the layout of tests/data/guests/<name>/: tree/, phases/after_unplug/tree/,
phases/after_plug/tree/, meta.json, result.json and qmp_events.jsonl.
"""

from __future__ import annotations

import json
import platform
import shlex
import subprocess
import time
import uuid as uuidlib
from datetime import UTC, datetime
from pathlib import Path

from lab.kernels import fetch_kernel
from lab.qemu import DISK_ID, Guest, GuestSpec, accel

# observation points, as in the shared captures: 3 s after the unplug attempt, 20 s after the plug
AFTER_UNPLUG_S = 3.0
AFTER_PLUG_S = 20.0
PLUG_ID = "virtio-disk1"


def remake_command(name: str, series: str, append: str, machine: str) -> str:
    """The command line that re-makes a capture (for its README line)."""
    args = ["python", "-m", "lab", "capture", name, "--series", series, "--machine", machine]
    if append:
        args += ["--append", append]
    return shlex.join(args)


def _qemu_version() -> str:
    out = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True, text=True)
    return out.stdout.splitlines()[0] if out.stdout else ""


def _wait(guest: Guest, seconds: float) -> None:
    """Let the guest run for a fixed observation interval (the capture is taken at that point)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        guest._check_alive()
        time.sleep(min(0.2, max(0.0, end - time.monotonic())))


def capture_scenario(
    name: str,
    out: Path,
    series: str = "bookworm",
    append: str = "",
    machine: str = "q35-native",
    unplug_timeout: float = 30.0,
) -> dict:
    """Run the scenario and write it under `out`; returns result.json's content."""
    kernel = fetch_kernel(series)
    # a stable UUID per scenario name, so re-made captures keep their identity
    guest_uuid = str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, f"pciehp-lab:{name}"))
    spec = GuestSpec(kernel, append=f"log_buf_len=1M {append}".strip(), machine=machine)
    spec.uuid = guest_uuid
    out.mkdir(parents=True, exist_ok=True)
    result: dict = {"name": name}
    with Guest(spec) as g:
        result["boot_to_ready_s"] = round(g.wait_ready(300), 2)
        g.capture(out / "tree")
        t0 = time.monotonic()
        deleted = g.device_del(DISK_ID, unplug_timeout)
        result["device_deleted"] = deleted
        result["device_deleted_after_s"] = round(time.monotonic() - t0, 3) if deleted else None
        _wait(g, AFTER_UNPLUG_S)
        g.capture(out / "phases" / "after_unplug" / "tree")
        plug_bus = spec.port_ids()[1] if machine != "pc" else "pci.0"
        g.device_add_disk(plug_bus, PLUG_ID)
        _wait(g, AFTER_PLUG_S)
        g.capture(out / "phases" / "after_plug" / "tree")
        argv = g.argv
        qmp_log = g.qmp_log
    result.update(
        kernel_release=kernel.release,
        uuid=guest_uuid,
        guest_cmdline=spec.cmdline,
        unplug_outcome="DEVICE_DELETED" if result["device_deleted"] else "timeout",
    )
    meta = {
        "name": name,
        "machine": machine,
        "series": series,
        "kernel_package": f"{kernel.package} {kernel.version}",
        "kernel_release": kernel.release,
        "append_extra": append,
        "guest_cmdline": spec.cmdline,
        "uuid": guest_uuid,
        "accel": accel(),
        "qemu_version": _qemu_version(),
        "host": platform.platform(),
        "captured_utc": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "unplug_timeout": unplug_timeout,
        "after_unplug_s": AFTER_UNPLUG_S,
        "after_plug_s": AFTER_PLUG_S,
        "disk_bus": spec.port_ids()[0],
        "plug_bus": plug_bus,
        "remake": remake_command(name, series, append, machine),
        "qemu_args": [_portable(a, g.dir) for a in argv],
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    with open(out / "qmp_events.jsonl", "w") as f:
        for entry in qmp_log:
            f.write(json.dumps(entry) + "\n")
    return result


def _portable(arg: str, workdir: Path) -> str:
    """An argv entry without this machine's temporary and cache paths."""
    return arg.replace(str(workdir), "$TMP").replace(str(Path.home()), "~")
