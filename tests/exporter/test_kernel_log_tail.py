"""Tailing a file: only appended bytes are read; truncation and rotation never double count."""

from __future__ import annotations

import os
from pathlib import Path

from exporter.kernel_log import KernelLog

P = "pcieport 0000:00:02.0: pciehp: "


def kmsg(seq: int, message: str) -> str:
    """One raw kmsg record with its continuation lines."""
    return f"6,{seq},{seq * 1000},-;{message}\n SUBSYSTEM=pci\n DEVICE=+pci:0000:00:02.0\n"


def count(log: KernelLog, event: str, key: tuple[str, str] = ("0000:00:02.0", "1")) -> int:
    """Count of one event for a (port, slot)."""
    return log.events().get(key, {}).get(event, 0)


def append(path: Path, text: str | bytes) -> int:
    """Append to the file; returns the number of bytes written."""
    data = text.encode() if isinstance(text, str) else text
    with path.open("ab") as f:
        f.write(data)
    return len(data)


def test_appended_lines_move_counters_without_rereading(tmp_path: Path) -> None:
    path = tmp_path / "kern.log"
    path.write_text(f"[    1.0] {P}Slot(1): Attention button pressed\n")
    log = KernelLog(path)
    log.poll()
    assert (log.lines_total, count(log, "attention_button")) == (1, 1)

    for n in range(2, 5):
        before = log.bytes_read_total
        size = append(path, f"[    {n}.0] {P}Slot(1): Attention button pressed\n[    {n}.1] x\n")
        log.poll()
        assert log.bytes_read_total - before == size  # only the new bytes were read
        assert (log.lines_total, count(log, "attention_button")) == (2 * n - 1, n)

    before = log.bytes_read_total
    log.poll()
    assert log.bytes_read_total == before and log.lines_total == 7


def test_unfinished_last_line_waits_for_its_newline(tmp_path: Path) -> None:
    path = tmp_path / "kern.log"
    path.write_text(f"{P}Slot(1): Link")
    log = KernelLog(path)
    log.poll()
    assert (log.lines_total, log.events()) == (0, {})
    append(path, " Up\n")
    log.poll()
    log.poll()
    assert (log.lines_total, count(log, "link_up")) == (1, 1)


def test_truncated_kmsg_file_rewritten_is_not_counted_twice(tmp_path: Path) -> None:
    path = tmp_path / "kmsg.txt"
    first = kmsg(1, "boot") + kmsg(2, P + "Slot(1): Link Up")
    path.write_text(first)
    log = KernelLog(path)
    log.poll()
    # rewritten with the same bytes plus more: indistinguishable from an append
    before = log.bytes_read_total
    path.write_text(first + kmsg(3, P + "Slot(1): Link Down"))
    log.poll()
    assert log.bytes_read_total - before == len(kmsg(3, P + "Slot(1): Link Down"))
    # a `cat /dev/kmsg > file` dump after the ring dropped record 1: overlapping records
    path.write_text(kmsg(2, P + "Slot(1): Link Up") + kmsg(3, P + "Slot(1): Link Down")
                    + kmsg(4, P + "Slot(1): Link Up"))  # fmt: skip
    log.poll()
    assert (log.lines_total, log.duplicates_skipped) == (4, 2)
    assert (count(log, "link_up"), count(log, "link_down")) == (2, 1)


def test_truncated_text_file_is_read_from_the_start(tmp_path: Path) -> None:
    path = tmp_path / "kern.log"
    path.write_text("".join(f"[    {i}.0] line {i}\n" for i in range(50)))
    log = KernelLog(path)
    log.poll()
    path.write_text(f"[    0.5] {P}Slot(1): Card present\n")  # shorter than before
    log.poll()
    assert (log.lines_total, count(log, "card_present")) == (51, 1)


def test_copy_truncate_that_grew_past_the_offset_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "kern.log"
    path.write_text("[    1.0] old line one\n[    2.0] old line two\n")
    log = KernelLog(path)
    log.poll()
    # truncated and refilled with more than was there before, between two polls
    with path.open("r+") as f:
        f.truncate(0)
        f.write("".join(f"[    9.{i}] {P}Slot(1): Link Down\n" for i in range(3)))
    log.poll()
    assert (log.lines_total, count(log, "link_down")) == (5, 3)


def test_rotation_reads_the_old_tail_then_the_new_file(tmp_path: Path) -> None:
    path = tmp_path / "kmsg.txt"
    path.write_text(kmsg(1, "boot") + kmsg(2, P + "Slot(1): Link Up"))
    log = KernelLog(path)
    log.poll()
    append(path, kmsg(3, P + "Slot(1): Link Down"))  # written just before rotation
    path.rename(tmp_path / "kmsg.txt.1")
    # the new file starts with records already seen (a full re-dump), then new ones
    path.write_text(kmsg(2, P + "Slot(1): Link Up") + kmsg(3, P + "Slot(1): Link Down")
                    + kmsg(4, P + "Slot(1): Card not present"))  # fmt: skip
    log.poll()
    assert (log.lines_total, log.duplicates_skipped, log.opens) == (4, 2, 2)
    assert [count(log, e) for e in ("link_up", "link_down", "card_not_present")] == [1, 1, 1]


def test_rotation_of_a_text_log(tmp_path: Path) -> None:
    path = tmp_path / "kern.log"
    path.write_text(f"Nov 25 18:00:00 g kernel: {P}Slot(1): Link Up\n")
    log = KernelLog(path)
    log.poll()
    os.replace(path, tmp_path / "kern.log.1")
    log.poll()  # the path is gone for now: keep reading the open file
    assert log.reader_up
    path.write_text(f"Nov 25 18:00:01 g kernel: {P}Slot(1): Link Up\n")
    log.poll()
    assert (log.lines_total, count(log, "link_up"), log.opens) == (2, 2, 2)


def test_rotation_flushes_an_unterminated_last_line(tmp_path: Path) -> None:
    path = tmp_path / "kern.log"
    path.write_text(f"{P}Slot(1): Link Up\n{P}Slot(1): Link Down")
    log = KernelLog(path)
    log.poll()
    path.rename(tmp_path / "kern.log.1")
    path.write_text("")
    log.poll()
    assert (log.lines_total, count(log, "link_down")) == (2, 1)


def test_close_then_poll_resumes_where_it_was(tmp_path: Path) -> None:
    path = tmp_path / "kern.log"
    path.write_text(f"{P}Slot(1): Link Up\n{P}Slot(1): Link")
    log = KernelLog(path)
    log.poll()
    log.close()
    assert not log.reader_up
    append(path, " Down\n")
    before = log.bytes_read_total
    log.poll()
    assert log.bytes_read_total - before == len(" Down\n")
    assert (log.lines_total, count(log, "link_up"), count(log, "link_down")) == (2, 1, 1)
