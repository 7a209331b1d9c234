"""pciehp log lines of every kernel generation, mapped to the exporter's event names.

The wording table (kernel-facts.md section 1.2) lives in `WORDINGS`, one row per printed
message: adding a kernel generation means adding rows, not code.
"""

import re
from enum import Enum
from typing import NamedTuple, Optional, Pattern, Tuple

EVENTS: Tuple[str, ...] = (
    "attention_button",
    "power_off_request",
    "power_on_request",
    "button_cancel",
    "card_present",
    "card_not_present",
    "link_up",
    "link_down",
    "power_fault",
    "no_adapter",
    "link_train_fail",
    "cmd_timeout",
    "irq_request_failed",
    "init_failed",
)
"""Exported `event` label values, in exposition order."""

_BDF = r"[0-9a-f]{4,}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]"
PREFIX = re.compile(
    # < 5.2: `pciehp 0000:00:1c.0:pcie04: ` (3.x, RHEL7 `pcie204`) or `...:pcie004: ` (4.x)
    rf"pciehp (?P<old>{_BDF}):pcie[0-9a-f]{{2,3}}: "
    # >= 5.2: `pcieport 0000:00:06.0: pciehp: `
    rf"|pcieport (?P<new>{_BDF}): pciehp: "
    # 2.6-era info(): `pciehp: ` without a device
    r"|(?<![\w:])pciehp: "
)
"""The pciehp line prefixes; the port BDF is group `old` or `new`."""

PROBE = re.compile(r"Slot #(?P<psn>\S+) AttnBtn[+-]")
"""pcie_init()'s capability line: one per port pciehp bound to."""


class Part(Enum):
    """Where a line stands in a message that the kernel splits over two lines."""

    WHOLE = "whole"
    FIRST = "first"
    SECOND = "second"


class Wording(NamedTuple):
    """One printed pciehp message: kernel generation, body regex, events it counts."""

    generation: str
    pattern: Pattern[str]
    events: Tuple[str, ...]
    part: Part = Part.WHOLE


def _w(generation: str, body: str, *events: str, part: Part = Part.WHOLE) -> Wording:
    return Wording(generation, re.compile(body + r"\s*$"), events, part)


_S = r"Slot\((?P<slot>[^)]*)\)"  # Slot(0-2)
_LS = r"slot\((?P<slot>[^)]*)\)"  # 3.10's lower-case slot(8)
_PS = r"PCI slot #(?P<slot>\S+)"  # 3.10's PCI slot #8

WORDINGS: Tuple[Wording, ...] = (
    # 3.10 / RHEL7 (and 2.6 with a trailing full stop)
    _w("3.10", rf"Button pressed on {_S}", "attention_button"),
    _w("3.10", rf"{_PS} - powering off due to button press\.?", "power_off_request"),
    _w("3.10", rf"{_PS} - powering on due to button press\.?", "power_on_request"),
    _w("3.10", rf"Button cancel on {_S}", "button_cancel", part=Part.FIRST),
    _w("3.10", rf"{_PS} - action canceled due to button press\.?", "button_cancel",
       part=Part.SECOND),
    _w("3.10", rf"Card present on {_S}", "card_present"),
    _w("3.10", rf"Card not present on {_S}", "card_not_present"),
    _w("3.10", rf"{_LS}: Link Up event", "link_up"),
    _w("3.10", rf"{_LS}: Link Down event", "link_down"),
    _w("3.10", rf"Power fault on {_S}", "power_fault"),
    _w("3.10", r"Power fault on slot (?P<slot>\S+)", "power_fault"),
    _w("3.10", rf"No adapter on {_LS}", "no_adapter"),
    _w("3.10", r"Cannot add device at [0-9a-f]{4,}:[0-9a-f]{2}:00", "link_train_fail"),
    _w("3.10", r"Command not completed in \d+ msec", "cmd_timeout"),
    # 4.x - 6.4
    _w("4.x", rf"{_S}: Attention button pressed", "attention_button"),
    _w("4.x", rf"{_S}: Powering off due to button press", "power_off_request"),
    # upstream prints this one without the colon
    _w("4.x", rf"{_S}:? Powering on due to button press", "power_on_request"),
    _w("4.x", rf"{_S}: Button cancel", "button_cancel", part=Part.FIRST),
    _w("4.x", rf"{_S}: Action canceled due to button press", "button_cancel", part=Part.SECOND),
    _w("4.x", rf"{_S}: Card present", "card_present"),
    _w("4.x", rf"{_S}: Card not present", "card_not_present"),
    _w("4.x", rf"{_S}: Link Up", "link_up"),
    _w("4.x", rf"{_S}: Link Down", "link_down"),
    _w("4.x", rf"{_S}: Power fault", "power_fault"),
    _w("4.x", rf"{_S}: No adapter", "no_adapter"),
    _w("4.x", rf"{_S}: No link", "link_train_fail"),
    _w("4.x", rf"{_S}: Cannot train link: status 0x[0-9a-f]+", "link_train_fail"),
    _w("4.x", rf"{_S}: No device found", "link_train_fail"),
    _w("4.x", r"Timeout on hotplug command 0x[0-9a-f]+(?: \(issued \d+ msec ago\))?",
       "cmd_timeout"),
    _w("4.x", r"Notification initialization failed \(-?\d+\)", "init_failed"),
    _w("4.x", r"Slot initialization failed(?: \(-?\d+\))?", "init_failed"),
    _w("4.x", r"Slot already registered by another hotplug driver", "init_failed"),
    # every generation
    _w("all", r"Failed to check link status", "link_train_fail"),
    _w("all", r"Cannot get irq \d+ for the hotplug controller", "irq_request_failed"),
    # >= 6.5: the button press has no line of its own, so each of these also counts one
    _w("6.5", rf"{_S}: Button press: will power off in \d+ sec",
       "power_off_request", "attention_button"),
    _w("6.5", rf"{_S}: Button press: will power on in \d+ sec",
       "power_on_request", "attention_button"),
    _w("6.5", rf"{_S}: Button press: canceling request to power (?:off|on)",
       "button_cancel", "attention_button"),
    _w("6.5", rf"{_S}: Button press: ignoring invalid state 0x[0-9a-f]+", "attention_button"),
)  # fmt: skip


class PciehpLine(NamedTuple):
    """What one pciehp line says: the port, the slot, and either events or a probe."""

    bdf: str
    slot: str
    events: Tuple[str, ...] = ()
    part: Part = Part.WHOLE
    probe: bool = False


def match_pciehp(message: str) -> Optional[PciehpLine]:
    """Classify one kernel message; None unless it is a known pciehp event or probe line."""
    prefix = PREFIX.search(message)
    if prefix is None:
        return None
    bdf = prefix["old"] or prefix["new"] or ""
    body = message[prefix.end() :]
    probe = PROBE.match(body)
    if probe:
        return PciehpLine(bdf, "", probe=True) if bdf else None
    for wording in WORDINGS:
        m = wording.pattern.match(body)
        if m:
            slot = m.groupdict().get("slot") or ""
            return PciehpLine(bdf, slot, wording.events, wording.part)
    return None
