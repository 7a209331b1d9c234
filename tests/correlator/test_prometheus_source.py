"""Guest facts from a real Prometheus scraping real exporters: a fixed number of queries
whatever the number of instances, and exact (never regex-loose) instance selection."""

from __future__ import annotations

import aiohttp
import pytest

from correlator.sources.prometheus import PrometheusError, PrometheusSource, regex_alternatives
from tests.correlator.conftest import Fleet
from tests.correlator.support import guest_uuid


async def test_queries_stay_four_whatever_the_number_of_instances(fleet: Fleet):
    wanted = {g.uuid for g in fleet.guests}
    async with aiohttp.ClientSession() as session:
        src = PrometheusSource(session, fleet.prometheus.url)
        few = await src.facts({fleet.guest("aspm-1").uuid}, now=1.0)
        assert src.queries_total == 4 and set(few) == {fleet.guest("aspm-1").uuid}
        many = wanted | {guest_uuid(f"absent-{i}") for i in range(3000)}
        facts = await src.facts(many, now=2.0)
        assert src.queries_total == 8
    assert set(facts) == wanted
    aspm = facts[fleet.guest("aspm-2").uuid]
    assert (aspm.machine, aspm.kernel, aspm.image_id, aspm.job) == (
        "q35",
        "6.1.0-56-amd64",
        "img-aspm",
        "pciehp",
    )
    assert aspm.target == fleet.guest("aspm-2").target
    assert aspm.cmdline == {"pcie_aspm": "off"}
    assert [(o.outcome, o.missing_support) for o in aspm.osc] == [
        ("not_requested", ("ASPM", "ClockPM"))
    ]
    assert len(aspm.ports) == 12 and {p.handler for p in aspm.ports} == {"none"}
    stuck = aspm.ports[0]
    assert (stuck.address, stuck.button_pending, stuck.interrupt_enabled) == ("0000:00:02.0", 1, 0)
    normal = facts[fleet.guest("aspm-ok").uuid]
    assert {p.handler for p in normal.ports} == {"pciehp"}
    assert normal.ports[0].slot == "1" and normal.ports[0].verdict == "ready"
    assert {p.verdict for p in aspm.ports} == {"not_ready"}
    assert facts[fleet.guest("pc-1").uuid].ports == ()
    assert facts[fleet.guest("acpi-1").uuid].collectors_failed == ()


async def test_selection_is_exact_and_the_selector_narrows_it(fleet: Fleet):
    real = fleet.guest("aspm-1").uuid
    loose = real[:8] + ".*"  # regex metacharacters in a label value must not widen the match
    async with aiohttp.ClientSession() as session:
        src = PrometheusSource(session, fleet.prometheus.url)
        assert await src.facts({loose, 'x"y\\z|' + real[:5]}, now=1.0) == {}
        other_job = PrometheusSource(session, fleet.prometheus.url, selector='job="other"')
        assert await other_job.facts({real}, now=1.0) == {}
        assert set(await src.facts({real}, now=1.0)) == {real}


async def test_errors_say_what_failed(fleet: Fleet):
    async with aiohttp.ClientSession() as session:
        broken = PrometheusSource(session, fleet.prometheus.url, selector='job=~"("')
        with pytest.raises(PrometheusError, match="query failed \\(HTTP 400\\): bad_data"):
            await broken.facts({"u"}, now=1.0)
        nobody = PrometheusSource(session, "http://127.0.0.1:9", timeout=2)
        with pytest.raises(PrometheusError, match="unreachable"):
            await nobody.facts({"u"}, now=1.0)


def test_regex_alternatives_escape_metacharacters():
    assert regex_alternatives(["b.c", "a|b", "x"]) == "a\\|b|b\\.c|x"
