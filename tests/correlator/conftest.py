"""Shared fixtures: a fleet of real guest exporters scraped by a real Prometheus, and stacks of
a real Alertmanager plus a real correlator process per test."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.correlator.support import (
    FAST,
    Correlator,
    Guest,
    am_config,
    scrape_configs,
)
from tests.support import servers

# The fleet: three pcie_aspm=off guests and one healthy native-hotplug guest of one image, and
# ACPI-hotplug guests (q35 on QEMU >= 6.1, i440fx) of another.
FLEET = (
    Guest("aspm-1", "q35_aspm_off", "img-aspm"),
    Guest("aspm-2", "q35_aspm_off", "img-aspm", phase="after_unplug"),
    Guest("aspm-3", "q35_aspm_off", "img-aspm"),
    Guest("aspm-ok", "q35_normal", "img-aspm"),
    Guest("acpi-1", "q35_acpihp_normal", "img-acpi"),
    Guest("acpi-2", "q35_acpihp_normal", "img-acpi"),
    Guest("pc-1", "i440fx_normal", "img-acpi"),
)


@dataclass
class Fleet:
    """Running guest exporters and the Prometheus that scrapes them."""

    guests: tuple[Guest, ...]
    prometheus: servers.Server
    workdir: Path

    def image(self, image_id: str) -> list[Guest]:
        return [g for g in self.guests if g.image_id == image_id]

    def guest(self, name: str) -> Guest:
        return next(g for g in self.guests if g.name == name)


def wait_scraped(prom_url: str, n: int) -> None:
    """Wait until Prometheus holds pciehp_guest_info of n guests."""

    def ready() -> bool:
        try:
            doc = servers.http_json(f"{prom_url}/api/v1/query?query=count(pciehp_guest_info)")
        except OSError:
            return False
        result = doc["data"]["result"]  # type: ignore[index]
        return bool(result) and int(float(result[0]["value"][1])) == n

    servers.wait_until(ready, timeout=60, what=f"{n} guests scraped")


@pytest.fixture(scope="session")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    work = tmp_path_factory.mktemp("fleet")
    guests = tuple(Guest(g.name, g.scenario, g.image_id, g.phase) for g in FLEET)
    try:
        for g in guests:
            g.prepare(work)
            g.start(work)
        for g in guests:
            g.wait_ready(work)
        prom = servers.prometheus(work / "prometheus", scrape_configs(guests))
        with servers.running(prom):
            wait_scraped(prom.url, len(guests))
            yield Fleet(guests, prom, work)
    finally:
        for g in guests:
            g.stop()


@dataclass
class Stack:
    """One Alertmanager and one correlator wired to each other and to a Prometheus."""

    correlator: Correlator
    alertmanager: servers.Server
    extra: list[servers.Server] = field(default_factory=list)

    @property
    def am_url(self) -> str:
        return self.alertmanager.url


@pytest.fixture
def make_stack(tmp_path: Path, fleet: Fleet) -> Iterator[Callable[..., Stack]]:
    """make_stack(config=..., prometheus_url=..., start_alertmanager=True, token_file=None)."""
    made: list[Stack] = []

    def make(
        config: Mapping = FAST,
        prometheus_url: str | None = None,
        start_alertmanager: bool = True,
        name: str = "stack",
        token_file: Path | None = None,
    ) -> Stack:
        work = tmp_path / name
        am_port = servers.free_port()
        corr = Correlator(
            work / "corr",
            prometheus_url or fleet.prometheus.url,
            [f"http://127.0.0.1:{am_port}"],
            config,
        )
        am = servers.alertmanager(
            work / "alertmanager", am_config(corr.url, token_file), port=am_port
        )
        stack = Stack(corr, am)
        made.append(stack)
        corr.start()
        if start_alertmanager:
            am.start()
        return stack

    yield make
    for stack in made:
        for server in stack.extra:
            server.stop()
        stack.correlator.stop()
        with contextlib.suppress(Exception):
            stack.alertmanager.stop()
