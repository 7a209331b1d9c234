"""Everything learnt from the kernel log so far, updated one line at a time.

Independent of where the lines come from, so the file tail, /dev/kmsg and the tests all
drive the same code. Counters only grow; boot facts (probe lines, `_OSC`, flags) and each
slot's latest button press or answer describe the latest boot seen.
"""

import re
from typing import Dict, FrozenSet, List, Pattern, Set, Tuple

from exporter.logparse.events import EVENTS, Part, match_pciehp
from exporter.logparse.osc import OscState, OscTracker
from exporter.logparse.records import parse_line

FLAGS: Tuple[Tuple[str, Pattern[str]], ...] = (
    ("aspm_disabled", re.compile(r"PCIe ASPM is disabled")),
    ("aspm_forced", re.compile(r"PCIe ASPM is forcibly enabled")),
    ("fadt_no_aspm", re.compile(
        r"FADT indicates ASPM is unsupported"
        r"|ACPI FADT declares the system doesn't support PCIe ASPM"
    )),
    ("port_services_disabled", re.compile(r"PCIe port services disabled; not requesting _OSC")),
)  # fmt: skip
"""Boot facts (kernel-facts.md section 5): flag name and the message that sets it."""

PRESS_EVENTS = frozenset(("attention_button",))
"""A line with only these events is a button press (an unplug or plug request) to be answered."""
ANSWER_EVENTS = frozenset(
    ("power_off_request", "power_on_request", "button_cancel", "card_not_present", "link_down")
)
"""Events by which the driver answered the latest press (or the card went away)."""

BOOT_MARKER = "Linux version "
"""The first message of every boot; boot facts seen before it are dropped."""


class LogState:
    """Parsed kernel-log state: counters, each slot's latest request, bound ports, `_OSC`, flags."""

    def __init__(self) -> None:
        self.lines_total = 0
        self.duplicates_skipped = 0
        self.last_seq = -1
        self._in_record = False
        self._events: Dict[Tuple[str, str], Dict[str, int]] = {}
        self._first_half_seen: Set[Tuple[str, str]] = set()
        self._bound: Set[str] = set()
        self._flags: Set[str] = set()
        self._osc = OscTracker()
        self._order = 0
        self._last_request: Dict[Tuple[str, str], Tuple[int, bool]] = {}

    def feed_lines(self, lines: List[str]) -> None:
        """Apply lines in log order."""
        for line in lines:
            self.feed_line(line)

    def feed_line(self, line: str) -> None:
        """Apply one log line (no terminator). Never raises on any text."""
        if not line:
            return
        if line[0] == " " and self._in_record:
            return  # a /dev/kmsg continuation line (` SUBSYSTEM=pci`), not a message
        record = parse_line(line)
        self._in_record = record is not None and record.seq is not None
        if self._in_record:
            if record.seq <= self.last_seq:
                self.duplicates_skipped += 1
                return
            self.last_seq = record.seq
        self.lines_total += 1
        if record is None:
            return
        message = record.message
        if "pciehp" in message:
            self._pciehp(message)
        elif "_OSC" in message or "ASPM" in message or "port services" in message:
            self._osc.feed(message)
            for flag, pattern in FLAGS:
                if pattern.search(message):
                    self._flags.add(flag)
        elif message.startswith(BOOT_MARKER):
            self._new_boot()

    def _pciehp(self, message: str) -> None:
        hit = match_pciehp(message)
        if hit is None:
            return
        if hit.probe:
            self._bound.add(hit.bdf)
            return
        key = (hit.bdf, hit.slot)
        if hit.part is Part.FIRST:
            self._first_half_seen.add(key)
        elif hit.part is Part.SECOND and key in self._first_half_seen:
            self._first_half_seen.discard(key)
            return  # the second line of a two-line message already counted
        counts = self._events.get(key)
        if counts is None:
            counts = self._events[key] = dict.fromkeys(EVENTS, 0)
        for event in hit.events:
            counts[event] += 1
        answered = ANSWER_EVENTS.intersection(hit.events)
        if answered or PRESS_EVENTS.intersection(hit.events):
            self._order += 1
            self._last_request[key] = (self._order, not answered)

    def _new_boot(self) -> None:
        self._bound.clear()
        self._flags.clear()
        self._first_half_seen.clear()
        self._osc.clear()
        self._last_request.clear()  # a reboot completes every pending unplug

    def events(self) -> Dict[Tuple[str, str], Dict[str, int]]:
        """(port_bdf, slot_name) -> event -> count, every event present; a copy."""
        return {key: dict(counts) for key, counts in self._events.items()}

    def last_requests(self) -> Dict[Tuple[str, str], Tuple[int, bool]]:
        """(port_bdf, slot_name) -> (order, unanswered) of the slot's latest press or answer.

        `order` grows with each such line, so keys naming the same port compare; `unanswered`
        is True when that latest line was a button press no power-off/on, cancel or removal
        followed (this boot).
        """
        return dict(self._last_request)

    def osc(self) -> Dict[str, OscState]:
        """bridge -> latest `_OSC` state."""
        return self._osc.states()

    def bound_ports(self) -> FrozenSet[str]:
        """BDFs pciehp printed its probe line for."""
        return frozenset(self._bound)

    def flags(self) -> FrozenSet[str]:
        """Boot facts seen, names from `FLAGS`."""
        return frozenset(self._flags)
