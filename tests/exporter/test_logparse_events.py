"""pciehp wordings of every kernel generation (kernel-facts.md section 1.2), one case each."""

from __future__ import annotations

from collections import Counter

import pytest

from exporter.logparse import EVENTS, WORDINGS, LogState

# Prefixes per generation: (prefix, port BDF it names).
PREFIXES = {
    "3.10": [
        ("pciehp 0000:00:1c.0:pcie04: ", "0000:00:1c.0"),  # mainline 3.x root port
        ("pciehp 0000:02:08.0:pcie24: ", "0000:02:08.0"),  # mainline 3.x downstream port
        ("pciehp 0000:02:05.0:pcie204: ", "0000:02:05.0"),  # RHEL7 downstream port
    ],
    "4.x": [
        ("pciehp 0000:00:05.0:pcie004: ", "0000:00:05.0"),  # before 5.2
        ("pcieport 0000:00:06.0: pciehp: ", "0000:00:06.0"),  # 5.2 and later
    ],
    "6.5": [("pcieport 0000:00:02.2: pciehp: ", "0000:00:02.2")],
}
PREFIXES["all"] = PREFIXES["3.10"] + PREFIXES["4.x"]

# (generation, message body, slot name in the key, events counted)
WORDING_CASES = [
    ("3.10", "Button pressed on Slot(8)", "8", ["attention_button"]),
    ("3.10", "PCI slot #8 - powering off due to button press", "8", ["power_off_request"]),
    ("3.10", "PCI slot #8 - powering off due to button press.", "8", ["power_off_request"]),
    ("3.10", "PCI slot #8 - powering on due to button press", "8", ["power_on_request"]),
    ("3.10", "Button cancel on Slot(8)", "8", ["button_cancel"]),
    ("3.10", "PCI slot #8 - action canceled due to button press", "8", ["button_cancel"]),
    ("3.10", "Card present on Slot(8)", "8", ["card_present"]),
    ("3.10", "Card not present on Slot(8)", "8", ["card_not_present"]),
    ("3.10", "slot(8): Link Up event", "8", ["link_up"]),
    ("3.10", "slot(8): Link Down event", "8", ["link_down"]),
    ("3.10", "Power fault on Slot(8)", "8", ["power_fault"]),
    ("3.10", "Power fault on slot 8", "8", ["power_fault"]),
    ("3.10", "No adapter on slot(8)", "8", ["no_adapter"]),
    ("3.10", "Cannot add device at 0000:0b:00", "", ["link_train_fail"]),
    ("3.10", "Command not completed in 1000 msec", "", ["cmd_timeout"]),
    ("4.x", "Slot(0-3): Attention button pressed", "0-3", ["attention_button"]),
    ("4.x", "Slot(0-3): Powering off due to button press", "0-3", ["power_off_request"]),
    ("4.x", "Slot(0-3) Powering on due to button press", "0-3", ["power_on_request"]),
    ("4.x", "Slot(0-3): Powering on due to button press", "0-3", ["power_on_request"]),
    ("4.x", "Slot(0-3): Button cancel", "0-3", ["button_cancel"]),
    ("4.x", "Slot(0-3): Action canceled due to button press", "0-3", ["button_cancel"]),
    ("4.x", "Slot(0-3): Card present", "0-3", ["card_present"]),
    ("4.x", "Slot(0-3): Card not present", "0-3", ["card_not_present"]),
    ("4.x", "Slot(0-3): Link Up", "0-3", ["link_up"]),
    ("4.x", "Slot(0-3): Link Down", "0-3", ["link_down"]),
    ("4.x", "Slot(0-3): Power fault", "0-3", ["power_fault"]),
    ("4.x", "Slot(0-3): No adapter", "0-3", ["no_adapter"]),
    ("4.x", "Slot(0-3): No link", "0-3", ["link_train_fail"]),
    ("4.x", "Slot(0-3): Cannot train link: status 0x2001", "0-3", ["link_train_fail"]),
    ("4.x", "Slot(0-3): No device found", "0-3", ["link_train_fail"]),
    ("4.x", "Timeout on hotplug command 0x1431 (issued 2016 msec ago)", "", ["cmd_timeout"]),
    ("4.x", "Timeout on hotplug command 0x1431", "", ["cmd_timeout"]),
    ("4.x", "Notification initialization failed (-16)", "", ["init_failed"]),
    ("4.x", "Slot initialization failed (-16)", "", ["init_failed"]),
    ("4.x", "Slot initialization failed", "", ["init_failed"]),
    ("4.x", "Slot already registered by another hotplug driver", "", ["init_failed"]),
    ("all", "Failed to check link status", "", ["link_train_fail"]),
    ("all", "Cannot get irq 24 for the hotplug controller", "", ["irq_request_failed"]),
    ("6.5", "Slot(0-2): Button press: will power off in 5 sec", "0-2",
     ["power_off_request", "attention_button"]),
    ("6.5", "Slot(0-2): Button press: will power on in 5 sec", "0-2",
     ["power_on_request", "attention_button"]),
    ("6.5", "Slot(0-2): Button press: canceling request to power off", "0-2",
     ["button_cancel", "attention_button"]),
    ("6.5", "Slot(0-2): Button press: canceling request to power on", "0-2",
     ["button_cancel", "attention_button"]),
    ("6.5", "Slot(0-2): Button press: ignoring invalid state 0x3", "0-2", ["attention_button"]),
    # >= 6.5 keeps the 4.19+ wording for everything but the button
    ("6.5", "Slot(0-2): Link Down", "0-2", ["link_down"]),
    ("6.5", "Slot(0-2): Card not present", "0-2", ["card_not_present"]),
]  # fmt: skip

CASES = [
    pytest.param(prefix + body, bdf, slot, events, id=f"{gen}|{prefix.split()[0]}|{body}")
    for gen, body, slot, events in WORDING_CASES
    for prefix, bdf in PREFIXES[gen]
]


def counts_of(*lines: str) -> dict[tuple[str, str], dict[str, int]]:
    """The non-zero event counts after feeding the lines."""
    state = LogState()
    state.feed_lines(list(lines))
    return {k: {e: n for e, n in v.items() if n} for k, v in state.events().items()}


@pytest.mark.parametrize(("line", "bdf", "slot", "events"), CASES)
def test_each_wording_counts_its_events(line: str, bdf: str, slot: str, events: list[str]) -> None:
    assert counts_of(line) == {(bdf, slot): dict(Counter(events))}


def test_every_wording_and_event_has_a_case() -> None:
    for wording in WORDINGS:
        assert any(
            gen == wording.generation and wording.pattern.match(body)
            for gen, body, _, _ in WORDING_CASES
        ), (wording.generation, wording.pattern.pattern)
    covered = {e for _, _, _, events in WORDING_CASES for e in events}
    assert covered == set(EVENTS)


def test_every_key_lists_all_events_zero_filled() -> None:
    state = LogState()
    state.feed_line("pcieport 0000:00:02.0: pciehp: Slot(1): Link Up")
    assert list(state.events()[("0000:00:02.0", "1")]) == list(EVENTS)


def test_line_without_device_keeps_the_slot_for_sysfs_mapping() -> None:
    # 2.6-era info() lines carry no device, only `pciehp: `
    assert counts_of("pciehp: Button pressed on Slot(3)") == {("", "3"): {"attention_button": 1}}


@pytest.mark.parametrize(
    "first, second",
    [
        ("Button cancel on Slot(8)", "PCI slot #8 - action canceled due to button press"),
        ("Slot(1): Button cancel", "Slot(1): Action canceled due to button press"),
    ],
    ids=["3.10", "4.x"],
)
def test_two_line_cancel_counts_once(first: str, second: str) -> None:
    p = "pciehp 0000:00:1c.0:pcie04: "
    one = counts_of(p + first, p + second)
    assert [c["button_cancel"] for c in one.values()] == [1]
    two = counts_of(p + first, p + second, p + first, p + second)
    assert [c["button_cancel"] for c in two.values()] == [2]


def test_cancel_pairs_of_two_slots_interleaved() -> None:
    p = "pcieport 0000:00:02.0: pciehp: "
    q = "pcieport 0000:00:02.1: pciehp: "
    got = counts_of(
        p + "Slot(1): Button cancel",
        q + "Slot(2): Button cancel",
        p + "Slot(1): Action canceled due to button press",
        q + "Slot(2): Action canceled due to button press",
    )
    assert got == {
        ("0000:00:02.0", "1"): {"button_cancel": 1},
        ("0000:00:02.1", "2"): {"button_cancel": 1},
    }


NOT_EVENTS = [
    "Link Up event ignored on slot(8): already powering on",
    "Link Down event queued on slot(8): currently getting powered on",
    "Slot(1): Link Up event ignored; already powering on",
    "Slot(1): Link Down ignored (recovered by DPC)",
    "Slot(1): Link Down/Up ignored",
    "Slot(1): Button ignored",
    "Button ignore on Slot(8)",
    "Slot(1): Ignoring invalid state 0x1",
    "Slot(1): Invalid state 0x1",
    "Not a valid state on slot(8)",
    "Power fault cleared on Slot(8)",
    "Power fault bit 0 set",
    "Slot(1): Already enabled",
    "Slot 1 is already in powering on state",
    "Slot(1): Latch open",
    "Latch close on Slot(8)",
    "pending interrupts 0x0009 from Slot Status",
    "pciehp_get_power_status: SLOTCTRL 80 value read 1431",
    "Slot(1): Card present and more",
]


@pytest.mark.parametrize("body", NOT_EVENTS)
def test_other_pciehp_lines_count_nothing(body: str) -> None:
    assert counts_of("pcieport 0000:00:02.0: pciehp: " + body) == {}
    assert counts_of("pciehp 0000:02:08.0:pcie24: " + body) == {}


@pytest.mark.parametrize(
    "line",
    [
        "nvme 0000:01:00.0: Slot(1): Link Up",
        "shpchp 0000:00:1e.0: Button pressed on Slot(1)",
        "Command line: console=ttyS0 pciehp.pciehp_debug=1",
        "pcieport 0000:00:02.0: AER: Slot(1): Link Up",
        "xpciehp: Slot(1): Link Up",
    ],
)
def test_event_wording_without_pciehp_prefix_counts_nothing(line: str) -> None:
    assert counts_of(line) == {}


@pytest.mark.parametrize(
    "line, bdf",
    [
        ("pciehp 0000:00:1c.0:pcie04: Slot #8 AttnBtn+ AttnInd+ PwrInd+ PwrCtrl+ MRL- "
         "Interlock- NoCompl- LLActRep+", "0000:00:1c.0"),
        ("pciehp 0000:00:05.0:pcie004: Slot #0 AttnBtn+ PwrCtrl+ MRL- AttnInd+ PwrInd+ "
         "HotPlug+ Surprise+ Interlock+ NoCompl- LLActRep+", "0000:00:05.0"),
        ("pcieport 0000:00:02.0: pciehp: Slot #1 AttnBtn+ PwrCtrl+ MRL- AttnInd+ PwrInd+ "
         "HotPlug+ Surprise+ Interlock+ NoCompl- IbPresDis- LLActRep+", "0000:00:02.0"),
        ("pcieport 10000:e0:06.0: pciehp: Slot #0 AttnBtn- PwrCtrl- MRL- AttnInd- PwrInd- "
         "HotPlug+ Surprise- Interlock- NoCompl+ IbPresDis- LLActRep+ (with Cmd Compl erratum)",
         "10000:e0:06.0"),
    ],
    ids=["3.10", "4.x", "5.x", "vmd-domain"],
)  # fmt: skip
def test_probe_line_marks_port_bound(line: str, bdf: str) -> None:
    state = LogState()
    state.feed_line(line)
    assert state.bound_ports() == {bdf}
    assert state.events() == {}


def test_new_boot_forgets_boot_facts_but_keeps_counters() -> None:
    state = LogState()
    state.feed_lines(
        [
            "pcieport 0000:00:02.0: pciehp: Slot #1 AttnBtn+ PwrCtrl+ MRL- AttnInd+ PwrInd+",
            "PCIe ASPM is disabled",
            "acpi PNP0A08:00: _OSC: OS now controls [PCIeHotplug PME AER PCIeCapability]",
            "pcieport 0000:00:02.0: pciehp: Slot(1): Link Up",
            "Linux version 6.1.0-56-amd64 (debian-kernel@lists.debian.org)",
        ]
    )
    assert state.bound_ports() == frozenset()
    assert state.flags() == frozenset()
    assert state.osc() == {}
    assert state.events()[("0000:00:02.0", "1")]["link_up"] == 1
