"""pciehp-check-image: argument errors, unbootable kernels and disk images without booting,
then three real TCG checks (bookworm with and without pcie_aspm=off, and a raw disk image)."""

from __future__ import annotations

import gzip
import json
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from lab.check import main
from lab.diskimage import ImageError, default_boot, partitions
from lab.initramfs import cpio_newc
from lab.kernels import Kernel, fetch_kernel

ROOT = Path(__file__).resolve().parents[2]
FS_UUID = "6c1e2a4b-8d3f-4e5a-9b7c-0d1e2f3a4b5c"


def run_check(*args: str) -> tuple[int, dict, str]:
    """The installed console script, as a pipeline runs it: exit code, JSON report, stderr."""
    exe = Path(sys.executable).with_name("pciehp-check-image")
    proc = subprocess.run(
        [str(exe), "--json", *args], capture_output=True, text=True, cwd=ROOT, timeout=600
    )
    return proc.returncode, json.loads(proc.stdout), proc.stderr


def grub_cfg(release: str) -> str:
    """A Debian-shaped grub.cfg whose default entry boots with pcie_aspm=off."""
    linux = f"/boot/vmlinuz-{release} root=UUID={FS_UUID} ro console=ttyS0"
    return f"""if [ -s $prefix/grubenv ]; then
  load_env
fi
if [ "${{next_entry}}" ] ; then
   set default="${{next_entry}}"
else
   set default="0"
fi
function savedefault {{
  saved_entry="${{chosen}}"
}}
menuentry 'Debian GNU/Linux' --class debian $menuentry_id_option 'gnulinux-simple-{FS_UUID}' {{
	insmod part_msdos
	insmod ext2
	set root='hd0,msdos1'
	search --no-floppy --fs-uuid --set=root {FS_UUID}
	linux	{linux} quiet pcie_aspm=off
	initrd	/boot/initrd.img-{release}
}}
menuentry 'Debian GNU/Linux (fixed)' $menuentry_id_option 'gnulinux-fixed-{FS_UUID}' {{
	search --no-floppy --fs-uuid --set=root {FS_UUID}
	linux	{linux} quiet
}}
"""


def image_initrd() -> bytes:
    """The image's own initrd: a gzip'd newc cpio (the lab's initramfs is appended after it)."""
    mode = stat.S_IFREG | 0o644
    return gzip.compress(cpio_newc([("etc/image-initrd", mode, b"from the image\n")]), mtime=0)


def make_disk(tmp: Path, kernel: Kernel, cfg: str | None) -> Path:
    """A raw disk: an MBR partition table (sfdisk) and an ext4 filesystem filled by
    `mkfs.ext4 -d` from a directory holding /boot; nothing is mounted."""
    root = tmp / "root"
    (root / "boot" / "grub").mkdir(parents=True)
    shutil.copy(kernel.vmlinuz, root / "boot" / kernel.vmlinuz.name)
    (root / "boot" / f"initrd.img-{kernel.release}").write_bytes(image_initrd())
    if cfg is not None:
        (root / "boot" / "grub" / "grub.cfg").write_text(cfg)
    img = tmp / "disk.img"
    with open(img, "wb") as f:
        f.truncate(64 << 20)
    table = "label: dos\nstart=2048, type=83, bootable\n"
    subprocess.run(["sfdisk", "-q", str(img)], input=table, text=True, check=True)
    mkfs = ["mkfs.ext4", "-q", "-F", "-U", FS_UUID, "-E", "offset=1048576", "-d", str(root)]
    subprocess.run([*mkfs, str(img), "62M"], check=True)
    return img


@pytest.fixture(scope="module")
def bookworm() -> Kernel:
    return fetch_kernel("bookworm")


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--append", "pcie_aspm=off"],
        ["--kernel", "/nonexistent/vmlinuz", "--append", ""],
        ["--kernel", "/etc/hostname"],
        ["--disk", "/etc/hostname", "--append", "x"],
        ["--kernel", "/etc/hostname", "--append", "", "--machine", "q35-switch"],
    ],
)
def test_bad_arguments_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert "pciehp-check-image: error:" in capsys.readouterr().err


def test_an_unbootable_kernel_file_exits_2(tmp_path):
    bad = tmp_path / "vmlinuz"
    bad.write_bytes(b"\x7fELF not a kernel" * 256)
    code, report, err = run_check("--kernel", str(bad), "--append", "pcie_aspm=off")
    assert code == 2
    assert report["verdict"] is None and report["cause"] is None
    assert "QEMU exited" in report["error"]
    assert "boot:" in err and "error:" in err


def test_default_entry_is_read_from_raw_and_qcow2_without_mounting(tmp_path, bookworm):
    img = make_disk(tmp_path, bookworm, grub_cfg(bookworm.release))
    assert [(p.number, p.offset) for p in partitions(img)] == [(1, 1 << 20)]
    qcow = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(img), str(qcow)], check=True)
    for i, image in enumerate((img, qcow)):
        work = tmp_path / f"w{i}"
        work.mkdir()
        boot = default_boot(image, work)
        assert boot.entry.title == "Debian GNU/Linux"
        assert boot.entry.cmdline.endswith("console=ttyS0 quiet pcie_aspm=off")
        assert boot.kernel.read_bytes() == bookworm.vmlinuz.read_bytes()
        assert [p.read_bytes() for p in boot.initrds] == [image_initrd()]
        assert boot.grub_cfg == "partition 1:/boot/grub/grub.cfg"


def test_a_disk_without_grub_cfg_exits_2(tmp_path, bookworm):
    img = make_disk(tmp_path, bookworm, None)
    with pytest.raises(ImageError, match=r"no grub\.cfg"):
        default_boot(img, tmp_path)
    code, report, _ = run_check("--disk", str(img))
    assert code == 2 and "no grub.cfg" in report["error"]
    blank = tmp_path / "blank.img"
    blank.write_bytes(bytes(1 << 20))
    code, report, _ = run_check("--disk", str(blank))
    assert code == 2 and "no ext2/3/4 filesystem" in report["error"]


def test_bookworm_pcie_aspm_off_cannot(bookworm):
    code, report, err = run_check(
        "--kernel", str(bookworm.vmlinuz), "--append", "console=ttyS0 pcie_aspm=off"
    )
    assert (code, report["verdict"], report["cause"]) == (1, "cannot", "pcie_aspm_off"), report
    assert report["runbook_url"].endswith("pcie_aspm_off.md")
    assert report["exporter_verdict"] == {"verdict": "not_ready", "reason": "no_handler"}
    assert report["device_deleted"] is False
    assert report["kernel"] == bookworm.release
    assert "kernel command line has pcie_aspm=off" in report["evidence"]
    for phase in ("boot:", "probe:", "unplug:"):
        assert phase in err


def test_bookworm_plain_can(bookworm):
    code, report, _ = run_check("--kernel", str(bookworm.vmlinuz), "--append", "console=ttyS0")
    assert (code, report["verdict"], report["cause"]) == (0, "can", None), report
    assert report["exporter_verdict"] == {"verdict": "ready", "reason": "pciehp_irq"}
    assert report["device_deleted"] is True
    assert report["port"] == {"address": "0000:00:02.0", "qemu_id": "pci.1"}


def test_disk_image_whose_default_entry_has_pcie_aspm_off_cannot(tmp_path, bookworm):
    img = make_disk(tmp_path, bookworm, grub_cfg(bookworm.release))
    code, report, err = run_check("--disk", str(img))
    assert (code, report["cause"]) == (1, "pcie_aspm_off"), report
    assert report["boot_entry"] == "Debian GNU/Linux"
    assert "pcie_aspm=off" in report["cmdline"].split()
    assert "image:" in err
