"""Tail the kernel log (/dev/kmsg or a file) incrementally; parsed state survives across polls.

A scrape calls `KernelLog.poll()`, which reads only what was added since the last poll
(O(new bytes)) and never raises: an unreadable source shows as `reader_up` False with the
reason in `last_error`, and everything parsed before is kept.
"""

import contextlib
import errno
import io
import os
import stat
import threading
from typing import Callable, FrozenSet, List, Mapping, Optional, Tuple, Union

from exporter.logparse.events import EVENTS
from exporter.logparse.osc import OSC_FEATURES, OscState
from exporter.logparse.records import MAX_LINE_BYTES, LineBuffer
from exporter.logparse.state import LogState

__all__ = ["EVENTS", "OSC_FEATURES", "KernelLog", "OscState", "RecordReader"]

READ_CHUNK = 1 << 20
"""Bytes per read() of a file."""
RECORD_BUFFER = 1 << 16
"""read() size on /dev/kmsg: larger than any record, or the kernel answers EINVAL."""
MAX_POLL_BYTES = 64 << 20
"""Most bytes one poll consumes; the rest waits for the next poll (bounds a scrape)."""
MAX_POLL_READS = 1 << 20
"""Most read() calls on a record device per poll (bounds a device that never says EAGAIN)."""
_MARKER = 64
"""Bytes before the file offset re-checked each poll to detect copy-truncate rotation."""


class RecordReader:
    """The interface of a non-blocking record source like /dev/kmsg (io.FileIO has it).

    read() returns one record; None (or raises BlockingIOError) when caught up, b"" at end of
    input, and raises BrokenPipeError (EPIPE) when records were overwritten before being read.
    Duck-typed (typing.Protocol needs Python 3.8): readers need not inherit from it.
    """

    def read(self, size: int = -1) -> Optional[bytes]:
        """One record, or None when caught up."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the source."""
        raise NotImplementedError


class _FileTail:
    """A regular file read from a remembered offset, following truncation and rotation."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        try:
            st = os.fstat(self.fd)
            if stat.S_ISDIR(st.st_mode):
                raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
        except BaseException:
            os.close(self.fd)
            raise
        self.identity = (st.st_dev, st.st_ino)
        self.offset = 0
        self.marker = b""

    def close(self) -> None:
        """Close the file descriptor."""
        os.close(self.fd)

    def rotated(self) -> Optional[bool]:
        """True if the path now names another file, None if it names nothing."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_dev, st.st_ino) != self.identity

    def truncated(self) -> bool:
        """The file shrank below the offset, or the bytes just before the offset changed."""
        if os.fstat(self.fd).st_size < self.offset:
            return True
        return self.offset > 0 and self._bytes_before_offset() != self.marker

    def read_new(self, budget: int) -> List[bytes]:
        """The bytes appended since the last read, up to the size seen now and `budget`."""
        end = min(os.fstat(self.fd).st_size, self.offset + budget)
        chunks: List[bytes] = []
        while self.offset < end:
            data = os.pread(self.fd, min(READ_CHUNK, end - self.offset), self.offset)
            if not data:
                break
            self.offset += len(data)
            chunks.append(data)
        if chunks:
            self.marker = self._bytes_before_offset()
        return chunks

    def resume(self, offset: int, marker: bytes) -> None:
        """Continue at `offset` (the same file, re-opened after an error)."""
        self.offset, self.marker = offset, marker

    def _bytes_before_offset(self) -> bytes:
        start = max(0, self.offset - _MARKER)
        return os.pread(self.fd, self.offset - start, start)


def _open_device(path: str) -> RecordReader:
    """Open a character device like /dev/kmsg for non-blocking reads."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    return io.FileIO(fd, "rb", closefd=True)


class KernelLog:
    """Incremental reader of the kernel log; parsed state survives across polls.

    `source` is a character device read record by record (/dev/kmsg) or a file tailed by
    offset. `reader_factory`, when given, replaces opening `source` as a record device
    (tests inject fake /dev/kmsg readers through it).
    """

    def __init__(
        self,
        source: Union[str, "os.PathLike[str]"],
        *,
        reader_factory: Optional[Callable[[], RecordReader]] = None,
        max_line_bytes: int = MAX_LINE_BYTES,
    ) -> None:
        self.source = os.fspath(source)
        self._factory = reader_factory
        self._state = LogState()
        self._lines = LineBuffer(max_line_bytes)
        self._lock = threading.Lock()
        self._file: Optional[_FileTail] = None
        self._device: Optional[RecordReader] = None
        self._up = False
        self._error: Optional[str] = None
        self._bytes = 0
        self._overruns = 0
        self._opens = 0
        self._resume: Optional[Tuple[Tuple[int, int], int, bytes]] = None

    # -- reading -------------------------------------------------------------------------

    def poll(self) -> None:
        """Read and parse everything new since the last poll. Never raises."""
        with self._lock:
            try:
                self._poll()
                self._up, self._error = True, None
            except OSError as e:
                self._fail(e.strerror or str(e))
            except Exception as e:  # a scrape must survive any surprise; the cause is reported
                self._fail(f"{type(e).__name__}: {e}")

    def _poll(self) -> None:
        if self._file is None and self._device is None:
            self._open()
        if self._device is not None:
            self._pump_device(self._device)
        elif self._file is not None:
            self._pump_file(self._file)

    def _open(self) -> None:
        if self._factory is None:
            mode = os.stat(self.source).st_mode
            if stat.S_ISREG(mode):
                self._file = self._open_file()
                return
            if stat.S_ISDIR(mode):
                raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), self.source)
            if not stat.S_ISCHR(mode):
                raise OSError(errno.EINVAL, "not a regular file or character device")
        self._device = self._factory() if self._factory else _open_device(self.source)
        self._opens += 1
        self._lines.reset()

    def _open_file(self) -> _FileTail:
        """Open the file; the same file as before an error or close() resumes where it was."""
        tail = _FileTail(self.source)
        self._opens += 1
        resume, self._resume = self._resume, None
        if resume is not None and resume[0] == tail.identity:
            tail.resume(resume[1], resume[2])
        else:
            self._lines.reset()
        return tail

    def _pump_device(self, reader: RecordReader) -> None:
        budget = MAX_POLL_BYTES
        for _ in range(MAX_POLL_READS):
            try:
                data = reader.read(RECORD_BUFFER)
            except BlockingIOError:
                return
            except InterruptedError:
                continue
            except OSError as e:
                if e.errno != errno.EPIPE:
                    raise
                self._overruns += 1  # records overwritten; the next read resumes after them
                continue
            if not data:
                return
            self._consume(data)
            budget -= len(data)
            if budget <= 0:
                return

    def _pump_file(self, tail: _FileTail) -> None:
        rotated = tail.rotated()
        if rotated:
            self._drain(tail)
            self._state.feed_lines(self._lines.flush())
            tail.close()
            self._file = None  # closed: if opening the new file fails, nothing to release
            self._file = tail = self._open_file()
        elif tail.truncated():
            tail.resume(0, b"")
            self._lines.reset()
        self._drain(tail)

    def _drain(self, tail: _FileTail) -> None:
        for chunk in tail.read_new(MAX_POLL_BYTES):
            self._consume(chunk)

    def _consume(self, data: bytes) -> None:
        self._bytes += len(data)
        self._state.feed_lines(self._lines.feed(data))

    def _fail(self, why: str) -> None:
        self._error = f"{self.source}: {why}"
        self._release()

    def _release(self) -> None:
        """Close the source, remembering where a file was so a re-open resumes there."""
        self._up = False
        if self._file is not None:
            self._resume = (self._file.identity, self._file.offset, self._file.marker)
        for handle in (self._file, self._device):
            if handle is not None:
                with contextlib.suppress(OSError):
                    handle.close()
        self._file = self._device = None

    def close(self) -> None:
        """Release the source; a later poll() re-opens it without reading anything twice."""
        with self._lock:
            self._release()

    # -- health --------------------------------------------------------------------------

    @property
    def reader_up(self) -> bool:
        """The source is open and was readable at the last poll."""
        return self._up

    @property
    def last_error(self) -> Optional[str]:
        """Why the last poll failed (for a one-time log line), else None."""
        return self._error

    @property
    def lines_total(self) -> int:
        """Log lines (records) read so far; duplicates of already-seen records not included."""
        return self._state.lines_total

    @property
    def bytes_read_total(self) -> int:
        """Bytes read from the source so far (a poll adds only what was new)."""
        return self._bytes

    @property
    def overruns(self) -> int:
        """Times /dev/kmsg said EPIPE: records were overwritten before they were read."""
        return self._overruns

    @property
    def last_seq(self) -> int:
        """Highest /dev/kmsg sequence number seen (-1 before the first kmsg record)."""
        return self._state.last_seq

    @property
    def duplicates_skipped(self) -> int:
        """kmsg records not counted again because their sequence number was already seen."""
        return self._state.duplicates_skipped

    @property
    def truncated_lines(self) -> int:
        """Lines longer than the line cap, of which only the head was parsed."""
        return self._lines.truncated_lines

    @property
    def pending_bytes(self) -> int:
        """Bytes of an unfinished last line held until its newline (at most the line cap)."""
        return self._lines.pending_bytes

    @property
    def opens(self) -> int:
        """Times the source was (re)opened."""
        return self._opens

    # -- parsed state --------------------------------------------------------------------

    def events(self) -> Mapping[Tuple[str, str], Mapping[str, int]]:
        """(port_bdf, slot_name) -> event -> count; every event of EVENTS present, monotonic.

        port_bdf is "" when the line named no device, slot_name "" when it named no slot.
        """
        with self._lock:
            return self._state.events()

    def last_requests(self) -> Mapping[Tuple[str, str], Tuple[int, bool]]:
        """(port_bdf, slot_name) -> (order, unanswered) of the slot's latest press or answer."""
        with self._lock:
            return self._state.last_requests()

    def osc(self) -> Mapping[str, OscState]:
        """Host bridge -> latest `_OSC` outcome (empty if no `_OSC` line was seen)."""
        with self._lock:
            return self._state.osc()

    def bound_ports(self) -> FrozenSet[str]:
        """BDFs with a pciehp probe line (`Slot #N AttnBtn...`) in the latest boot."""
        with self._lock:
            return self._state.bound_ports()

    def flags(self) -> FrozenSet[str]:
        """Boot facts seen: aspm_disabled, aspm_forced, fadt_no_aspm, port_services_disabled."""
        with self._lock:
            return self._state.flags()
