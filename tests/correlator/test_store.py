"""SQLite history: incidents and members survive a reopen; only changes are written."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from correlator.config import Config, LabelMap
from correlator.diagnosis import DiagnosisTable
from correlator.incidents import IncidentBook
from correlator.model import FIRING, Alert, Verdict
from correlator.store import Store, StoreError

TABLE = DiagnosisTable.from_config(Config())
ASPM = Verdict("pcie_aspm_off", ("kernel command line has pcie_aspm=off",))


def detach(vm: str, image: str) -> Alert:
    labels = {"alertname": "NovaDeviceDetachFailed", "instance_uuid": vm, "image_id": image}
    return Alert(f"{vm}-{image}", labels, FIRING, starts_at=10.0)


def stable(doc: dict) -> dict:
    """An incident document without its last-seen times."""
    out = {k: v for k, v in doc.items() if k != "last_seen"}
    out["members"] = [{k: v for k, v in m.items() if k != "lastSeen"} for m in doc["members"]]
    return out


def test_incidents_and_members_survive_a_reopen(tmp_path: Path):
    path = tmp_path / "sub" / "incidents.sqlite"
    store = Store(path)
    book = IncidentBook(LabelMap(), TABLE, hold_down=1)
    alerts = {
        a.fingerprint: a for a in (detach("vm1", "a"), detach("vm2", "a"), detach("vm3", "b"))
    }
    store.save(book.update(alerts, {"vm1": ASPM, "vm2": ASPM}, {}, now=100.0))
    del alerts["vm3-b"]
    store.save(book.update(alerts, {}, {}, now=101.0))
    store.save(book.update(alerts, {}, {}, now=102.0))  # b resolved after the hold-down
    assert book.open["a"].dirty_members == set()
    store.close()

    again = Store(path)
    incidents, seq = again.load(history_limit=10)
    assert seq == {"a": 1, "b": 1}
    restored = {i.image_id: i for i in incidents}
    # last_seen ticks in memory every reconcile and is written with the next real change.
    assert stable(restored["a"].detail_json(TABLE)) == stable(book.open["a"].detail_json(TABLE))
    assert restored["b"].state == "resolved" and restored["b"].resolved_at == 102.0
    assert again.get(book.open["a"].id).members.keys() == {"vm1-a", "vm2-a"}
    assert again.get("nope") is None

    fresh = IncidentBook(LabelMap(), TABLE, hold_down=1)
    fresh.restore(incidents, seq)
    assert fresh.update(alerts, {"vm1": ASPM, "vm2": ASPM}, {}, now=103.0) == []
    b_again = fresh.update({**alerts, "vm3-b": detach("vm3", "b")}, {}, {}, now=104.0)
    assert [i.id for i in b_again] == [fresh.open["b"].id]
    assert fresh.open["b"].id.endswith("-2")  # b's second incident, no clash with the first


def test_members_that_move_away_are_deleted(tmp_path: Path):
    store = Store(tmp_path / "db")
    book = IncidentBook(LabelMap(), TABLE, hold_down=60)
    unlabelled = Alert(
        "fp", {"alertname": "NovaDeviceDetachFailed", "instance_uuid": "vm"}, FIRING, 1.0
    )
    store.save(book.update({"fp": unlabelled}, {}, {}, now=1.0))
    labelled = Alert("fp", {**unlabelled.labels, "image_id": "img"}, FIRING, 1.0)
    store.save(book.update({"fp": labelled}, {}, {}, now=2.0))
    loaded = {i.image_id: i for i in store.load(10)[0]}
    assert loaded["unknown"].members == {} and set(loaded["img"].members) == {"fp"}


def test_bad_database_paths_are_clear_errors(tmp_path: Path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="cannot open incident database"):
        Store(tmp_path / "file" / "db.sqlite")
    db = sqlite3.connect(tmp_path / "old.sqlite")
    db.executescript(
        "CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT); "
        "INSERT INTO meta VALUES ('schema', '99');"
    )
    db.close()
    with pytest.raises(StoreError, match="schema version 99"):
        Store(tmp_path / "old.sqlite")
