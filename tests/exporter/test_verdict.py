"""The per-port unplug verdict on the real captures, and on the same captures as an unprivileged
reader sees them (config space cut to 64 bytes): never `ready` when the port cannot unplug."""

import shutil

import pytest

from exporter.verdict import PortFacts, decide
from tests.exporter.conftest import select, value
from tests.support.captures import Capture, truncate_configs

VERDICT = "pciehp_port_unplug_verdict"
UNKNOWN = "pciehp_fact_unknown"
Q35_PORTS = [f"0000:00:02.{f}" for f in range(8)] + [f"0000:00:03.{f}" for f in range(4)]


def verdicts(samples) -> dict:
    """BDF -> (verdict, reason) for every verdict series (each must be 1)."""
    out = {}
    for labels, v in select(samples, VERDICT).items():
        d = dict(labels)
        assert v == 1
        bdf = f"{d['segment']}:{d['bus']}:{d['device']}.{d['function']}"
        assert bdf not in out, "two verdicts for " + bdf
        out[bdf] = (d["verdict"], d["reason"])
    return out


@pytest.mark.parametrize(
    "scenario, expected",
    [
        ("q35_normal", ("ready", "pciehp_irq")),
        ("q35_aspm_off", ("not_ready", "no_handler")),
        ("q35_acpihp_normal", ("ready", "acpi_hotplug")),
        ("q35_nomsi", ("not_ready", "no_handler")),
        ("q35_aspm_off_ports_native", ("ready", "pciehp_irq")),
        # 6.12's acpiphp slots have no `module` link (exporter.pci.topology.slot_driver)
        ("trixie_q35_acpihp_normal", ("ready", "acpi_hotplug")),
        ("trixie_q35_normal", ("ready", "pciehp_irq")),
        ("bullseye_q35_normal", ("ready", "pciehp_irq")),
    ],
)
@pytest.mark.parametrize("phase", ["boot", "after_unplug", "after_plug"])
def test_q35_captures(scrape, scenario, expected, phase):
    s = scrape(Capture(scenario, phase))
    assert verdicts(s) == {bdf: expected for bdf in Q35_PORTS}
    assert select(s, UNKNOWN) == {}
    assert value(s, "pciehp_collector_success", collector="verdict") == 1


def test_i440fx_has_no_pcie_port_to_judge(scrape):
    s = scrape(Capture("i440fx_normal"))
    assert verdicts(s) == {} and select(s, UNKNOWN) == {}


@pytest.mark.parametrize(
    "scenario, expected",
    [
        # pciehp's bound service names the handler even without Slot Capabilities
        ("q35_normal", ("ready", "pciehp_irq")),
        # pcie_aspm=off: the kernel never asked for native hotplug, whatever the port can do
        ("q35_aspm_off", ("not_ready", "no_handler")),
        ("q35_acpihp_normal", ("ready", "acpi_hotplug")),
    ],
)
def test_config_cut_to_64_bytes(scrape, tree_copy, scenario, expected):
    tree = tree_copy(Capture(scenario))
    assert truncate_configs(tree) >= len(Q35_PORTS)
    s = scrape(tree)
    assert verdicts(s) == {bdf: expected for bdf in Q35_PORTS}
    assert value(s, UNKNOWN, fact="hotplug_capable", reason="config_truncated") == 1
    assert value(s, "pciehp_collector_success", collector="verdict") == 1


def test_config_cut_never_ready_without_a_handler(scrape, tree_copy):
    tree = tree_copy(Capture("q35_aspm_off"))
    truncate_configs(tree)
    assert not select(scrape(tree), VERDICT, verdict="ready")


def test_missing_pci_devices_is_a_fact_unknown(scrape, tree_copy):
    tree = tree_copy(Capture("q35_normal"))
    devices = tree / "sys" / "bus" / "pci" / "devices"
    assert devices.is_dir()
    shutil.rmtree(devices)
    s = scrape(tree)
    assert verdicts(s) == {}
    assert value(s, UNKNOWN, fact="pci_devices", reason="sysfs_missing") == 1


def test_pciehp_without_irq_is_not_ready(scrape, tree_copy):
    tree = tree_copy(Capture("q35_normal"))
    interrupts = tree / "proc" / "interrupts"
    lines = interrupts.read_text().splitlines(keepends=True)
    interrupts.write_text("".join(x for x in lines if "pciehp" not in x))
    s = scrape(tree)
    assert verdicts(s) == {bdf: ("not_ready", "pciehp_no_irq") for bdf in Q35_PORTS}


def test_unreadable_interrupts_leave_pciehp_ports_unknown(scrape, tree_copy):
    tree = tree_copy(Capture("q35_normal"))
    (tree / "proc" / "interrupts").unlink()
    s = scrape(tree)
    assert set(verdicts(s).values()) == {("unknown", "interrupts_unreadable")}
    assert value(s, UNKNOWN, fact="irq_registered", reason="interrupts_unreadable") == 1


def test_poll_mode_needs_no_irq(scrape):
    """pciehp.pciehp_poll_mode=1 (real capture): bound, no pciehp IRQ row, and ready."""
    capture = Capture("q35_poll_mode")
    assert "pciehp" not in capture.procfs.joinpath("interrupts").read_text()
    s = scrape(capture)
    assert verdicts(s) == {bdf: ("ready", "pciehp_poll") for bdf in Q35_PORTS}


def test_pcie_ports_compat_disables_port_services(scrape):
    """pcie_ports=compat (real capture): no port services at all, so never pciehp."""
    s = scrape(Capture("q35_pcie_ports_compat"))
    assert verdicts(s) == {bdf: ("not_ready", "port_services_disabled") for bdf in Q35_PORTS}


def test_slot_module_decides_before_missing_config():
    facts = PortFacts(
        hotplug_capable=None,
        config_missing=True,
        slot_modules=("acpiphp",),
        pciehp_bound=False,
        irq_registered=None,
        poll_mode=False,
        port_services_disabled=False,
        osc_skipped=False,
    )
    assert decide(facts) == ("ready", "acpi_hotplug")
    assert decide(facts._replace(slot_modules=())) == ("unknown", "sysfs_missing")
    # a command line that skips _OSC leaves nothing but an ACPI slot to answer
    assert decide(facts._replace(osc_skipped=True)) == ("ready", "acpi_hotplug")
    assert decide(facts._replace(slot_modules=(), osc_skipped=True)) == ("not_ready", "no_handler")


def test_missing_config_file_is_sysfs_missing(scrape, tree_copy):
    """No config file and nothing else naming a handler: unknown. With pcie_aspm=off on the
    command line the kernel never asked for native hotplug, so that alone decides not_ready;
    the fact stays named as unknown either way."""
    tree = tree_copy(Capture("q35_aspm_off"))
    removed = [p for p in (tree / "sys").rglob("config") if p.is_file()]
    for p in removed:
        p.unlink()
    s = scrape(tree)
    assert verdicts(s) == {bdf: ("not_ready", "no_handler") for bdf in Q35_PORTS}
    assert value(s, UNKNOWN, fact="hotplug_capable", reason="sysfs_missing") == 1
    (tree / "proc" / "cmdline").write_text("console=ttyS0\n")
    s = scrape(tree)
    assert verdicts(s) == {bdf: ("unknown", "sysfs_missing") for bdf in Q35_PORTS}
    assert value(s, UNKNOWN, fact="hotplug_capable", reason="sysfs_missing") == 1


@pytest.mark.parametrize(
    ("scenario", "want"),
    [
        ("q35_aspm_off", ("not_ready", "no_handler")),
        ("q35_nomsi", ("not_ready", "no_handler")),
        ("bullseye_q35_aspm_off", ("not_ready", "no_handler")),
        ("trixie_q35_aspm_off", ("not_ready", "no_handler")),
        ("q35_aspm_off_ports_native", ("ready", "pciehp_irq")),
        ("q35_acpihp_aspm_off", ("ready", "acpi_hotplug")),
    ],
)
def test_config_cut_keeps_the_verdict_where_the_command_line_decides(
    scrape, tree_copy, scenario, want
):
    """Real captures read as an unprivileged exporter would (config cut to 64 bytes): a command
    line that skips _OSC (pcie_aspm=off, pci=nomsi, not pcie_ports=native) decides not_ready
    without Slot Capabilities; a bound pciehp or an ACPI slot still decides ready."""
    full = verdicts(scrape(Capture(scenario)))
    assert set(full.values()) == {want}
    tree = tree_copy(Capture(scenario))
    assert truncate_configs(tree) > 0
    assert verdicts(scrape(tree)) == full


def test_config_cut_without_port_driver_still_finds_the_ports(scrape, tree_copy):
    """pcie_ports=compat binds no port driver: with config cut, the bridge class and the PCIe
    link attributes find the ports, and the command line decides (no service exists at all)."""
    tree = tree_copy(Capture("q35_pcie_ports_compat"))
    assert truncate_configs(tree) >= len(Q35_PORTS)
    s = scrape(tree)
    assert verdicts(s) == {bdf: ("not_ready", "port_services_disabled") for bdf in Q35_PORTS}
    assert value(s, UNKNOWN, fact="hotplug_capable", reason="config_truncated") == 1


def test_config_cut_never_calls_a_switch_upstream_port_a_port(scrape, tree_copy):
    tree = tree_copy(Capture("q35_switch_normal"))
    full = {dict(lbl)["address"] for lbl in select(scrape(tree), "pciehp_port_info")}
    truncate_configs(tree)
    cut = {dict(lbl)["address"] for lbl in select(scrape(tree), "pciehp_port_info")}
    assert "0000:01:00.0" not in full
    assert cut == full
