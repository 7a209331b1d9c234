"""The guest side (exporter/) needs nothing newer than Python 3.6: checked statically by vermin.

No Debian package here provides 3.6-3.8, so vermin's rules stand in for running on them; the
artifact itself runs under real bullseye 3.9 and trixie 3.13 in test_artifact.py.
"""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VERMIN = [
    str(Path(sys.executable).parent / "vermin"),
    "--no-tips",
    "--violations",
    "--eval-annotations",
]


def test_exporter_needs_at_most_python_3_6():
    out = subprocess.run(
        [*VERMIN, "-t=3.6-", str(ROOT / "exporter")], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Minimum required versions: 3.6" in out.stdout, out.stdout


def test_vermin_rejects_newer_code(tmp_path):
    """The check can fail: a walrus and a 3.9 builtin generic are caught."""
    (tmp_path / "new.py").write_text(
        "def f(x: list[int]) -> None:\n    if (n := len(x)):\n        print(n)\n"
    )
    out = subprocess.run(
        [*VERMIN, "-t=3.6-", str(tmp_path)], capture_output=True, text=True, timeout=300
    )
    assert out.returncode != 0
    assert "named expressions" in out.stdout
