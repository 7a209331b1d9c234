"""Boot a lab guest under qemu-system-x86_64, drive it over QMP and capture its view.

Machine types (`GuestSpec.machine`):
- `q35-native`: q35 with N `pcie-root-port`s in libvirt's layout and native PCIe hotplug
  (QEMU's ACPI hotplug for bridges off, as on pc-q35-6.0 and older);
- `q35-acpi`: the same ports with QEMU's default ACPI PCI hotplug (q35 since QEMU 6.1);
- `pc`: i440fx, ACPI hotplug on the root bus (no PCIe ports);
- `q35-switch`: native hotplug, a root port holding an x3130 upstream port and N xio3130
  downstream ports.
The virtio-blk disk `DISK_ID` sits behind the first port. ttyS0 is the console (READY_MARKER),
ttyS1 a command channel to the guest's /init (see lab.initramfs).
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import shutil
import socket
import subprocess
import tarfile
import tempfile
import time
import uuid as uuidlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.initramfs import CAPTURE_BEGIN, CAPTURE_END, READY_MARKER, build_initramfs, combine_initrd
from lab.kernels import Kernel

MACHINES = ("q35-native", "q35-acpi", "pc", "q35-switch")
DISK_ID = "virtio-disk0"
NATIVE_HOTPLUG = "ICH9-LPC.acpi-pci-hotplug-with-bridge-support=off"


class LabError(RuntimeError):
    """The guest could not be booted, driven or read."""


@dataclass
class GuestSpec:
    """What to boot: a kernel (lab Kernel or a vmlinuz path), its command line and the machine."""

    kernel: Kernel | Path
    append: str = ""
    machine: str = "q35-native"
    ports: int = 12
    disk: bool = True
    uuid: str = field(default_factory=lambda: str(uuidlib.uuid4()))
    initrd: Path | None = None
    memory_mb: int = 1024
    smp: int = 2

    def __post_init__(self) -> None:
        if self.machine not in MACHINES:
            raise ValueError(f"machine {self.machine!r} is not one of {', '.join(MACHINES)}")
        if not 1 <= self.ports <= 30:
            raise ValueError("ports must be 1..30")

    @property
    def vmlinuz(self) -> Path:
        """The kernel image to boot."""
        return self.kernel.vmlinuz if isinstance(self.kernel, Kernel) else Path(self.kernel)

    @property
    def cmdline(self) -> str:
        """The kernel command line: `append`, with console=ttyS0 first unless it names a console."""
        return self.append if "console=" in self.append else f"console=ttyS0 {self.append}".strip()

    def port_ids(self) -> list[str]:
        """QOM ids of the hotplug ports, in order (the disk is behind the first)."""
        if self.machine == "pc":
            return ["pci.0"]
        if self.machine == "q35-switch":
            return [f"pci.{n}" for n in range(3, 3 + self.ports)]
        return [f"pci.{n}" for n in range(1, 1 + self.ports)]


def accel() -> str:
    """kvm where /dev/kvm can run a stock kernel, else tcg; PCIEHP_LAB_ACCEL=kvm|tcg overrides.

    A host whose /dev/kvm is PVM (module kvm_pvm, a nested-virtualisation backend) runs only
    PVM-enabled guest kernels: Debian's stay silent there, so such a host counts as without KVM.
    """
    forced = os.environ.get("PCIEHP_LAB_ACCEL")
    if forced:
        return forced
    usable = os.access("/dev/kvm", os.R_OK | os.W_OK) and not Path("/sys/module/kvm_pvm").exists()
    return "kvm" if usable else "tcg"


def _root_ports(count: int, first: int = 1) -> list[str]:
    """libvirt's pcie-root-port layout: 8 functions a slot from 00:02.0, port 0x10 upward."""
    args = []
    for i in range(count):
        n = first + i
        addr = f"0x{2 + i // 8:x}.0x{i % 8:x}"
        multi = ",multifunction=on" if i % 8 == 0 else ""
        args += [
            "-device",
            f"pcie-root-port,id=pci.{n},chassis={n},slot={n},port=0x{0x10 + i:x},"
            f"bus=pcie.0,addr={addr}{multi}",
        ]
    return args


def device_args(spec: GuestSpec) -> list[str]:
    """The -M, -global and -device arguments of the machine, ports and disk."""
    args: list[str] = []
    if spec.machine == "pc":
        args += ["-M", "pc"]
    else:
        args += ["-M", "q35"]
        if spec.machine != "q35-acpi":
            args += ["-global", NATIVE_HOTPLUG]
    if spec.machine in ("q35-native", "q35-acpi"):
        args += _root_ports(spec.ports)
    elif spec.machine == "q35-switch":
        args += _root_ports(1)
        args += ["-device", "x3130-upstream,id=pci.2,bus=pci.1,addr=0x0"]
        for i in range(spec.ports):
            n = 3 + i
            multi = ",multifunction=on" if i % 8 == 0 else ""
            args += [
                "-device",
                f"xio3130-downstream,id=pci.{n},bus=pci.2,chassis={n},slot={n},port=0x{i:x},"
                f"addr=0x{i // 8:x}.0x{i % 8:x}{multi}",
            ]
    if spec.disk:
        args += disk_args(spec.port_ids()[0], DISK_ID, "drive0", pc_addr="0x5")
    return args


def disk_args(bus: str, dev_id: str, node: str, pc_addr: str = "") -> list[str]:
    """A virtio-blk disk on a zero-reading null block node, behind `bus`."""
    addr = f",addr={pc_addr}" if bus == "pci.0" and pc_addr else ""
    return [
        "-blockdev",
        json.dumps({"driver": "null-co", "node-name": node, "size": 16 << 20, "read-zeroes": True}),
        "-device",
        f"virtio-blk-pci,drive={node},id={dev_id},bus={bus}{addr}",
    ]


class QMP:
    """A minimal synchronous QMP client that keeps every event it has seen."""

    def __init__(self, path: Path, timeout: float = 10.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(str(path))
        self.buf = b""
        self.events: list[dict[str, Any]] = []
        self.log: list[dict[str, Any]] = []
        self._next_id = 0
        self._read(time.monotonic() + timeout)  # greeting
        self.command("qmp_capabilities")

    def _read(self, deadline: float) -> dict[str, Any] | None:
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                return None
            if not chunk:
                raise LabError("QMP connection closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        msg = json.loads(line)
        self.log.append({"t": time.time(), "dir": "in", "msg": msg})
        if "event" in msg:
            self.events.append(msg)
        return msg

    def command(self, name: str, timeout: float = 30.0, **args: Any) -> Any:
        """Run one command; its `return` value, or LabError with QEMU's error."""
        self._next_id += 1
        req: dict[str, Any] = {"execute": name, "id": self._next_id}
        if args:
            req["arguments"] = args
        self.log.append({"t": time.time(), "dir": "out", "msg": req})
        self.sock.sendall(json.dumps(req).encode() + b"\n")
        deadline = time.monotonic() + timeout
        while True:
            msg = self._read(deadline)
            if msg is None:
                raise LabError(f"QMP {name}: no answer within {timeout} s")
            if msg.get("id") == self._next_id:
                if "error" in msg:
                    raise LabError(f"QMP {name}: {msg['error'].get('desc', msg['error'])}")
                return msg.get("return")

    def wait_event(self, name: str, timeout: float, **data: Any) -> dict[str, Any] | None:
        """The first event `name` (seen before or arriving within timeout) whose data has `data`."""
        deadline = time.monotonic() + timeout
        checked = 0
        while True:
            for ev in self.events[checked:]:
                if ev["event"] == name and data.items() <= ev.get("data", {}).items():
                    return ev
            checked = len(self.events)
            if self._read(deadline) is None:
                return None

    def close(self) -> None:
        """Close the connection."""
        self.sock.close()


class Guest:
    """A running lab guest: `with Guest(spec) as g: g.wait_ready(); g.capture(dest)`."""

    def __init__(self, spec: GuestSpec, workdir: Path | None = None) -> None:
        self.spec = spec
        self._own_dir = workdir is None
        self.dir = Path(workdir or tempfile.mkdtemp(prefix="pciehp-lab-"))
        self.console = self.dir / "console.log"
        self.qmp_socket = self.dir / "qmp.sock"
        self._own_qmp = self.dir / "qmp-lab.sock"
        self._ctl_socket = self.dir / "ctl.sock"
        self.proc: subprocess.Popen[bytes] | None = None
        self._qmp: QMP | None = None
        self._ctl: socket.socket | None = None
        self.started = 0.0
        self.ready_after: float | None = None
        self.disk_id = DISK_ID if spec.disk else None
        self.argv: list[str] = []

    def command_line(self, initrd: Path) -> list[str]:
        """The full qemu-system-x86_64 argv."""
        s = self.spec
        argv = ["qemu-system-x86_64", "-accel", accel()]
        argv += ["-m", str(s.memory_mb), "-smp", str(s.smp), "-uuid", s.uuid]
        argv += ["-nodefaults", "-display", "none", "-no-reboot"]
        argv += ["-kernel", str(s.vmlinuz), "-initrd", str(initrd), "-append", s.cmdline]
        argv += ["-chardev", f"file,id=con0,path={self.console}", "-serial", "chardev:con0"]
        argv += ["-chardev", f"socket,id=ctl0,path={self._ctl_socket},server=on,wait=off"]
        argv += ["-serial", "chardev:ctl0"]
        argv += ["-qmp", f"unix:{self._own_qmp},server=on,wait=off"]
        argv += ["-qmp", f"unix:{self.qmp_socket},server=on,wait=off"]
        return argv + device_args(s)

    def __enter__(self) -> Guest:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Build the initramfs and start QEMU (returns once QMP answers, not once booted)."""
        kernel = self.spec.kernel if isinstance(self.spec.kernel, Kernel) else None
        initrd = build_initramfs(kernel)
        if self.spec.initrd:
            initrd = combine_initrd(self.spec.initrd, initrd, self.dir / "initrd.img")
        self.argv = self.command_line(initrd)
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 30
        while self._qmp is None:
            self._check_alive()
            try:
                self._qmp = QMP(self._own_qmp)
            except (OSError, LabError):  # not listening yet, or QEMU is exiting (next round says)
                if time.monotonic() > deadline:
                    raise LabError("QEMU's QMP socket did not answer within 30 s") from None
                time.sleep(0.02)

    def _check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            out = self.proc.stdout.read().decode(errors="replace") if self.proc.stdout else ""
            raise LabError(f"QEMU exited with {self.proc.returncode}: {out.strip()[-2000:]}")

    def console_text(self) -> str:
        """What the guest printed on ttyS0 so far."""
        try:
            return self.console.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_ready(self, timeout: float = 120.0) -> float:
        """Wait for the initramfs's READY marker; seconds from QEMU's start to it."""
        deadline = time.monotonic() + timeout
        while READY_MARKER not in self.console_text():
            self._check_alive()
            if time.monotonic() > deadline:
                tail = "\n".join(self.console_text().splitlines()[-15:])
                raise LabError(f"guest not ready within {timeout} s; console ends:\n{tail}")
            time.sleep(0.05)
        self.ready_after = time.monotonic() - self.started
        return self.ready_after

    def qmp(self, cmd: str, **args: Any) -> Any:
        """Run a QMP command on the lab's own monitor."""
        if self._qmp is None:
            raise LabError("guest not started")
        return self._qmp.command(cmd, **args)

    @property
    def events(self) -> list[dict[str, Any]]:
        """QMP events seen on the lab's monitor so far."""
        return self._qmp.events if self._qmp else []

    @property
    def qmp_log(self) -> list[dict[str, Any]]:
        """Every QMP message on the lab's monitor, both ways, with wall-clock times."""
        return self._qmp.log if self._qmp else []

    def device_del(self, dev_id: str, timeout: float = 30.0) -> bool:
        """Ask for the unplug of `dev_id`; True when its DEVICE_DELETED arrived within timeout."""
        self.qmp("device_del", id=dev_id)
        assert self._qmp is not None
        return self._qmp.wait_event("DEVICE_DELETED", timeout, device=dev_id) is not None

    def device_add_disk(self, bus: str, dev_id: str) -> None:
        """Hot-plug a further virtio-blk disk behind `bus` (a port id from spec.port_ids())."""
        node = f"node-{dev_id}"
        self.qmp("blockdev-add", driver="null-co", **{"node-name": node, "read-zeroes": True})
        self.qmp("device_add", driver="virtio-blk-pci", drive=node, id=dev_id, bus=bus)

    def _ctl_connect(self) -> socket.socket:
        if self._ctl is None:
            self._ctl = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self._ctl.connect(str(self._ctl_socket))
        return self._ctl

    def capture(self, dest: Path, timeout: float = 120.0) -> Path:
        """Write the guest view tree (proc/, sys/, kmsg.txt, dmesg.txt) into `dest`; returns it."""
        ctl = self._ctl_connect()
        ctl.sendall(b"capture\n")
        buf = b""
        deadline = time.monotonic() + timeout
        end = CAPTURE_END.encode()
        while end not in buf:
            self._check_alive()
            left = deadline - time.monotonic()
            if left <= 0:
                raise LabError(f"no capture from the guest within {timeout} s")
            ctl.settimeout(left)
            try:
                chunk = ctl.recv(1 << 20)
            except TimeoutError:
                continue
            if not chunk:
                raise LabError("the guest's command channel closed")
            buf += chunk
        text = buf.decode(errors="replace").replace("\r", "")
        body = text.split(CAPTURE_BEGIN, 1)[-1].split(CAPTURE_END, 1)[0]
        data = base64.b64decode("".join(body.split()))
        dest = Path(dest)
        tmp = Path(tempfile.mkdtemp(dir=dest.parent if dest.parent.exists() else None))
        try:
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
                tar.extractall(tmp, filter="data")
            if dest.exists():
                shutil.rmtree(dest)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(tmp / "tree"), dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return dest

    def stop(self) -> None:
        """Stop QEMU and remove the working directory (when the Guest made it)."""
        for closer in (self._ctl, self._qmp):
            if closer is not None:
                with contextlib.suppress(OSError):
                    closer.close()
        self._ctl = self._qmp = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None and self.proc.stdout:
            self.proc.stdout.close()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)
