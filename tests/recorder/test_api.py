"""The read API: listing with filters and cursors, Range, live follow, seal, reindex."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.recorder.conftest import (
    ALICE,
    REPO,
    SERVER,
    SERVER2,
    RecorderProc,
    cast_header,
    event,
)
from tests.recorder.h2upload import H2Upload


def _upload(rec: RecorderProc, source: str, body: bytes) -> None:
    with rec.client(source) as c:
        r = c.post("/record", content=iter([body]))
        assert r.status_code == 200, r.text


def test_listing_filters_and_cursor(recorder: RecorderProc) -> None:
    for i in range(5):
        src = SERVER if i % 2 == 0 else SERVER2
        user = "alice" if i < 3 else "bob"
        _upload(recorder, src, cast_header(conn=f"ssh-conn-{i}", sshUser=user,
                                           command=f"cmd-{i}-marker") + event(0.1, f"{i}\n"))
    with recorder.client(ALICE) as c:
        every = c.get("/api/v1/recordings").json()["recordings"]
        assert len(every) == 5
        starts = [r["start"] for r in every]
        assert starts == sorted(starts, reverse=True)  # newest first
        assert every[0]["header"]["command"] == "cmd-4-marker"
        seen, cursor = [], None
        for _ in range(5):
            params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            page = c.get("/api/v1/recordings", params=params).json()
            seen += [r["id"] for r in page["recordings"]]
            cursor = page["next"]
            if cursor is None:
                break
        assert seen == [r["id"] for r in every]
        by_node = c.get("/api/v1/recordings", params={"node": "server2"}).json()["recordings"]
        assert {r["node"]["id"] for r in by_node} == {"nSRV2"} and len(by_node) == 2
        by_user = c.get("/api/v1/recordings", params={"user": "bob"}).json()["recordings"]
        assert len(by_user) == 2
        by_login = c.get("/api/v1/recordings", params={"user": "alice@example.com"}).json()
        assert len(by_login["recordings"]) == 5  # the connecting user, from the header
        by_q = c.get("/api/v1/recordings", params={"q": "CMD-3-MARKER"}).json()["recordings"]
        assert [r["header"]["command"] for r in by_q] == ["cmd-3-marker"]
        assert c.get("/api/v1/recordings", params={"live": "true"}).json()["recordings"] == []
        since = every[1]["start"]
        recent = c.get("/api/v1/recordings", params={"since": since}).json()["recordings"]
        assert [r["id"] for r in recent] == [r["id"] for r in every[:2]]
        assert c.get("/api/v1/recordings", params={"cursor": "!!"}).status_code == 400
        assert c.get("/api/v1/recordings", params={"since": "yesterday"}).status_code == 400


def test_cast_range_requests(recorder: RecorderProc) -> None:
    body = cast_header() + b"".join(event(i / 10, f"line {i}\n") for i in range(100))
    _upload(recorder, SERVER, body)
    with recorder.client(ALICE) as c:
        rid = c.get("/api/v1/recordings").json()["recordings"][0]["id"]
        url = f"/api/v1/recordings/{rid}/cast"
        full = c.get(url)
        assert full.status_code == 200 and full.content == body
        assert full.headers["accept-ranges"] == "bytes"
        part = c.get(url, headers={"Range": "bytes=10-19"})
        assert part.status_code == 206 and part.content == body[10:20]
        assert part.headers["content-range"] == f"bytes 10-19/{len(body)}"
        tail = c.get(url, headers={"Range": "bytes=-7"})
        assert tail.status_code == 206 and tail.content == body[-7:]
        rest = c.get(url, headers={"Range": f"bytes={len(body) - 3}-"})
        assert rest.content == body[-3:]
        beyond = c.get(url, headers={"Range": f"bytes={len(body)}-"})
        assert beyond.status_code == 416
        assert beyond.headers["content-range"] == f"bytes */{len(body)}"


async def test_live_follow_streams_new_events_and_ends(recorder: RecorderProc) -> None:
    up = await H2Upload.open("127.0.0.1", recorder.port, local_address=SERVER)
    first = cast_header() + event(0.1, "first\n")
    try:
        assert await up.wait_headers() == 200
        await up.send(first)
        await up.wait_ack(len(first))
        async with recorder.aclient(ALICE) as c:
            listing = (await c.get("/api/v1/recordings", params={"live": "true"})).json()
            [meta] = listing["recordings"]
            assert meta["status"] == "live" and meta["size"] == len(first)
            lines: list[bytes] = []
            async with c.stream("GET", f"/api/v1/recordings/{meta['id']}/live") as r:
                assert r.status_code == 200
                it = r.aiter_lines()
                lines.append((await anext(it)).encode())  # header
                lines.append((await anext(it)).encode())  # first event
                assert json.loads(lines[1])[2] == "first\n"
                await up.send(event(0.2, "second\n"))
                second = await asyncio.wait_for(anext(it), 5)
                assert json.loads(second)[2] == "second\n"
                await up.end()
                rest = [line async for line in it]  # the stream ends with the recording
                assert rest == []
            await up.wait_end()
            done = (await c.get(f"/api/v1/recordings/{meta['id']}")).json()
            assert done["status"] == "complete"
    finally:
        await up.close()


def test_seal_detects_one_changed_byte(recorder: RecorderProc) -> None:
    _upload(recorder, SERVER, cast_header() + event(0.1, "secret\n") + event(0.2, "0", "x"))
    with recorder.client(ALICE) as c:
        meta = c.get("/api/v1/recordings").json()["recordings"][0]
        verify = f"/api/v1/recordings/{meta['id']}/verify"
        assert c.get(verify).json()["ok"] is True
        cast = recorder.tmp / "store" / f"{meta['storageKey']}.cast"
        original = cast.read_bytes()
        i = original.index(b"secret")
        cast.write_bytes(original[:i] + b"S" + original[i + 1 :])
        broken = c.get(verify).json()
        assert broken["ok"] is False
        assert any("SHA-256" in p for p in broken["problems"])
        cast.write_bytes(original)
        assert c.get(verify).json()["ok"] is True
        doc_path = cast.with_suffix(".json")
        doc = json.loads(doc_path.read_text())
        doc["exitStatus"] = 1
        doc_path.write_text(json.dumps(doc))
        broken = c.get(verify).json()
        assert broken["ok"] is False
        assert any("exitStatus" in p for p in broken["problems"])


def test_reindex_rebuilds_the_index_from_storage(recorder: RecorderProc) -> None:
    for i in range(3):
        _upload(recorder, SERVER, cast_header(conn=f"ssh-conn-r{i}") + event(0.1, f"{i}\n"))
    with recorder.client(ALICE) as c:
        before = c.get("/api/v1/recordings").json()["recordings"]
    recorder.stop()
    (recorder.state_dir / "index.sqlite3").unlink()
    for extra in ("-wal", "-shm"):
        (recorder.state_dir / f"index.sqlite3{extra}").unlink(missing_ok=True)
    out = subprocess.run(
        [sys.executable, "-m", "recorder", "reindex", "--dst", recorder.dst,
         "--state-dir", str(recorder.state_dir)],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
    )
    assert out.returncode == 0, out.stderr
    assert "indexed 3 recordings" in out.stdout
    recorder.start()
    with recorder.client(ALICE) as c:
        after = c.get("/api/v1/recordings").json()["recordings"]
    assert [r["id"] for r in after] == [r["id"] for r in before]
    assert [r["seal"] for r in after] == [r["seal"] for r in before]


def test_reindex_drops_rows_of_recordings_gone_from_storage(recorder: RecorderProc) -> None:
    """Reindex used to keep the rows of recordings whose files were deleted from storage
    ("73 indexed, 74 rows"); now the index holds exactly what storage holds."""
    import sqlite3

    for i in range(5):
        _upload(recorder, SERVER, cast_header(conn=f"ssh-conn-g{i}") + event(0.1, f"{i}\n"))
    with recorder.client(ALICE) as c:
        before = c.get("/api/v1/recordings").json()["recordings"]
    assert len(before) == 5
    recorder.stop()
    store = recorder.tmp / "store"
    no_meta, no_cast, bad_meta = before[0], before[1], before[2]
    (store / f"{no_meta['storageKey']}.json").unlink()
    (store / f"{no_cast['storageKey']}.cast").unlink()
    (store / f"{bad_meta['storageKey']}.json").write_text("[]")
    out = subprocess.run(
        [sys.executable, "-m", "recorder", "reindex", "--dst", recorder.dst,
         "--state-dir", str(recorder.state_dir)],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
    )
    assert out.returncode == 0, out.stderr
    assert "indexed 2 recordings; dropped 3 index rows" in out.stdout, out.stdout
    assert "Traceback" not in out.stderr
    with sqlite3.connect(recorder.state_dir / "index.sqlite3") as db:
        assert db.execute("SELECT COUNT(*) FROM recordings").fetchone()[0] == 2
    recorder.start()
    with recorder.client(ALICE) as c:
        after = c.get("/api/v1/recordings").json()["recordings"]
        assert [r["id"] for r in after] == [r["id"] for r in before[3:]]
        for gone in (no_meta, no_cast, bad_meta):
            assert c.get(f"/api/v1/recordings/{gone['id']}").status_code == 404


def test_cli_errors_are_one_line(tmp_path: object) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-m", "recorder", "--listen", "127.0.0.1:0"],
                         cwd=REPO, env=env, capture_output=True, text=True)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr and "--dst" in out.stderr
    out = subprocess.run([sys.executable, "-m", "recorder", "--dst", "s3://host"],
                         cwd=REPO, env=env, capture_output=True, text=True)
    assert out.returncode == 2 and "--bucket" in out.stderr


def test_environment_instead_of_flags(tmp_path: Path) -> None:
    import json as _json
    import time

    import httpx

    from tests.ports import free_port
    from tests.recorder.conftest import NETMAP, POLICY

    (tmp_path / "netmap.json").write_text(_json.dumps(NETMAP))
    (tmp_path / "policy.hujson").write_text(POLICY)
    port = free_port()
    env = {
        **os.environ, "PYTHONPATH": str(REPO), "TSRECORDER_DST": str(tmp_path / "store"),
        "TSRECORDER_LISTEN": f"127.0.0.1:{port}", "TSRECORDER_STATEDIR": str(tmp_path / "st"),
        "TSSH_NETMAP": str(tmp_path / "netmap.json"),
        "TSSH_POLICY": str(tmp_path / "policy.hujson"),
        "TSRECORDER_VIEWERS": "alice@example.com",
    }
    proc = subprocess.Popen([sys.executable, "-m", "recorder"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.05)
        transport = httpx.HTTPTransport(local_address=ALICE)
        with httpx.Client(transport=transport) as c:
            r = c.get(f"http://127.0.0.1:{port}/api/v1/recordings")
            assert r.status_code == 200, r.text
        assert (tmp_path / "st" / "seal.key").exists()
    finally:
        proc.terminate()
        proc.wait(10)


def test_recorders_sharing_storage_verify_each_other_with_trust_key(
    recorder: RecorderProc, tmp_path: Path
) -> None:
    _upload(recorder, SERVER, cast_header() + event(0.1, "shared\n"))
    with recorder.client(ALICE) as c:
        key_a = c.get("/api/v1/key").json()["publicKey"]
        rid = c.get("/api/v1/recordings").json()["recordings"][0]["id"]
    other_dir = tmp_path / "b"
    other_dir.mkdir()
    for trust, expected in (([], False), (["--trust-key", key_a], True)):
        b = RecorderProc(other_dir, recorder.dst, extra=trust)
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        subprocess.run(
            [sys.executable, "-m", "recorder", "reindex", "--dst", b.dst,
             "--state-dir", str(b.state_dir)], cwd=REPO, env=env, check=True,
            capture_output=True,
        )
        b.start()
        try:
            with b.client(ALICE) as c:
                v = c.get(f"/api/v1/recordings/{rid}/verify").json()
                assert v["ok"] is expected and v["trustedKey"] is expected, v
                assert v["signedBy"] == key_a
        finally:
            b.stop()
    bad = subprocess.run(
        [sys.executable, "-m", "recorder", "--dst", recorder.dst, "--trust-key", "nope"],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
    )
    assert bad.returncode == 2 and "--trust-key" in bad.stderr
