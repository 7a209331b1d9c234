"""Live: the libvirt path, against a real test-started libvirtd managing real QEMU domains."""

from __future__ import annotations

import uuid as uuidlib

from tests.host.conftest import find, port_values, run_once, samples, verdict_of
from tests.host.libvirtd import Libvirtd, domain_xml


def test_libvirt_domains_are_found_and_probed(tmp_path) -> None:
    vm_uuid = str(uuidlib.uuid4())
    with Libvirtd() as lv:
        xml = tmp_path / "dom.xml"
        xml.write_text(domain_xml("instance-0001", vm_uuid, ports=4))
        lv.virsh("create", str(xml))
        assert "custom monitor" not in lv.virsh("dominfo", "instance-0001")
        out, _ = run_once("--libvirt.uri", lv.uri)
        m = samples(out)
        assert find(m, "pciehp_host_discovery_success") == {frozenset(): 1.0}
        [info] = find(m, "pciehp_host_vm_info", instance_uuid=vm_uuid)
        assert dict(info)["domain"] == "instance-0001"
        assert dict(info)["hotplug"] == "native"
        assert dict(info)["machine"].startswith("pc-q35-")
        assert verdict_of(m, vm_uuid) == ("unknown", "booting")  # no kernel: it sits in SeaBIOS
        assert port_values(m, "pciehp_host_port_hotplug_capable", vm_uuid) == {
            f"pci.{i}": 1.0 for i in range(1, 5)
        }
        # libvirt records that someone else spoke to its monitor: documented in docs/host.md
        assert "tainted: custom monitor" in lv.virsh("dominfo", "instance-0001")


def test_unreachable_libvirt_is_reported() -> None:
    out, err = run_once("--libvirt.uri", "qemu+unix:///session?socket=/nonexistent/sock")
    assert find(samples(out), "pciehp_host_discovery_success") == {frozenset(): 0.0}
    assert "VM discovery failed" in err
