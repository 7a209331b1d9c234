"""Incident history in SQLite: incidents and their members survive a restart.

One row per incident (its state as JSON) and one row per member alert; a reconcile writes only
the incidents and members it changed, in one transaction. Resolved incidents older than the
retention are deleted by `prune`; how many each image key lost is kept, so ids are never reused.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from correlator.incidents import OPEN_STATES, Incident

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS incidents (
    id TEXT PRIMARY KEY,
    key TEXT NOT NULL,
    state TEXT NOT NULL,
    opened_at REAL NOT NULL,
    resolved_at REAL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS incidents_by_state ON incidents (state, resolved_at);
CREATE TABLE IF NOT EXISTS members (
    incident_id TEXT NOT NULL REFERENCES incidents (id),
    fingerprint TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (incident_id, fingerprint)
);
CREATE TABLE IF NOT EXISTS pruned (key TEXT PRIMARY KEY, count INTEGER NOT NULL);
"""


class StoreError(Exception):
    """The database cannot be opened or has an unknown schema."""


class Store:
    """A SQLite file; safe to call from worker threads (one connection behind a lock)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            if str(path) != ":memory:":
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            row = self._db.execute("SELECT value FROM meta WHERE name='schema'").fetchone()
            if row is None:
                self._db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
                self._db.commit()
            elif row[0] != str(SCHEMA_VERSION):
                raise StoreError(f"{path}: schema version {row[0]}, expected {SCHEMA_VERSION}")
        except (sqlite3.Error, OSError) as e:
            raise StoreError(f"cannot open incident database {path}: {e}") from e
        self._lock = threading.Lock()

    def save(self, incidents: Iterable[Incident]) -> None:
        """Write the given incidents and their changed members in one transaction."""
        rows, members, gone = [], [], []
        for inc in incidents:
            rows.append(
                (
                    inc.id,
                    inc.key,
                    inc.state,
                    inc.opened_at,
                    inc.resolved_at,
                    json.dumps(inc.state_json()),
                )
            )
            for fp in inc.dirty_members:
                m = inc.members.get(fp)
                if m is None:
                    gone.append((inc.id, fp))
                else:
                    members.append((inc.id, fp, json.dumps(m.__dict__)))
            inc.dirty_members.clear()
        with self._lock, self._db:
            self._db.executemany(
                "INSERT INTO incidents VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
                "state=excluded.state, resolved_at=excluded.resolved_at, body=excluded.body",
                rows,
            )
            self._db.executemany(
                "INSERT INTO members VALUES (?, ?, ?) ON CONFLICT (incident_id, fingerprint) "
                "DO UPDATE SET body=excluded.body",
                members,
            )
            self._db.executemany("DELETE FROM members WHERE incident_id=? AND fingerprint=?", gone)

    def _incidents(self, where: str, args: tuple[object, ...]) -> list[Incident]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT id, body FROM incidents WHERE {where}", args
            ).fetchall()
            out = []
            for iid, body in rows:
                mem = self._db.execute(
                    "SELECT body FROM members WHERE incident_id=?", (iid,)
                ).fetchall()
                out.append(Incident.from_state(json.loads(body), (json.loads(b) for (b,) in mem)))
        return out

    def load(self, history_limit: int) -> tuple[list[Incident], dict[str, int]]:
        """Open incidents, the newest resolved ones, and the incident count per image key."""
        marks = ",".join("?" * len(OPEN_STATES))
        live = self._incidents(f"state IN ({marks})", OPEN_STATES)
        old = self._incidents(
            f"id IN (SELECT id FROM incidents WHERE state NOT IN ({marks}) "
            "ORDER BY resolved_at DESC LIMIT ?)",
            (*OPEN_STATES, history_limit),
        )
        with self._lock:
            seq = dict(
                self._db.execute(
                    "SELECT key, SUM(n) FROM (SELECT key, COUNT(*) AS n FROM incidents "
                    "GROUP BY key UNION ALL SELECT key, count FROM pruned) GROUP BY key"
                )
            )
        return live + old, seq

    def prune(self, before: float) -> int:
        """Delete the incidents resolved before `before` (epoch seconds) with their members.

        Open incidents stay however old. Returns how many incidents were deleted.
        """
        marks = ",".join("?" * len(OPEN_STATES))
        with self._lock, self._db:
            rows = self._db.execute(
                f"SELECT id, key FROM incidents WHERE state NOT IN ({marks}) AND resolved_at < ?",
                (*OPEN_STATES, before),
            ).fetchall()
            ids = [(iid,) for iid, _ in rows]
            self._db.executemany("DELETE FROM members WHERE incident_id=?", ids)
            self._db.executemany("DELETE FROM incidents WHERE id=?", ids)
            self._db.executemany(
                "INSERT INTO pruned VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET count=count+excluded.count",
                Counter(key for _, key in rows).items(),
            )
        return len(rows)

    def count(self) -> int:
        """Incidents in the history, open and resolved."""
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM incidents").fetchone()[0]

    def get(self, incident_id: str) -> Incident | None:
        """One incident by id, however old."""
        found = self._incidents("id=?", (incident_id,))
        return found[0] if found else None

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()
