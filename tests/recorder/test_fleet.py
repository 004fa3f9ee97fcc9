"""A fleet: two real recorder processes over one moto S3 bucket and one PostgreSQL index.

An upload to replica A is listed (live while it streams), found by ``q=`` and served on
replica B, and its seal verifies there; ``tssh-recorder reindex`` rebuilds an emptied
PostgreSQL index with the same recordings and the same hits. A replica SIGKILLed mid-upload
has its recording finished by another from what shared storage holds (S3: the parts in the
bucket; a shared disk: every acked byte), and the daemon's uploader fails over to the other
replica with a new recording of the same connection (docs/recorder.md, "Fleet").
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests.polling import wait_for
from tests.recorder.conftest import (
    ALICE,
    REPO,
    SERVER,
    RecorderProc,
    cast_header,
    event,
)
from tests.recorder.h2upload import H2Upload
from tests.recorder.moto import AWS_ENV, MotoServer
from tssh.identity.base import Peer
from tssh.recording.asciicast import CastHeader, new_connection_id
from tssh.recording.model import RecordingOptions
from tssh.recording.uploader import start_recording

BUCKET = "fleet"


@dataclass
class Fleet:
    a: RecorderProc
    b: RecorderProc
    dsn: str
    dst: str
    moto: MotoServer


@pytest.fixture
def fleet(tmp_path: Path, moto: MotoServer, postgres_dsn: str) -> Iterator[Fleet]:
    moto.client().create_bucket(Bucket=BUCKET)
    dst = f"s3+http://127.0.0.1:{moto.port}"

    def replica(name: str, *extra: str) -> RecorderProc:
        tmp = tmp_path / name
        tmp.mkdir()
        return RecorderProc(tmp, dst, extra=["--bucket", BUCKET, *extra],
                            env={**AWS_ENV, "TSRECORDER_INDEX": postgres_dsn})

    a = replica("a")
    b: RecorderProc | None = None
    try:
        a.start()
        key = httpx.get(f"{a.url}/api/v1/key", timeout=10).json()["publicKey"]
        b = replica("b", "--trust-key", key)  # A's seals verify on B
        b.start()
        yield Fleet(a, b, postgres_dsn, dst, moto)
    finally:
        if b is not None:
            b.stop()
        a.stop()


def _search(rec: RecorderProc, q: str, **params: Any) -> list[dict[str, Any]]:
    with rec.client(ALICE) as c:
        r = c.get("/api/v1/recordings", params={"q": q, **params})
        assert r.status_code == 200, r.text
        return list(r.json()["recordings"])


async def _until_found(rec: RecorderProc, q: str, within: float = 20.0,
                       **params: Any) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        got = await asyncio.to_thread(_search, rec, q, **params)
        if got:
            return got[0]
        await asyncio.sleep(0.1)
    raise AssertionError(f"{q!r} not found on {rec.url} within {within} s")


async def test_an_upload_to_one_replica_is_live_searchable_and_served_on_the_other(
    fleet: Fleet,
) -> None:
    body = cast_header(conn="ssh-conn-fleet1") + event(0.2, "$ echo fleet-wide-secret\r\n")
    up = await H2Upload.open("127.0.0.1", fleet.a.port, local_address=SERVER)
    try:
        assert await up.wait_headers() == 200
        await up.send(body)
        await up.wait_ack(len(body))
        # streaming into A: B lists it as live and finds its text
        hit = await _until_found(fleet.b, "fleet-wide-secret", live="true")
        assert hit["status"] == "live"
        assert hit["matches"] == [{"time": 0.2, "text": "$ echo fleet-wide-secret"}]
        tail = event(1.0, "$ sudo systemctl restart db\r\n") + event(1.5, "0", "x")
        await up.send(tail)
        body += tail
        await up.end()
        await up.wait_end(timeout=30)
    finally:
        await up.close()
    rid = hit["id"]
    hit = await _until_found(fleet.b, '"systemctl restart"', live="false")
    assert hit["id"] == rid and hit["status"] == "complete"
    assert hit["matches"] == [{"time": 1.0, "text": "$ sudo systemctl restart db"}]
    with fleet.b.client(ALICE) as c:
        # B serves the bytes A stored, once A's spool has handed them to the bucket
        wait_for(lambda: c.get(f"/api/v1/recordings/{rid}/cast").content == body, 30, 0.2,
                 what="the cast on replica B")
        verified = wait_for(
            lambda: (v := c.get(f"/api/v1/recordings/{rid}/verify").json())["ok"] and v,
            30, 0.2, what="the seal on replica B")
        assert verified["trustedKey"] is True
        assert verified["signedBy"] == httpx.get(f"{fleet.a.url}/api/v1/key").json()["publicKey"]
        assert c.get(f"/api/v1/recordings/{rid}").json()["status"] == "complete"
    # and an upload to B is listed on A
    with fleet.b.client(SERVER) as c:
        r = c.post("/record", content=iter(
            [cast_header(conn="ssh-conn-fleet2") + event(0.1, "from replica b\r\n")]))
        assert r.status_code == 200
    [other] = _search(fleet.a, "replica")
    assert other["header"]["connectionID"] == "ssh-conn-fleet2"
    with fleet.a.client(ALICE) as c:
        listed = c.get("/api/v1/recordings").json()["recordings"]
    assert [m["header"]["connectionID"] for m in listed] == ["ssh-conn-fleet2", "ssh-conn-fleet1"]


async def test_reindex_rebuilds_an_emptied_postgres_index(fleet: Fleet) -> None:
    lines = {"one": "$ make deploy-prod\r\n", "two": "$ rm -rf /srv/cache\r\n",
             "three": "$ make test\r\n"}
    for i, (conn, text) in enumerate(lines.items()):
        target = fleet.a if i % 2 == 0 else fleet.b
        with target.client(SERVER) as c:
            r = c.post("/record", content=iter(
                [cast_header(conn=f"ssh-conn-{conn}") + event(0.3, text)]))
            assert r.status_code == 200

    def snapshot() -> tuple[list[str], dict[str, list[Any]]]:
        with fleet.b.client(ALICE) as c:
            ids = [m["id"] for m in c.get("/api/v1/recordings").json()["recordings"]]
        hits = {q: [(m["id"], m["matches"]) for m in _search(fleet.b, q)]
                for q in ("make", '"rm -rf"', "deploy*", "ssh-conn-two")}
        return ids, hits

    before = snapshot()
    assert len(before[0]) == 3 and len(before[1]["make"]) == 2
    # every cast and document in the bucket before the index is emptied
    s3 = fleet.moto.client()
    wait_for(lambda: len([o for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])
                          if o["Key"].endswith(".cast")]) == 3, 30, 0.2)
    fleet.a.stop()
    fleet.b.stop()
    conn = await asyncpg.connect(fleet.dsn)
    try:
        await conn.execute("TRUNCATE recordings CASCADE")
    finally:
        await conn.close()
    out = subprocess.run(
        [sys.executable, "-m", "recorder", "reindex", "--dst", fleet.dst, "--bucket", BUCKET,
         "--index", fleet.dsn, "--state-dir", str(fleet.a.tmp / "reindex-state")],
        cwd=REPO, env={**os.environ, **AWS_ENV, "PYTHONPATH": str(REPO)},
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "indexed 3 recordings" in out.stdout
    fleet.b.start()
    assert snapshot() == before


def test_index_flag_errors_are_one_line(tmp_path: Path) -> None:
    """A URL that is not PostgreSQL's is refused before anything starts; an unreachable
    PostgreSQL stops the recorder with one line that names it, without its password."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    base = [sys.executable, "-m", "recorder", "reindex", "--dst", str(tmp_path / "store"),
            "--state-dir", str(tmp_path / "state")]
    out = subprocess.run([*base, "--index", "mysql://db/x"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "--index" in out.stderr and "Traceback" not in out.stderr
    from tests.ports import free_port

    url = f"postgresql://tssh:hunter2@127.0.0.1:{free_port()}/tssh"
    out = subprocess.run(base, cwd=REPO, env={**env, "TSRECORDER_INDEX": url},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert "cannot open the index postgresql://tssh@127.0.0.1" in out.stderr
    assert "hunter2" not in out.stderr


async def test_a_recording_live_on_one_replica_is_followed_on_the_other(
    tmp_path: Path, postgres_dsn: str,
) -> None:
    """Over one disk dir (a shared file system) the bytes are there as they arrive: replica
    B's ``/live`` polls storage and the shared index, and ends when A finishes it."""
    dst = str(tmp_path / "shared-store")
    a = RecorderProc(tmp_path / "a", dst, env={"TSRECORDER_INDEX": postgres_dsn})
    b = RecorderProc(tmp_path / "b", dst, env={"TSRECORDER_INDEX": postgres_dsn})
    for rec in (a, b):
        rec.tmp.mkdir()
    try:
        a.start()
        b.start()
        first = cast_header(conn="ssh-conn-follow") + event(0.1, "$ tail -f /var/log/app\r\n")
        up = await H2Upload.open("127.0.0.1", a.port, local_address=SERVER)
        try:
            assert await up.wait_headers() == 200
            await up.send(first)
            await up.wait_ack(len(first))
            with b.client(ALICE) as c:
                [meta] = wait_for(lambda: c.get("/api/v1/recordings").json()["recordings"],
                                  20, 0.1, what="the recording listed on B")
            assert meta["status"] == "live"
            got = b""
            async with b.aclient(ALICE) as c, c.stream(
                    "GET", f"/api/v1/recordings/{meta['id']}/live", timeout=60) as r:
                assert r.status_code == 200
                chunks = r.aiter_bytes()
                while got != first:  # what was stored before B was asked
                    got += await asyncio.wait_for(anext(chunks), 20)
                more = event(1.0, "GET /health 200\r\n")
                await up.send(more)  # arrives while B follows
                while got != first + more:
                    got += await asyncio.wait_for(anext(chunks), 20)
                last = event(2.0, "^C\r\n") + event(2.1, "130", "x")
                await up.send(last)
                await up.end()
                await up.wait_end(timeout=30)
                async for chunk in chunks:  # ends once A has finished it
                    got += chunk
            assert got == first + more + last
        finally:
            await up.close()
    finally:
        b.stop()
        a.stop()


async def test_retention_over_the_bucket_and_the_shared_index(fleet: Fleet) -> None:
    """Retention run once for the fleet: the old recording goes from the bucket and from
    every replica's listing; the one on hold stays (its hold is an object in the bucket)."""
    for conn, target in (("keep", fleet.a), ("drop", fleet.b)):
        with target.client(SERVER) as c:
            assert c.post("/record", content=iter(
                [cast_header(conn=f"ssh-conn-{conn}") + event(0.1, f"{conn} me\r\n")]
            )).status_code == 200
    with fleet.a.client(ALICE) as c:
        ids = {m["header"]["connectionID"]: m["id"]
               for m in c.get("/api/v1/recordings").json()["recordings"]}
    s3 = fleet.moto.client()

    wait_for(lambda: sum(1 for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])
                         if o["Key"].endswith(".cast")) == 2, 30, 0.2, what="casts in S3")
    env = {**os.environ, **AWS_ENV, "PYTHONPATH": str(REPO), "TSRECORDER_INDEX": fleet.dsn}
    common = ["--dst", fleet.dst, "--bucket", BUCKET, "--state-dir",
              str(fleet.a.tmp / "ops-state")]

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "recorder", *args, *common], cwd=REPO,
                              env=env, capture_output=True, text=True, timeout=120)

    out = cli("hold", ids["ssh-conn-keep"])
    assert out.returncode == 0, out.stderr
    await asyncio.sleep(1.0)
    out = cli("retention", "run", "--retain-days", "0.00001")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [f"deleted {ids['ssh-conn-drop']}",
                                       f"kept {ids['ssh-conn-keep']} (legal hold)"]
    names = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])]
    assert sorted(n.rpartition(".")[2] for n in names) == ["cast", "hold", "json"]
    for rec in (fleet.a, fleet.b):
        with rec.client(ALICE) as c:
            listed = c.get("/api/v1/recordings").json()["recordings"]
            assert [m["id"] for m in listed] == [ids["ssh-conn-keep"]]
            assert listed[0]["hold"]["reason"] == "legal hold"  # the shared index's copy
            assert c.get(f"/api/v1/recordings/{ids['ssh-conn-drop']}").status_code == 404


PART = 8 * 1024 * 1024  # recorder.storage.s3.PART_SIZE: what reaches the bucket while live


def _recording(rec: RecorderProc, rid: str) -> dict[str, Any]:
    with rec.client(ALICE) as c:
        r = c.get(f"/api/v1/recordings/{rid}")
        assert r.status_code == 200, r.text
        return dict(r.json())


def _key(rec: RecorderProc) -> str:
    return str(httpx.get(f"{rec.url}/api/v1/key", timeout=10).json()["publicKey"])


async def _upload_then_kill(a: RecorderProc, b: RecorderProc, body: bytes,
                            ready: Any = None) -> str:
    """Streams ``body`` to A until all of it is acked (and ``ready()`` holds), then SIGKILLs
    A mid-upload; the recording's id, as B lists it."""
    up = await H2Upload.open("127.0.0.1", a.port, local_address=SERVER)
    try:
        assert await up.wait_headers() == 200
        await up.send(body)
        await up.wait_ack(len(body), timeout=60)
        with b.client(ALICE) as c:
            [meta] = c.get("/api/v1/recordings").json()["recordings"]
        assert meta["status"] == "live"
        if ready is not None:
            wait_for(ready, 60, 0.2, what="A's upload of a part to the bucket")
        a.kill9()
    finally:
        await up.close()
    return str(meta["id"])


def _until_incomplete(b: RecorderProc, rid: str) -> dict[str, Any]:
    """B finishes A's recording once A's heartbeat is older than --replica-timeout (2 s)."""
    return wait_for(lambda: (m := _recording(b, rid))["status"] == "incomplete" and m,
                    30, 0.2, what="the dead replica's recording finished on B")


async def test_a_killed_replicas_recording_is_finished_by_another_from_the_bucket(
    tmp_path: Path, moto: MotoServer, postgres_dsn: str,
) -> None:
    """S3: A's spool dies with A; the bucket holds the 8 MiB parts A had uploaded. B finishes
    the recording from exactly those bytes (incomplete, sealed by B) without A coming back;
    when A does come back with its state dir, it finishes it again with every acked byte."""
    moto.client().create_bucket(Bucket=BUCKET)
    dst = f"s3+http://127.0.0.1:{moto.port}"
    env = {**AWS_ENV, "TSRECORDER_INDEX": postgres_dsn}
    a = RecorderProc(tmp_path / "a", dst, extra=["--bucket", BUCKET, "--replica-timeout", "2"],
                     env=env)
    a.tmp.mkdir()
    b: RecorderProc | None = None
    try:
        a.start()
        key_a = _key(a)
        b = RecorderProc(tmp_path / "b", dst, env=env, extra=[
            "--bucket", BUCKET, "--replica-timeout", "2", "--trust-key", key_a])
        b.tmp.mkdir()
        b.start()
        key_b = _key(b)
        chunk = "x" * 60_000 + "\r\n"
        body = cast_header(conn="ssh-conn-killed") + b"".join(
            event(i * 0.01, f"{i:05d} {chunk}") for i in range(160))  # 9.6 MB: one part
        s3 = moto.client()

        def part_uploaded() -> bool:
            uploads = s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])
            return any(s3.list_parts(Bucket=BUCKET, Key=u["Key"], UploadId=u["UploadId"])
                       .get("Parts") for u in uploads)

        rid = await _upload_then_kill(a, b, body, part_uploaded)
        meta = _until_incomplete(b, rid)
        assert meta["size"] == PART and "stopped during the upload" in meta["error"]
        with b.client(ALICE) as c:
            assert c.get(f"/api/v1/recordings/{rid}/cast").content == body[:PART]
            v = c.get(f"/api/v1/recordings/{rid}/verify").json()
        assert v["ok"] is True and v["signedBy"] == key_b, v
        assert meta["recorder"] == key_a  # who received it; B only sealed what was there
        # A comes back with its spool: the recording gets every byte A acked
        a.start()

        def whole() -> bool:  # until A's upload ends, B's index is ahead of the bucket
            try:
                return c.get(f"/api/v1/recordings/{rid}/cast").content == body
            except httpx.HTTPError:
                return False

        with b.client(ALICE) as c:
            wait_for(whole, 60, 0.3, what="every acked byte in the bucket")
            v = wait_for(lambda: (r := c.get(f"/api/v1/recordings/{rid}/verify").json())["ok"]
                         and r, 30, 0.3, what="A's new seal")
        assert v["signedBy"] == key_a
        done = _recording(b, rid)
        assert done["status"] == "incomplete" and done["size"] == len(body)
    finally:
        if b is not None:
            b.stop()
        a.stop()


async def test_a_killed_replicas_recording_on_a_shared_disk_keeps_every_acked_byte(
    tmp_path: Path, postgres_dsn: str,
) -> None:
    """A shared disk dir holds every byte A wrote: B finishes the recording with all of
    them, A never restarted, and both recordings of a connection are found by
    ``connection=``."""
    dst = str(tmp_path / "shared-store")
    env = {"TSRECORDER_INDEX": postgres_dsn}
    a = RecorderProc(tmp_path / "a", dst, extra=["--replica-timeout", "2"], env=env)
    b = RecorderProc(tmp_path / "b", dst, extra=["--replica-timeout", "2"], env=env)
    for rec in (a, b):
        rec.tmp.mkdir()
    try:
        a.start()
        b.start()
        key_b = _key(b)
        body = cast_header(conn="ssh-conn-disk") + event(0.1, "$ make migrate\r\n")
        rid = await _upload_then_kill(a, b, body)
        meta = _until_incomplete(b, rid)
        assert meta["size"] == len(body) and meta["lastEventTime"] == 0.1
        with b.client(ALICE) as c:
            assert c.get(f"/api/v1/recordings/{rid}/cast").content == body
            v = c.get(f"/api/v1/recordings/{rid}/verify").json()
            assert v["ok"] is True and v["signedBy"] == key_b, v
        with b.client(SERVER) as up:  # a failover's new recording of the connection, on B
            for conn in ("ssh-conn-disk", "ssh-conn-other"):
                r = up.post("/record", content=iter([cast_header(conn=conn)
                                                     + event(5.0, "done\r\n")]))
                assert r.status_code == 200
        with b.client(ALICE) as c:
            linked = c.get("/api/v1/recordings", params={"connection": "ssh-conn-disk"}).json()
        got = [(m["status"], m["header"]["connectionID"]) for m in linked["recordings"]]
        assert got == [("complete", "ssh-conn-disk"), ("incomplete", "ssh-conn-disk")]
    finally:
        b.stop()
        a.stop()


async def test_the_uploader_fails_over_to_another_replica_with_a_linked_recording(
    tmp_path: Path, postgres_dsn: str,
) -> None:
    """The daemon's uploader, its recorder A killed mid-session: the session goes on, a new
    recording of the same connection starts on B (a marker says what it continues), A's
    half is finished by B; ``connection=`` lists both, and together they hold every line."""
    dst = str(tmp_path / "shared-store")
    env = {"TSRECORDER_INDEX": postgres_dsn}
    a = RecorderProc(tmp_path / "a", dst, extra=["--replica-timeout", "2"], env=env)
    b = RecorderProc(tmp_path / "b", dst, extra=["--replica-timeout", "2"], env=env)
    for rec in (a, b):
        rec.tmp.mkdir()
    try:
        a.start()
        b.start()
        conn = new_connection_id()
        laptop = Peer(name="laptop", id="nLAP1", addresses=(ALICE,), user="alice@example.com")
        header = CastHeader.for_session(laptop, ssh_user="alice", local_user="alice",
                                        connection_id=conn, started_at=time.time(),
                                        width=80, height=24, command="/bin/bash")
        rec = await start_recording(
            [("127.0.0.1", a.port), ("127.0.0.1", b.port)], header,
            options=RecordingOptions(source_address=SERVER))
        assert rec.stats().destination == f"127.0.0.1:{a.port}"
        lines = [f"line {i:03d} of the session\r\n" for i in range(200)]
        for line in lines[:100]:
            rec.output_nowait(line.encode())
            await asyncio.sleep(0.002)
        await asyncio.to_thread(wait_for, lambda: rec.stats().bytes_acked ==
                                rec.stats().bytes_written, 20, 0.05, what="A's acks")
        a.kill9()
        await asyncio.to_thread(
            wait_for, lambda: rec.stats().destination == f"127.0.0.1:{b.port}", 30, 0.05,
            what="the failover to B")
        for line in lines[100:]:
            rec.output_nowait(line.encode())
            await asyncio.sleep(0.002)
        rec.exit_nowait(0)
        stats = await rec.close()
        assert stats.state == "finished" and rec.failovers == 1, stats
        assert [x.error is None for x in stats.attempts] == [True, True]
        with b.client(ALICE) as c:
            found = wait_for(lambda: len(got := c.get(
                "/api/v1/recordings", params={"connection": conn}).json()["recordings"]) == 2
                and got[1]["status"] == "incomplete" and got, 30, 0.2,
                what="both recordings of the connection, A's finished by B")
            second, first = (c.get(f"/api/v1/recordings/{m['id']}/cast").text for m in found)
        assert [m["status"] for m in found] == ["complete", "incomplete"]
        assert {m["header"]["connectionID"] for m in found} == {conn}
        texts = [[json.loads(x)[2] for x in cast.splitlines()[1:]] for cast in (first, second)]
        assert "".join(t for t in texts[0]) == "".join(lines[:100])  # every acked line
        marker, *rest = texts[1]
        assert marker.startswith("tssh: continues the recording of this session that "
                                 f"recorder 127.0.0.1:{a.port} was taking when it failed")
        assert marker.endswith("it had not acknowledged the last 0 bytes sent to it")
        assert "".join(rest[:-1]) == "".join(lines[100:]) and rest[-1] == "0"  # exit status
    finally:
        b.stop()
        a.stop()
