"""Schema migrations of the PostgreSQL index: numbered SQL files, applied in order.

``recorder/index/migrations/NNNN_name.sql`` files are applied in one transaction, each
recorded in ``schema_version``; a transaction-scoped advisory lock makes replicas that start
together apply them once, one after the other waiting and then finding nothing left to do.
A database whose version is newer than this recorder knows is refused rather than used.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

from recorder.errors import IndexSchemaError

if TYPE_CHECKING:
    import asyncpg
    from asyncpg.pool import PoolConnectionProxy

_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
# pg_advisory_xact_lock's key: any constant the recorder owns ("tssh" in ASCII)
_LOCK = 0x74737368


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    """The migrations shipped with this recorder, in version order (numbers 1, 2, ... with
    no gap: a missing file is a packaging error, not something to skip)."""
    found = []
    for entry in resources.files("recorder.index.migrations").iterdir():
        m = _NAME.match(entry.name)
        if m:
            found.append(Migration(int(m.group(1)), entry.name, entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise IndexSchemaError(f"migrations are not numbered 1..{len(found)}: "
                               f"{[m.name for m in found]}")
    return found


async def migrate(conn: asyncpg.Connection[Any] | PoolConnectionProxy[Any]) -> list[int]:
    """Brings the database to the newest schema; returns the versions applied."""
    known = migrations()
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied timestamptz NOT NULL DEFAULT now())"
        )
        current = int(await conn.fetchval(
            "SELECT coalesce(max(version), 0) FROM schema_version") or 0)
        if current > len(known):
            raise IndexSchemaError(
                f"the index's schema is version {current}, newer than this recorder's "
                f"{len(known)}: run a recorder at least as new as the one that migrated it")
        applied = []
        for m in known[current:]:
            await conn.execute(m.sql)
            await conn.execute("INSERT INTO schema_version (version, name) VALUES ($1, $2)",
                               m.version, m.name)
            applied.append(m.version)
        return applied
