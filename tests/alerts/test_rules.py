"""Rule files: promtool check/test, coverage of firing and quiet cases, metadata and runbooks."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.alerts.pipeline import ALERTS, ROOT, RULE_FILES

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
TEST_FILES = tuple(sorted((ALERTS / "tests").glob("*.test.yml")))
RUNBOOKS = ALERTS / "runbooks"
RUNBOOK_BASE = "https://github.com/pciehp-watch/pciehp-watch/blob/main/alerts/runbooks/"
ROOT_CAUSES = (
    "pcie_aspm_off",
    "aspm_unsupported",
    "msi_disabled",
    "port_services_disabled",
    "osc_denied",
    "pciehp_unavailable",
    "guest_unresponsive",
    "host_side",
    "no_guest_data",
    "guest_facts_unknown",
    "guest_no_hotplug_driver",
    "unplug_before_guest_ready",
)
# Alerts about a guest's ability to answer an unplug: ACPI-hotplug and poll-mode guests are
# served and must stay quiet.
GUEST_CAUSE_ALERTS = (
    "PCIeHotplugHandlerMissing",
    "PCIeHotplugUnplugStuck",
    "PCIeHotplugOSCNotGranted",
)
RUNBOOK_SECTIONS = ("## What it means", "## Confirm", "## Fix", "## What not to do")
NOT_ALERT_PAGES = {"README.md", "guest-checks.md"}


def alerting_rules() -> list[dict]:
    """Every alerting rule of every rule file."""
    return [
        rule
        for path in RULE_FILES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]


def promtool(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def unit_tests() -> list[tuple[Path, dict]]:
    """(test file, one test group) for every promtool test group."""
    return [(p, t) for p in TEST_FILES for t in yaml.safe_load(p.read_text())["tests"]]


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.name)
def test_promtool_check_rules(path: Path) -> None:
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize("path", TEST_FILES, ids=lambda p: p.name)
def test_promtool_unit_tests(path: Path) -> None:
    result = promtool("test", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_rule_file_has_unit_tests() -> None:
    tested = {
        (p.parent / f).resolve()
        for p in TEST_FILES
        for f in yaml.safe_load(p.read_text())["rule_files"]
    }
    assert {p.resolve() for p in RULE_FILES} <= tested


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    fires: set[str] = set()
    quiet: set[str] = set()
    for _, group in unit_tests():
        for case in group.get("alert_rule_test", []):
            (fires if case.get("exp_alerts") else quiet).add(case["alertname"])
    names = {r["alert"] for r in alerting_rules()}
    assert names - fires == set(), "alerts never shown firing"
    assert names - quiet == set(), "alerts never shown staying quiet"


@pytest.mark.parametrize("handler", ["acpiphp", "pciehp_poll"])
def test_acpi_hotplug_and_poll_mode_guests_are_tested_quiet(handler: str) -> None:
    """Each guest-cause alert has a test whose guest is served by `handler` and stays quiet."""
    served = re.compile(rf'handler="{handler}"')
    covered: set[str] = set()
    for _, group in unit_tests():
        series = group.get("input_series", [])
        if not any(served.search(s["series"]) and s["values"].startswith("1") for s in series):
            continue
        covered |= {
            c["alertname"] for c in group.get("alert_rule_test", []) if not c.get("exp_alerts")
        }
    assert set(GUEST_CAUSE_ALERTS) <= covered


@pytest.mark.parametrize("job", ["pciehp-exporter", "node"])
def test_guest_cause_alerts_are_tested_firing_on_both_scrape_routes(job: str) -> None:
    """The exporter's own job and node_exporter's (textfile route) each have firing cases."""
    fired = {
        case["alertname"]
        for _, group in unit_tests()
        for case in group.get("alert_rule_test", [])
        if any(a["exp_labels"].get("job") == job for a in case.get("exp_alerts") or [])
    }
    assert set(GUEST_CAUSE_ALERTS) | {"PCIeHotplugExporterDown"} <= fired


@pytest.mark.parametrize("rule", alerting_rules(), ids=lambda r: r["alert"])
def test_alert_metadata(rule: dict) -> None:
    assert rule["labels"]["severity"] in {"critical", "warning", "info"}
    ann = rule["annotations"]
    assert ann["summary"].strip() and ann["description"].strip()
    assert "{{" not in ann["summary"], "summary is the static group headline"
    url = ann["runbook_url"]
    assert url == f"{RUNBOOK_BASE}{rule['alert']}.md"
    assert runbook_file(url).is_file()


def runbook_file(url: str) -> Path:
    """Map a runbook_url back to the file in alerts/runbooks/."""
    assert url.startswith(RUNBOOK_BASE), url
    return RUNBOOKS / url.removeprefix(RUNBOOK_BASE)


def test_every_root_cause_has_a_runbook() -> None:
    for cause in ROOT_CAUSES:
        assert (RUNBOOKS / f"{cause}.md").is_file(), cause


def test_correlator_causes_have_runbooks() -> None:
    """The correlator's built-in diagnosis table links <base><id>.md: each must exist."""
    causes = yaml.safe_load((ROOT / "correlator" / "causes.yml").read_text())["causes"]
    ids = {c["id"] for c in causes}
    assert ids, "no causes in the correlator's table"
    assert {i for i in ids if not (RUNBOOKS / f"{i}.md").is_file()} == set()


def test_no_orphan_runbooks() -> None:
    alerts = {f"{r['alert']}.md" for r in alerting_rules()}
    known = (
        alerts | {f"{c}.md" for c in ROOT_CAUSES} | NOT_ALERT_PAGES | {"PCIeHotplugRootCause.md"}
    )
    assert {p.name for p in RUNBOOKS.glob("*.md")} - known == set()


@pytest.mark.parametrize(
    "page",
    sorted(p for p in RUNBOOKS.glob("*.md") if p.name not in NOT_ALERT_PAGES),
    ids=lambda p: p.name,
)
def test_runbook_sections(page: Path) -> None:
    text = page.read_text()
    positions = [text.find(f"\n{s}") for s in RUNBOOK_SECTIONS]
    assert all(p >= 0 for p in positions), f"missing one of {RUNBOOK_SECTIONS}"
    assert positions == sorted(positions), "sections out of order"


def test_guest_cause_runbooks_give_commands_and_the_rescan_warning() -> None:
    """The issue's checklist: exact guest commands, the GRUB fix, and the rescan warning."""
    aspm = (RUNBOOKS / "pcie_aspm_off.md").read_text()
    for needle in (
        "/proc/cmdline",
        "dmesg | grep -i",
        "_OSC: not requesting OS control; OS requires [ExtendedConfig ASPM ClockPM MSI]",
        "ls /sys/bus/pci_express/devices",
        "/proc/interrupts",
        "/sys/bus/pci/slots",
        "GRUB_CMDLINE_LINUX",
        "update-grub",
        "pcie_ports=native",
        "echo 1 > /sys/bus/pci/rescan",
        "Fix the **image**",
    ):
        assert needle in aspm, needle
    checks = (RUNBOOKS / "guest-checks.md").read_text()
    for needle in ("/sys/bus/pci/slots/*", "module", "PCIe PME, aerdrv, pciehp", "pcie004"):
        assert needle in checks, needle


def test_runbook_links_resolve() -> None:
    for page in RUNBOOKS.glob("*.md"):
        for target in re.findall(r"\]\(([^)#]+\.md)\)", page.read_text()):
            assert (page.parent / target).is_file(), f"{page.name} -> {target}"


# The guard that confines a rule's fact-based fallback to exporters without the verdict.
FALLBACK_ONLY = "            unless on (job, instance) pciehp_port_unplug_verdict\n"
# Each mutation breaks one property the unit tests are meant to pin; promtool must then fail
# in the named test group. This shows the promtool suite is not vacuous.
MUTATIONS = [
    (
        "guest.rules.yml",
        'handler=~"acpiphp|pciehp_poll"} == 1',
        'handler="no-such-handler"} == 1',
        "poll-mode guest fires nothing",
    ),
    (
        "guest.rules.yml",
        'handler="none"} == 1\n            )\n' + FALLBACK_ONLY,
        'handler=~"none|acpiphp"} == 1\n            )\n' + FALLBACK_ONLY,
        "ACPI-hotplug q35 guest fires nothing",
    ),
    (
        "guest.rules.yml",
        'handler="none"} == 1\n            )\n' + FALLBACK_ONLY,
        'handler="none"} == 1\n            )\n',
        "verdict: ready guests fire nothing",
    ),
    (
        "fleet.rules.yml",
        'unless on (job, instance)\n              pciehp_port_unplug_verdict{verdict="unknown"}',
        'unless on (job, instance)\n              pciehp_port_unplug_verdict{verdict="no-such"}',
        "verdict: the share counts known guests, unknown ones apart",
    ),
    (
        "host.rules.yml",
        'pciehp_host_vm_info{hotplug="acpi"}',
        'pciehp_host_vm_info{hotplug="no-such-mode"}',
        "host view of a stuck unplug",
    ),
    (
        "host.rules.yml",
        'pciehp_host_vm_verdict{verdict="ready"} == 1',
        'pciehp_host_vm_verdict{verdict=~"ready|unknown"} == 1',
        "host view per image, booting VMs left out",
    ),
    (
        "guest.rules.yml",
        'param="pcie_ports", value="native"',
        'param="pcie_ports", value="no-such-value"',
        "pcie_ports=native stopgap fires nothing",
    ),
    (
        "fleet.rules.yml",
        "image_id:pciehp_guests_cannot_unplug:ratio >= 0.5",
        "image_id:pciehp_guests_cannot_unplug:ratio > 0",
        "a minority of broken guests does not blame the image",
    ),
]


@pytest.mark.parametrize("rules, old, new, failing_test", MUTATIONS, ids=[m[3] for m in MUTATIONS])
def test_unit_tests_catch_a_broken_rule(
    tmp_path: Path, rules: str, old: str, new: str, failing_test: str
) -> None:
    shutil.copytree(ALERTS, tmp_path / "alerts", ignore=shutil.ignore_patterns("runbooks"))
    target = tmp_path / "alerts" / rules
    text = target.read_text()
    assert text.count(old) == 1, f"mutation anchor not found once in {rules}: {old!r}"
    target.write_text(text.replace(old, new))
    test_file = f"alerts/tests/{rules.replace('.rules.yml', '.test.yml')}"
    result = promtool("test", "rules", test_file, cwd=tmp_path)
    assert result.returncode != 0
    assert f"name: {failing_test}" in result.stdout + result.stderr
