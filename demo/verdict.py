"""Run the real exporter (`--once`) on each bundled capture and print a verdict per PCIe port."""

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
    """Per-port facts and guest-wide facts from exposition text."""
    ports: dict[str, dict[str, object]] = defaultdict(dict)
    guest: dict[str, str] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            lb = s.labels
            key = "{}:{}:{}.{}".format(
                lb.get("segment"), lb.get("bus"), lb.get("device"), lb.get("function")
            )
            name = s.name.removeprefix("pciehp_")
            if name == "port_hotplug_handler" and s.value == 1:
                ports[key]["handler"] = lb["handler"]
            elif name in (
                "port_hotplug_capable",
                "port_service_bound",
                "port_irq_registered",
                "slot_button_pending",
                "slot_interrupt_enabled",
            ):
                ports[key][name] = int(s.value)
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
    handler = p.get("handler", "none")
    if not p.get("port_hotplug_capable"):
        return "not hotplug-capable"
    if handler == "none":
        stuck = p.get("slot_button_pending") == 1 and p.get("slot_interrupt_enabled") == 0
        return "CANNOT hot-unplug" + (
            ": unplug request stuck (button pending, no driver)"
            if stuck
            else ": no hotplug driver bound"
        )
    if handler == "pciehp" and not p.get("port_irq_registered"):
        return "pciehp bound but its IRQ is missing"
    return f"can hot-unplug ({handler})"


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
            if not ports:
                print("   no PCIe root/downstream ports (ACPI hotplug on the root bus)")
            for addr in sorted(ports):
                print(f"   {addr}  {verdict(ports[addr])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
