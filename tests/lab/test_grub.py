"""The default boot entry of real-world grub.cfg shapes (Debian, Ubuntu, CentOS 7, RHEL 9 BLS)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.grub import BootEntry, GrubError, Root, default_entry, device_root, split_path

CFG = Path(__file__).parent / "grub"
UBUNTU_ID = "9f2d1c7a-5b1e-4b8e-8a1f-3c9d2e7f6a10"


def files(mapping: dict[str, str]):
    """A reader over an in-memory file set (what the disk image code gives the parser)."""
    return mapping.get


def test_debian_default_zero_with_fs_uuid_root():
    e = default_entry((CFG / "debian12.cfg").read_text())
    assert e == BootEntry(
        "Debian GNU/Linux",
        "/boot/vmlinuz-6.1.0-18-amd64",
        ("/boot/initrd.img-6.1.0-18-amd64",),
        "root=UUID=0c9bc2e3-4d0c-4b2a-9a0e-5c3e2e1e3f4b ro console=tty0 console=ttyS0,115200 "
        "earlyprintk=ttyS0,115200 consoleblank=0 pcie_aspm=off",
        Root(uuid="0c9bc2e3-4d0c-4b2a-9a0e-5c3e2e1e3f4b"),
    )


def test_debian_next_entry_in_grubenv_wins_once():
    env = "# GRUB Environment Block\nnext_entry=1>1\n" + "#" * 900
    e = default_entry((CFG / "debian12.cfg").read_text(), files({"grubenv": env}))
    assert e.title == "Debian GNU/Linux, with Linux 6.1.0-18-amd64 (recovery mode)"
    assert "single" in e.cmdline.split()


def test_ubuntu_saved_default_absent_is_entry_zero_and_unset_vars_vanish():
    e = default_entry((CFG / "ubuntu2204.cfg").read_text())
    assert e.title == "Ubuntu"
    assert e.cmdline == "root=PARTUUID=7d1c2f9e-01 ro console=tty1 console=ttyS0"
    assert e.initrds == ("/boot/initrd.img-5.15.0-91-generic",)


def test_ubuntu_saved_entry_by_id_path_into_the_submenu():
    saved = f"gnulinux-advanced-{UBUNTU_ID}>gnulinux-5.15.0-88-generic-advanced-{UBUNTU_ID}"
    env = f"# GRUB Environment Block\nsaved_entry={saved}\n"
    e = default_entry((CFG / "ubuntu2204.cfg").read_text(), files({"grubenv": env}))
    assert e.kernel == "/boot/vmlinuz-5.15.0-88-generic"
    assert "pci=nomsi" in e.cmdline.split()


def test_ubuntu_title_path_and_index_path_pick_the_same_entry():
    text = (CFG / "ubuntu2204.cfg").read_text()
    by_title = text.replace(
        'set default="${saved_entry}"',
        'set default="Advanced options for Ubuntu>Ubuntu, with Linux 5.15.0-88-generic"',
    )
    by_index = text.replace('set default="${saved_entry}"', 'set default="1>1"')
    assert default_entry(by_title) == default_entry(by_index)
    assert default_entry(by_index).kernel == "/boot/vmlinuz-5.15.0-88-generic"


def test_centos7_linux16_on_a_separate_boot_partition_with_saved_title():
    text = (CFG / "centos7.cfg").read_text()
    first = default_entry(text)
    assert first.kernel == "/vmlinuz-3.10.0-1160.105.1.el7.x86_64"
    assert first.initrds == ("/initramfs-3.10.0-1160.105.1.el7.x86_64.img",)
    assert first.root == Root(uuid="d2a4e6f8-0b1c-4d3e-8f5a-7b9c1d2e3f40")
    env = "saved_entry=CentOS Linux (3.10.0-1160.el7.x86_64) 7 (Core)\n"
    saved = default_entry(text, files({"grubenv": env}))
    assert saved.cmdline.endswith("LANG=en_US.UTF-8 pcie_aspm=off")


def test_rhel9_bls_entries_newest_first_and_kernelopts_fallback():
    bls = {
        "/loader/entries/": "abc-5.14.0-362.el9.x86_64.conf abc-5.14.0-70.el9.x86_64.conf",
        "/loader/entries/abc-5.14.0-362.el9.x86_64.conf": (
            "title Red Hat Enterprise Linux (5.14.0-362.el9.x86_64) 9.3 (Plow)\n"
            "version 5.14.0-362.el9.x86_64\n"
            "linux /vmlinuz-5.14.0-362.el9.x86_64\n"
            "initrd /initramfs-5.14.0-362.el9.x86_64.img $tuned_initrd\n"
            "options $kernelopts pcie_ports=compat\n"
            "grub_users $grub_users\ngrub_arg --unrestricted\ngrub_class rhel\n"
        ),
        "/loader/entries/abc-5.14.0-70.el9.x86_64.conf": (
            "title Red Hat Enterprise Linux (5.14.0-70.el9.x86_64) 9.0 (Plow)\n"
            "version 5.14.0-70.el9.x86_64\n"
            "linux /vmlinuz-5.14.0-70.el9.x86_64\n"
            "initrd /initramfs-5.14.0-70.el9.x86_64.img\n"
            "options root=/dev/vda3 ro\n"
        ),
    }
    text = (CFG / "rhel9.cfg").read_text()
    e = default_entry(text, files(bls))
    assert e.kernel == "/vmlinuz-5.14.0-362.el9.x86_64"
    assert e.initrds == ("/initramfs-5.14.0-362.el9.x86_64.img",)
    assert e.cmdline.startswith("root=UUID=3e8f1a2b-4c5d-4e6f-8a9b-0c1d2e3f4a5b console=tty0")
    assert e.cmdline.endswith("pcie_ports=compat")
    assert e.root == Root(uuid="3e8f1a2b-4c5d-4e6f-8a9b-0c1d2e3f4a5b")
    env = "saved_entry=abc-5.14.0-70.el9.x86_64\nkernelopts=root=/dev/vda3\n"
    old = default_entry(text, files({**bls, "grubenv": env}))
    assert (old.kernel, old.cmdline) == ("/vmlinuz-5.14.0-70.el9.x86_64", "root=/dev/vda3 ro")


def test_device_prefixed_paths_and_linuxefi():
    text = (
        "set default=vm\n"
        "menuentry 'other' { linux /a }\n"
        "menuentry 'vm' --id=vm {\n"
        "  linuxefi (hd0,gpt2)/vmlinuz console=ttyS0 'quoted arg'\n"
        "  initrdefi ($root)/initrd.img\n"
        "}\n"
    )
    e = default_entry(text)
    assert (e.kernel, e.root, e.initrds) == ("/vmlinuz", Root(partition=2), ("/initrd.img",))
    assert e.cmdline == "console=ttyS0 quoted arg"
    assert split_path("/boot/x", Root(partition=1)) == ("/boot/x", Root(partition=1))
    assert device_root("hd0,msdos5") == Root(partition=5)
    assert device_root("hd1,3") == Root(partition=3)


@pytest.mark.parametrize(
    "text",
    ["", "menuentry 'UEFI Firmware Settings' { fwsetup }\n", "set default=0\nchainloader +1\n"],
)
def test_no_linux_entry_is_an_error(text):
    with pytest.raises(GrubError):
        default_entry(text)
