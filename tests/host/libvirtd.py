"""A private, test-started libvirtd (session mode, as user nobody) managing real QEMU domains.

Session mode keeps everything (sockets, domain state, logs) in one scratch directory, so it never
touches a system libvirtd. As nobody it cannot open /dev/kvm (root-only here), so its domains
run under TCG (`<domain type='qemu'>`).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.host.firmware import QEMU
from tests.support.servers import wait_until

USER = "nobody"


class Libvirtd:
    """`with Libvirtd() as lv:` a running daemon; `lv.uri` reaches it, `lv.virsh(...)` drives it."""

    def __init__(self) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="pciehp-libvirtd-"))
        self.run_dir = self.home / "run"
        self.socket = self.run_dir / "libvirt" / "libvirt-sock"
        self.uri = f"qemu+unix:///session?socket={self.socket}"
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> Libvirtd:
        pw = pwd.getpwnam(USER)
        self.run_dir.mkdir(mode=0o700)
        for d in (self.home, self.run_dir):
            os.chown(d, pw.pw_uid, pw.pw_gid)
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "HOME": str(self.home),
            "XDG_RUNTIME_DIR": str(self.run_dir),
            "XDG_CONFIG_HOME": str(self.home / "config"),
            "XDG_CACHE_HOME": str(self.home / "cache"),
            "XDG_DATA_HOME": str(self.home / "data"),
        }
        with open(self.home / "libvirtd.log", "wb") as log:
            self.proc = subprocess.Popen(
                ["libvirtd"],
                env=env,
                user=pw.pw_uid,
                group=pw.pw_gid,
                extra_groups=[],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )

        def up() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"libvirtd exited: {self.log()}")
            return self.socket.exists() and self._virsh("version").returncode == 0

        wait_until(up, timeout=60, what="libvirtd")
        return self

    def _virsh(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["virsh", "-q", "-c", self.uri, *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def virsh(self, *args: str) -> str:
        """Run virsh against this daemon; stdout (raises on failure)."""
        proc = self._virsh(*args)
        if proc.returncode != 0:
            raise RuntimeError(f"virsh {' '.join(args)}: {proc.stderr}")
        return proc.stdout

    def readable_copy(self, path: Path) -> Path:
        """A copy of `path` the daemon's user may read (the kernel cache is root's)."""
        dest = self.home / path.name
        shutil.copyfile(path, dest)
        dest.chmod(0o644)
        return dest

    def log(self) -> str:
        return (self.home / "libvirtd.log").read_text(errors="replace")[-4000:]

    def __exit__(self, *exc: object) -> None:
        for name in self.virsh("list", "--name").split():
            self._virsh("destroy", name)
        assert self.proc is not None
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.home, ignore_errors=True)


def domain_xml(
    name: str,
    uuid: str,
    ports: int,
    kernel: str = "",
    initrd: str = "",
    append: str = "",
    hotplug: str = "native",
    disk: str = "",
) -> str:
    """A q35 domain as Nova defines one: `ports` pcie-root-ports, optional direct kernel boot."""
    boot = ""
    if kernel:
        boot = f"<kernel>{kernel}</kernel><initrd>{initrd}</initrd><cmdline>{append}</cmdline>"
    acpi = "on" if hotplug == "acpi" else "off"
    disk_xml = ""
    if disk:
        disk_xml = (
            f"<disk type='file' device='disk'><driver name='qemu' type='raw'/>"
            f"<source file='{disk}'/><target dev='vda' bus='virtio'/>"
            f"<alias name='ua-disk1'/><address type='pci' bus='0x01' slot='0x00'/></disk>"
        )
    return f"""<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>{name}</name><uuid>{uuid}</uuid>
  <memory unit='MiB'>512</memory><vcpu>1</vcpu>
  <os><type arch='x86_64' machine='q35'>hvm</type>{boot}</os>
  <features><acpi/></features>
  <devices>
    <emulator>/usr/bin/{QEMU}</emulator>
    <controller type='pci' model='pcie-root'/>
    {"<controller type='pci' model='pcie-root-port'/>" * ports}
    {disk_xml}
    <controller type='usb' model='none'/><memballoon model='none'/>
    <serial type='pty'/>
  </devices>
  <qemu:commandline>
    <qemu:arg value='-global'/>
    <qemu:arg value='ICH9-LPC.acpi-pci-hotplug-with-bridge-support={acpi}'/>
  </qemu:commandline>
</domain>
"""
