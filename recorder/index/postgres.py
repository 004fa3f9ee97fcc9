"""PostgreSQL index for a fleet: replicas over one bucket share one database (docs/recorder.md,
"Fleet").

asyncpg with a connection pool: the index interface is async and called from the event loop,
so queries run without the SQLite index's worker thread. The schema comes from numbered SQL
files (``recorder/index/migrate.py``). Output text is one row per line with a ``tsvector`` of
its words (``recorder/search.py``: the same words SQLite's FTS5 tokenizer finds), searched
through a GIN index; each term becomes a ``phraseto_tsquery`` of its words, so nothing a user
types is ever tsquery syntax.

Live state is the table itself: a recording streaming into one replica is a row with status
``live`` whose lines that replica's text indexer writes every half second, and every replica
answers lists and searches from the same tables, so it is listed as live and searchable on
all of them without any message between replicas.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from recorder.errors import IndexUnavailableError, RecorderError
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
from recorder.index.migrate import migrate
from recorder.model import Hold, RecordingMeta
from recorder.search import Term, excerpt, metadata_text, parse_query, words
from recorder.text import Line

if TYPE_CHECKING:
    import asyncpg
    from asyncpg.pool import PoolConnectionProxy

_MAX_LINE_NO = (1 << 31) - 1  # line numbers are PostgreSQL integers
_CONTEXT = 200  # characters of a matching line returned whole (as in the SQLite index)
_UPSERT = """
INSERT INTO recordings (id, storage_key, node_id, node_name, node_user, src_user, ssh_user,
                        local_user, status, start, recorder, document, connection_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
ON CONFLICT (id) DO UPDATE SET
    storage_key = excluded.storage_key, node_id = excluded.node_id,
    node_name = excluded.node_name, node_user = excluded.node_user,
    src_user = excluded.src_user, ssh_user = excluded.ssh_user,
    local_user = excluded.local_user, status = excluded.status, start = excluded.start,
    recorder = excluded.recorder, document = excluded.document,
    connection_id = excluded.connection_id
RETURNING rkey
"""
_SET_META_LINE = """
INSERT INTO text_lines (rkey, n, time, text, words)
VALUES ($1, 0, NULL, $2, to_tsvector('simple', $3))
ON CONFLICT (rkey, n) DO UPDATE SET text = excluded.text, words = excluded.words
"""
_INSERT_LINES = """
INSERT INTO text_lines (rkey, n, time, text, words)
SELECT $1, u.n, u.t, u.x, to_tsvector('simple', u.w)
FROM unnest($2::integer[], $3::float8[], $4::text[], $5::text[]) AS u(n, t, x, w)
"""
_MATCHES = """
SELECT rkey, time, text FROM (
    SELECT rkey, n, time, text, row_number() OVER (PARTITION BY rkey ORDER BY n) AS k
    FROM text_lines WHERE rkey = ANY($1::bigint[]) AND n > 0 AND words @@ $2::tsquery
) AS hits WHERE k <= $3 ORDER BY rkey, n
"""

# the database's clock, never a replica's: replicas' clocks may disagree
_HEARTBEAT = """
INSERT INTO replicas (recorder, last_seen) VALUES ($1, now())
ON CONFLICT (recorder) DO UPDATE SET last_seen = now()
"""
# A replica that never heartbeated (a recorder older than schema 2) is not presumed dead. Two
# replicas claiming at once: the second's UPDATE waits for the first's row locks, then finds
# the rows owned by a live replica (the first) and leaves them.
_CLAIM = """
UPDATE recordings SET recorder = $1
WHERE status = 'live' AND recorder <> $1 AND recorder IN (
    SELECT recorder FROM replicas WHERE last_seen < now() - make_interval(secs => $2))
RETURNING document, hold
"""

# asyncpg prepares every statement; from its sixth run PostgreSQL may switch to a generic
# plan, which cannot see the tsquery parameter: a word in every line then looks rare, and a
# search that takes a millisecond with its custom plan (walk the recordings newest first)
# took 100 ms over 100,000 recordings (a bitmap scan of every matching line). Planning each
# query costs well under a millisecond (docs/performance.md, "Fleet").
_SESSION = {"plan_cache_mode": "force_custom_plan"}


def is_postgres_url(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


def _clean(text: str) -> str:
    """PostgreSQL text holds no NUL and only valid UTF-8 (no lone surrogates)."""
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


def _opt(value: object) -> str | None:
    return _clean(value) if isinstance(value, str) else None


def tsquery_sql(terms: tuple[Term, ...], first_param: int) -> tuple[str, list[str]] | None:
    """The SQL of a tsquery matching a line that holds every term, and its parameters: each
    term's words go in as a parameter of ``phraseto_tsquery`` (plain text, never syntax); a
    prefix term gets ``:*`` appended to PostgreSQL's own rendering of that tsquery. None
    when a term has no word (it can match nothing)."""
    parts, params = [], []
    for i, t in enumerate(terms):
        w = words(t.text)
        if not w:
            return None
        p = f"phraseto_tsquery('simple', ${first_param + i})"
        parts.append(f"(({p})::text || ':*')::tsquery" if t.prefix else p)
        params.append(w)
    return " && ".join(parts), params


class PostgresIndex(Index):
    def __init__(self, url: str, *, min_size: int = 1, max_size: int = 10) -> None:
        self.url = url
        self.min_size = min_size
        self.max_size = max_size
        self._pool: asyncpg.Pool | None = None

    def describe(self) -> str:
        """The URL without its password, for logs."""
        from urllib.parse import urlsplit

        parts = urlsplit(self.url)
        host = parts.hostname or ""
        if parts.port:
            host += f":{parts.port}"
        user = f"{parts.username}@" if parts.username else ""
        return f"{parts.scheme}://{user}{host}{parts.path}"

    def _db(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RecorderError("index is not open")
        return self._pool

    async def open(self) -> None:
        import asyncpg

        try:
            self._pool = await asyncpg.create_pool(
                self.url, min_size=self.min_size, max_size=self.max_size, timeout=30,
                command_timeout=120, server_settings=_SESSION,
            )
            async with self._pool.acquire() as conn:
                await migrate(conn)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, ValueError) as e:
            if self._pool is not None:
                await self._pool.close()
                self._pool = None
            raise IndexUnavailableError(
                f"cannot open the index {self.describe()}: {e}") from e

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def put(self, meta: RecordingMeta) -> None:
        h = meta.header
        row = (
            meta.id, _clean(meta.key), meta.node.id, _clean(meta.node.name),
            _opt(meta.node.user), _opt(h.get("srcNodeUser")), _opt(h.get("sshUser")),
            _opt(h.get("localUser")), meta.status, meta.start, meta.recorder,
            json.dumps(meta.document()),  # ASCII: a lone surrogate in a header survives
            _opt(h.get("connectionID")),
        )
        line = _clean(metadata_text(meta))
        async with self._db().acquire() as conn, conn.transaction():
            rkey = await conn.fetchval(_UPSERT, *row)
            await conn.execute(_SET_META_LINE, rkey, line, words(line))

    async def get(self, recording_id: str) -> RecordingMeta | None:
        row = await self._db().fetchrow(
            "SELECT document, hold FROM recordings WHERE id = $1", recording_id)
        return None if row is None else row_meta(row["document"], row["hold"])

    async def set_hold(self, recording_id: str, hold: Hold | None) -> bool:
        status = await self._db().execute(
            "UPDATE recordings SET hold = $1 WHERE id = $2", hold_column(hold), recording_id)
        return status != "UPDATE 0"

    async def query(self, query: Query) -> Page:
        where: list[str] = []
        args: list[Any] = []

        def arg(value: Any) -> str:
            args.append(value)
            return f"${len(args)}"

        if query.node:
            node = arg(query.node)
            like = arg(_like_escape(query.node) + ".%")
            where.append(f"(node_id = {node} OR node_name = {node} OR node_name LIKE {like})")
        if query.user:
            u = arg(query.user)
            where.append(f"(src_user = {u} OR ssh_user = {u} OR local_user = {u} "
                         f"OR node_user = {u})")
        if query.connection:
            where.append(f"connection_id = {arg(query.connection)}")
        if query.since is not None:
            where.append(f"start >= {arg(query.since)}")
        if query.until is not None:
            where.append(f"start < {arg(query.until)}")
        if query.live is not None:
            where.append("status = 'live'" if query.live else "status <> 'live'")
        if query.cursor is not None:
            s, i = arg(query.cursor.start), arg(query.cursor.id)
            where.append(f"(start < {s} OR (start = {s} AND id < {i}))")
        limit = max(1, min(query.limit, MAX_LIMIT))
        terms: tuple[Term, ...] = ()
        db = self._db()
        tsquery: str | None = None
        if query.q is not None and query.q.strip():
            terms = parse_query(query.q)
            built = tsquery_sql(terms, 1) if terms else None
            if built is None:
                return Page([], None)
            sql, params = built
            tsquery = str(await db.fetchval(f"SELECT ({sql})::text", *params))
            # only a placeholder goes into the SQL text; the tsquery is its parameter
            where.append("rkey IN (SELECT rkey FROM text_lines WHERE words @@ "  # noqa: S608
                         f"{arg(tsquery)}::tsquery)")
        sql = "SELECT document, start, id, rkey, hold FROM recordings"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY start DESC, id DESC LIMIT {arg(limit + 1)}"
        rows = await db.fetch(sql, *args)
        nxt = None
        if len(rows) > limit:
            rows = rows[:limit]
            nxt = Cursor(float(rows[-1]["start"]), str(rows[-1]["id"]))
        matches: dict[str, tuple[Match, ...]] = {}
        if tsquery is not None:
            ids = {int(r["rkey"]): str(r["id"]) for r in rows}
            found: dict[str, list[Match]] = {rid: [] for rid in ids.values()}
            for h in await db.fetch(_MATCHES, list(ids), tsquery, MAX_MATCHES):
                text = excerpt(str(h["text"]), terms, _CONTEXT)
                t = h["time"]
                found[ids[int(h["rkey"])]].append(
                    Match(float(t) if t is not None else 0.0, text))
            matches = {rid: tuple(hits) for rid, hits in found.items()}
        return Page([row_meta(r["document"], r["hold"]) for r in rows], nxt, matches)

    async def add_text(self, updates: Sequence[TextUpdate]) -> None:
        if not updates:
            return
        async with self._db().acquire() as conn, conn.transaction():
            for update in updates:
                await _add_text(conn, update)

    async def clear_text(self, recording_id: str) -> None:
        async with self._db().acquire() as conn, conn.transaction():
            rkey = await conn.fetchval(
                "SELECT rkey FROM recordings WHERE id = $1 FOR UPDATE", recording_id)
            if rkey is not None:
                await conn.execute("DELETE FROM text_lines WHERE rkey = $1 AND n > 0", rkey)
                await conn.execute("UPDATE recordings SET text_lines = 0, text_partial = false "
                                   "WHERE rkey = $1", rkey)

    async def text(self, recording_id: str) -> list[Line]:
        rows = await self._db().fetch(
            "SELECT l.time, l.text FROM text_lines l JOIN recordings r USING (rkey) "
            "WHERE r.id = $1 AND l.n > 0 ORDER BY l.n", recording_id)
        return [Line(float(r["time"]), str(r["text"])) for r in rows]

    async def compact(self) -> None:
        """After a bulk build: merge the GIN index's pending entries and refresh the planner's
        statistics, which autovacuum would do later (``VACUUM`` cannot run in a
        transaction, so on a connection of its own)."""
        async with self._db().acquire() as conn:
            await conn.execute("VACUUM ANALYZE text_lines")
            await conn.execute("ANALYZE recordings")

    async def retain(self, ids: set[str]) -> int:
        async with self._db().acquire() as conn, conn.transaction():
            # the lines go with their recording (ON DELETE CASCADE)
            status = await conn.execute(
                "DELETE FROM recordings WHERE NOT (id = ANY($1::text[]))", sorted(ids))
        return int(status.split()[-1])

    async def delete(self, recording_id: str) -> bool:
        status = await self._db().execute("DELETE FROM recordings WHERE id = $1", recording_id)
        return status != "DELETE 0"

    async def open_recordings(self, recorder: str) -> list[RecordingMeta]:
        rows = await self._db().fetch(
            "SELECT document, hold FROM recordings WHERE status = 'live' AND recorder = $1",
            recorder)
        return [row_meta(r["document"], r["hold"]) for r in rows]


    async def heartbeat(self, recorder: str) -> None:
        await self._db().execute(_HEARTBEAT, recorder)

    async def claim_orphans(self, recorder: str, stale_after: float) -> list[RecordingMeta]:
        rows = await self._db().fetch(_CLAIM, recorder, stale_after)
        return [row_meta(r["document"], r["hold"]) for r in rows]


async def _add_text(conn: PoolConnectionProxy[Any], update: TextUpdate) -> None:
    row = await conn.fetchrow(
        "SELECT rkey, text_lines, text_partial FROM recordings WHERE id = $1 FOR UPDATE",
        update.recording_id)
    if row is None:
        return
    rkey, n, partial = int(row["rkey"]), int(row["text_lines"]), bool(row["text_partial"])
    if partial:
        await conn.execute("DELETE FROM text_lines WHERE rkey = $1 AND n = $2", rkey, n)
        n -= 1
    numbers: list[int] = []
    times: list[float] = []
    texts: list[str] = []
    for line in (*update.lines, *((update.partial,) if update.partial else ())):
        if n >= _MAX_LINE_NO:
            break  # two billion lines: the rest of this recording is not searchable
        n += 1
        numbers.append(n)
        times.append(line.time)
        texts.append(_clean(line.text))
    if numbers:
        await conn.execute(_INSERT_LINES, rkey, numbers, times, texts,
                           [words(t) for t in texts])
    await conn.execute(
        "UPDATE recordings SET text_lines = $1, text_partial = $2 WHERE rkey = $3",
        n, update.partial is not None and n < _MAX_LINE_NO, rkey)


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
