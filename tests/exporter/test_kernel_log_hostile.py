"""Hostile sources: missing, unreadable, directories, binary, NUL, 1 MB lines, a 10 MB log.

poll() must never raise; an unreadable source shows as reader_up False with a reason, and
what was parsed before stays.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from exporter.kernel_log import KernelLog
from exporter.logparse import MAX_LINE_BYTES

REPO = Path(__file__).resolve().parents[2]
P = "pcieport 0000:00:02.0: pciehp: "
KEY = ("0000:00:02.0", "1")


def count(log: KernelLog, event: str) -> int:
    """Count of one event on port 0000:00:02.0 slot 1."""
    return log.events().get(KEY, {}).get(event, 0)


def test_missing_file_then_created(tmp_path: Path) -> None:
    path = tmp_path / "kern.log"
    log = KernelLog(path)
    log.poll()
    assert not log.reader_up
    assert log.last_error == f"{path}: No such file or directory"
    path.write_text(f"{P}Slot(1): Link Up\n")
    log.poll()
    assert log.reader_up and log.last_error is None and count(log, "link_up") == 1


def test_directory(tmp_path: Path) -> None:
    log = KernelLog(tmp_path)
    log.poll()
    assert not log.reader_up and log.last_error == f"{tmp_path}: Is a directory"


def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    log = KernelLog(fifo)
    log.poll()
    assert not log.reader_up and "not a regular file or character device" in log.last_error


def test_source_replaced_by_something_unreadable_keeps_parsed_state(tmp_path: Path) -> None:
    path = tmp_path / "kern.log"
    path.write_text(f"{P}Slot(1): Link Up\n")
    log = KernelLog(path)
    log.poll()
    path.unlink()
    path.mkdir()  # rotation produced a directory
    log.poll()
    assert not log.reader_up and "Is a directory" in log.last_error
    assert count(log, "link_up") == 1 and log.lines_total == 1
    path.rmdir()
    path.write_text(f"{P}Slot(1): Link Up\n")
    log.poll()
    assert log.reader_up and count(log, "link_up") == 2


DROP_PRIVILEGES = textwrap.dedent(
    """
    import json, os, sys
    from exporter.kernel_log import KernelLog
    if os.geteuid() == 0:
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)
    log = KernelLog(sys.argv[1])
    log.poll()
    print(json.dumps({"up": log.reader_up, "error": log.last_error, "lines": log.lines_total}))
    """
)


def test_permission_denied() -> None:
    """Root reads anything, so the reader runs in a child that dropped to `nobody`."""
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)
        path = Path(tmp) / "kern.log"
        path.write_text(f"{P}Slot(1): Link Up\n")
        os.chmod(path, 0o000 if os.geteuid() else 0o600)
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        done = subprocess.run(
            [sys.executable, "-c", DROP_PRIVILEGES, str(path)],
            capture_output=True, text=True, env=env, cwd="/", timeout=60, check=True,
        )  # fmt: skip
    assert json.loads(done.stdout) == {
        "up": False,
        "error": f"{path}: Permission denied",
        "lines": 0,
    }


def test_binary_garbage_and_nul_bytes(tmp_path: Path) -> None:
    rng = random.Random(7)
    garbage = bytes(rng.getrandbits(8) for _ in range(256 * 1024))
    path = tmp_path / "kern.log"
    path.write_bytes(
        f"{P}Slot(1): Link Up\n".encode()
        + garbage
        + b"\n\x00\x00\x00\n"
        + f"{P}Slot(1): Link\x00 Down\n".encode()  # NUL inside: not an event
        + b"\xff\xfe\xc3\x28 invalid utf-8\n"
        + f"6,77,1,-;{P}Slot(1): Card present\n".encode()
    )
    log = KernelLog(path)
    log.poll()
    assert log.reader_up and log.last_error is None
    assert (count(log, "link_up"), count(log, "link_down"), count(log, "card_present")) == (1, 0, 1)
    data = path.read_bytes()
    assert log.lines_total == sum(1 for line in data.split(b"\n") if line)
    assert log.bytes_read_total == len(data)


def test_nul_only_file(tmp_path: Path) -> None:
    path = tmp_path / "kern.log"
    path.write_bytes(b"\x00" * 100_000)
    log = KernelLog(path)
    log.poll()
    assert log.reader_up and log.lines_total == 0 and log.truncated_lines == 1


@pytest.mark.parametrize("trickle", [False, True], ids=["one-read", "trickled"])
def test_one_megabyte_line_between_events(tmp_path: Path, trickle: bool) -> None:
    path = tmp_path / "kern.log"
    path.write_text(f"{P}Slot(1): Link Up\n")
    log = KernelLog(path)
    log.poll()
    huge = b"[    1.0] " + b"A" * (1 << 20) + b"\n"
    pieces = [huge[i : i + 100_000] for i in range(0, len(huge), 100_000)] if trickle else [huge]
    for piece in pieces:
        with path.open("ab") as f:
            f.write(piece)
        log.poll()
        assert log.reader_up
        assert log.pending_bytes <= MAX_LINE_BYTES
    with path.open("ab") as f:
        f.write(f"{P}Slot(1): Link Down\n".encode())
    log.poll()
    assert (log.lines_total, log.truncated_lines) == (3, 1)
    assert (count(log, "link_up"), count(log, "link_down")) == (1, 1)


def test_one_megabyte_kmsg_record_keeps_its_sequence_number(tmp_path: Path) -> None:
    path = tmp_path / "kmsg.txt"
    path.write_text(f"6,1,0,-;{'B' * (1 << 20)}\n6,2,0,-;{P}Slot(1): Link Up\n")
    log = KernelLog(path)
    log.poll()
    path.write_text(f"6,1,0,-;{'B' * (1 << 20)}\n6,2,0,-;{P}Slot(1): Link Up\n6,3,0,-;x\n")
    log.poll()
    assert (log.lines_total, log.last_seq, count(log, "link_up")) == (3, 3, 1)


def test_ten_megabyte_log(tmp_path: Path) -> None:
    """A 10 MB kmsg dump in one poll, every line and event counted; the next poll reads nothing."""
    filler = "pci 0000:00:01.0: [8086:7000] type 00 class 0x060100 reg 0x10: [mem 0xfe000000]"
    lines, events, seq = [], 0, 0
    size = 0
    while size < 10 << 20:
        if seq % 100 == 0:
            line = f"6,{seq},{seq},-;{P}Slot(1): Attention button pressed\n SUBSYSTEM=pci\n"
            events += 1
        else:
            line = f"6,{seq},{seq},-;{filler}\n"
        lines.append(line)
        size += len(line)
        seq += 1
    path = tmp_path / "kmsg.txt"
    path.write_text("".join(lines))
    log = KernelLog(path)
    log.poll()
    assert log.reader_up and log.bytes_read_total == path.stat().st_size
    assert (log.lines_total, count(log, "attention_button")) == (seq, events)
    log.poll()
    assert log.bytes_read_total == path.stat().st_size and log.lines_total == seq
