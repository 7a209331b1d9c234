"""Run the real exporter (`--once`) on each bundled capture and print the verdict it publishes per
PCIe port (pciehp_port_unplug_verdict), not one derived here."""

from __future__ import annotations

import subprocess
import sys
from collections import defaultdict
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from demo.captures import GUESTS, tree_args

SCENARIOS = ("q35_normal", "q35_aspm_off", "q35_acpihp_normal", "i440fx_normal")


def scrape(tree: Path) -> str:
    """One `pciehp-exporter --once` over a capture tree, as a subprocess (the real CLI)."""
    argv = [sys.executable, "-m", "exporter.cli", "--once", *tree_args(tree)]
    return subprocess.run(argv, capture_output=True, check=True, text=True).stdout


def port_facts(text: str) -> tuple[dict[str, dict[str, object]], dict[str, str]]:
    """Per-port verdicts and guest-wide facts, as the exporter published them in its text."""
    ports: dict[str, dict[str, object]] = defaultdict(dict)
    guest: dict[str, str] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            lb = s.labels
            key = "{}:{}:{}.{}".format(
                lb.get("segment"), lb.get("bus"), lb.get("device"), lb.get("function")
            )
            name = s.name.removeprefix("pciehp_")
            if name == "port_unplug_verdict" and s.value == 1:
                ports[key].update(verdict=lb["verdict"], reason=lb["reason"])
            elif name in ("slot_button_pending", "slot_unplug_unanswered"):
                ports[key][name] = int(s.value)
            elif name == "fact_unknown" and s.value == 1:
                guest["unknown"] = guest.get("unknown", "") + f" {lb['fact']} ({lb['reason']})"
            elif name == "osc_info":
                guest["osc"] = lb["outcome"] + (
                    f" (missing {lb['missing_support']})" if lb["missing_support"] else ""
                )
            elif name == "kernel_param":
                guest.setdefault("params", "")
                guest["params"] += f" {lb['param']}={lb['value']}"
            elif name == "guest_info":
                guest["machine"] = lb["machine"]
    return ports, guest


def verdict(p: dict[str, object]) -> str:
    """One line for a port: the exporter's verdict and reason, and a pending unplug if any."""
    line = f"{p['verdict']} ({p['reason']})"
    if p.get("slot_unplug_unanswered") == 1:
        line += ": unplug request unanswered in the kernel log"
    elif p.get("slot_button_pending") == 1:
        line += ": unplug request pending (attention button latched)"
    return line


def main() -> int:
    for scenario in SCENARIOS:
        for phase, tree in (
            ("boot", GUESTS / scenario / "tree"),
            ("after device_del", GUESTS / scenario / "phases/after_unplug/tree"),
        ):
            ports, guest = port_facts(scrape(tree))
            print(
                f"== {scenario} ({phase}): machine={guest.get('machine')} "
                f"_OSC={guest.get('osc')} params:{guest.get('params', ' none')}"
            )
            judged = {a: p for a, p in ports.items() if "verdict" in p}
            if not judged:
                print("   no PCIe port to judge (ACPI hotplug on the root bus)")
            for addr in sorted(judged):
                print(f"   {addr}  {verdict(judged[addr])}")
            if guest.get("unknown"):
                print(f"   facts the exporter could not read:{guest['unknown']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
