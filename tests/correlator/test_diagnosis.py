"""The built-in cause table on the real exporter's output over the real captures, and on
variants of that output edited the way the other kernel configurations change it."""

from __future__ import annotations

import re

import pytest

from correlator.config import Config, ConfigError
from correlator.diagnosis import DiagnosisTable
from correlator.model import GuestFacts, Verdict
from correlator.sources.prometheus import EVENTS, GUEST_FAMILIES, PORT_FAMILIES, PrometheusSource
from tests.correlator.support import exporter_once, exposition_results
from tests.support.captures import Capture

TABLE = DiagnosisTable.from_config(Config())
CAPTURES = {
    "aspm_off": Capture("q35_aspm_off"),
    "aspm_off_unplugged": Capture("q35_aspm_off", "after_unplug"),
    "normal": Capture("q35_normal"),
    "normal_unplugged": Capture("q35_normal", "after_unplug"),
    "acpihp": Capture("q35_acpihp_normal"),
    "i440fx": Capture("i440fx_normal"),
}


@pytest.fixture(scope="module")
def text() -> dict[str, str]:
    """The real exporter's scrape of each capture."""
    return {name: exporter_once(c) for name, c in CAPTURES.items()}


def facts_of(exposition: str) -> GuestFacts:
    """Exporter text -> the GuestFacts the correlator builds from Prometheus' answers."""
    rows = exposition_results(exposition, job="pciehp", instance="guest:9860")

    def named(names) -> list[dict]:
        return [r for r in rows if r["metric"]["__name__"] in names]

    events = [r for r in named({"pciehp_events_total"}) if r["metric"].get("event") in EVENTS]
    # What the queries return: handler rows only where 1, collector_success only where 0.
    handlers = [r for r in named({"pciehp_port_hotplug_handler"}) if r["value"][1] == "1.0"]
    failed = [r for r in named({"pciehp_collector_success"}) if r["value"][1] == "0.0"]
    src = PrometheusSource(session=None, url="http://unused")  # type: ignore[arg-type]
    joined = src.join(
        named({"pciehp_guest_info"}),
        named(PORT_FAMILIES) + handlers,
        events,
        named(GUEST_FAMILIES) + failed,
        now=0,
    )
    assert len(joined) == 1
    return next(iter(joined.values()))


def diagnose(exposition: str) -> Verdict:
    return TABLE.diagnose(facts_of(exposition))


def set_value(text: str, metric: str, value: str, **labels: str) -> str:
    """Set every sample of `metric` whose labels include `labels`."""
    out = []
    for line in text.splitlines():
        if line.startswith(metric + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            line = line.rsplit(" ", 1)[0] + " " + value
        out.append(line)
    return "\n".join(out) + "\n"


def set_handler(text: str, old: str, new: str) -> str:
    """Every port handled by `old` is handled by `new` instead."""
    text = set_value(text, "pciehp_port_hotplug_handler", "0.0", handler=old)
    return set_value(text, "pciehp_port_hotplug_handler", "1.0", handler=new)


def with_params(text: str, **params: str | None) -> str:
    """Add, change (value) or remove (None) pciehp_kernel_param series."""
    for name, value in params.items():
        text = re.sub(rf'pciehp_kernel_param\{{param="{re.escape(name)}",[^\n]*\n', "", text)
        if value is not None:
            text += f'pciehp_kernel_param{{param="{name}",value="{value}"}} 1.0\n'
    return text


def with_osc(text: str, outcome: str, missing: str = "", denied: str = "") -> str:
    return re.sub(
        r"pciehp_osc_info\{[^}]*\}",
        f'pciehp_osc_info{{bridge="PNP0A08:00",denied="{denied}",'
        f'missing_support="{missing}",outcome="{outcome}"}}',
        text,
    )


def test_the_real_pcie_aspm_off_capture_is_pcie_aspm_off(text):
    for name in ("aspm_off", "aspm_off_unplugged"):
        v = diagnose(text[name])
        assert v.cause == "pcie_aspm_off", name
        assert v.evidence == (
            "12 of 12 ports have hotplug_capable=1, handler=none, e.g. 0000:00:02.0",
            "_OSC on PNP0A08:00: outcome not_requested",
            "_OSC on PNP0A08:00: the OS lacks ASPM support (missing: ASPM ClockPM)",
            "kernel command line has pcie_aspm=off",
        )
        assert not v.guest_can_unplug


def test_the_stuck_unplug_is_seen_on_the_port(text):
    port = next(p for p in facts_of(text["aspm_off_unplugged"]).ports if p.address.endswith("02.0"))
    assert (port.button_pending, port.interrupt_enabled, port.handler) == (1, 0, "none")


@pytest.mark.parametrize("name", ["normal", "normal_unplugged", "acpihp", "i440fx"])
def test_guests_that_can_hot_unplug_point_at_the_host(text, name):
    v = diagnose(text[name])
    assert v.cause == "host_side" and v.guest_can_unplug
    assert v.evidence[-1].startswith(
        "no port has handler in {pciehp, pciehp_poll}, button_pending=1"
    )


def test_acpi_hotplug_guest_is_not_broken_whatever_its_cmdline_says(text):
    acpi = with_params(text["acpihp"], pcie_aspm="off")
    acpi = with_osc(acpi, "not_requested", missing="ASPM ClockPM")
    v = diagnose(acpi)
    assert v.cause == "host_side"
    assert v.evidence[0] == (
        "12 of 12 ports have handler in {pciehp, pciehp_poll, acpiphp}, e.g. 0000:00:02.0 (slot 0)"
    )
    i440fx = with_params(text["i440fx"], pcie_aspm="off")
    assert diagnose(i440fx).evidence[0] == "machine is i440fx"


def test_kernel_without_aspm_support_is_aspm_unsupported(text):
    v = diagnose(with_params(text["aspm_off"], pcie_aspm=None))
    assert v.cause == "aspm_unsupported"
    assert v.evidence[-1] == "kernel command line has no pcie_aspm=off"


def test_pci_nomsi_is_msi_disabled(text):
    t = with_params(text["aspm_off"], pcie_aspm=None, pci="nomsi")
    v = diagnose(with_osc(t, "not_requested", missing="MSI"))
    assert v.cause == "msi_disabled"
    assert "_OSC on PNP0A08:00: the OS lacks MSI support (missing: MSI)" in v.evidence


def test_pcie_ports_compat_is_port_services_disabled(text):
    t = with_params(text["aspm_off"], pcie_aspm=None, pcie_ports="compat")
    v = diagnose(with_osc(t, "not_requested"))
    assert v.cause == "port_services_disabled"
    assert v.evidence[-1] == "kernel command line has pcie_ports=compat"


def test_platform_refusing_hotplug_without_acpiphp_is_osc_denied(text):
    v = diagnose(set_handler(text["acpihp"], "acpiphp", "none"))
    assert v.cause == "osc_denied"
    assert "_OSC on PNP0A08:00: the platform refused PCIeHotplug (denied: PCIeHotplug LTR)" in (
        v.evidence
    )


def test_handler_none_for_any_other_reason_is_pciehp_unavailable(text):
    v = diagnose(set_handler(text["normal"], "pciehp", "none"))
    assert v.cause == "pciehp_unavailable"
    assert v.evidence == (
        "12 of 12 ports have hotplug_capable=1, handler=none, e.g. 0000:00:02.0 (slot 1)",
    )


def test_pending_button_without_power_off_is_guest_unresponsive(text):
    t = set_value(text["normal"], "pciehp_slot_button_pending", "1.0", device="02", function="1")
    v = diagnose(t)
    assert v.cause == "guest_unresponsive"
    assert v.evidence[0].endswith("e.g. 0000:00:02.1 (slot 2)")
    # The same with the kernel log unreadable: no verdict on missing events.
    broken = set_value(t, "pciehp_collector_success", "0.0", collector="kernel_log")
    assert diagnose(broken).cause == "host_side"


def test_a_failing_port_collector_means_no_guest_data_not_a_guess(text):
    t = set_value(text["aspm_off"], "pciehp_collector_success", "0.0", collector="ports")
    v = diagnose(t)
    assert v.cause == "no_guest_data"
    assert v.evidence == ("exporter collector(s) ports failing (collector_success 0)",)
    assert TABLE.diagnose(None).cause == "no_guest_data"


def test_first_matching_cause_wins():
    rows = [
        {
            "id": "no_guest_data",
            "summary": "s",
            "severity": "warning",
            "when": {"guest_data": False},
        },
        {"id": "q35", "summary": "s", "severity": "info", "when": {"machine": "q35"}},
        {"id": "anything", "summary": "s", "severity": "info", "when": {}},
    ]
    table = DiagnosisTable.from_config(Config(causes=tuple(rows), fallback_cause="anything"))
    assert table.diagnose(GuestFacts("u", machine="q35")).cause == "q35"
    assert table.diagnose(GuestFacts("u", machine="i440fx")) == Verdict("anything", ())


def test_no_match_falls_back_and_says_so():
    rows = [
        {
            "id": "no_guest_data",
            "summary": "s",
            "severity": "warning",
            "when": {"guest_data": False},
        },
        {"id": "q35", "summary": "s", "severity": "info", "when": {"machine": "q35"}},
    ]
    table = DiagnosisTable.from_config(Config(causes=tuple(rows), fallback_cause="q35"))
    v = table.diagnose(GuestFacts("u", machine="i440fx"))
    assert v == Verdict("q35", ("no cause in the table matched these facts",))


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"id": "x", "summary": "s", "severity": "page", "when": {}}, r"\[1\] \(x\)\.severity"),
        ({"id": "X!", "summary": "s", "severity": "info", "when": {}}, r"\[1\]\.id"),
        ({"id": "x", "summary": "s", "severity": "info"}, r"\(x\)\.when: missing"),
        (
            {"id": "x", "summary": "s", "severity": "info", "when": {"any_prot": {}}},
            r"\(x\)\.when\.any_prot: unknown condition",
        ),
        (
            {
                "id": "x",
                "summary": "s",
                "severity": "info",
                "when": {"any_port": {"handlr": "none"}},
            },
            r"\(x\)\.when\.any_port\.handlr: unknown port field",
        ),
        (
            {
                "id": "x",
                "summary": "s",
                "severity": "info",
                "when": {"any_of": [{"cmdline": {"pcie_aspm": {"bad": 1}}}]},
            },
            r"\(x\)\.when\.any_of\[0\]\.cmdline\.pcie_aspm",
        ),
        (
            {"id": "x", "summary": "s", "severity": "info", "when": {}, "runbook": "u"},
            r"\(x\)\.runbook: unknown key",
        ),
        (
            {"id": "x", "summary": "s", "severity": "info", "when": {}, "runbook_url": "ftp://x"},
            r"\(x\)\.runbook_url",
        ),
    ],
)
def test_bad_cause_rows_are_rejected_naming_the_key(row, message):
    rows = ({"id": "no_guest_data", "summary": "s", "severity": "info", "when": {}}, row)
    with pytest.raises(ConfigError, match=message):
        DiagnosisTable.from_config(Config(causes=rows))


def test_the_table_needs_no_guest_data_unique_ids_and_a_known_fallback():
    row = {"id": "a", "summary": "s", "severity": "info", "when": {}}
    with pytest.raises(ConfigError, match="needs a cause with id no_guest_data"):
        DiagnosisTable.from_config(Config(causes=(row,), fallback_cause="a"))
    ngd = dict(row, id="no_guest_data")
    with pytest.raises(ConfigError, match="duplicate cause id"):
        DiagnosisTable.from_config(Config(causes=(ngd, row, row), fallback_cause="a"))
    with pytest.raises(ConfigError, match="fallback_cause: 'host_side' is not a cause id"):
        DiagnosisTable.from_config(Config(causes=(ngd, row)))


def test_runbook_urls_follow_the_base_url_and_the_runbook_files_exist():
    from tests.correlator.support import ROOT

    for cause in TABLE.causes:
        assert cause.runbook_url == (
            f"https://github.com/pciehp-watch/pciehp-watch/blob/main/alerts/runbooks/{cause.id}.md"
        )
        assert (ROOT / "alerts" / "runbooks" / f"{cause.id}.md").is_file(), cause.id
    other = DiagnosisTable.from_config(Config(runbook_base_url="https://wiki.example/rb"))
    assert other.by_id["host_side"].runbook_url == "https://wiki.example/rb/host_side.md"


def test_the_required_cause_ids_are_all_in_the_builtin_table():
    assert [c.id for c in TABLE.causes] == [
        "no_guest_data",
        "port_services_disabled",
        "pcie_aspm_off",
        "aspm_unsupported",
        "msi_disabled",
        "osc_denied",
        "pciehp_unavailable",
        "guest_unresponsive",
        "host_side",
    ]
