"""Property tests: the parsers never raise, counters never decrease, chunking never matters."""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.kernel_log import KernelLog
from exporter.logparse import EVENTS, FLAGS, OUTCOMES, LineBuffer, LogState, OscTracker

# Fragments of real lines, so generated input reaches the deep parser paths too.
FRAMES = ["", "6,{n},123,-;", "6,{n}{n}{n}{n}{n}{n}{n}{n}{n}{n}{n}{n},1,c;", "[   12.345678] ",
          "Nov 25 18:06:01 guest kernel: ", " ", "<6>"]  # fmt: skip
PREFIXES = ["pcieport 0000:00:02.0: pciehp: ", "pciehp 0000:00:1c.0:pcie04: ", "pciehp: ",
            "acpi PNP0A08:00: ", ""]  # fmt: skip
BODIES = [
    "Slot(1): Attention button pressed", "Slot(1) Powering on due to button press",
    "Slot(1): Button cancel", "Slot(1): Action canceled due to button press",
    "Button cancel on Slot(8)", "PCI slot #8 - action canceled due to button press",
    "Slot(0-2): Button press: will power off in 5 sec", "slot(8): Link Up event",
    "Slot #1 AttnBtn+ PwrCtrl+", "_OSC: OS supports [ExtendedConfig MSI]",
    "_OSC: OS now controls [PCIeHotplug PME]", "_OSC: OS requested [PCIeHotplug]",
    "_OSC: platform willing to grant []", "_OSC failed (AE_SUPPORT)",
    "Requesting ACPI _OSC control (0x1d)", "ACPI _OSC control (0xzz) granted",
    "Unable to request _OSC control (_OSC support mask: 0x1f)",
    "PCIe ASPM is disabled", "Linux version 6.1", "Slot(", "_OSC: OS supports [",
]  # fmt: skip

line_strategy = st.one_of(
    st.text(max_size=200),
    st.builds(
        lambda frame, n, prefix, body, junk: frame.format(n=n) + prefix + body + junk,
        st.sampled_from(FRAMES),
        st.integers(min_value=0, max_value=50),
        st.sampled_from(PREFIXES),
        st.sampled_from(BODIES),
        st.text(max_size=8),
    ),
)


def snapshot(state: LogState) -> tuple[int, dict[tuple[str, str], dict[str, int]]]:
    """Line count and event counts, copied."""
    return state.lines_total, state.events()


@settings(max_examples=300, deadline=None)
@given(st.lists(line_strategy, max_size=40))
def test_log_state_never_raises_and_counters_never_decrease(lines: list[str]) -> None:
    state = LogState()
    before_lines, before = snapshot(state)
    for line in lines:
        state.feed_line(line)
        after_lines, after = snapshot(state)
        assert after_lines >= before_lines
        for key, counts in before.items():
            assert set(after[key]) == set(EVENTS)
            assert all(after[key][e] >= n for e, n in counts.items())
        before_lines, before = after_lines, after
    assert all(s.outcome in OUTCOMES for s in state.osc().values())
    assert state.flags() <= {name for name, _ in FLAGS}


@settings(max_examples=300, deadline=None)
@given(st.lists(line_strategy, max_size=20))
def test_osc_tracker_never_raises(lines: list[str]) -> None:
    tracker = OscTracker()
    for line in lines:
        tracker.feed(line)
    for state in tracker.states().values():
        assert state.outcome in OUTCOMES


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.lists(st.integers(min_value=0, max_value=400), max_size=10))
def test_line_buffer_chunking_does_not_change_lines(data: bytes, cuts: list[int]) -> None:
    whole = LineBuffer(max_line=64)
    expected = whole.feed(data) + whole.flush()
    pieces = LineBuffer(max_line=64)
    got: list[str] = []
    start = 0
    for cut in sorted(c for c in cuts if c <= len(data)):
        got += pieces.feed(data[start:cut])
        assert pieces.pending_bytes <= 64
        start = cut
    got += pieces.feed(data[start:]) + pieces.flush()
    assert got == expected


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(st.lists(st.binary(max_size=300), min_size=1, max_size=6))
def test_tailing_random_appends_never_raises(tmp_path: Path, appends: list[bytes]) -> None:
    path = tmp_path / f"kern-{os.urandom(6).hex()}.log"
    path.write_bytes(b"")
    log = KernelLog(path)
    lines = 0
    for chunk in appends:
        with path.open("ab") as f:
            f.write(chunk)
        log.poll()
        assert log.reader_up and log.last_error is None
        assert log.lines_total >= lines
        lines = log.lines_total
    assert log.bytes_read_total == sum(map(len, appends))
