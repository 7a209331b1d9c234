"""Boot facts survive a wrapped ring buffer: the state file keyed by boot_id, and the command line.

Every capture is scraped with its whole log and a state file, then with the log cut to its last
25 lines (the boot's `_OSC` lines gone): `osc_info` must say the same, from the state file.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.cli import build_registry, parse_args
from exporter.cli import scrape as scrape_bytes
from tests.exporter.conftest import Samples, exporter_args, parse_samples, select, value
from tests.support.captures import ALL, Capture, cut_log, with_boot_id

BOOT_A = "0c4d5d8e-2f27-4a39-9b43-0d3c1d0e0a11"
BOOT_B = "7e1f0a52-8d55-4c47-a1f2-5b9f8f2c6b22"
OSC = "pciehp_osc_info"


def run(tree: Path, state: Path | None, kernel_log: Path | None = None) -> Samples:
    """One in-process scrape of a fresh exporter (as a --textfile run is), with a state file."""
    argv = exporter_args(tree, kernel_log)
    if state is not None:
        argv += ["--collector.kernel_log.state-file", str(state)]
    return parse_samples(scrape_bytes(build_registry(parse_args(argv))).decode())


def osc(samples: Samples) -> set[tuple[tuple[str, str], ...]]:
    """Every osc_info label set, without `source`."""
    return {tuple(sorted((k, v) for k, v in lbl if k != "source")) for lbl in select(samples, OSC)}


def sources(samples: Samples) -> set[str]:
    return {dict(lbl)["source"] for lbl in select(samples, OSC)}


def without(samples: Samples, *names: str) -> Samples:
    """The samples except those of `names` and the per-collector durations."""
    skip = {*names, "pciehp_collector_duration_seconds"}
    return {k: v for k, v in samples.items() if k[0] not in skip}


@pytest.mark.parametrize("capture", ALL, ids=str)
def test_state_file_keeps_osc_when_the_log_wrapped(tree_copy, tmp_path, capture):
    tree = with_boot_id(tree_copy(capture), BOOT_A)
    state = tmp_path / "boot.json"
    full = run(tree, state)
    assert sources(full) == {"log"} and state.is_file()
    cut = run(tree, state, cut_log(tree))
    assert "_OSC" not in (tree / "kmsg-cut.txt").read_text()
    assert sources(cut) == {"state"}
    assert osc(cut) == osc(full)
    assert select(cut, "pciehp_osc_control") == select(full, "pciehp_osc_control")
    assert value(cut, "pciehp_collector_success", collector="kernel_log") == 1


@pytest.mark.parametrize(
    "scenario, expected",
    [
        # pcie_aspm=off decides the outcome on its own
        ("q35_aspm_off", ("not_requested", "ASPM ClockPM", "cmdline")),
        # nothing on the command line decides it: unknown, said so
        ("q35_normal", ("unknown", "", "unknown")),
        ("q35_acpihp_normal", ("unknown", "", "unknown")),
    ],
)
def test_without_state_the_command_line_decides_or_unknown(tree_copy, scenario, expected):
    tree = tree_copy(Capture(scenario))
    s = run(tree, None, cut_log(tree))
    ((labels, v),) = select(s, OSC).items()
    assert v == 1
    d = dict(labels)
    assert (d["outcome"], d["missing_support"], d["source"]) == expected
    assert select(s, "pciehp_osc_control") == {}


def test_nomsi_and_compat_from_the_command_line(tree_copy):
    tree = tree_copy(Capture("q35_normal"))
    log = cut_log(tree)
    for cmdline, missing in (("ro pci=noaer,nomsi", "MSI"), ("pcie_ports=compat", "")):
        (tree / "proc/cmdline").write_text(cmdline + "\n")
        ((labels, _),) = select(run(tree, None, log), OSC).items()
        d = dict(labels)
        assert (d["outcome"], d["missing_support"], d["source"]) == (
            "not_requested",
            missing,
            "cmdline",
        )


def test_the_log_wins_over_the_command_line(tree_copy):
    """With its `_OSC` lines present the log is the source, even where the cmdline implies it."""
    s = run(tree_copy(Capture("q35_aspm_off")), None)
    assert sources(s) == {"log"}
    assert osc(s) == {
        (
            ("bridge", "PNP0A08:00"),
            ("denied", ""),
            ("missing_support", "ASPM ClockPM"),
            ("outcome", "not_requested"),
        )
    }


def test_a_new_boot_invalidates_the_state_file(tree_copy, tmp_path):
    tree = with_boot_id(tree_copy(Capture("q35_normal")), BOOT_A)
    state = tmp_path / "boot.json"
    run(tree, state)
    with_boot_id(tree, BOOT_B)
    s = run(tree, state, cut_log(tree))
    assert sources(s) == {"unknown"}
    assert value(s, "pciehp_collector_success", collector="kernel_log") == 1
    # the new boot's log, once seen, replaces the old boot's facts
    run(tree, state)
    assert BOOT_B in state.read_text() and BOOT_A not in state.read_text()


@pytest.mark.parametrize(
    "content",
    [
        b"\x00\xff garbage",
        b'{"version": 1, "boot_id": "' + BOOT_A.encode() + b'", "osc": []}',
        b'{"version": 1, "boot_id": "' + BOOT_A.encode() + b'", "osc": {"X": {"outcome": 3}}}',
        b"[1, 2, 3]",
        b"{" * 100_000,
        b"[" * 100_000,
    ],
)
def test_a_corrupt_state_file_fails_only_that_bit(tree_copy, tmp_path, content):
    tree = with_boot_id(tree_copy(Capture("q35_aspm_off")), BOOT_A)
    log = cut_log(tree)
    plain = run(tree, None, log)
    state = tmp_path / "boot.json"
    state.write_bytes(content)
    s = run(tree, state, log)
    assert value(s, "pciehp_collector_success", collector="kernel_log") == 0
    # nothing else lost: every other series is what an exporter without a state file says
    assert without(s, "pciehp_collector_success") == without(plain, "pciehp_collector_success")
    assert sources(s) == {"cmdline"}
    # the full log rewrites it, and the cut log then reads it again
    assert value(run(tree, state), "pciehp_collector_success", collector="kernel_log") == 1
    again = run(tree, state, log)
    assert sources(again) == {"state"}
    assert value(again, "pciehp_collector_success", collector="kernel_log") == 1


def test_an_unwritable_state_file_fails_only_that_bit(tree_copy, tmp_path):
    tree = with_boot_id(tree_copy(Capture("q35_normal")), BOOT_A)
    s = run(tree, tmp_path / "missing-dir" / "boot.json")
    assert value(s, "pciehp_collector_success", collector="kernel_log") == 0
    assert sources(s) == {"log"}
    assert without(s, "pciehp_collector_success") == without(
        run(tree, None), "pciehp_collector_success"
    )


def test_no_boot_id_no_state(tree_copy, tmp_path):
    """A procfs without boot_id cannot key the file: reported, and the log still serves."""
    tree = tree_copy(Capture("q35_normal"))
    state = tmp_path / "boot.json"
    s = run(tree, state)
    assert value(s, "pciehp_collector_success", collector="kernel_log") == 0
    assert sources(s) == {"log"} and not state.exists()
