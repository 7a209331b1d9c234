"""/dev/kmsg: one record per read, EAGAIN, EPIPE overruns, re-open without double counting."""

from __future__ import annotations

import errno
import os
from collections import deque

from exporter.kernel_log import KernelLog

P = "pcieport 0000:00:02.0: pciehp: "
KEY = ("0000:00:02.0", "1")


def record(seq: int, message: str = "x") -> bytes:
    """One /dev/kmsg record with a continuation line, as read() returns it."""
    return f"6,{seq},{seq * 10},-;{message}\n SUBSYSTEM=pci\n".encode()


class FakeKmsg:
    """Plays a script of records and errors like /dev/kmsg; EAGAIN once the script is done."""

    def __init__(self, *script: bytes | OSError | None) -> None:
        self.script: deque[bytes | OSError | None] = deque(script)
        self.closed = False

    def read(self, size: int = -1) -> bytes | None:
        assert size >= 8192  # smaller buffers get EINVAL from the kernel
        if not self.script:
            raise BlockingIOError(errno.EAGAIN, os.strerror(errno.EAGAIN))
        item = self.script.popleft()
        if isinstance(item, OSError):
            raise item
        return item

    def close(self) -> None:
        self.closed = True


def test_records_and_eagain() -> None:
    fake = FakeKmsg(record(0, "Linux version 6.1"), record(1, P + "Slot(1): Link Up"))
    log = KernelLog("/dev/kmsg", reader_factory=lambda: fake)
    log.poll()
    assert log.reader_up and (log.lines_total, log.events()[KEY]["link_up"]) == (2, 1)
    fake.script.extend([record(2, P + "Slot(1): Link Down"), None])  # None: EAGAIN as FileIO says
    log.poll()
    log.poll()
    assert (log.lines_total, log.events()[KEY]["link_down"], log.opens) == (3, 1, 1)


def test_overrun_is_counted_and_reading_goes_on() -> None:
    epipe = OSError(errno.EPIPE, os.strerror(errno.EPIPE))
    fake = FakeKmsg(record(1), record(2), epipe, record(7, P + "Slot(1): Card present"), epipe,
                    record(9))  # fmt: skip
    log = KernelLog("/dev/kmsg", reader_factory=lambda: fake)
    log.poll()
    assert log.reader_up and log.last_error is None
    assert (log.overruns, log.lines_total, log.events()[KEY]["card_present"]) == (2, 4, 1)


def test_reopen_after_error_does_not_count_records_twice() -> None:
    readers = [
        FakeKmsg(record(1), record(2, P + "Slot(1): Link Up"), OSError(errno.EIO, "I/O error")),
        # a fresh open replays the whole ring buffer, then new records follow
        FakeKmsg(record(1), record(2, P + "Slot(1): Link Up"), record(3, P + "Slot(1): Link Up")),
    ]
    log = KernelLog("/dev/kmsg", reader_factory=lambda: readers[log.opens])
    log.poll()
    assert not log.reader_up and "I/O error" in (log.last_error or "")
    assert readers[0].closed and log.lines_total == 2  # what was parsed stays
    log.poll()
    assert log.reader_up and log.last_error is None
    assert (log.lines_total, log.duplicates_skipped, log.events()[KEY]["link_up"]) == (3, 2, 2)


def test_open_failure_is_reported_and_retried() -> None:
    attempts = []

    def factory() -> FakeKmsg:
        attempts.append(1)
        if len(attempts) == 1:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
        return FakeKmsg(record(5))

    log = KernelLog("/dev/kmsg", reader_factory=factory)
    log.poll()
    assert not log.reader_up and "Permission denied" in (log.last_error or "")
    log.poll()
    assert log.reader_up and log.lines_total == 1


def test_device_without_eagain_is_bounded_per_poll() -> None:
    """A character device that never runs dry (/dev/zero) must not hang a scrape."""
    log = KernelLog("/dev/zero")
    log.poll()
    assert log.reader_up and log.lines_total == 0 and log.truncated_lines == 1
    assert 0 < log.bytes_read_total <= 64 << 20


def test_real_dev_kmsg() -> None:
    """Reads the machine's own kernel log when allowed; otherwise says why, never raises."""
    log = KernelLog("/dev/kmsg")
    log.poll()
    if not os.access("/dev/kmsg", os.R_OK):
        assert not log.reader_up and log.last_error
        return
    assert log.reader_up and log.last_error is None
    first = log.lines_total
    assert first > 0 and log.last_seq >= first - 1
    log.close()
    log.poll()  # re-open: the kernel replays its ring buffer, all of it already counted
    assert log.reader_up and log.duplicates_skipped > 0
    assert log.lines_total - first < log.duplicates_skipped
