"""Turn kernel-log bytes into messages: line splitting and per-line format detection.

One log file may mix formats (a `dmesg` dump appended to a syslog file, say), so the
format is recognised line by line: raw `/dev/kmsg` records, `dmesg` text with or without
timestamps, and syslog/journal lines whose tag is `kernel`.
"""

import re
from typing import List, NamedTuple, Optional, Union

MAX_LINE_BYTES = 64 * 1024
"""Longest line kept; the rest of a longer line is dropped (its head is still parsed)."""


class Record(NamedTuple):
    """One kernel message: its /dev/kmsg sequence number (None for text formats) and text."""

    seq: Optional[int]
    message: str


# prio,seq,usec,flags[,more fields];message  (Documentation/ABI/testing/dev-kmsg);
# seq is a u64, at most 20 digits (longer runs of digits are not a record, and int() of
# thousands of digits raises)
_KMSG = re.compile(r"(\d+),(\d{1,20}),\d+,[^;]*;(.*)", re.DOTALL | re.ASCII)
# BSD syslog (`Nov 25 18:06:01`, journalctl short-precise) or ISO 8601 (rsyslog, short-iso),
# then host and tag (`kernel`, `systemd[1]`).
_SYSLOG = re.compile(
    r"(?:[A-Z][a-z]{2} +\d{1,2} \d\d:\d\d:\d\d(?:\.\d+)?"
    r"|\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:[.,]\d+)?(?:Z|[+-]\d\d:?\d\d)?)"
    r" \S+ ([^\s:\[]+)(?:\[\d+\])?: (.*)",
    re.DOTALL,
)
# `dmesg --time-format iso`: an ISO timestamp directly followed by the message.
_ISO_STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:[.,]\d+)?(?:Z|[+-]\d\d:?\d\d)? ")
# `dmesg -r` / syslog priority.
_PRIO = re.compile(r"<\d{1,3}>")
# `dmesg -x`: facility and level columns.
_DECODE = re.compile(
    r"(?:kern|user|mail|daemon|auth|syslog|lpr|news|uucp|cron|authpriv|ftp|local\d)\s*:"
    r"\s*(?:emerg|alert|crit|err|warn|notice|info|debug)\s*: "
)
# `[    1.234567]`, `dmesg -T`'s `[Fri Feb 28 11:24:14 2020]`, then an optional caller id
# `[    T1]` (CONFIG_PRINTK_CALLER).
_STAMP = re.compile(
    r"\[\s*(?:\d+\.\d+|[A-Z][a-z]{2} [A-Z][a-z]{2} +\d{1,2} \d\d:\d\d:\d\d \d{4})\]"
    r"(?:\[\s*[TC]\d+\])? ?"
)


def parse_line(line: str) -> Optional[Record]:
    """The kernel message in one log line, or None for a syslog line of another program."""
    first = line[:1]
    if first.isdigit():
        m = _KMSG.match(line)
        if m:
            return Record(int(m[2]), m[3])
    if first == "<":
        m = _PRIO.match(line)
        if m:
            line = line[m.end() :]
            first = line[:1]
    if first.isdigit() or first.isupper():
        m = _SYSLOG.match(line)
        if m:
            if m[1] != "kernel":
                return None
            line = m[2]
            first = line[:1]
        elif first.isdigit():
            m = _ISO_STAMP.match(line)
            if m:
                line = line[m.end() :]
                first = line[:1]
    if first.islower():
        m = _DECODE.match(line)
        if m:
            line = line[m.end() :]
            first = line[:1]
    if first == "[":
        m = _STAMP.match(line)
        if m:
            line = line[m.end() :]
    return Record(None, line)


class LineBuffer:
    """Splits a byte stream into decoded lines, holding an unfinished last line until its newline.

    A line longer than `max_line` bytes keeps only its head, so memory stays bounded and the
    reader stays in step with line boundaries.
    """

    def __init__(self, max_line: int = MAX_LINE_BYTES) -> None:
        self._max = max_line
        self._partial = bytearray()
        self._skipping = False
        self.truncated_lines = 0

    @property
    def pending_bytes(self) -> int:
        """Bytes of the unfinished last line held in memory."""
        return len(self._partial)

    def feed(self, data: bytes) -> List[str]:
        """The lines completed by `data` (without line terminators), in order."""
        lines: List[str] = []
        start = 0
        if self._skipping:
            nl = data.find(b"\n")
            if nl < 0:
                return lines
            lines.append(self._decode(self._partial))
            self._partial.clear()
            self._skipping = False
            start = nl + 1
        last = data.rfind(b"\n", start)
        if last < 0:
            self._hold(data[start:])
            return lines
        if self._partial:
            head = bytes(self._partial) + data[start : last + 1]
            self._partial.clear()
        else:
            head = data[start : last + 1]
        text = head.decode("utf-8", "replace")
        for line in text.split("\n")[:-1]:
            if len(line) > self._max:
                self.truncated_lines += 1
                line = line[: self._max]
            lines.append(line.rstrip("\r"))
        self._hold(data[last + 1 :])
        return lines

    def flush(self) -> List[str]:
        """The unfinished last line as a line (the source ended for good), or nothing."""
        if not self._partial:
            return []
        line = self._decode(self._partial)
        self.reset()
        return [line]

    def reset(self) -> None:
        """Forget the unfinished last line (the source was truncated)."""
        self._partial.clear()
        self._skipping = False

    def _hold(self, tail: bytes) -> None:
        room = self._max - len(self._partial)
        if len(tail) > room:
            self._partial += tail[:room]
            self._skipping = True
            self.truncated_lines += 1
        else:
            self._partial += tail

    @staticmethod
    def _decode(raw: Union[bytes, bytearray]) -> str:
        return bytes(raw).decode("utf-8", "replace").rstrip("\r")
