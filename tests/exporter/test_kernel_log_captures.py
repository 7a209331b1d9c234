"""The real guest captures (6.1, 5.10, 6.12), every phase, as kmsg records, dmesg text and syslog
lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.kernel_log import KernelLog
from tests.support.captures import ALL, Capture

Q35_PORTS = {f"0000:00:02.{f}" for f in range(8)} | {f"0000:00:03.{f}" for f in range(4)}
# q35-switch: the root port holding the upstream port, and 12 xio3130 downstream ports
SWITCH_PORTS = (
    {"0000:00:02.0"} | {f"0000:02:00.{f}" for f in range(8)} | {f"0000:02:01.{f}" for f in range(4)}
)
CORE = {"PCIeHotplug", "SHPCHotplug", "PME", "AER", "PCIeCapability"}
GRANTED = ("PNP0A08:00", "granted", CORE, (), ("LTR",), set(), Q35_PORTS)
ASPM_OFF = ("PNP0A08:00", "not_requested", set(), ("ASPM", "ClockPM"), (), {"aspm_disabled"}, set())

# scenario -> (bridge, outcome, controlled, missing_support, denied, flags, bound ports)
BOOT = {
    "q35_normal": GRANTED,
    "q35_aspm_off": ASPM_OFF,
    "q35_acpihp_normal": ("PNP0A08:00", "partial", CORE - {"PCIeHotplug"}, (),
                          ("PCIeHotplug", "LTR"), set(), set()),
    "i440fx_normal": ("PNP0A03:00", "not_requested", set(), ("ExtendedConfig",), (), set(), set()),
    "q35_nomsi": ("PNP0A08:00", "not_requested", set(), ("MSI",), (), set(), set()),
    "q35_pcie_ports_compat": ("PNP0A08:00", "not_requested", set(), (), (),
                              {"port_services_disabled"}, set()),
    "q35_poll_mode": GRANTED,
    # pcie_ports=native: _OSC still skipped, yet pciehp binds every port
    "q35_aspm_off_ports_native": (*ASPM_OFF[:6], Q35_PORTS),
    "q35_acpihp_aspm_off": ASPM_OFF,
    "i440fx_aspm_off": ("PNP0A03:00", "not_requested", set(), ("ExtendedConfig", "ASPM", "ClockPM"),
                        (), {"aspm_disabled"}, set()),
    "q35_switch_normal": (*GRANTED[:6], SWITCH_PORTS),
    "bullseye_q35_normal": GRANTED,
    "bullseye_q35_aspm_off": ASPM_OFF,
    "trixie_q35_normal": GRANTED,
    "trixie_q35_aspm_off": ASPM_OFF,
    "trixie_q35_acpihp_normal": ("PNP0A08:00", "partial", CORE - {"PCIeHotplug"}, (),
                                 ("PCIeHotplug", "LTR"), set(), set()),
}  # fmt: skip

UNPLUG = {("0000:00:02.0", "1"): {"attention_button": 1, "power_off_request": 1}}
PLUG = {("0000:00:02.1", "2"): {"attention_button": 1, "power_on_request": 1,
                                "card_present": 1, "link_up": 1}}  # fmt: skip
SWITCH_UNPLUG = {("0000:02:00.0", "3"): {"attention_button": 1, "power_off_request": 1}}
SWITCH_PLUG = {("0000:02:00.1", "4"): PLUG[("0000:00:02.1", "2")]}
# Only native-hotplug guests with pciehp bound log anything (6.12 words the button press
# differently and counts the same): pciehp is absent everywhere else.
EVENTS = {
    (scenario, phase): events
    for scenario in ("q35_normal", "q35_poll_mode", "q35_aspm_off_ports_native",
                     "bullseye_q35_normal", "trixie_q35_normal")
    for phase, events in (("after_unplug", UNPLUG), ("after_plug", UNPLUG | PLUG))
} | {
    ("q35_switch_normal", "after_unplug"): SWITCH_UNPLUG,
    ("q35_switch_normal", "after_plug"): SWITCH_UNPLUG | SWITCH_PLUG,
}  # fmt: skip


def nonzero(log: KernelLog) -> dict[tuple[str, str], dict[str, int]]:
    """The non-zero event counts, per (port, slot)."""
    return {k: {e: n for e, n in v.items() if n} for k, v in log.events().items()}


def records_in(path: Path) -> int:
    """Lines that start a message: kmsg continuation lines start with a space."""
    return sum(1 for line in path.read_text().splitlines() if line and not line.startswith(" "))


def check(log: KernelLog, capture: Capture) -> None:
    """Assert the capture's expected events, _OSC outcome, flags and bound ports."""
    bridge, outcome, controlled, missing, denied, flags, bound = BOOT[capture.scenario]
    assert log.reader_up and log.last_error is None
    assert nonzero(log) == EVENTS.get((capture.scenario, capture.phase), {})
    assert set(log.osc()) == {bridge}
    state = log.osc()[bridge]
    assert (state.outcome, state.controlled, state.missing_support, state.denied) == (
        outcome, controlled, missing, denied)  # fmt: skip
    assert log.flags() == flags
    assert log.bound_ports() == bound


@pytest.mark.parametrize("capture", ALL, ids=lambda c: f"{c.scenario}-{c.phase}")
@pytest.mark.parametrize("fmt", ["kmsg", "dmesg"])
def test_capture(capture: Capture, fmt: str) -> None:
    path = capture.kmsg if fmt == "kmsg" else capture.dmesg
    log = KernelLog(path)
    log.poll()
    check(log, capture)
    assert log.lines_total == records_in(path)
    assert log.bytes_read_total == path.stat().st_size


FOREIGN = "pcieport 0000:00:02.0: pciehp: Slot(1): Link Down"


def as_syslog(dmesg: Path) -> str:
    """The capture as rsyslog writes kern.log, with a foreign line after each kernel line."""
    out = []
    for i, line in enumerate(dmesg.read_text().splitlines()):
        out.append(f"Nov 25 18:{i // 60 % 60:02d}:{i % 60:02d} guest kernel: {line}")
        # other programs may log text that looks like a kernel line: it must not count
        out.append(f"Nov 25 18:06:01 guest logger[42]: {FOREIGN}")
    return "\n".join(out) + "\n"


@pytest.mark.parametrize(
    "capture", [c for c in ALL if c.phase == "after_plug"], ids=lambda c: c.scenario
)
def test_capture_as_syslog(tmp_path: Path, capture: Capture) -> None:
    path = tmp_path / "kern.log"
    path.write_text(as_syslog(capture.dmesg))
    log = KernelLog(path)
    log.poll()
    check(log, capture)
    assert log.lines_total == 2 * records_in(capture.dmesg)


@pytest.mark.parametrize("fmt", ["kmsg", "dmesg"])
def test_live_tail_through_the_phases(tmp_path: Path, fmt: str) -> None:
    """Each phase's log extends the previous one: append the difference, poll, see it."""
    path = tmp_path / f"{fmt}.txt"
    log = KernelLog(path)
    written = b""
    for phase in ("boot", "after_unplug", "after_plug"):
        capture = Capture("q35_normal", phase)
        full = (capture.kmsg if fmt == "kmsg" else capture.dmesg).read_bytes()
        assert full.startswith(written)
        with path.open("ab") as f:
            f.write(full[len(written) :])
        bytes_before = log.bytes_read_total
        log.poll()
        assert log.bytes_read_total - bytes_before == len(full) - len(written)
        written = full
        check(log, capture)
        fresh = KernelLog(path)
        fresh.poll()
        assert log.lines_total == fresh.lines_total
    assert log.duplicates_skipped == 0 and log.opens == 1
