"""The built-in cause table on the real exporter's output over the real captures (made by the lab,
tests/data/guests/README.md), and on edited output only where no kernel can produce the facts
(a kernel without CONFIG_PCIEASPM, a platform denying hotplug, a hung guest, an unprivileged
exporter, verdicts contradicting the raw series)."""

from __future__ import annotations

import dataclasses
import re

import pytest

from correlator.config import Config, ConfigError
from correlator.diagnosis import DiagnosisTable
from correlator.model import GuestFacts, HostFacts, HostPortFacts, Verdict
from correlator.sources.exposition import facts_from_exposition
from tests.correlator.support import exporter_once
from tests.support.captures import Capture

TABLE = DiagnosisTable.from_config(Config())
CAPTURES = {
    "aspm_off": Capture("q35_aspm_off"),
    "aspm_off_unplugged": Capture("q35_aspm_off", "after_unplug"),
    "normal": Capture("q35_normal"),
    "normal_unplugged": Capture("q35_normal", "after_unplug"),
    "acpihp": Capture("q35_acpihp_normal"),
    "i440fx": Capture("i440fx_normal"),
    "nomsi": Capture("q35_nomsi"),
    "ports_compat": Capture("q35_pcie_ports_compat"),
    "poll": Capture("q35_poll_mode"),
    "aspm_off_native": Capture("q35_aspm_off_ports_native"),
    "acpihp_aspm_off": Capture("q35_acpihp_aspm_off"),
    "i440fx_aspm_off": Capture("i440fx_aspm_off"),
    "switch": Capture("q35_switch_normal"),
    "bullseye_aspm_off": Capture("bullseye_q35_aspm_off"),
    "trixie_aspm_off": Capture("trixie_q35_aspm_off"),
    "bullseye": Capture("bullseye_q35_normal"),
    "trixie": Capture("trixie_q35_normal"),
    "trixie_acpihp": Capture("trixie_q35_acpihp_normal"),
}
PORT_RE = re.compile(r'pciehp_port_info\{address="[^"]*",bus="(..)",device="(..)",function="(.)"')


@pytest.fixture(scope="module")
def text() -> dict[str, str]:
    """The real exporter's scrape of each capture."""
    return {name: exporter_once(c) for name, c in CAPTURES.items()}


def facts_of(exposition: str) -> GuestFacts:
    """Exporter text -> the GuestFacts the correlator builds from Prometheus' answers."""
    return facts_from_exposition(exposition)


def ports_of(text: str) -> list[tuple[str, str, str]]:
    return PORT_RE.findall(text)


def with_verdicts(text: str, verdict: str, reason: str) -> str:
    """Replace the exporter's port verdicts: every port gets this verdict and reason."""
    text = "".join(
        line + "\n"
        for line in text.splitlines()
        if not line.startswith("pciehp_port_unplug_verdict{")
    )
    for bus, dev, fn in ports_of(text):
        text += (
            f'pciehp_port_unplug_verdict{{bus="{bus}",device="{dev}",function="{fn}",'
            f'reason="{reason}",segment="0000",verdict="{verdict}"}} 1.0\n'
        )
    return text


def config_cut(text: str) -> str:
    """What an exporter without CAP_SYS_ADMIN reads: config space cut to 64 bytes."""
    kept = [
        # a port no handler names is unknown, not no_handler (tests/exporter/test_verdict.py)
        line.replace('reason="no_handler"', 'reason="config_unreadable"').replace(
            'verdict="not_ready"', 'verdict="unknown"'
        )
        if line.startswith("pciehp_port_unplug_verdict{") and 'reason="no_handler"' in line
        else line
        for line in text.splitlines()
        if not line.startswith(("pciehp_port_hotplug_capable{", "pciehp_slot_button_pending{"))
    ]
    kept.append('pciehp_fact_unknown{fact="hotplug_capable",reason="config_truncated"} 1.0')
    return "\n".join(kept) + "\n"


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
        assert v.evidence[0].startswith("12 of 12 ports have verdict=not_ready, e.g. 0000:00:02.0")
        assert "because no_handler" in v.evidence[0]
        assert v.evidence[1:] == ("kernel command line has pcie_aspm=off",)
        assert not v.guest_can_unplug


def test_the_cause_rests_on_the_exporters_verdict_not_on_port_facts(text):
    """An exporter's verdict wins over the correlator's reading of the raw port series."""
    ready = with_verdicts(text["aspm_off"], "ready", "pciehp_poll")
    v = diagnose(ready)
    assert v.cause == "host_side"
    assert "verdict ready because pciehp_poll" in " ".join(v.evidence)
    assert diagnose(with_verdicts(text["normal"], "not_ready", "no_handler")).cause == (
        "pciehp_unavailable"
    )


def test_with_the_boot_lines_gone_pcie_aspm_off_is_still_named(text):
    t = re.sub(r"pciehp_osc_info\{[^\n]*\n", "", text["aspm_off"])
    t = with_osc(t + 'pciehp_osc_info{bridge="PNP0A08:00"} 1.0\n', "unknown")
    assert diagnose(t).cause == "pcie_aspm_off"


def test_the_stuck_unplug_is_seen_on_the_port(text):
    port = next(p for p in facts_of(text["aspm_off_unplugged"]).ports if p.address.endswith("02.0"))
    assert (port.button_pending, port.interrupt_enabled, port.handler) == (1, 0, "none")
    assert (port.verdict, port.reason) == ("not_ready", "no_handler")


@pytest.mark.parametrize("name", ["normal", "normal_unplugged", "acpihp", "i440fx"])
def test_guests_that_can_hot_unplug_point_at_the_host(text, name):
    v = diagnose(text[name])
    assert v.cause == "host_side" and v.guest_can_unplug
    assert v.evidence[-1].startswith("no port has verdict in {not_ready, unknown}")


def test_acpi_hotplug_guest_is_not_broken_whatever_its_cmdline_says(text):
    """Real captures: pcie_aspm=off on q35 with ACPI hotplug and on i440fx; acpiphp serves."""
    v = diagnose(text["acpihp_aspm_off"])
    assert v.cause == "host_side"
    assert facts_of(text["acpihp_aspm_off"]).cmdline["pcie_aspm"] == "off"
    assert v.evidence[2].startswith("12 of 12 ports have verdict=ready, e.g. 0000:00:02.0 (slot 0)")
    i440fx = diagnose(text["i440fx_aspm_off"])
    assert i440fx.cause == "host_side"
    assert "machine is i440fx" in i440fx.evidence


@pytest.mark.parametrize(
    "name", ["poll", "aspm_off_native", "switch", "bullseye", "trixie", "trixie_acpihp"]
)
def test_real_guests_that_answered_the_unplug_point_at_the_host(text, name):
    """pciehp in poll mode, pcie_ports=native beside pcie_aspm=off, switch downstream ports, and
    5.10 and 6.12 kernels (6.12 with ACPI hotplug too): each capture's DEVICE_DELETED came, and
    the table agrees."""
    assert CAPTURES[name].result()["device_deleted"] is True
    v = diagnose(text[name])
    assert v.cause == "host_side" and v.guest_can_unplug, v


@pytest.mark.parametrize("name", ["bullseye_aspm_off", "trixie_aspm_off"])
def test_pcie_aspm_off_on_5_10_and_6_12_kernels(text, name):
    assert CAPTURES[name].result()["device_deleted"] is False
    v = diagnose(text[name])
    assert v.cause == "pcie_aspm_off"
    assert "because no_handler" in v.evidence[0]


def test_kernel_without_aspm_support_is_aspm_unsupported(text):
    v = diagnose(with_params(text["aspm_off"], pcie_aspm=None))
    assert v.cause == "aspm_unsupported"
    assert v.evidence[-1] == "kernel command line has no pcie_aspm=off"


def test_pci_nomsi_is_msi_disabled_also_among_other_pci_values(text):
    """The real pci=nomsi capture: _OSC not requested for lack of MSI support, pciehp absent."""
    assert CAPTURES["nomsi"].result()["device_deleted"] is False
    v = diagnose(text["nomsi"])
    assert v.cause == "msi_disabled"
    assert v.evidence[0].startswith("12 of 12 ports have verdict=not_ready")
    assert v.evidence[-1] == "kernel command line has pci=nomsi"
    # pci= takes a comma-separated list: nomsi among other values names the same cause
    listed = with_params(text["nomsi"], pci="noaer,nomsi")
    assert diagnose(listed).evidence[-1] == "kernel command line has pci=noaer,nomsi"


def test_pcie_ports_compat_is_port_services_disabled(text):
    """The real pcie_ports=compat capture: the exporter's reason and the table's cause agree."""
    assert CAPTURES["ports_compat"].result()["device_deleted"] is False
    facts = facts_of(text["ports_compat"])
    assert {(p.verdict, p.reason) for p in facts.ports} == {("not_ready", "port_services_disabled")}
    v = diagnose(text["ports_compat"])
    assert v.cause == "port_services_disabled"
    assert v.evidence[-1] == "kernel command line has pcie_ports=compat"


def test_platform_refusing_hotplug_without_acpiphp_is_osc_denied(text):
    v = diagnose(with_verdicts(text["acpihp"], "not_ready", "no_handler"))
    assert v.cause == "osc_denied"
    assert "_OSC on PNP0A08:00: the platform refused PCIeHotplug (denied: PCIeHotplug LTR)" in (
        v.evidence
    )


def test_not_ready_for_any_other_reason_is_pciehp_unavailable(text):
    v = diagnose(with_verdicts(text["normal"], "not_ready", "pciehp_no_irq"))
    assert v.cause == "pciehp_unavailable"
    assert v.evidence == (
        "12 of 12 ports have verdict=not_ready, e.g. 0000:00:02.0 (slot 1), "
        "verdict not_ready because pciehp_no_irq",
    )


def test_unanswered_button_is_guest_unresponsive_even_after_an_earlier_answered_unplug(text):
    """State, not totals: a guest that answered an unplug yesterday (its counters say one
    attention button and one power-off request) and leaves today's unanswered is not host_side."""
    t = text["normal"]
    t = set_value(t, "pciehp_events_total", "2.0", device="02", event="attention_button")
    t = set_value(t, "pciehp_events_total", "1.0", device="02", event="power_off_request")
    assert diagnose(t).cause == "host_side"
    assert t.count("pciehp_slot_unplug_unanswered{") == 12  # the exporter says 0 for each port
    for unanswered in (
        set_value(t, "pciehp_slot_unplug_unanswered", "1.0", device="02", function="1"),
        t + 'pciehp_slot_unplug_unanswered{slot="2"} 1.0\n',  # joined on the slot name alone
    ):
        v = diagnose(unanswered)
        assert v.cause == "guest_unresponsive"
        assert v.evidence[-1].startswith(
            "1 of 12 ports have unplug_unanswered=1, e.g. 0000:00:02.1"
        )


def test_pending_button_on_a_ready_port_is_guest_unresponsive(text):
    t = set_value(text["normal"], "pciehp_slot_button_pending", "1.0", device="02", function="1")
    v = diagnose(t)
    assert v.cause == "guest_unresponsive"
    assert v.evidence[-1].startswith("1 of 12 ports have button_pending=1, e.g. 0000:00:02.1")


@pytest.mark.parametrize("name", ["normal", "acpihp", "i440fx", "aspm_off"])
def test_config_space_cut_is_never_host_side(text, name):
    """An unprivileged exporter whose ports no fact decides: an explicit unknown cause, never
    host_side. (The real exporter on cut captures, where the command line decides:
    test_partial_view.py.)"""
    v = diagnose(config_cut(text[name]))
    assert v.cause == "guest_facts_unknown", (name, v)
    assert "hotplug_capable (config_truncated)" in " ".join(v.evidence)
    # An exporter that still names a not-ready port keeps the exact cause.
    if name == "aspm_off":
        exact = diagnose(with_verdicts(config_cut(text[name]), "not_ready", "no_handler"))
        assert exact.cause == "pcie_aspm_off"


def test_no_verdict_and_no_handler_facts_is_unknown_not_host_side(text):
    t = "".join(
        line + "\n"
        for line in text["normal"].splitlines()
        if not line.startswith(
            (
                "pciehp_port_hotplug_handler{",
                "pciehp_port_hotplug_capable{",
                "pciehp_port_unplug_verdict{",
            )
        )
    )
    v = diagnose(t)
    assert v.cause == "guest_facts_unknown"
    assert "port_unplug_verdict (not_published)" in v.evidence[0], v.evidence
    # ports known not to be hotplug-capable, without a slot, need no verdict
    t = re.sub(r'(pciehp_port_info\{[^}]*)slot="[^"]*"', r'\1slot=""', t)
    t += "".join(
        f'pciehp_port_hotplug_capable{{bus="{b}",device="{d}",function="{f}",segment="0000"}} 0\n'
        for b, d, f in ports_of(t)
    )
    assert "port_unplug_verdict (not_published)" not in " ".join(diagnose(t).evidence)
    empty = GuestFacts("u", machine="q35")
    assert TABLE.diagnose(empty).cause == "guest_facts_unknown"


def test_a_failing_port_collector_means_unknown_not_a_guess(text):
    t = set_value(text["normal"], "pciehp_collector_success", "0.0", collector="ports")
    v = diagnose(t)
    assert v.cause == "guest_facts_unknown"
    assert v.evidence == ("exporter collector(s) ports failing (collector_success 0)",)
    assert TABLE.diagnose(None).cause == "no_guest_data"


# --- the host's view (issue 10): where the guest runs no exporter -------------------------------


NO_DRIVER, HUNG, HOST = "guest_no_hotplug_driver", "guest_unresponsive", "host_side"


def host_only(hotplug: str, verdict: str, reason: str, **port: float) -> GuestFacts:
    ports = (HostPortFacts("0000:00:02.0", "pci.1", hotplug_capable=1, **port),)
    host = HostFacts("u", hotplug, "pc-q35-7.2", "instance-1", verdict, reason, 1.0, ports)
    return GuestFacts("u", guest_data=False, host=host)


@pytest.mark.parametrize(
    ("facts", "cause"),
    [
        (host_only("native", "not_ready", "driver_not_armed", driver_armed=0), NO_DRIVER),
        (host_only("native", "not_ready", "button_pending_unarmed", button_pending=1), NO_DRIVER),
        (host_only("native", "unknown", "booting", driver_armed=0), "unplug_before_guest_ready"),
        (host_only("acpi", "ready", "acpi_hotplug", driver_armed=0), "host_side"),
        (host_only("native", "ready", "driver_armed", driver_armed=1, button_pending=0), HOST),
        (host_only("native", "ready", "driver_armed", driver_armed=1, button_pending=1), HUNG),
        (host_only("native", "unknown", "probe_failed"), "no_guest_data"),
        (GuestFacts("u", guest_data=False), "no_guest_data"),
    ],
)  # fmt: skip
def test_without_guest_facts_the_host_view_decides(facts, cause):
    v = TABLE.diagnose(facts)
    assert v.cause == cause, v
    if facts.host is not None and cause != "no_guest_data":
        assert any("host" in e for e in v.evidence), v.evidence


def test_guest_and_host_views_are_cross_checked(text):
    guest = facts_of(text["normal"])
    armed = host_only("native", "ready", "driver_armed", driver_armed=1).host
    agree = TABLE.diagnose(dataclasses.replace(guest, host=armed))
    assert agree.cause == "host_side" and agree.disagreement == ""
    unarmed = host_only("native", "not_ready", "driver_not_armed", driver_armed=0).host
    v = TABLE.diagnose(dataclasses.replace(guest, host=unarmed))
    assert v.cause == "host_side"  # the guest's own facts decide; the contradiction is shown
    assert "guest and host disagree" in v.disagreement
    assert "driver_not_armed" in v.disagreement and v.disagreement in v.evidence


def test_first_matching_cause_wins():
    rows = [
        {
            "id": "no_guest_data",
            "summary": "s",
            "severity": "warning",
            "when": {"guest_data": False},
        },
        {"id": "q35", "summary": "s", "severity": "info", "when": {"machine": "q35"}},
        {"id": "any_unknown", "summary": "s", "severity": "info", "when": {}},
    ]
    table = DiagnosisTable.from_config(Config(causes=tuple(rows), fallback_cause="any_unknown"))
    assert table.diagnose(GuestFacts("u", machine="q35")).cause == "q35"
    assert table.diagnose(GuestFacts("u", machine="i440fx")) == Verdict("any_unknown", ())


def test_no_match_falls_back_and_says_so():
    rows = [
        {
            "id": "no_guest_data",
            "summary": "s",
            "severity": "warning",
            "when": {"guest_data": False},
        },
        {"id": "q35_unknown", "summary": "s", "severity": "info", "when": {"machine": "q35"}},
    ]
    table = DiagnosisTable.from_config(Config(causes=tuple(rows), fallback_cause="q35_unknown"))
    v = table.diagnose(GuestFacts("u", machine="i440fx"))
    assert v == Verdict("q35_unknown", ("no cause in the table matched these facts",))


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"id": "x", "summary": "s", "severity": "page", "when": {}}, r"\[1\] \(x\)\.severity"),
        ({"id": "X!", "summary": "s", "severity": "info", "when": {}}, r"\[1\]\.id"),
        ({"id": "x", "summary": "s", "severity": "info"}, r"\(x\)\.when: missing"),
        (
            {"id": "x", "summary": "s", "severity": "info", "when": {"any_prot": {}}},
            r"\(x\)\.when\.any_prot: unknown key \(known: any_of, any_port, ",
        ),
        (
            {
                "id": "x",
                "summary": "s",
                "severity": "info",
                "when": {"any_port": {"handlr": "none"}},
            },
            r"\(x\)\.when\.any_port\.handlr: unknown key \(known: button_pending, handler, ",
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


def test_the_table_needs_no_guest_data_unique_ids_and_an_unknown_fallback():
    row = {"id": "a_unknown", "summary": "s", "severity": "info", "when": {}}
    with pytest.raises(ConfigError, match="needs a cause with id no_guest_data"):
        DiagnosisTable.from_config(Config(causes=(row,), fallback_cause="a_unknown"))
    ngd = dict(row, id="no_guest_data")
    with pytest.raises(ConfigError, match="duplicate cause id"):
        DiagnosisTable.from_config(Config(causes=(ngd, row, row), fallback_cause="a_unknown"))
    with pytest.raises(ConfigError, match="fallback_cause: 'guest_facts_unknown' is not a cause"):
        DiagnosisTable.from_config(Config(causes=(ngd, row)))
    host = dict(row, id="host_side", guest_can_unplug=True)
    with pytest.raises(ConfigError, match="fallback_cause: 'host_side' names a cause"):
        DiagnosisTable.from_config(Config(causes=(ngd, host), fallback_cause="host_side"))


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
    assert [(c.id, c.kind) for c in TABLE.causes] == [
        ("unplug_before_guest_ready", "guest"),
        ("guest_no_hotplug_driver", "guest"),
        ("no_guest_data", "unknown"),
        ("port_services_disabled", "guest"),
        ("pcie_aspm_off", "guest"),
        ("msi_disabled", "guest"),
        ("aspm_unsupported", "guest"),
        ("osc_denied", "guest"),
        ("pciehp_unavailable", "guest"),
        ("guest_unresponsive", "guest"),
        ("guest_facts_unknown", "unknown"),
        ("host_side", "host"),
    ]
