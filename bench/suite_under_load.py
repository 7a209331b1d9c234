"""The test suite run several times in a row with `stress-ng --cpu N` beside it, as CI's busy
machine would be: prints each run's result line and wall time, stops at the first failure.

./run bench suite_under_load                       # 3 runs of the whole suite, stress-ng --cpu 2
./run bench suite_under_load --runs 1 -- tests/exporter   # pytest arguments after --
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    """Run the suite `--runs` times under load; exit with the first failing run's status."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--cpu", type=int, default=2, help="stress-ng CPU workers")
    p.add_argument("pytest_args", nargs="*", help="passed to pytest (default: the whole suite)")
    args = p.parse_args()
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    print(f"commit {commit or '?'}, {os.cpu_count()} CPUs, stress-ng --cpu {args.cpu}", flush=True)
    for run in range(1, args.runs + 1):
        stress = subprocess.Popen(
            ["stress-ng", "--cpu", str(args.cpu), "--timeout", "0", "--quiet"]
        )
        start = time.monotonic()
        try:
            result = subprocess.run(
                [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args.pytest_args],
                cwd=ROOT, capture_output=True, text=True,
            )  # fmt: skip
            load = os.getloadavg()[0]
        finally:
            stress.terminate()
            stress.wait()
        wall = time.monotonic() - start
        lines = result.stdout.strip().splitlines()
        print(
            f"run {run}: rc={result.returncode} wall={wall:.0f} s load1={load:.1f}  "
            f"{lines[-1] if lines else result.stderr.strip()[-200:]}",
            flush=True,
        )
        if result.returncode != 0:
            print("\n".join(lines[-40:]))
            return result.returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
