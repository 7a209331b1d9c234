"""Paths to the real guest captures the demo and the tests run the exporter on.

They are the shared fixtures copied into tests/data/guests and the lab's captures; `demo/guests`
links there in a checkout, and the wheel carries the files themselves, so the demo runs from an
installed wheel."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

GUESTS = Path(__file__).resolve().parent / "guests"
# the shared fixtures' four, then the lab's captures (tests/data/guests/README.md)
SCENARIOS = (
    "q35_normal",
    "q35_aspm_off",
    "q35_acpihp_normal",
    "i440fx_normal",
    "q35_nomsi",
    "q35_pcie_ports_compat",
    "q35_poll_mode",
    "q35_aspm_off_ports_native",
    "q35_acpihp_aspm_off",
    "i440fx_aspm_off",
    "q35_switch_normal",
    "bullseye_q35_normal",
    "bullseye_q35_aspm_off",
    "trixie_q35_normal",
    "trixie_q35_aspm_off",
    "trixie_q35_acpihp_normal",
)
PHASES = ("boot", "after_unplug", "after_plug")


@dataclass(frozen=True)
class Capture:
    """One capture tree: a guest scenario at one phase."""

    scenario: str
    phase: str = "boot"

    @property
    def tree(self) -> Path:
        base = GUESTS / self.scenario
        return base / "tree" if self.phase == "boot" else base / "phases" / self.phase / "tree"

    @property
    def procfs(self) -> Path:
        return self.tree / "proc"

    @property
    def sysfs(self) -> Path:
        return self.tree / "sys"

    @property
    def kmsg(self) -> Path:
        return self.tree / "kmsg.txt"

    @property
    def dmesg(self) -> Path:
        return self.tree / "dmesg.txt"

    def result(self) -> dict:
        """The scenario's result.json: did DEVICE_DELETED come, and when."""
        return json.loads((GUESTS / self.scenario / "result.json").read_text())

    def exporter_args(self) -> list[str]:
        """The exporter's path flags for this tree."""
        return tree_args(self.tree)


def tree_args(tree: Path, kernel_log: Path | None = None) -> list[str]:
    """The exporter's path flags for a capture-shaped tree (proc/, sys/, kmsg.txt)."""
    return [
        "--path.procfs",
        str(tree / "proc"),
        "--path.sysfs",
        str(tree / "sys"),
        "--path.rootfs",
        str(tree),
        "--kernel-log",
        str(kernel_log or tree / "kmsg.txt"),
    ]


ALL = [Capture(s, p) for s in SCENARIOS for p in PHASES]


def materialize_links(tree: Path) -> int:
    """Turn the captures' flattened sysfs links (files holding `../target`) into real symlinks.

    Gives a tree that reads like a live sysfs. Returns how many links were made.
    """
    made = 0
    for p in sorted(tree.rglob("*")):
        if not p.is_file() or p.is_symlink() or p.stat().st_size >= 4096:
            continue
        try:
            text = p.read_text().strip()
        except UnicodeDecodeError:
            continue
        if text.startswith("../") and "\n" not in text:
            p.unlink()
            p.symlink_to(text)
            made += 1
    return made
