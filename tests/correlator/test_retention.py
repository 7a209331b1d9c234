"""History retention: resolved incidents older than `storage.retention` leave SQLite and memory,
in the background, while open ones stay and no incident id is ever handed out twice.

Time is moved with freezegun (the wall clock the incidents are stamped with); asyncio keeps real
time, so the app's pruning task runs as it would in production.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from freezegun import freeze_time

from correlator.app import METRICS_KEY, Settings, create_app, prune_interval
from correlator.config import Config, LabelMap, from_dict
from correlator.diagnosis import DiagnosisTable
from correlator.incidents import IncidentBook
from correlator.model import FIRING, Alert
from correlator.store import Store

TABLE = DiagnosisTable.from_config(Config())
DAY = 86400.0
DEAD = "http://127.0.0.1:9"  # nothing listens: the pruning needs no Prometheus or Alertmanager


def detach(vm: str, image: str) -> Alert:
    """A firing detach alert of one VM of an image."""
    labels = {"alertname": "NovaDeviceDetachFailed", "instance_uuid": vm, "image_id": image}
    return Alert(f"{vm}-{image}", labels, FIRING, starts_at=time.time())


def incident_resolved_at(
    store: Store, book: IncidentBook, image: str, at: float, firing: dict | None = None
) -> str:
    """Open an incident for `image` and resolve it at `at` (the book's hold-down is 1 s) while
    the `firing` alerts go on firing."""
    firing = firing or {}
    alert = detach("vm", image)
    store.save(book.update({**firing, alert.fingerprint: alert}, {}, {}, now=at - 10))
    iid = book.open[image].id
    store.save(book.update(firing, {}, {}, now=at - 1))
    store.save(book.update(firing, {}, {}, now=at))
    assert store.get(iid).resolved_at == at
    return iid


def test_prune_deletes_resolved_incidents_older_than_the_cutoff_and_never_reuses_an_id(tmp_path):
    store = Store(tmp_path / "db.sqlite")
    book = IncidentBook(LabelMap(), TABLE, hold_down=1)
    with freeze_time("2026-01-01T00:00:00Z") as clock:
        start = time.time()
        alert = detach("vm-open", "img-open")
        firing = {alert.fingerprint: alert}
        store.save(book.update(firing, {}, {}, now=start))
        old = incident_resolved_at(store, book, "img-a", start + 60, firing)
        clock.tick(20 * DAY)
        recent = incident_resolved_at(store, book, "img-b", time.time(), firing)
        clock.tick(11 * DAY)  # `old` resolved 31 days ago, `recent` 11; img-open opened 31 ago
        assert store.prune(time.time() - 30 * DAY) == 1
    assert store.get(old) is None and store.get(recent) is not None
    assert store.get(book.open["img-open"].id) is not None
    assert store.count() == 2
    assert store.prune(start + 20 * DAY) == 0  # nothing else resolved that long ago
    store.close()

    again = Store(tmp_path / "db.sqlite")
    incidents, seq = again.load(history_limit=10)
    assert {i.id for i in incidents} == {recent, book.open["img-open"].id}
    fresh = IncidentBook(LabelMap(), TABLE, hold_down=1)
    fresh.restore(incidents, seq)
    alert = detach("vm", "img-a")
    fresh.update({alert.fingerprint: alert}, {}, {}, now=time.time())
    assert fresh.open["img-a"].id == old[: -len("1")] + "2"  # img-a's second incident


async def test_the_app_prunes_in_the_background_as_the_clock_passes_the_retention(
    aiohttp_client, tmp_path: Path
):
    path = tmp_path / "incidents.sqlite"
    retention = 3600.0  # pruned every prune_interval(1h) = 3.6 s
    with freeze_time("2026-03-01T12:00:00Z", tick=True, real_asyncio=True) as clock:
        now = time.time()
        store = Store(path)
        book = IncidentBook(LabelMap(), TABLE, hold_down=1)
        expired = incident_resolved_at(store, book, "img-expired", now - 2 * 3600)
        later = incident_resolved_at(store, book, "img-later", now - 1800)
        store.close()

        config = from_dict({"storage": {"retention": "1h"}})
        assert config.retention == retention and prune_interval(retention) == 3.6
        settings = Settings(DEAD, [DEAD], str(path), "http://correlator.example")
        client = await aiohttp_client(create_app(config, settings))
        registry = client.server.app[METRICS_KEY].registry

        def runs() -> float:
            return registry.get_sample_value("pciehp_correlator_history_prunes_total") or 0

        def pruned() -> float:
            name = "pciehp_correlator_history_pruned_incidents_total"
            return registry.get_sample_value(name) or 0

        async def until(check, what: str, timeout: float = 60.0) -> None:
            deadline = asyncio.get_running_loop().time() + timeout
            while not check():
                assert asyncio.get_running_loop().time() < deadline, what
                await asyncio.sleep(0.05)

        # at start: the incident resolved 2 h ago goes, the one resolved 30 min ago stays
        await until(lambda: runs() >= 1, "first prune")
        assert pruned() == 1
        assert (await client.get(f"/api/v1/incidents/{expired}")).status == 404
        assert (await client.get(f"/api/v1/incidents/{later}")).status == 200
        assert (await client.get(f"/incidents/{later}")).status == 200

        clock.tick(3600)  # `later` is now 90 minutes resolved: the next periodic run takes it
        await until(lambda: pruned() >= 2, "the periodic prune")
        assert (await client.get(f"/api/v1/incidents/{later}")).status == 404
        listed = await (await client.get("/api/v1/incidents?state=resolved")).json()
        assert later not in {i["id"] for i in listed["data"]}
        text = await (await client.get("/metrics")).text()
        assert "pciehp_correlator_history_pruned_incidents_total 2.0" in text
