"""Full-text search through the API of a real recorder process, uploads over real HTTP."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

from recorder.index.base import TextUpdate
from recorder.index.sqlite import SqliteIndex
from recorder.model import NodeInfo, RecordingMeta
from recorder.text import Line
from tests.recorder.conftest import (
    ALICE,
    CAROL,
    REPO,
    SERVER,
    RecorderProc,
    cast_header,
    event,
)
from tests.recorder.h2upload import H2Upload


def _upload(rec: RecorderProc, body: bytes) -> None:
    with rec.client(SERVER) as c:
        r = c.post("/record", content=iter([body]))
        assert r.status_code == 200, r.text


def _search(rec: RecorderProc, q: str, **params: object) -> list[dict[str, object]]:
    with rec.client(ALICE) as c:
        r = c.get("/api/v1/recordings", params={"q": q, **params})
        assert r.status_code == 200, r.text
        return list(r.json()["recordings"])


async def _index_text(state_dir: Path, rid: str) -> list[Line]:
    index = SqliteIndex(state_dir / "index.sqlite3")
    await index.open()
    try:
        return await index.text(rid)
    finally:
        await index.close()


def test_search_finds_words_through_escapes_and_splits(recorder: RecorderProc) -> None:
    body = cast_header(conn="ssh-conn-s1") + b"".join([
        event(0.5, "\x1b]0;alice@web1: ~\x07$ "),
        event(1.0, "sudo sys"), event(1.1, "te\x1b[1mmct"), event(1.2, "l\x1b[0m restart nginx"),
        event(1.3, "\r\n"),
        event(2.0, "$ rm -rg\x08f /var/tmp/cache\r\n"),
        event(3.0, "caf\xc3\xa9".encode("latin-1").decode("utf-8") + " ok\r\n"),
        event(4.0, "exit\r\n"), event(4.1, "0", "x"),
    ])
    _upload(recorder, body)
    _upload(recorder, cast_header(conn="ssh-conn-s2") + event(0.3, "nothing here\r\n"))
    [hit] = _search(recorder, "systemctl restart")
    assert hit["header"]["connectionID"] == "ssh-conn-s1"  # type: ignore[index]
    # when the line was whole on screen (what a player seeking there shows), not its prompt
    assert hit["matches"] == [{"time": 1.2, "text": "$ sudo systemctl restart nginx"}]
    [hit] = _search(recorder, '"rm -rf"')
    assert hit["matches"] == [{"time": 2.0, "text": "$ rm -rf /var/tmp/cache"}]
    assert [len(r["matches"]) for r in _search(recorder, "CAFE")] == [1]  # type: ignore[arg-type]
    assert _search(recorder, "web1") == []  # the OSC window title is not output text
    assert _search(recorder, '"restart systemctl"') == []
    assert len(_search(recorder, "ssh-conn-s2")) == 1  # metadata: the connection id
    assert len(_search(recorder, "here", node="server", user="alice")) == 1
    assert _search(recorder, "here", live="true") == []
    # a listing without q carries no matches field (the UI tells search results apart)
    with recorder.client(ALICE) as c:
        assert all("matches" not in r for r in c.get("/api/v1/recordings").json()["recordings"])
        assert c.get("/api/v1/recordings", params={"q": "x" * 201}).status_code == 422
    with recorder.client(CAROL) as c:  # not a viewer: search is reading
        assert c.get("/api/v1/recordings", params={"q": "nginx"}).status_code == 403


async def test_live_recording_is_searchable_while_it_streams(recorder: RecorderProc) -> None:
    up = await H2Upload.open("127.0.0.1", recorder.port, local_address=SERVER)
    try:
        assert await up.wait_headers() == 200
        await up.send(cast_header(conn="ssh-conn-live") + event(0.1, "$ "))
        async with recorder.aclient(ALICE) as c:
            async def found(q: str, within: float = 1.5) -> tuple[float, dict[str, object]]:
                sent = time.monotonic()
                while time.monotonic() - sent < within:
                    r = await c.get("/api/v1/recordings", params={"q": q})
                    got = r.json()["recordings"]
                    if got:
                        return time.monotonic() - sent, got[0]
                    await asyncio.sleep(0.05)
                raise AssertionError(f"{q!r} not found within {within} s")

            await up.send(event(1.0, "echo live-sec"))
            await up.send(event(1.2, "ret-word\r\n"))
            took, rec = await found("live-secret-word")
            assert rec["status"] == "live" and took < 1.5
            assert rec["matches"] == [{"time": 1.2, "text": "$ echo live-secret-word"}]
            # the line still being typed is searchable too, and its final form replaces it
            await up.send(event(2.0, "$ tail -f /var/log/au"))
            await found("/var/log/au*")
            await up.send(event(2.5, "th.log\r\n"))
            _, rec = await found("/var/log/auth.log")
            assert [m["text"] for m in rec["matches"]] == [  # type: ignore[attr-defined]
                "$ tail -f /var/log/auth.log"]
            assert (await c.get("/api/v1/recordings", params={"q": "/var/log/au"})).json()[
                "recordings"] == []
            await up.send(event(3.0, "$ exi"))
            await up.end()
            await up.wait_end()
            rid = str(rec["id"])
            r = await c.get(f"/api/v1/recordings/{rid}")
            assert r.json()["status"] == "complete"
    finally:
        await up.close()
    # what was indexed live is what a reindex builds from storage
    recorder.stop()
    live = await _index_text(recorder.state_dir, rid)
    assert [line.text for line in live] == [
        "$ echo live-secret-word", "$ tail -f /var/log/auth.log", "$ exi"]
    out = subprocess.run(
        [sys.executable, "-m", "recorder", "reindex", "--dst", recorder.dst,
         "--state-dir", str(recorder.state_dir)],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
    )
    assert out.returncode == 0, out.stderr
    assert await _index_text(recorder.state_dir, rid) == live


def test_reindex_rebuilds_the_text_from_storage(recorder: RecorderProc) -> None:
    _upload(recorder, cast_header(conn="ssh-conn-ri") + event(0.2, "$ make deploy\r\n"))
    recorder.stop()
    for name in ("index.sqlite3", "index.sqlite3-wal", "index.sqlite3-shm"):
        (recorder.state_dir / name).unlink(missing_ok=True)
    out = subprocess.run(
        [sys.executable, "-m", "recorder", "reindex", "--dst", recorder.dst,
         "--state-dir", str(recorder.state_dir)],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
    )
    assert out.returncode == 0, out.stderr
    recorder.start()
    [hit] = _search(recorder, "make deploy")
    assert hit["matches"] == [{"time": 0.2, "text": "$ make deploy"}]


async def _fill(state_dir: Path, count: int) -> None:
    index = SqliteIndex(state_dir / "index.sqlite3")
    await index.open()
    try:
        for base in range(0, count, 500):
            for i in range(base, min(count, base + 500)):
                await index.put(RecordingMeta(
                    id=f"20261201T000000Z-{i:016x}", key=f"nSRV1/{i}.cast",
                    node=NodeInfo("nSRV1", "server"), start=1_764_547_200.0 + i,
                    header={"version": 2, "sshUser": "alice"}, recorder="k",
                    status="complete",
                ))
            await index.add_text([
                TextUpdate(f"20261201T000000Z-{i:016x}", [
                    Line(0.5, f"$ ls job-{i}"), Line(1.0, "common output line"),
                    *([Line(2.0, f"rare-needle {i}")] if i % 1000 == 7 else []),
                ]) for i in range(base, min(count, base + 500))
            ])
    finally:
        await index.close()


def test_ten_thousand_recordings_searched(tmp_path: Path) -> None:
    rec = RecorderProc(tmp_path, str(tmp_path / "store"))
    asyncio.run(_fill(rec.state_dir, 10_000))
    rec.start()
    try:
        with rec.client(ALICE) as c:
            t0 = time.monotonic()
            r = c.get("/api/v1/recordings", params={"q": "rare-needle", "limit": 500})
            rare = time.monotonic() - t0
            got = r.json()["recordings"]
            assert [m["matches"][0]["text"] for m in got] == [
                f"rare-needle {i}" for i in range(9007, 0, -1000)]
            t0 = time.monotonic()
            page = c.get("/api/v1/recordings", params={"q": "common output"}).json()
            common = time.monotonic() - t0
            assert len(page["recordings"]) == 50 and page["next"]
            assert page["recordings"][0]["id"] == f"20261201T000000Z-{9999:016x}"
            [one] = c.get("/api/v1/recordings", params={"q": "job-4242"}).json()["recordings"]
            assert one["matches"][0]["text"] == "$ ls job-4242"
        assert rare < 2 and common < 2, (rare, common)  # generous: a shared, loaded machine
    finally:
        rec.stop()


async def test_text_of_a_recording_cut_by_a_crash_is_rebuilt(tmp_path: Path) -> None:
    rec = RecorderProc(tmp_path, str(tmp_path / "store"))
    rec.start()
    try:
        up = await H2Upload.open("127.0.0.1", rec.port, local_address=SERVER)
        body = cast_header(conn="ssh-conn-crash") + event(0.1, "$ before-the-crash\r\n") + event(
            0.2, "$ last-line-stored")
        try:
            assert await up.wait_headers() == 200
            await up.send(body)
            await up.wait_ack(len(body))
            rec.kill9()  # maybe before the text was written: it is rebuilt on start
        finally:
            await up.close()
        rec.start()
        deadline = time.monotonic() + 10
        while True:
            hits = await asyncio.to_thread(_search, rec, "last-line-stored")
            if hits or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        [hit] = hits
        assert hit["status"] == "incomplete"
        assert hit["matches"] == [{"time": 0.2, "text": "$ last-line-stored"}]
        assert len(await asyncio.to_thread(_search, rec, "before-the-crash")) == 1
    finally:
        rec.stop()
