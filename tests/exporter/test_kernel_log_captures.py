"""The four real guest captures, every phase, as kmsg records, dmesg text and syslog lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.kernel_log import KernelLog
from tests.support.captures import ALL, Capture

Q35_PORTS = {f"0000:00:02.{f}" for f in range(8)} | {f"0000:00:03.{f}" for f in range(4)}
CORE = {"PCIeHotplug", "SHPCHotplug", "PME", "AER", "PCIeCapability"}

# scenario -> (bridge, outcome, controlled, missing_support, denied, flags, bound ports)
BOOT = {
    "q35_normal": ("PNP0A08:00", "granted", CORE, (), ("LTR",), set(), Q35_PORTS),
    "q35_aspm_off": ("PNP0A08:00", "not_requested", set(), ("ASPM", "ClockPM"), (),
                     {"aspm_disabled"}, set()),
    "q35_acpihp_normal": ("PNP0A08:00", "partial", CORE - {"PCIeHotplug"}, (),
                          ("PCIeHotplug", "LTR"), set(), set()),
    "i440fx_normal": ("PNP0A03:00", "not_requested", set(), ("ExtendedConfig",), (), set(), set()),
}  # fmt: skip

UNPLUG = {("0000:00:02.0", "1"): {"attention_button": 1, "power_off_request": 1}}
PLUG = {("0000:00:02.1", "2"): {"attention_button": 1, "power_on_request": 1,
                                "card_present": 1, "link_up": 1}}  # fmt: skip
# Only the native-hotplug guest logs anything: pciehp is absent everywhere else.
EVENTS = {
    ("q35_normal", "boot"): {},
    ("q35_normal", "after_unplug"): UNPLUG,
    ("q35_normal", "after_plug"): UNPLUG | PLUG,
}


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
