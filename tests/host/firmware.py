"""Real QEMU processes with no kernel: they sit in SeaBIOS, which is the `booting` case."""

from __future__ import annotations

import os
import socket
import subprocess
import uuid as uuidlib
from pathlib import Path

from tests.support.servers import wait_until

QEMU = "qemu-system-x86_64"


def accel() -> str:
    """KVM where this user may open /dev/kvm, TCG otherwise (CI may have no KVM)."""
    return "kvm" if os.access("/dev/kvm", os.R_OK | os.W_OK) else "tcg"


def root_port_args(ports: int) -> list[str]:
    """`ports` pcie-root-ports in libvirt's layout: ids pci.1.., 8 functions per slot from 00:02."""
    args = []
    for i in range(1, ports + 1):
        slot, fn = 2 + (i - 1) // 8, (i - 1) % 8
        multi = ",multifunction=on" if fn == 0 else ""
        args += [
            "-device",
            f"pcie-root-port,id=pci.{i},chassis={i},slot={i},port=0x{0x10 + i - 1:x},"
            f"bus=pcie.0,addr=0x{slot:x}.0x{fn:x}{multi}",
        ]
    return args


class FirmwareVM:
    """One QEMU in firmware with a QMP socket; `stopped` starts it paused (-S, prelaunch)."""

    def __init__(
        self,
        workdir: Path,
        ports: int = 12,
        hotplug: str = "native",
        stopped: bool = False,
        name: str = "fw",
    ) -> None:
        self.uuid = str(uuidlib.uuid4())
        self.qmp_socket = workdir / f"{name}.qmp"
        acpi = "on" if hotplug == "acpi" else "off"
        self.argv = [
            QEMU, "-accel", accel(), "-M", "q35", "-m", "64", "-nodefaults", "-display", "none",
            "-no-user-config", "-uuid", self.uuid.upper(), "-name", name,
            "-global", f"ICH9-LPC.acpi-pci-hotplug-with-bridge-support={acpi}",
            "-qmp", f"unix:{self.qmp_socket},server=on,wait=off",
            *root_port_args(ports),
            *(["-S"] if stopped else []),
        ]  # fmt: skip
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> FirmwareVM:
        self.proc = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )

        def listening() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"QEMU exited: {self.proc.stderr.read().decode()}")
            try:
                with socket.socket(socket.AF_UNIX) as s:
                    s.connect(str(self.qmp_socket))
            except OSError:
                return False
            return True

        wait_until(listening, timeout=30, what="QEMU's QMP socket")
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()
        self.proc.stderr.close()
