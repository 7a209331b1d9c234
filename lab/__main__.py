"""`python -m lab boot|capture`: boot a lab guest, or make a capture for tests/data/guests."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from lab.capture import capture_scenario
from lab.kernels import SERIES, fetch_kernel
from lab.qemu import MACHINES, Guest, GuestSpec, LabError

GUESTS = Path(__file__).resolve().parent.parent / "tests" / "data" / "guests"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The boot and capture subcommands."""
    p = argparse.ArgumentParser(prog="python -m lab", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("boot", "capture"):
        s = sub.add_parser(name)
        if name == "capture":
            s.add_argument("name", help="scenario name (the folder under tests/data/guests)")
            s.add_argument("--out", type=Path, help="default: tests/data/guests/NAME")
        s.add_argument("--series", choices=sorted(SERIES), default="bookworm")
        s.add_argument("--append", default="", help="extra kernel command line")
        s.add_argument("--machine", choices=MACHINES, default="q35-native")
    boot = sub.choices["boot"]
    boot.add_argument("--capture", type=Path, help="write the guest view tree here")
    boot.add_argument("--unplug", action="store_true", help="device_del the disk, report it")
    boot.add_argument("--hold", action="store_true", help="keep the guest running until Ctrl-C")
    return p.parse_args(argv)


def boot(args: argparse.Namespace) -> int:
    """Boot, optionally capture and unplug, print what happened as JSON."""
    spec = GuestSpec(fetch_kernel(args.series), append=args.append, machine=args.machine)
    report: dict = {"machine": args.machine, "cmdline": spec.cmdline}
    with Guest(spec) as g:
        print(f"QMP (second monitor): {g.qmp_socket}", file=sys.stderr)
        report["ready_s"] = round(g.wait_ready(300), 2)
        if args.capture:
            report["capture"] = str(g.capture(args.capture))
        if args.unplug:
            t0 = time.monotonic()
            report["device_deleted"] = g.device_del(g.disk_id or "", 30)
            report["unplug_s"] = round(time.monotonic() - t0, 2)
        print(json.dumps(report))
        if args.hold:
            try:
                while g.proc is not None and g.proc.poll() is None:
                    time.sleep(1)
            except KeyboardInterrupt:
                pass
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m lab`."""
    args = parse_args(argv)
    try:
        if args.cmd == "boot":
            return boot(args)
        out = args.out or GUESTS / args.name
        result = capture_scenario(args.name, out, args.series, args.append, args.machine)
        print(json.dumps(result))
        return 0
    except LabError as e:
        print(f"lab: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
