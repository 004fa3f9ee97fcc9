"""The index contract, run against SQLite and PostgreSQL: lines, partial lines, queries,
paging, matches; and what is particular to each (SQLite's migration from schema 1,
PostgreSQL's numbered migrations)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from recorder.index.base import Index, Query, TextUpdate
from recorder.index.postgres import PostgresIndex
from recorder.index.sqlite import SqliteIndex
from recorder.model import Hold, NodeInfo, RecordingMeta
from recorder.search import Term, parse_query
from recorder.text import Line


def meta(i: int, **header: str) -> RecordingMeta:
    return RecordingMeta(
        id=f"rec-{i:05d}", key=f"n/{i}.cast", node=NodeInfo("nSRV1", "server"),
        start=1_700_000_000.0 + i, header={"version": 2, "sshUser": "alice", **header},
        recorder="key",
    )


NewIndex = Callable[[], Index]


@pytest.fixture(params=["sqlite", "postgresql"])
def new_index(request: pytest.FixtureRequest, tmp_path: Path) -> NewIndex:
    """Makes an index of the parameter's kind, empty (a fresh PostgreSQL database)."""
    if request.param == "sqlite":
        return lambda: SqliteIndex(tmp_path / "index.sqlite3")
    dsn = request.getfixturevalue("postgres_dsn")
    return lambda: PostgresIndex(dsn, max_size=2)


async def opened(new: NewIndex | Path) -> Index:
    index = SqliteIndex(new / "index.sqlite3") if isinstance(new, Path) else new()
    await index.open()
    return index


def test_parse_query() -> None:
    assert parse_query('rm -rf "sudo reboot"  x* -- |') == (
        Term("rm"), Term("-rf"), Term("sudo reboot", phrase=True), Term("x", prefix=True),
    )
    assert parse_query('"unclosed phrase') == (Term("unclosed phrase", phrase=True),)
    assert parse_query('a"b"c') == (Term("a"), Term("b", phrase=True), Term("c"))
    assert parse_query("  ") == ()


async def test_lines_partial_and_matches(new_index: NewIndex) -> None:
    index = await opened(new_index)
    try:
        await index.put(meta(1))
        await index.add_text([TextUpdate("rec-00001", [Line(0.5, "$ ls")],
                                         Line(1.0, "$ sudo rebo"))])
        assert await index.text("rec-00001") == [Line(0.5, "$ ls"), Line(1.0, "$ sudo rebo")]
        page = await index.query(Query(q="rebo*"))
        assert [m.id for m in page.recordings] == ["rec-00001"]
        assert [(h.time, h.text) for h in page.matches["rec-00001"]] == [(1.0, "$ sudo rebo")]
        # the partial line is replaced by its complete form
        await index.add_text([TextUpdate("rec-00001", [Line(1.0, "$ sudo reboot")],
                                         Line(3.0, "$"))])
        await index.add_text([TextUpdate("rec-00001", [Line(3.0, "$ exit")], None)])
        assert await index.text("rec-00001") == [
            Line(0.5, "$ ls"), Line(1.0, "$ sudo reboot"), Line(3.0, "$ exit")]
        assert (await index.query(Query(q="rebo"))).recordings == []
        hits = (await index.query(Query(q='"sudo reboot"'))).matches["rec-00001"]
        assert [h.text for h in hits] == ["$ sudo reboot"]
        # an unknown recording's text is dropped
        await index.add_text([TextUpdate("rec-99999", [Line(0, "ghost")])])
        assert (await index.query(Query(q="ghost"))).recordings == []
        # a put (the seal) keeps the text
        await index.put(meta(1).with_(status="complete"))
        assert len(await index.text("rec-00001")) == 3
        await index.clear_text("rec-00001")
        assert await index.text("rec-00001") == []
        assert (await index.query(Query(q="reboot"))).recordings == []
    finally:
        await index.close()


async def test_phrases_words_metadata_and_hostile_input(new_index: NewIndex) -> None:
    index = await opened(new_index)
    try:
        await index.put(meta(1, command="deploy-prod"))
        await index.put(meta(2))
        await index.add_text([
            TextUpdate("rec-00001", [Line(1, "rm -rf /tmp/build"), Line(2, "reboot sudo")]),
            TextUpdate("rec-00002", [Line(1, "sudo reboot now"), Line(2, "RM  -RF /")]),
        ])

        async def ids(q: str) -> list[str]:
            return [m.id for m in (await index.query(Query(q=q))).recordings]

        assert await ids('"sudo reboot"') == ["rec-00002"]  # a phrase keeps its order
        assert await ids("sudo reboot") == ["rec-00002", "rec-00001"]  # words: any order
        assert await ids('"rm -rf"') == ["rec-00002", "rec-00001"]  # case, spacing
        assert await ids("/tmp/build") == ["rec-00001"]
        assert await ids("deploy-prod") == ["rec-00001"]  # the header's command
        page = await index.query(Query(q="deploy-prod"))
        assert page.matches["rec-00001"] == ()  # metadata matches carry no hit
        for hostile in ('"', 'a" OR "b', "NEAR(a b)", "x:y", "^start", "a AND", "*", "(",
                        "text:rm", "rm NOT rf", "'; DROP TABLE recordings; --", "\\"):
            await index.query(Query(q=hostile))  # never an FTS5 syntax error
        assert await ids("rm NOT rf") == []  # NOT is a word here, not an operator
        assert await ids("--") == []
    finally:
        await index.close()


async def test_matches_first_five_in_time_order_and_long_lines(new_index: NewIndex) -> None:
    index = await opened(new_index)
    try:
        await index.put(meta(1))
        lines = [Line(float(i), f"line {i} needle") for i in range(20)]
        lines.append(Line(30.0, "x " * 400 + "needle " + "y " * 400))
        await index.add_text([TextUpdate("rec-00001", lines)])
        hits = (await index.query(Query(q="needle"))).matches["rec-00001"]
        assert [h.time for h in hits] == [0.0, 1.0, 2.0, 3.0, 4.0]
        await index.clear_text("rec-00001")
        await index.add_text([TextUpdate("rec-00001", [lines[-1]])])
        (hit,) = (await index.query(Query(q="needle"))).matches["rec-00001"]
        assert "needle" in hit.text and len(hit.text) < 200
    finally:
        await index.close()


async def test_filters_and_cursor_paging_with_q(new_index: NewIndex) -> None:
    index = await opened(new_index)
    try:
        for i in range(30):
            await index.put(meta(i, sshUser="bob" if i % 3 else "alice"))
            await index.add_text([TextUpdate(f"rec-{i:05d}", [
                Line(1, f"output {i}" + (" needle" if i % 2 else ""))])])
        seen, cursor = [], None
        for _ in range(10):
            page = await index.query(Query(q="needle", user="bob", limit=4, cursor=cursor))
            seen += [m.id for m in page.recordings]
            assert set(page.matches) == {m.id for m in page.recordings}
            cursor = page.next
            if cursor is None:
                break
        expected = [f"rec-{i:05d}" for i in reversed(range(30)) if i % 2 and i % 3]
        assert seen == expected
    finally:
        await index.close()


async def test_common_term_is_probed_newest_first(new_index: NewIndex) -> None:
    import recorder.index.sqlite as sq

    setattr(sq, "_SET_LIMIT", 5)  # noqa: B010 - the probing plan with a small index
    try:
        index = await opened(new_index)
        for i in range(12):
            await index.put(meta(i))
            await index.add_text([TextUpdate(f"rec-{i:05d}", [Line(1, "common word")] * 3)])
        page = await index.query(Query(q="common", limit=5))
        assert [m.id for m in page.recordings] == [f"rec-{i:05d}" for i in range(11, 6, -1)]
        page = await index.query(Query(q="common", limit=5, cursor=page.next))
        assert [m.id for m in page.recordings] == [f"rec-{i:05d}" for i in range(6, 1, -1)]
        assert len(page.matches["rec-00006"]) == 3
        await index.close()
    finally:
        setattr(sq, "_SET_LIMIT", 200)  # noqa: B010


async def test_retain_drops_text(new_index: NewIndex) -> None:
    index = await opened(new_index)
    try:
        await index.put(meta(1))
        await index.put(meta(2))
        await index.add_text([TextUpdate("rec-00001", [Line(1, "gone soon")])])
        assert await index.retain({"rec-00002"}) == 1
        assert (await index.query(Query(q="gone"))).recordings == []
        assert await index.text("rec-00001") == []
        assert [m.id for m in (await index.query(Query())).recordings] == ["rec-00002"]
        assert (await index.retain({"rec-00002"})) == 0
    finally:
        await index.close()


async def test_schema_1_index_is_migrated(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "index.sqlite3")
    db.executescript("""
        CREATE TABLE recordings (id TEXT PRIMARY KEY, storage_key TEXT NOT NULL,
          node_id TEXT NOT NULL, node_name TEXT NOT NULL, node_user TEXT, src_user TEXT,
          ssh_user TEXT, local_user TEXT, status TEXT NOT NULL, start REAL NOT NULL,
          recorder TEXT NOT NULL, search TEXT NOT NULL, document TEXT NOT NULL);
        CREATE INDEX recordings_start ON recordings (start DESC, id DESC);
        CREATE INDEX recordings_status ON recordings (status, recorder);
    """)
    m = meta(7, command="old-command")
    db.execute("INSERT INTO recordings VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", (
        m.id, m.key, "nSRV1", "server", None, None, "alice", None, "complete", m.start, "key",
        "", json.dumps(m.with_(status="complete").to_json())))
    db.commit()
    db.close()
    index = await opened(tmp_path)
    try:
        assert (await index.get(m.id)) is not None
        assert [r.id for r in (await index.query(Query(q="old-command"))).recordings] == [m.id]
        await index.add_text([TextUpdate(m.id, [Line(1, "new text")])])
        assert [r.id for r in (await index.query(Query(q="new"))).recordings] == [m.id]
    finally:
        await index.close()


async def test_segments_are_merged_as_text_grows_and_by_compact(tmp_path: Path) -> None:
    import recorder.index.sqlite as sq

    def segments() -> int:
        db = sqlite3.connect(tmp_path / "index.sqlite3")
        try:
            return int(db.execute("SELECT count(DISTINCT segid) FROM text_fts_idx").fetchone()[0])
        finally:
            db.close()

    index = await opened(tmp_path)
    try:
        await index.put(meta(1))
        for i in range(40):  # one segment per transaction until FTS5's automerge
            await index.add_text([TextUpdate("rec-00001", [Line(i, f"word{i} common")])])
        assert segments() > 1
        await index.compact()
        assert segments() == 1
        assert len((await index.query(Query(q="common"))).matches["rec-00001"]) == 5
        setattr(sq, "COMPACT_MIN", 0)  # noqa: B010 - compaction while writing
        setattr(sq, "COMPACT_SHARE", 0.0)  # noqa: B010
        for i in range(40, 80):
            await index.add_text([TextUpdate("rec-00001", [Line(i, f"word{i} common")])])
        assert segments() <= 2
        assert [m.id for m in (await index.query(Query(q="word77"))).recordings] == ["rec-00001"]
    finally:
        setattr(sq, "COMPACT_MIN", 256 * 1024 * 1024)  # noqa: B010
        setattr(sq, "COMPACT_SHARE", 1.0)  # noqa: B010


async def test_accents_case_and_tokens_postgres_parses_alone(new_index: NewIndex) -> None:
    """Words are letters and digits on both indexes: PostgreSQL's parser alone would read
    ``/tmp/build`` or ``user@host.example`` as one token."""
    index = await opened(new_index)
    try:
        await index.put(meta(1))
        await index.add_text([TextUpdate("rec-00001", [
            Line(1, "Café crème at /tmp/build"), Line(2, "ssh bob@db1.example.com"),
            Line(3, "nul \x00 byte")])])

        async def ids(q: str) -> list[str]:
            return [m.id for m in (await index.query(Query(q=q))).recordings]

        for q in ("cafe", "CRÈME", "build", "tmp", "db1", "example", '"bob db1"',
                  "bob@db1.example.com", "exam*", "byte"):
            assert await ids(q) == ["rec-00001"], q
        assert await ids("cafe build") == ["rec-00001"]  # one line holds both
        assert await ids("cafe bob") == []  # not in one line
    finally:
        await index.close()


async def test_postgres_migrations_run_once_and_refuse_a_newer_schema(postgres_dsn: str) -> None:
    import asyncpg

    from recorder.errors import IndexSchemaError
    from recorder.index.migrate import migrations

    first, second = PostgresIndex(postgres_dsn), PostgresIndex(postgres_dsn)
    await first.open()
    await second.open()  # a second replica: nothing left to apply
    await first.close()
    await second.close()
    conn = await asyncpg.connect(postgres_dsn)
    try:
        versions = [r["version"] for r in await conn.fetch("SELECT version FROM schema_version")]
        assert versions == [m.version for m in migrations()]
        await conn.execute("INSERT INTO schema_version (version, name) VALUES (999, 'x.sql')")
    finally:
        await conn.close()
    with pytest.raises(IndexSchemaError, match="newer"):
        await PostgresIndex(postgres_dsn).open()


async def test_postgres_unreachable_is_a_clear_error() -> None:
    from recorder.errors import IndexUnavailableError
    from tests.ports import free_port

    index = PostgresIndex(f"postgresql://nobody:secret@127.0.0.1:{free_port()}/x")
    with pytest.raises(IndexUnavailableError, match="cannot open the index") as e:
        await index.open()
    assert "secret" not in str(e.value)


async def test_delete_removes_the_row_and_its_text(new_index: NewIndex) -> None:
    index = await opened(new_index)
    try:
        await index.put(meta(1))
        await index.put(meta(2))
        await index.add_text([TextUpdate("rec-00001", [Line(1, "retained no more")])])
        assert await index.delete("rec-00001") is True
        assert await index.delete("rec-00001") is False
        assert await index.get("rec-00001") is None
        assert (await index.query(Query(q="retained"))).recordings == []
        assert [m.id for m in (await index.query(Query())).recordings] == ["rec-00002"]
    finally:
        await index.close()


async def test_the_hold_column_is_kept_by_puts(new_index: NewIndex) -> None:
    """The hold is the index's copy of the storage hold document: a put of the recording
    (its seal, a reindex) leaves it; get, query and open_recordings return it."""
    index = await opened(new_index)
    hold = Hold("case 42", "bob@example.com", 1_764_000_000.5)
    try:
        await index.put(meta(1))
        await index.put(meta(2))
        assert await index.set_hold("rec-00001", hold) is True
        assert await index.set_hold("rec-99999", hold) is False
        await index.put(meta(1).with_(status="complete"))  # the seal
        got = await index.get("rec-00001")
        assert got is not None and got.hold == hold and got.status == "complete"
        assert got.to_json()["hold"] == {"reason": "case 42", "by": "bob@example.com",
                                         "at": "2025-11-24T16:00:00.500Z"}
        assert [(m.id, m.hold) for m in (await index.query(Query())).recordings] == [
            ("rec-00002", None), ("rec-00001", hold)]
        assert [m.hold for m in await index.open_recordings("key")] == [None]
        await index.set_hold("rec-00001", None)
        got = await index.get("rec-00001")
        assert got is not None and got.hold is None
    finally:
        await index.close()


async def test_connection_filter_finds_every_recording_of_a_connection(
    new_index: NewIndex,
) -> None:
    index = await opened(new_index)
    try:
        for i in range(6):
            await index.put(meta(i, connectionID=f"ssh-conn-{i % 3}"))
        page = await index.query(Query(connection="ssh-conn-1"))
        assert [m.id for m in page.recordings] == ["rec-00004", "rec-00001"]
        page = await index.query(Query(connection="ssh-conn-1", limit=1))
        assert [m.id for m in page.recordings] == ["rec-00004"] and page.next is not None
        assert (await index.query(Query(connection="ssh-conn-9"))).recordings == []
    finally:
        await index.close()


async def test_a_schema_2_index_gets_the_hold_column(tmp_path: Path) -> None:
    index = await opened(tmp_path)
    await index.put(meta(1))
    await index.close()
    db = sqlite3.connect(tmp_path / "index.sqlite3")
    db.execute("ALTER TABLE recordings DROP COLUMN hold")  # as schema 2 had it
    db.execute("PRAGMA user_version=2")
    db.commit()
    db.close()
    index = await opened(tmp_path)
    try:
        assert await index.set_hold("rec-00001", Hold("x", "y", 0.0)) is True
        got = await index.get("rec-00001")
        assert got is not None and got.hold == Hold("x", "y", 0.0)
    finally:
        await index.close()


async def test_postgres_schema_2_backfills_connection_ids(postgres_dsn: str) -> None:
    """A database of schema 1 (a fleet before this recorder) gets the replicas table and
    its rows' connection ids when a newer replica opens it."""
    import asyncpg

    from recorder.index.migrate import migrations

    conn = await asyncpg.connect(postgres_dsn)
    try:
        await conn.execute("CREATE TABLE schema_version (version integer PRIMARY KEY, "
                           "name text NOT NULL, applied timestamptz NOT NULL DEFAULT now())")
        first = migrations()[0]
        await conn.execute(first.sql)
        await conn.execute("INSERT INTO schema_version (version, name) VALUES (1, $1)",
                           first.name)
        old = meta(1, connectionID="ssh-conn-old")
        await conn.execute(
            "INSERT INTO recordings (id, storage_key, node_id, node_name, status, start, "
            "recorder, document) VALUES ($1, $2, 'nSRV1', 'server', 'complete', $3, 'key', $4)",
            old.id, old.key, old.start, json.dumps(old.to_json()))
    finally:
        await conn.close()
    index = PostgresIndex(postgres_dsn)
    await index.open()
    try:
        page = await index.query(Query(connection="ssh-conn-old"))
        assert [m.id for m in page.recordings] == [old.id]
    finally:
        await index.close()


async def test_postgres_orphans_of_a_silent_replica_are_claimed_once(postgres_dsn: str) -> None:
    import asyncpg

    index = PostgresIndex(postgres_dsn)
    await index.open()
    try:
        for i, (owner, status) in enumerate([("dead", "live"), ("dead", "live"),
                                             ("dead", "complete"), ("alive", "live"),
                                             ("never-beat", "live")]):
            await index.put(meta(i).with_(recorder=owner, status=status))
        for replica in ("dead", "alive", "b", "c"):
            await index.heartbeat(replica)
        assert await index.claim_orphans("b", 30) == []  # everyone beat just now
        conn = await asyncpg.connect(postgres_dsn)
        try:
            await conn.execute("UPDATE replicas SET last_seen = now() - interval '1 minute' "
                               "WHERE recorder = 'dead'")
        finally:
            await conn.close()
        claimed = await asyncio.gather(index.claim_orphans("b", 30),
                                       index.claim_orphans("c", 30))
        ids = sorted(m.id for found in claimed for m in found)
        assert ids == ["rec-00000", "rec-00001"]  # live, of the silent replica, once
        owned = await index.open_recordings("b") + await index.open_recordings("c")
        assert sorted(m.id for m in owned) == ids  # the claimer's now: it recovers them too
        assert await index.claim_orphans("b", 30) == []
    finally:
        await index.close()
