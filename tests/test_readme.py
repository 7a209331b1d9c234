"""The README kept true where a command can check it: the metrics reference against the
exporter's real output, the Debian packages `./run` installs and how, the screenshot, and the
demo and verdict tool from an installed wheel."""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "exporter" / "golden"


def readme_metrics() -> dict[str, set[str]]:
    """metric name (with prefix) -> documented extra labels, from the README's metrics table."""
    text = (ROOT / "README.md").read_text()
    section = text.split("### Metrics", 1)[1].split("\n## ", 1)[0]
    out: dict[str, set[str]] = {}
    for m in re.finditer(r"^\| `(\w+)` \| (\w+) \|([^|]*)\|", section, re.M):
        labels = {x.strip() for x in m.group(3).split(",") if x.strip()}
        out["pciehp_" + m.group(1)] = labels
    return out


def exported() -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for golden in GOLDEN.glob("*.prom"):
        for fam in text_string_to_metric_families(golden.read_text()):
            for s in fam.samples:
                out.setdefault(s.name, set()).update(s.labels)
    return out


def test_every_exported_metric_is_documented_with_its_labels():
    documented = readme_metrics()
    port = {"segment", "bus", "device", "function"}
    for name, labels in exported().items():
        assert name in documented, f"{name} missing from README"
        assert labels - port == documented[name], name


def test_every_documented_metric_is_exported():
    got = exported()
    missing = [
        n
        for n in readme_metrics()
        if n not in got
        and n != "pciehp_collector_duration_seconds"  # stripped from goldens
        and n != "pciehp_rescan_workaround"  # no capture has one; covered by test_rescan
        and n != "pciehp_fact_unknown"  # every capture is fully readable; covered by test_verdict
    ]
    assert missing == []


README = ROOT / "README.md"
RUN = ROOT / "run"
POLICY = Path("/usr/sbin/policy-rc.d")


def run_debs() -> list[str]:
    """The Debian packages `./run` installs (its DEBS array)."""
    match = re.search(r"^DEBS=\(([^)]*)\)", RUN.read_text(), re.M)
    assert match, "no DEBS=(...) in ./run"
    return match.group(1).split()


def test_readme_names_every_debian_package_run_installs() -> None:
    section = README.read_text().split("## Two commands", 1)[1].split("\n### ", 1)[0]
    named = set(re.findall(r"`([a-z0-9][a-z0-9.+-]+)`", section))
    assert set(run_debs()) - named == set()


def test_run_forbids_service_starts_during_its_install(tmp_path: Path) -> None:
    """`./run setup` with one package missing: during apt-get install, policy-rc.d answers 101
    to a service start; afterwards the machine's own policy-rc.d (or none) is back."""
    before = POLICY.read_bytes() if POLICY.exists() else None
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    seen = tmp_path / "seen"
    (bin_dir / "dpkg-query").write_text("#!/bin/sh\ncase \"$*\" in *chromium*) exit 1;; esac\n"
                                        "echo 'install ok installed'\n")  # fmt: skip
    (bin_dir / "apt-get").write_text(
        "#!/bin/sh\n"
        f'[ "$1" = install ] || exit 0\n{POLICY} prometheus start; echo "$? $*" >> {seen}\n'
    )
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    (venv / ".installed").touch()
    os.utime(venv / ".installed", (time.time() + 60, time.time() + 60))  # newer than pyproject
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PCIEHP_VENV": str(venv)}
    result = subprocess.run(
        [str(RUN), "setup"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "installing Debian packages: chromium" in result.stderr
    assert seen.read_text().split("\n")[0].startswith("101 install -y -qq --no-install-recommends")
    assert "chromium" in seen.read_text()
    assert (POLICY.read_bytes() if POLICY.exists() else None) == before


def test_incident_page_png_is_the_end_to_end_screenshot() -> None:
    """docs/incident-page.png is a PNG of the size the end-to-end test takes it at."""
    from tests.e2e.test_pipeline import SCREENSHOT, SCREENSHOT_SIZE

    assert SCREENSHOT == ROOT / "docs" / "incident-page.png"
    head = SCREENSHOT.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", head[16:24])
    assert f"{width},{height}" == SCREENSHOT_SIZE


@pytest.fixture(scope="module")
def wheel_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This project built as a wheel and installed alone into a directory (no checkout, no
    tests package on the path); its dependencies come from the test virtualenv."""
    out = tmp_path_factory.mktemp("wheel")
    # built from a copy: setuptools reuses ./build, where files removed since linger
    source = out / "source"
    shutil.copytree(
        ROOT, source, symlinks=True,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis"
        ),
    )  # fmt: skip
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(out), str(source)],
        check=True, timeout=300, capture_output=True,
    )  # fmt: skip
    (wheel,) = out.glob("pciehp_watch-*.whl")
    site = out / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site),
         str(wheel)],
        check=True, timeout=300, capture_output=True,
    )  # fmt: skip
    assert not (site / "tests").exists()
    return site


def from_wheel(site: Path, cwd: Path, *args: str, timeout: float) -> subprocess.CompletedProcess:
    """Run `python -m ...` with only the installed wheel (not the checkout) importable."""
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=timeout, check=False,
    )  # fmt: skip


def test_verdict_tool_runs_from_an_installed_wheel(wheel_site: Path, tmp_path: Path) -> None:
    result = from_wheel(wheel_site, tmp_path, "-m", "demo.verdict", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "== q35_aspm_off (boot)" in result.stdout
    probe = from_wheel(
        wheel_site, tmp_path, "-c", "import demo, exporter; print(demo.__file__)", timeout=60
    )
    assert probe.stdout.startswith(str(wheel_site)), probe.stdout + probe.stderr


def test_demo_runs_from_an_installed_wheel(wheel_site: Path, tmp_path: Path) -> None:
    summary = tmp_path / "summary.json"
    result = from_wheel(
        wheel_site, tmp_path, "-m", "demo", "--guests", "12", "--duration", "300",
        "--attempt-seconds", "0.5", "--quiet-after", "5", "--summary-json", str(summary),
        timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    data = json.loads(summary.read_text())
    assert sorted((i["image_id"], i["root_cause"]) for i in data["incidents"]) == [
        ("host cmp-broken", "host_side"),
        ("img-imported-legacy", "guest_no_hotplug_driver"),
        ("img-legacy-aspm", "pcie_aspm_off"),
    ]


def test_the_wheel_ships_the_published_schemas_and_page_templates(wheel_site: Path) -> None:
    """The installed correlator validates against the same schema text docs/ publishes."""
    for name in ("correlator-config.schema.json", "causes.schema.json"):
        shipped = wheel_site / "correlator" / "schema" / name
        assert shipped.read_bytes() == (ROOT / "docs" / "schema" / name).read_bytes()
    web = ROOT / "correlator" / "web"
    templates = sorted(str(p.relative_to(web)) for p in web.rglob("*.html"))
    shipped_web = wheel_site / "correlator" / "web"
    assert sorted(str(p.relative_to(shipped_web)) for p in shipped_web.rglob("*.html")) == templates
    assert "blocks/timeline.html" in templates
    probe = from_wheel(
        wheel_site,
        wheel_site.parent,
        "-c",
        "from correlator.config import from_dict, SCHEMA_DIR; from_dict({}); print(SCHEMA_DIR)",
        timeout=60,
    )
    assert probe.stdout.strip() == str(wheel_site / "correlator" / "schema"), probe.stderr
