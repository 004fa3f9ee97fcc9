"""SQLite index in the state dir: embedded, nothing to run.

One connection used from a single worker thread (queries are short); WAL mode so a crash
never corrupts it, and the index can anyway be rebuilt from storage. Output text is an FTS5
table over ``text_lines`` (docs/recorder.md, "Search").
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from recorder.errors import RecorderError
from recorder.index.base import (
    MAX_LIMIT,
    MAX_MATCHES,
    Cursor,
    Index,
    Match,
    Page,
    Query,
    TextUpdate,
    hold_column,
    row_meta,
)
from recorder.model import Hold, RecordingMeta
from recorder.search import Term, metadata_text, parse_query
from recorder.text import Line

T = TypeVar("T")

# Line ids: rkey << 32 | n, n = 0 the metadata line, 1... the output lines in order; so a
# recording's lines are one range of the FTS5 rowid, which FTS5 seeks to without a scan.
_LINE_BITS = 32
_MAX_LINE_NO = (1 << _LINE_BITS) - 1
SCHEMA_VERSION = 3  # 3: the hold column
_SCHEMA = """
CREATE TABLE IF NOT EXISTS recordings (
    rkey INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
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
    document TEXT NOT NULL,
    text_lines INTEGER NOT NULL DEFAULT 0,  -- output lines indexed: numbers 1..text_lines
    text_partial INTEGER NOT NULL DEFAULT 0,  -- 1: the last of them is the partial line
    hold TEXT  -- the legal hold (JSON) as storage has it, which put() leaves alone
);
CREATE INDEX IF NOT EXISTS recordings_start ON recordings (start DESC, id DESC);
CREATE INDEX IF NOT EXISTS recordings_status ON recordings (status, recorder);
CREATE INDEX IF NOT EXISTS recordings_connection
    ON recordings (json_extract(document, '$.header.connectionID'));
CREATE TABLE IF NOT EXISTS text_lines (id INTEGER PRIMARY KEY, time REAL, text TEXT NOT NULL);
CREATE VIRTUAL TABLE IF NOT EXISTS text_fts USING fts5(
    text, content='text_lines', content_rowid='id', tokenize='unicode61 remove_diacritics 2'
);
"""
_UPSERT = """
INSERT INTO recordings (id, storage_key, node_id, node_name, node_user, src_user, ssh_user,
                        local_user, status, start, recorder, document)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET
    storage_key = excluded.storage_key, node_id = excluded.node_id,
    node_name = excluded.node_name, node_user = excluded.node_user,
    src_user = excluded.src_user, ssh_user = excluded.ssh_user,
    local_user = excluded.local_user, status = excluded.status, start = excluded.start,
    recorder = excluded.recorder, document = excluded.document
RETURNING rkey
"""
# a recording has a line (or its metadata) in its range of rowids (1 << 32 = 4294967296)
_PROBE = """EXISTS (SELECT 1 FROM text_fts WHERE text_fts MATCH ? AND text_fts.rowid
    BETWEEN recordings.rkey * 4294967296 AND recordings.rkey * 4294967296 + 4294967295)"""
# a search that matches more recordings than this is run recording by recording, newest
# first (each probe a seek in FTS5's doclists), instead of collecting the set of matching
# recordings first (one seek per matching recording)
_SET_LIMIT = 200
_CONTEXT = 200  # characters of a matching line returned whole; a longer one is cut around a hit


def _fts_expression(terms: tuple[Term, ...]) -> str:
    """FTS5 syntax with every term a quoted string: nothing the user typed is an operator."""
    parts = []
    for t in terms:
        quoted = '"' + t.text.replace('"', '""') + '"'
        parts.append(quoted + (" *" if t.prefix else ""))
    return " AND ".join(parts)


def _span(rkey: int) -> tuple[int, int]:
    """The rowids of a recording's output lines."""
    return (rkey << _LINE_BITS) + 1, (rkey << _LINE_BITS) + _MAX_LINE_NO


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


# FTS5 keeps its index in segments merged as they pile up (automerge); a live index of 100,000
# recordings had 9, which made a phrase search 5x slower than one segment
# (docs/performance.md, "Search"). So once the text written since the last compaction is as
# large as the index file (and at least COMPACT_MIN bytes), each following write also merges
# MERGE_STEP pages towards one segment until none is left: the index is rewritten each time it
# doubles (about twice the writes in all), a few milliseconds of each flush at a time. (At
# every 10 % of growth instead, building the text of 64 MiB of output cost 2.3x the CPU.)
COMPACT_SHARE = 1.0
COMPACT_MIN = 256 * 1024 * 1024
MERGE_STEP = 200  # pages (4 KiB) per step


class SqliteIndex(Index):
    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._written = 0  # bytes of text since the last compaction ended
        self._compacting = False
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-index")

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def describe(self) -> str:
        return f"SQLite {self.path}"

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
                # the text index outgrows SQLite's 2 MB default cache at a few thousand
                # recordings: each search seek would read its pages through syscalls
                db.execute("PRAGMA cache_size=-65536")  # KiB
                db.execute("PRAGMA mmap_size=1073741824")
                with db:
                    db.execute("BEGIN IMMEDIATE")
                    old = [r[1] for r in db.execute("PRAGMA table_info(recordings)")]
                    if old and "rkey" not in old:
                        _migrate_v1(db)
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            db.execute(statement)
                    columns = [r[1] for r in db.execute("PRAGMA table_info(recordings)")]
                    if "hold" not in columns:  # schema 2
                        db.execute("ALTER TABLE recordings ADD COLUMN hold TEXT")
                    db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
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
        h = meta.header

        def text(name: str) -> str | None:
            value = h.get(name)
            return value if isinstance(value, str) else None

        row = (
            meta.id, meta.key, meta.node.id, meta.node.name, meta.node.user,
            text("srcNodeUser"), text("sshUser"), text("localUser"),
            meta.status, meta.start, meta.recorder, json.dumps(meta.document(), ensure_ascii=False),
        )
        line = metadata_text(meta)

        def do() -> None:
            db = self._conn()
            with db:
                db.execute("BEGIN")
                rkey = _put_row(db, row)
                _set_line(db, rkey << _LINE_BITS, None, line)

        await self._run(do)

    async def get(self, recording_id: str) -> RecordingMeta | None:
        def do() -> tuple[str, str | None] | None:
            r = self._conn().execute(
                "SELECT document, hold FROM recordings WHERE id = ?", (recording_id,)
            ).fetchone()
            return None if r is None else (str(r[0]), r[1])

        row = await self._run(do)
        return None if row is None else row_meta(*row)

    async def set_hold(self, recording_id: str, hold: Hold | None) -> bool:
        def do() -> bool:
            db = self._conn()
            with db:
                db.execute("BEGIN")
                return db.execute("UPDATE recordings SET hold = ? WHERE id = ?",
                                  (hold_column(hold), recording_id)).rowcount > 0

        return bool(await self._run(do))

    async def query(self, query: Query) -> Page:
        where: list[str] = []
        args: list[Any] = []
        if query.node:
            where.append("(node_id = ? OR node_name = ? OR node_name LIKE ? ESCAPE '\\')")
            args += [query.node, query.node, _like_escape(query.node) + ".%"]
        if query.user:
            where.append("(src_user = ? OR ssh_user = ? OR local_user = ? OR node_user = ?)")
            args += [query.user] * 4
        if query.connection:
            where.append("json_extract(document, '$.header.connectionID') = ?")
            args.append(query.connection)
        if query.since is not None:
            where.append("start >= ?")
            args.append(query.since)
        if query.until is not None:
            where.append("start < ?")
            args.append(query.until)
        if query.live is not None:
            where.append("status = 'live'" if query.live else "status != 'live'")
        if query.cursor is not None:
            where.append("(start < ? OR (start = ? AND id < ?))")
            args += [query.cursor.start, query.cursor.start, query.cursor.id]
        limit = max(1, min(query.limit, MAX_LIMIT))
        expression: str | None = None
        if query.q is not None and query.q.strip():
            terms = parse_query(query.q)
            if not terms:
                return Page([], None)
            expression = _fts_expression(terms)

        def do() -> tuple[list[tuple[str, float, str, int, str | None]],
                          dict[str, tuple[Match, ...]]]:
            db = self._conn()
            conditions, values = list(where), list(args)
            if expression is not None:
                keys = _matching_recordings(db, expression, _SET_LIMIT)
                if keys is not None:
                    conditions.append("rkey IN (SELECT value FROM json_each(?))")
                    values.append(json.dumps(keys))
                else:  # common terms: probe each recording, newest first, until the page is full
                    conditions.append(_PROBE)
                    values.append(expression)
            sql = "SELECT document, start, id, rkey, hold FROM recordings"
            if conditions:
                sql += " WHERE " + " AND ".join(conditions)
            sql += " ORDER BY start DESC, id DESC LIMIT ?"
            values.append(limit + 1)
            rows = [(str(r[0]), float(r[1]), str(r[2]), int(r[3]), r[4])
                    for r in db.execute(sql, values).fetchall()]
            matches: dict[str, tuple[Match, ...]] = {}
            if expression is not None:
                for r in rows[:limit]:
                    matches[r[2]] = _matches(db, expression, r[3])
            return rows, matches

        try:
            rows, matches = await self._run(do)
        except sqlite3.OperationalError as e:
            if expression is not None and "fts5" in str(e):
                return Page([], None)  # a term FTS5 tokenizes to nothing
            raise
        nxt = None
        if len(rows) > limit:
            rows = rows[:limit]
            nxt = Cursor(rows[-1][1], rows[-1][2])
        return Page([row_meta(r[0], r[4]) for r in rows], nxt, matches)

    async def add_text(self, updates: Sequence[TextUpdate]) -> None:
        def do() -> None:
            db = self._conn()
            with db:
                db.execute("BEGIN")
                for update in updates:
                    _add_text(db, update)
            self._written += sum(len(line.text) for u in updates for line in u.lines)
            if not self._compacting and self._written > COMPACT_MIN:
                size = self.path.stat().st_size if self.path.exists() else 0
                self._compacting = self._written > size * COMPACT_SHARE
            if self._compacting:
                self._compacting = _merge_step(db)
                if not self._compacting:
                    self._written = 0

        if updates:
            await self._run(do)

    async def compact(self) -> None:
        def do() -> None:
            db = self._conn()
            while _merge_step(db):
                pass
            self._written, self._compacting = 0, False

        await self._run(do)

    async def clear_text(self, recording_id: str) -> None:
        def do() -> None:
            db = self._conn()
            with db:
                db.execute("BEGIN")
                r = db.execute("SELECT rkey FROM recordings WHERE id = ?",
                               (recording_id,)).fetchone()
                if r is not None:
                    _clear_lines(db, int(r[0]), *_span(int(r[0])))
                    db.execute("UPDATE recordings SET text_lines = 0, text_partial = 0 "
                               "WHERE rkey = ?", (int(r[0]),))

        await self._run(do)

    async def text(self, recording_id: str) -> list[Line]:
        def do() -> list[Line]:
            db = self._conn()
            r = db.execute("SELECT rkey FROM recordings WHERE id = ?",
                           (recording_id,)).fetchone()
            if r is None:
                return []
            return [Line(float(t), str(x)) for t, x in db.execute(
                "SELECT time, text FROM text_lines WHERE id BETWEEN ? AND ? ORDER BY id",
                _span(int(r[0])),
            ).fetchall()]

        return list(await self._run(do))

    async def retain(self, ids: set[str]) -> int:
        def do() -> int:
            db = self._conn()
            stale = [
                (str(r[0]), int(r[1]))
                for r in db.execute("SELECT id, rkey FROM recordings").fetchall()
                if str(r[0]) not in ids
            ]
            with db:  # one transaction
                db.execute("BEGIN")
                for _, rkey in stale:
                    _clear_lines(db, rkey, rkey << _LINE_BITS, (rkey << _LINE_BITS) + _MAX_LINE_NO)
                db.executemany("DELETE FROM recordings WHERE rkey = ?", [(k,) for _, k in stale])
            return len(stale)

        return int(await self._run(do))

    async def delete(self, recording_id: str) -> bool:
        def do() -> bool:
            db = self._conn()
            with db:
                db.execute("BEGIN")
                r = db.execute("SELECT rkey FROM recordings WHERE id = ?",
                               (recording_id,)).fetchone()
                if r is None:
                    return False
                rkey = int(r[0])
                _clear_lines(db, rkey, rkey << _LINE_BITS, (rkey << _LINE_BITS) + _MAX_LINE_NO)
                db.execute("DELETE FROM recordings WHERE rkey = ?", (rkey,))
                return True

        return bool(await self._run(do))

    async def open_recordings(self, recorder: str) -> list[RecordingMeta]:
        def do() -> list[tuple[str, str | None]]:
            return [
                (str(r[0]), r[1])
                for r in self._conn().execute(
                    "SELECT document, hold FROM recordings WHERE status = 'live' AND recorder = ?",
                    (recorder,),
                ).fetchall()
            ]

        return [row_meta(*row) for row in await self._run(do)]


def _put_row(db: sqlite3.Connection, row: tuple[Any, ...]) -> int:
    """Inserts or updates the row, keeping its rkey (and so its lines' ids) and text counts."""
    r = db.execute(_UPSERT, row).fetchone()
    return int(r[0])


def _set_line(db: sqlite3.Connection, line_id: int, time: float | None, text: str) -> None:
    old = db.execute("SELECT time, text FROM text_lines WHERE id = ?", (line_id,)).fetchone()
    if old is not None:
        if old[0] == time and old[1] == text:
            return
        _delete_line(db, line_id, str(old[1]))
    db.execute("INSERT INTO text_lines (id, time, text) VALUES (?, ?, ?)", (line_id, time, text))
    db.execute("INSERT INTO text_fts (rowid, text) VALUES (?, ?)", (line_id, text))


def _delete_line(db: sqlite3.Connection, line_id: int, text: str) -> None:
    # an external-content FTS5 table forgets a row when told its old text
    db.execute("INSERT INTO text_fts (text_fts, rowid, text) VALUES ('delete', ?, ?)",
               (line_id, text))
    db.execute("DELETE FROM text_lines WHERE id = ?", (line_id,))


def _clear_lines(db: sqlite3.Connection, rkey: int, first: int, last: int) -> None:
    for line_id, text in db.execute(
        "SELECT id, text FROM text_lines WHERE id BETWEEN ? AND ?", (first, last)
    ).fetchall():
        _delete_line(db, int(line_id), str(text))


def _add_text(db: sqlite3.Connection, update: TextUpdate) -> None:
    r = db.execute("SELECT rkey, text_lines, text_partial FROM recordings WHERE id = ?",
                   (update.recording_id,)).fetchone()
    if r is None:
        return
    rkey, n, partial = int(r[0]), int(r[1]), bool(r[2])
    base = rkey << _LINE_BITS
    if partial:
        old = db.execute("SELECT text FROM text_lines WHERE id = ?", (base + n,)).fetchone()
        if old is not None:
            _delete_line(db, base + n, str(old[0]))
        n -= 1
    rows = []
    for line in (*update.lines, *((update.partial,) if update.partial else ())):
        if n >= _MAX_LINE_NO:
            break  # four billion lines: the rest of this recording is not searchable
        n += 1
        rows.append((base + n, line.time, line.text))
    db.executemany("INSERT INTO text_lines (id, time, text) VALUES (?, ?, ?)", rows)
    db.executemany("INSERT INTO text_fts (rowid, text) VALUES (?, ?)",
                   [(i, text) for i, _, text in rows])
    db.execute("UPDATE recordings SET text_lines = ?, text_partial = ? WHERE rkey = ?",
               (n, int(update.partial is not None and n < _MAX_LINE_NO), rkey))


def _merge_step(db: sqlite3.Connection) -> bool:
    """One bounded step of merging the FTS5 segments into one (its own short transaction,
    so other writers wait milliseconds, not the whole merge); False once there is nothing
    left to merge (the command itself counts as one change: fewer than two means it did
    no work, as the FTS5 documentation says)."""
    before = db.total_changes
    with db:
        db.execute("BEGIN")
        db.execute("INSERT INTO text_fts (text_fts, rank) VALUES ('merge', ?)", (-MERGE_STEP,))
    return db.total_changes - before >= 2


def _matching_recordings(db: sqlite3.Connection, expression: str, limit: int) -> list[int] | None:
    """The rkeys of every recording with a matching line (or metadata), found by seeking
    from one recording's range to the next, so that a recording with a million hits costs
    one seek; None when there are more than ``limit``."""
    keys: list[int] = []
    low = 0
    while len(keys) <= limit:
        r = db.execute(
            "SELECT rowid FROM text_fts WHERE text_fts MATCH ? AND rowid >= ? "
            "ORDER BY rowid LIMIT 1", (expression, low),
        ).fetchone()
        if r is None:
            return keys
        rkey = int(r[0]) >> _LINE_BITS
        keys.append(rkey)
        low = (rkey + 1) << _LINE_BITS
    return None


def _matches(db: sqlite3.Connection, expression: str, rkey: int) -> tuple[Match, ...]:
    first, last = _span(rkey)
    rows = db.execute(
        "SELECT rowid, CASE WHEN length(text) <= ? THEN text "
        "ELSE snippet(text_fts, 0, '', '', '…', 24) END "
        "FROM text_fts WHERE text_fts MATCH ? AND rowid BETWEEN ? AND ? ORDER BY rowid LIMIT ?",
        (_CONTEXT, expression, first, last, MAX_MATCHES),
    ).fetchall()
    out = []
    for line_id, text in rows:
        t = db.execute("SELECT time FROM text_lines WHERE id = ?", (line_id,)).fetchone()
        out.append(Match(float(t[0]) if t and t[0] is not None else 0.0, str(text)))
    return tuple(out)


def _migrate_v1(db: sqlite3.Connection) -> None:
    """Index schema 1 (metadata only, no rkey): its rows are copied into schema 2 and given
    their metadata line; their output text comes with the next ``tssh-recorder reindex``."""
    db.execute("ALTER TABLE recordings RENAME TO recordings_v1")
    db.execute("DROP INDEX IF EXISTS recordings_start")
    db.execute("DROP INDEX IF EXISTS recordings_status")
    for statement in _SCHEMA.split(";"):
        if statement.strip():
            db.execute(statement)
    for (doc,) in db.execute("SELECT document FROM recordings_v1").fetchall():
        meta = RecordingMeta.from_json(json.loads(doc))
        h = meta.header
        row = (meta.id, meta.key, meta.node.id, meta.node.name, meta.node.user,
               *(h.get(k) if isinstance(h.get(k), str) else None
                 for k in ("srcNodeUser", "sshUser", "localUser")),
               meta.status, meta.start, meta.recorder, str(doc))
        _set_line(db, _put_row(db, row) << _LINE_BITS, None, metadata_text(meta))
    db.execute("DROP TABLE recordings_v1")
