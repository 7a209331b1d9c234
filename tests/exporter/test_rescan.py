"""Detection of the `echo 1 > /sys/bus/pci/rescan` workaround in cron and systemd."""

from __future__ import annotations

from exporter.collectors.rescan import RescanCollector, find_workarounds
from exporter.paths import Paths
from exporter.registry import Scrape


def _rootfs(tmp_path):
    (tmp_path / "etc/cron.d").mkdir(parents=True)
    (tmp_path / "var/spool/cron/crontabs").mkdir(parents=True)
    (tmp_path / "etc/systemd/system").mkdir(parents=True)
    return Paths(rootfs=tmp_path)


def test_cron_and_systemd_sources_are_found(tmp_path):
    paths = _rootfs(tmp_path)
    (tmp_path / "etc/crontab").write_text("17 * * * * root cd / && run-parts /etc/cron.hourly\n")
    (tmp_path / "etc/cron.d/pci-rescan").write_text("* * * * * root echo 1 > /sys/bus/pci/rescan\n")
    (tmp_path / "var/spool/cron/crontabs/root").write_text(
        "*/5 * * * * echo 1 | tee /sys/bus/pci/devices/0000:00:02.0/rescan\n"
    )
    (tmp_path / "etc/systemd/system/pci-rescan.service").write_text(
        "[Service]\nExecStart=/bin/sh -c 'echo 1 > /sys/bus/pci/rescan'\n"
    )
    (tmp_path / "etc/systemd/system/other.service").write_text("[Service]\nExecStart=/bin/true\n")
    assert find_workarounds(paths)[0] == [
        "/etc/cron.d/pci-rescan",
        "/etc/systemd/system/pci-rescan.service",
        "/var/spool/cron/crontabs/root",
    ]


def test_commented_out_lines_do_not_count(tmp_path):
    paths = _rootfs(tmp_path)
    (tmp_path / "etc/cron.d/old").write_text("# * * * * * root echo 1 > /sys/bus/pci/rescan\n")
    assert find_workarounds(paths)[0] == []


def test_checked_at_most_once_a_minute(tmp_path):
    paths = _rootfs(tmp_path)
    now = [1000.0]
    collector = RescanCollector(clock=lambda: now[0])

    def sources() -> list[str]:
        (family,) = list(collector.collect(Scrape(paths)))
        return [values[0] for values, _value in family.samples]

    assert sources() == []
    (tmp_path / "etc/cron.d/pci-rescan").write_text("* * * * * root echo 1 >/sys/bus/pci/rescan\n")
    now[0] += 59
    assert sources() == []  # cached
    now[0] += 1
    assert sources() == ["/etc/cron.d/pci-rescan"]
    (tmp_path / "etc/cron.d/pci-rescan").unlink()
    now[0] += 60
    assert sources() == []


def test_unreadable_and_binary_files_are_ignored(tmp_path):
    paths = _rootfs(tmp_path)
    (tmp_path / "etc/cron.d/bin").write_bytes(b"\x00\xff" * 1000)
    (tmp_path / "etc/cron.d/dir.d").mkdir()
    assert find_workarounds(paths)[0] == []
