"""The local backend's registry: which local clusters exist, in SQLite under the platform home.

It makes `list` survive process restarts (`dml cluster create` returns, `dml cluster list` runs
later) and lets any process find a cluster's processes, ports and token to stop it.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS clusters (
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    spec TEXT NOT NULL,
    dir TEXT NOT NULL,
    gcs_port INTEGER NOT NULL,
    dashboard_port INTEGER NOT NULL,
    nodes TEXT NOT NULL,
    created TEXT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    creator TEXT NOT NULL DEFAULT '{}',
    last_active TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (namespace, name)
)
"""
_COLUMNS = ("namespace", "name", "spec", "dir", "gcs_port", "dashboard_port", "nodes", "created", "state", "reason",
            "creator")  # fmt: skip


@dataclass(frozen=True)
class ClusterRecord:
    """One registered local cluster."""

    namespace: str
    name: str
    spec: dict[str, Any]
    dir: Path
    gcs_port: int
    dashboard_port: int
    nodes: list[dict[str, Any]]  # [{"role", "pid", "log"}]
    created: datetime
    state: str  # "starting" | "running" | "failed"
    reason: str = ""
    creator: dict[str, int] = field(default_factory=dict[str, int])  # {"pid", "start"} of the creating process
    last_active: datetime | None = None  # the last heartbeat of a Dagster step using it


class LocalRegistry:
    """SQLite-backed store of local clusters; safe to use from several processes at once."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute(_SCHEMA)
            # Registries written before these columns existed get them (no creator, no heartbeat known).
            columns = {row["name"] for row in db.execute("PRAGMA table_info(clusters)")}
            if "creator" not in columns:
                db.execute("ALTER TABLE clusters ADD COLUMN creator TEXT NOT NULL DEFAULT '{}'")
            if "last_active" not in columns:
                db.execute("ALTER TABLE clusters ADD COLUMN last_active TEXT NOT NULL DEFAULT ''")

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        with closing(sqlite3.connect(self.path, timeout=30)) as db, db:
            db.row_factory = sqlite3.Row
            yield db

    def insert(self, record: ClusterRecord) -> bool:
        """Register a new cluster; False when that name is taken in that namespace."""
        try:
            with self._connect() as db:
                db.execute(
                    f"INSERT INTO clusters ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})",
                    (record.namespace, record.name, json.dumps(record.spec), str(record.dir), record.gcs_port,
                     record.dashboard_port, json.dumps(record.nodes), record.created.isoformat(), record.state,
                     record.reason, json.dumps(record.creator)),
                )  # fmt: skip
        except sqlite3.IntegrityError:
            return False
        return True

    def update(self, namespace: str, name: str, **fields: Any) -> None:
        """Update some columns of a registered cluster."""
        encoded = {k: json.dumps(v) if k in ("nodes", "spec", "creator") else v for k, v in fields.items()}
        assignments = ", ".join(f"{column} = ?" for column in encoded)
        with self._connect() as db:
            db.execute(
                # column names come from our own keyword arguments, values are bound parameters
                f"UPDATE clusters SET {assignments} WHERE namespace = ? AND name = ?",
                (*encoded.values(), namespace, name),
            )

    def get(self, namespace: str, name: str) -> ClusterRecord | None:
        """The record of one cluster, or None."""
        with self._connect() as db:
            row = db.execute("SELECT * FROM clusters WHERE namespace = ? AND name = ?", (namespace, name)).fetchone()
        return _record(row) if row else None

    def all(self, namespace: str | None = None) -> list[ClusterRecord]:
        """Every registered cluster (of one namespace), oldest first."""
        with self._connect() as db:
            if namespace is None:
                rows = db.execute("SELECT * FROM clusters ORDER BY created").fetchall()
            else:
                rows = db.execute(
                    "SELECT * FROM clusters WHERE namespace = ? ORDER BY created", (namespace,)
                ).fetchall()
        return [_record(row) for row in rows]

    def remove(self, namespace: str, name: str) -> None:
        """Forget a cluster."""
        with self._connect() as db:
            db.execute("DELETE FROM clusters WHERE namespace = ? AND name = ?", (namespace, name))


def _record(row: sqlite3.Row) -> ClusterRecord:
    return ClusterRecord(
        namespace=row["namespace"],
        name=row["name"],
        spec=json.loads(row["spec"]),
        dir=Path(row["dir"]),
        gcs_port=row["gcs_port"],
        dashboard_port=row["dashboard_port"],
        nodes=json.loads(row["nodes"]),
        created=datetime.fromisoformat(row["created"]).astimezone(UTC),
        state=row["state"],
        reason=row["reason"],
        creator=json.loads(row["creator"] or "{}"),
        last_active=datetime.fromisoformat(row["last_active"]) if row["last_active"] else None,
    )
