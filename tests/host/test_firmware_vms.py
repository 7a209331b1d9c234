"""Live: real QEMU processes in firmware read as booting; silent or paused VMs never block."""

from __future__ import annotations

import socket
import time

from host.monitor import QMPMonitor
from tests.host.conftest import find, port_values, run_once, samples, verdict_of
from tests.host.firmware import FirmwareVM
from tests.support.servers import Server, free_port, http_get


def test_firmware_vms_read_booting_not_broken(tmp_path) -> None:
    with (
        FirmwareVM(tmp_path, ports=12, hotplug="native", name="native") as native,
        FirmwareVM(tmp_path, ports=4, hotplug="acpi", name="acpi") as acpi,
        FirmwareVM(tmp_path, ports=2, stopped=True, name="paused") as paused,
    ):
        out, _ = run_once(
            *("--qmp.socket", str(native.qmp_socket)),
            *("--qmp.socket", str(acpi.qmp_socket)),
            *("--qmp.socket", str(paused.qmp_socket)),
        )
        m = samples(out)
        info = find(m, "pciehp_host_vm_info", instance_uuid=native.uuid)
        assert [dict(k) for k in info] == [
            {"instance_uuid": native.uuid, "domain": "native", "machine": "pc-q35-7.2",
             "hotplug": "native"}
        ]  # fmt: skip
        assert find(m, "pciehp_host_vm_info", instance_uuid=acpi.uuid, hotplug="acpi")
        for vm in (native, acpi):
            assert verdict_of(m, vm.uuid) == ("unknown", "booting")
            assert list(find(m, "pciehp_host_probe_success", instance_uuid=vm.uuid).values()) == [1]
        assert verdict_of(m, paused.uuid) == ("unknown", "not_running")
        capable = port_values(m, "pciehp_host_port_hotplug_capable", native.uuid)
        assert capable == {f"pci.{i}": 1.0 for i in range(1, 13)}
        assert set(find(m, "pciehp_host_port_driver_armed").values()) == {0.0}
        assert not find(m, "pciehp_host_port_unplug_ready")  # unknown while booting: no verdict


def test_silent_monitor_is_skipped_and_reported(tmp_path) -> None:
    """A socket that accepts but never greets (a hung QEMU) costs one timeout, not the scrape."""
    hung_path = tmp_path / "hung.qmp"
    with socket.socket(socket.AF_UNIX) as hung, FirmwareVM(tmp_path, ports=2) as vm:
        hung.bind(str(hung_path))
        hung.listen(4)
        start = time.monotonic()
        out, err = run_once(
            *("--qmp.socket", str(hung_path)),
            *("--qmp.socket", str(vm.qmp_socket)),
            *("--qmp.socket", str(tmp_path / "absent.qmp")),
            *("--probe.timeout", "3"),
        )
        took = time.monotonic() - start
        m = samples(out)
        success = find(m, "pciehp_host_probe_success")
        assert success[frozenset({"instance_uuid": "", "domain": str(hung_path)}.items())] == 0
        assert success[frozenset({"instance_uuid": vm.uuid, "domain": "fw"}.items())] == 1
        durations = find(m, "pciehp_host_probe_duration_seconds")
        assert max(durations.values()) >= 3  # the silent one ran into its deadline
        assert "no answer within 3s" in err
        assert "absent.qmp" in err
        assert took < 60  # not a speed goal: the run ended at all instead of hanging


def test_serves_metrics_over_http(tmp_path) -> None:
    with FirmwareVM(tmp_path, ports=1) as vm:
        port = free_port()
        server = Server(
            "host-exporter",
            [
                *("python", "-m", "host.cli"),
                *("--qmp.socket", str(vm.qmp_socket)),
                *("--web.listen-address", f"127.0.0.1:{port}"),
            ],
            port,
            tmp_path,
        )
        server.argv[0] = __import__("sys").executable
        server.start()
        try:
            status, body = http_get(server.url + "/metrics")
            assert status == 200
            m = samples(body.decode())
            assert find(m, "pciehp_host_probe_success", instance_uuid=vm.uuid)
            assert find(m, "process_cpu_seconds_total")
            assert http_get(server.url + "/-/healthy")[0] == 200
        finally:
            server.stop()


async def test_qmp_monitor_reads_and_keeps_the_vm_running(tmp_path) -> None:
    with FirmwareVM(tmp_path, ports=1) as vm:
        mon = await QMPMonitor.connect(vm.qmp_socket)
        try:
            assert (await mon.execute("query-uuid"))["UUID"] == vm.uuid
            assert (await mon.execute("query-status"))["status"] == "running"
        finally:
            await mon.close()
        assert vm.proc.poll() is None
