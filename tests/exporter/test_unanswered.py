"""pciehp_slot_unplug_unanswered: state from the order of log lines, not from event totals.

Real captures (with today's press appended as the kernel prints it), the wordings of every kernel
generation, reboots, removals seen in sysfs, and hostile input.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.logparse.state import LogState
from tests.exporter.conftest import port, select, value
from tests.support.captures import Capture, kmsg_with

METRIC = "pciehp_slot_unplug_unanswered"
Q35_PORTS = [f"0000:00:02.{f}" for f in range(8)] + [f"0000:00:03.{f}" for f in range(4)]
NEW = "pcieport 0000:00:02.{fn}: pciehp: "  # >= 5.2 prefix
OLD = "pciehp 0000:00:02.{fn}:pcie004: "  # 4.x prefix
RHEL7 = "pciehp 0000:00:02.{fn}:pcie04: "  # 3.10 prefix


def unanswered(samples) -> dict[str, float]:
    """BDF -> value of every unplug_unanswered series."""
    out = {}
    for labels, v in select(samples, METRIC).items():
        d = dict(labels)
        out[f"{d['segment']}:{d['bus']}:{d['device']}.{d['function']}"] = v
    return out


def with_lines(tree: Path, *messages: str) -> Path:
    """The tree with kernel messages appended to its kmsg.txt as later /dev/kmsg records."""
    kmsg = tree / "kmsg.txt"
    kmsg_with(kmsg, kmsg, messages)
    return tree


@pytest.mark.parametrize("phase", ["boot", "after_unplug", "after_plug"])
def test_captures_have_nothing_unanswered(scrape, phase):
    """The native guest answered every press; the others' logs witness no press at all."""
    s = scrape(Capture("q35_normal", phase))
    assert unanswered(s) == dict.fromkeys(Q35_PORTS, 0.0)
    for scenario in ("q35_aspm_off", "q35_acpihp_normal", "i440fx_normal"):
        assert unanswered(scrape(Capture(scenario, phase))) == {}, scenario


def test_answered_yesterday_unanswered_today(scrape, tree_copy):
    """The guest answered the unplug of slot 1 and the plug of slot 2 earlier in its log; today's
    press on slot 2 (its disk still present) has no answer: 1 on that port only, whatever the
    guest's totals say (2 presses, 1 power-off, 1 power-on before today's)."""
    tree = with_lines(
        tree_copy(Capture("q35_normal", "after_plug")),
        NEW.format(fn=1) + "Slot(2): Attention button pressed",
    )
    s = scrape(tree)
    assert unanswered(s) == {a: float(a == "0000:00:02.1") for a in Q35_PORTS}
    presses = select(s, "pciehp_events_total", event="attention_button")
    assert sum(presses.values()) == 3
    assert value(s, "pciehp_events_total", event="power_off_request", **port("0000:00:02.0")) == 1


def test_answer_after_the_press_clears_it(scrape, tree_copy):
    tree = with_lines(
        tree_copy(Capture("q35_normal")),
        NEW.format(fn=1) + "Slot(2): Attention button pressed",
        NEW.format(fn=1) + "Slot(2): Powering off due to button press",
    )
    assert set(unanswered(scrape(tree)).values()) == {0.0}


def test_a_removed_card_answers_the_press(scrape, tree_copy):
    """After the plug phase slot 1's adapter reads 0: its press was answered by the removal."""
    tree = with_lines(
        tree_copy(Capture("q35_normal", "after_plug")),
        NEW.format(fn=0) + "Slot(1): Attention button pressed",
        NEW.format(fn=1) + "Slot(2): Attention button pressed",
    )
    assert (tree / "sys/bus/pci/slots/1/adapter").read_text().strip() == "0"
    got = unanswered(scrape(tree))
    assert (got["0000:00:02.0"], got["0000:00:02.1"]) == (0.0, 1.0)


def test_a_reboot_completes_pending_unplugs(scrape, tree_copy):
    tree = tree_copy(Capture("q35_normal"))
    boot = (tree / "kmsg.txt").read_text().splitlines()
    messages = [NEW.format(fn=1) + "Slot(2): Attention button pressed"]
    messages += [line.split(";", 1)[1] for line in boot if line[:1].isdigit()]
    assert set(unanswered(scrape(with_lines(tree, *messages))).values()) == {0.0}


def test_no_series_when_the_log_is_unreadable(scrape, tree_copy):
    tree = tree_copy(Capture("q35_normal"))
    s = scrape(tree, kernel_log=tree / "missing.txt")
    assert unanswered(s) == {}
    assert value(s, "pciehp_collector_success", collector="kernel_log") == 0


def state(*messages: str) -> dict[tuple[str, str], bool]:
    """(port, slot) -> unanswered after feeding the messages as dmesg lines."""
    st = LogState()
    st.feed_lines([f"[   {i}.000000] {m}" for i, m in enumerate(messages, 1)])
    return {k: pending for k, (_, pending) in st.last_requests().items()}


KEY = ("0000:00:02.1", "2")
PRESS = "Slot(2): Attention button pressed"
OFF = "Slot(2): Powering off due to button press"


@pytest.mark.parametrize(
    "messages, pending",
    [
        # 4.x - 6.4 (>= 5.2 prefix and the older one)
        ([NEW + PRESS], True),
        ([NEW + PRESS, NEW + OFF], False),
        ([NEW + PRESS, NEW + "Slot(2) Powering on due to button press"], False),
        ([OLD + PRESS, OLD + OFF], False),
        ([OLD + PRESS, OLD + "Slot(2): Button cancel",
          OLD + "Slot(2): Action canceled due to button press"], False),
        # pressed again while powering off: ignored, so that press stays unanswered
        ([NEW + PRESS, NEW + OFF, NEW + PRESS, NEW + "Slot(2): Ignoring invalid state 0x3"], True),
        # a surprise removal answers too
        ([NEW + PRESS, NEW + "Slot(2): Card not present"], False),
        # >= 6.5: the press has no line of its own, the answer is the press line
        ([NEW + "Slot(2): Button press: will power off in 5 sec"], False),
        ([NEW + "Slot(2): Button press: will power off in 5 sec",
          NEW + "Slot(2): Button press: ignoring invalid state 0x1"], True),
        # 3.10 / RHEL7
        ([RHEL7 + "Button pressed on Slot(2)"], True),
        ([RHEL7 + "Button pressed on Slot(2)",
          RHEL7 + "PCI slot #2 - powering off due to button press"], False),
    ],
)  # fmt: skip
def test_every_generation(messages, pending):
    assert state(*(m.format(fn=1) for m in messages)) == {KEY: pending}


def test_order_is_per_slot():
    """An answer on another slot does not answer this one; events that are neither leave it."""
    got = state(
        NEW.format(fn=1) + "Slot(2): Attention button pressed",
        NEW.format(fn=0) + "Slot(1): Attention button pressed",
        NEW.format(fn=0) + "Slot(1): Powering off due to button press",
        NEW.format(fn=1) + "Slot(2): Link Up",
        NEW.format(fn=1) + "Slot(2): Power fault",
    )
    assert got == {KEY: True, ("0000:00:02.0", "1"): False}


@pytest.mark.parametrize(
    "line",
    [
        "pcieport 0000:00:02.1: pciehp: Slot(2): Attention button pressed and more",
        "pcieport 0000:00:02.1: pciehp: Slot(2 Attention button pressed",
        "xpcieport 0000:00:02.1 pciehp Slot(2): Attention button pressed",
        "pcieport 0000:00:02.1: pciehp: " + "Slot(2): Attention button pressed" * 1000,
        "\x00\x01pcieport 0000:00:02.1: pciehp: Slot(2):\ud800 Attention button pressed",
        "Dec  2 02:00:00 vm1 prog[7]: pcieport 0000:00:02.1: pciehp: " + PRESS,
        "12,99,0,-;pcieport 0000:00:02.1: pciehp: Slot(2): Attention button pressed\n duplicate",
    ],
)
def test_hostile_lines_press_nothing(line):
    """Malformed, overlong, binary and other programs' lines; raw, as a file would hold them."""
    st = LogState()
    st.feed_lines(["6,99,0,-;pcieport 0000:00:02.1: pciehp: Slot(2): Card present", line])
    assert {k: p for k, (_, p) in st.last_requests().items()} == {}
