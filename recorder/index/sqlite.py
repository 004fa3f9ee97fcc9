"""SQLite index in the state dir: embedded, nothing to run.

One connection used from a single worker thread (queries are short); WAL mode so a crash
never corrupts it, and the index can anyway be rebuilt from storage.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from recorder.errors import RecorderError
from recorder.index.base import MAX_LIMIT, Cursor, Index, Page, Query
from recorder.model import RecordingMeta

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS recordings (
    id TEXT PRIMARY KEY,
    storage_key TEXT NOT NULL,
    node_id TEXT NOT NULL,
    node_name TEXT NOT NULL,
    node_user TEXT,
    src_user TEXT,
    ssh_user TEXT,
    local_user TEXT,
    status TEXT NOT NULL,
    start REAL NOT NULL,
    recorder TEXT NOT NULL,
    search TEXT NOT NULL,
    document TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS recordings_start ON recordings (start DESC, id DESC);
CREATE INDEX IF NOT EXISTS recordings_status ON recordings (status, recorder);
"""


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class SqliteIndex(Index):
    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-index")

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise RecorderError("index is not open")
        return self._db

    async def open(self) -> None:
        def do() -> None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                db.executescript(_SCHEMA)
            except sqlite3.Error as e:
                raise RecorderError(f"cannot open the index {self.path}: {e}") from e
            self._db = db

        await self._run(do)

    async def close(self) -> None:
        def do() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        await self._run(do)
        self._pool.shutdown(wait=True)

    async def put(self, meta: RecordingMeta) -> None:
        doc = meta.to_json()
        h = meta.header
        def text(name: str) -> str | None:
            value = h.get(name)
            return value if isinstance(value, str) else None

        row = (
            meta.id, meta.key, meta.node.id, meta.node.name, meta.node.user,
            text("srcNodeUser"), text("sshUser"), text("localUser"),
            meta.status, meta.start, meta.recorder,
            json.dumps({"node": doc["node"], "header": h}, ensure_ascii=False).lower(),
            json.dumps(doc, ensure_ascii=False),
        )

        def do() -> None:
            self._conn().execute(
                "INSERT OR REPLACE INTO recordings VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", row
            )

        await self._run(do)

    async def get(self, recording_id: str) -> RecordingMeta | None:
        def do() -> str | None:
            r = self._conn().execute(
                "SELECT document FROM recordings WHERE id = ?", (recording_id,)
            ).fetchone()
            return None if r is None else str(r[0])

        doc = await self._run(do)
        return None if doc is None else RecordingMeta.from_json(json.loads(doc))

    async def query(self, query: Query) -> Page:
        where: list[str] = []
        args: list[Any] = []
        if query.node:
            where.append("(node_id = ? OR node_name = ? OR node_name LIKE ? ESCAPE '\\')")
            args += [query.node, query.node, _like_escape(query.node) + ".%"]
        if query.user:
            where.append("(src_user = ? OR ssh_user = ? OR local_user = ? OR node_user = ?)")
            args += [query.user] * 4
        if query.since is not None:
            where.append("start >= ?")
            args.append(query.since)
        if query.until is not None:
            where.append("start < ?")
            args.append(query.until)
        if query.live is not None:
            where.append("status = 'live'" if query.live else "status != 'live'")
        if query.q:
            where.append("search LIKE ? ESCAPE '\\'")
            args.append(f"%{_like_escape(query.q.lower())}%")
        if query.cursor is not None:
            where.append("(start < ? OR (start = ? AND id < ?))")
            args += [query.cursor.start, query.cursor.start, query.cursor.id]
        limit = max(1, min(query.limit, MAX_LIMIT))
        sql = "SELECT document, start, id FROM recordings"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY start DESC, id DESC LIMIT ?"
        args.append(limit + 1)

        def do() -> list[tuple[str, float, str]]:
            rows = self._conn().execute(sql, args).fetchall()
            return [(str(r[0]), float(r[1]), str(r[2])) for r in rows]

        rows = await self._run(do)
        nxt = None
        if len(rows) > limit:
            rows = rows[:limit]
            nxt = Cursor(rows[-1][1], rows[-1][2])
        return Page([RecordingMeta.from_json(json.loads(r[0])) for r in rows], nxt)

    async def retain(self, ids: set[str]) -> int:
        def do() -> int:
            db = self._conn()
            stale = [
                str(r[0]) for r in db.execute("SELECT id FROM recordings").fetchall()
                if str(r[0]) not in ids
            ]
            with db:  # one transaction
                db.execute("BEGIN")
                db.executemany("DELETE FROM recordings WHERE id = ?", [(i,) for i in stale])
            return len(stale)

        return int(await self._run(do))

    async def open_recordings(self, recorder: str) -> list[RecordingMeta]:
        def do() -> list[str]:
            return [
                str(r[0])
                for r in self._conn().execute(
                    "SELECT document FROM recordings WHERE status = 'live' AND recorder = ?",
                    (recorder,),
                ).fetchall()
            ]

        return [RecordingMeta.from_json(json.loads(d)) for d in await self._run(do)]
