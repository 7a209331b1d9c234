"""Line formats (kmsg, dmesg, dmesg -t, syslog/journal) and the bounded line splitter."""

from __future__ import annotations

import pytest

from exporter.logparse import LineBuffer, LogState, Record, parse_line

MSG = "pcieport 0000:00:02.0: pciehp: Slot(1): Attention button pressed"


@pytest.mark.parametrize(
    "line, seq",
    [
        (f"6,549,16751199,-;{MSG}", 549),  # /dev/kmsg record
        (f"6,549,16751199,-,caller=T123;{MSG}", 549),  # with the caller field
        (f"[   16.751199] {MSG}", None),  # dmesg
        (f"[Fri Feb 28 11:24:14 2020] {MSG}", None),  # dmesg -T
        (f"[    3.420506][    T1] {MSG}", None),  # CONFIG_PRINTK_CALLER
        (f"<6>[   16.751199] {MSG}", None),  # dmesg -r
        (f"kern  :info  : [   16.751199] {MSG}", None),  # dmesg -x
        (f"2026-11-25T18:06:01,123456+00:00 {MSG}", None),  # dmesg --time-format iso
        (MSG, None),  # dmesg -t
        (f"Nov 25 18:06:01 guest kernel: [   16.751199] {MSG}", None),  # syslog (kern.log)
        (f"Nov  5 18:06:01 guest kernel: {MSG}", None),  # single-digit day
        (f"Nov 25 18:06:01.123456 guest kernel: {MSG}", None),  # journalctl -o short-precise
        (f"2026-11-25T18:06:01.123456+00:00 guest kernel: {MSG}", None),  # rsyslog ISO
        (f"2026-11-25T18:06:01+0000 guest kernel: {MSG}", None),  # journalctl -o short-iso
        (f"<6>Nov 25 18:06:01 guest kernel: {MSG}", None),  # with a syslog priority
    ],
    ids=lambda v: v if isinstance(v, int | None) else v.split(MSG)[0] or "plain",
)
def test_every_format_yields_the_same_message(line: str, seq: int | None) -> None:
    assert parse_line(line) == Record(seq, MSG)


@pytest.mark.parametrize(
    "line",
    [
        f"Nov 25 18:06:01 guest systemd[1]: {MSG}",
        f"2026-11-25T18:06:01.123456+00:00 guest logger: {MSG}",
    ],
)
def test_syslog_lines_of_other_programs_are_not_kernel_messages(line: str) -> None:
    assert parse_line(line) is None
    state = LogState()
    state.feed_line(line)
    assert state.lines_total == 1 and state.events() == {}


@pytest.mark.parametrize(
    "line",
    [
        "PCIe ASPM is disabled",
        "acpi PNP0A08:00: _OSC: OS now controls [PCIeHotplug PME]",
        "ACPI: PCI Root Bridge [PCI0] (domain 0000 [bus 00-ff])",
        "6,12",  # a cut-off record header
        "6," + "9" * 5000 + ",0,-;x",  # a sequence number no u64 holds
        "6,\u0663,0,-;x",  # a non-ASCII digit
        "[   1.0 unterminated stamp",
    ],
)
def test_kernel_messages_that_look_like_other_formats_pass_through(line: str) -> None:
    assert parse_line(line) == Record(None, line)


def test_kmsg_continuation_lines_are_not_messages() -> None:
    state = LogState()
    state.feed_lines(
        [
            "6,188,1356704,-;acpi PNP0A08:00: _OSC: platform does not support [LTR]",
            " SUBSYSTEM=acpi",
            " DEVICE=+acpi:PNP0A08:00",
            f"6,189,1356705,-;{MSG}",
        ]
    )
    assert state.lines_total == 2
    assert state.events()[("0000:00:02.0", "1")]["attention_button"] == 1


def test_indented_text_line_is_a_line_outside_records() -> None:
    state = LogState()
    state.feed_lines(["[    1.0] first", "  indented dmesg -t text"])
    assert state.lines_total == 2


def test_kmsg_records_already_seen_are_skipped() -> None:
    state = LogState()
    record = f"6,549,16751199,-;{MSG}"
    state.feed_lines([record, " SUBSYSTEM=pci", record, " SUBSYSTEM=pci", "6,10,1,-;older"])
    assert (state.lines_total, state.duplicates_skipped, state.last_seq) == (1, 2, 549)
    assert state.events()[("0000:00:02.0", "1")]["attention_button"] == 1


def test_line_buffer_holds_unfinished_line_until_newline() -> None:
    buf = LineBuffer()
    assert buf.feed(b"one\ntw") == ["one"]
    assert buf.pending_bytes == 2
    assert buf.feed(b"o\r\nthree") == ["two"]
    assert buf.flush() == ["three"]
    assert buf.flush() == []


def test_line_buffer_keeps_multibyte_characters_split_across_reads() -> None:
    data = "Slot(ü): Link Up\n".encode()
    buf = LineBuffer()
    cut = data.index("ü".encode()) + 1
    assert buf.feed(data[:cut]) + buf.feed(data[cut:]) == ["Slot(ü): Link Up"]


def test_line_buffer_caps_long_lines_and_stays_in_sync() -> None:
    buf = LineBuffer(max_line=16)
    got = buf.feed(b"short\n" + b"x" * 40 + b"\nafter\n")
    assert got == ["short", "x" * 16, "after"]
    # the same long line trickling in over many reads
    got = []
    for _ in range(10):
        got += buf.feed(b"y" * 7)
        assert buf.pending_bytes <= 16
    got += buf.feed(b"yy\nnext\n")
    assert got == ["y" * 16, "next"]
    assert buf.truncated_lines == 2


def test_line_buffer_reset_drops_the_unfinished_line() -> None:
    buf = LineBuffer()
    buf.feed(b"half a li")
    buf.reset()
    assert buf.feed(b"whole\n") == ["whole"]


def test_invalid_utf8_and_nul_are_replaced_not_fatal() -> None:
    buf = LineBuffer()
    assert buf.feed(b"\xff\xfe\x00abc\n") == ["\ufffd\ufffd\x00abc"]
