"""Write the dashboards as Grafana JSON beside this file, or check the committed JSON.

python -m dashboards.generate           # (re)write dashboards/fleet.json, guest.json
python -m dashboards.generate --check   # exit 1 if a committed file is not current
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from grafana_foundation_sdk.builders.dashboard import Dashboard
from grafana_foundation_sdk.cog.encoder import JSONEncoder

from alerts.generate import sync
from dashboards import fleet, guest

OUT = Path(__file__).resolve().parent
DASHBOARDS: dict[str, Callable[[], Dashboard]] = {"fleet": fleet.build, "guest": guest.build}


def render(build: Callable[[], Dashboard]) -> str:
    """The dashboard as stable, diff-friendly JSON text, panels numbered in layout order."""
    dashboard = build().build()
    for number, panel in enumerate(dashboard.panels or [], start=1):
        panel.id_val = number
    return json.dumps(dashboard, cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Generate (or with --check, verify) every dashboard JSON file."""
    p = argparse.ArgumentParser(
        prog="python -m dashboards.generate", description=__doc__.split("\n")[0]
    )
    p.add_argument("--check", action="store_true", help="fail if committed JSON is stale")
    p.add_argument("--out", type=Path, default=OUT, help="directory to write into")
    args = p.parse_args(argv)
    files = {args.out / f"{name}.json": render(build) for name, build in DASHBOARDS.items()}
    return sync(files, check=args.check, command="python -m dashboards.generate")


if __name__ == "__main__":
    sys.exit(main())
