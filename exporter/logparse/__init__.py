"""Kernel-log parsers: line formats, pciehp events, `_OSC` negotiation, boot facts.

Pure text in, state out: no I/O here (exporter/kernel_log.py does the reading).
"""

from exporter.logparse.events import EVENTS, WORDINGS, PciehpLine, match_pciehp
from exporter.logparse.osc import OSC_FEATURES, OUTCOMES, OscState, OscTracker
from exporter.logparse.records import MAX_LINE_BYTES, LineBuffer, Record, parse_line
from exporter.logparse.state import FLAGS, LogState

__all__ = [
    "EVENTS",
    "FLAGS",
    "MAX_LINE_BYTES",
    "OSC_FEATURES",
    "OUTCOMES",
    "WORDINGS",
    "LineBuffer",
    "LogState",
    "OscState",
    "OscTracker",
    "PciehpLine",
    "Record",
    "match_pciehp",
    "parse_line",
]
