"""S3 storage against moto's standalone server: multipart, an outage, a restart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.polling import wait_for
from tests.recorder.conftest import (
    ALICE,
    SERVER,
    RecorderProc,
    cast_header,
    event,
)
from tests.recorder.h2upload import H2Upload
from tests.recorder.moto import AWS_ENV, MotoServer

MiB = 1024 * 1024
BUCKET = "recordings"


def _objects(s3: Any) -> dict[str, int]:
    try:
        page = s3.list_objects_v2(Bucket=BUCKET)
    except Exception:
        return {}
    return {o["Key"]: o["Size"] for o in page.get("Contents", [])}


def _body(n_events: int, size: int, conn: str) -> bytes:
    return cast_header(conn=conn) + b"".join(
        event(i / 100, f"{i:06d}" + "s" * size + "\r\n") for i in range(n_events)
    )


async def _send_all(up: H2Upload, body: bytes) -> None:
    for i in range(0, len(body), 256 * 1024):
        await up.send(body[i : i + 256 * 1024])


def _recorder(tmp_path: Path, moto: MotoServer) -> RecorderProc:
    rec = RecorderProc(
        tmp_path, f"s3+http://127.0.0.1:{moto.port}", extra=["--bucket", BUCKET], env=AWS_ENV
    )
    return rec


async def test_multipart_recording_lands_in_the_bucket(tmp_path: Path, moto: MotoServer) -> None:
    s3 = moto.client()
    s3.create_bucket(Bucket=BUCKET)
    rec = _recorder(tmp_path, moto)
    try:
        rec.start()  # inside the try: a recorder too slow to answer is stopped all the same
        body = _body(1200, 10_000, "ssh-conn-big")  # ~12 MiB: one full 8 MiB part + the rest
        up = await H2Upload.open("127.0.0.1", rec.port, local_address=SERVER)
        try:
            assert await up.wait_headers() == 200
            await _send_all(up, body)
            await up.end()
            await up.wait_end(timeout=30)
        finally:
            await up.close()
        assert up.error is None and up.acks[-1] == len(body)
        with rec.client(ALICE) as c:
            [meta] = c.get("/api/v1/recordings").json()["recordings"]
        key = meta["storageKey"]
        wait_for(lambda: _objects(s3).get(f"{key}.cast") == len(body), timeout=20)
        wait_for(lambda: f"{key}.json" in _objects(s3))
        head = s3.head_object(Bucket=BUCKET, Key=f"{key}.cast")
        assert head["ETag"].strip('"').endswith("-2")  # a two-part multipart upload
        assert s3.get_object(Bucket=BUCKET, Key=f"{key}.cast")["Body"].read() == body
        wait_for(lambda: not list((rec.state_dir / "spool").rglob("*.cast")))
        with rec.client(ALICE) as c:  # served from the bucket now
            cast = c.get(f"/api/v1/recordings/{meta['id']}/cast", headers={"Range": "bytes=5-"})
            assert cast.content == body[5:]
            assert c.get(f"/api/v1/recordings/{meta['id']}/verify").json()["ok"] is True
    finally:
        rec.stop()


async def test_s3_outage_and_recorder_kill_lose_nothing_acked(
    tmp_path: Path, moto: MotoServer
) -> None:
    s3 = moto.client()
    s3.create_bucket(Bucket=BUCKET)
    rec = _recorder(tmp_path, moto)
    try:
        rec.start()  # inside the try: a recorder too slow to answer is stopped all the same
        big = _body(1000, 10_000, "ssh-conn-outage")  # ~10 MiB
        up = await H2Upload.open("127.0.0.1", rec.port, local_address=SERVER)
        try:
            assert await up.wait_headers() == 200
            await _send_all(up, big[: 9 * MiB])
            await up.wait_ack(9 * MiB)
            # its multipart upload has begun: the S3 server that comes back will not know it
            wait_for(lambda: s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads"), 20, 0.1)
            moto.stop()  # S3 goes away mid-recording
            await _send_all(up, big[9 * MiB :])
            await up.end()
            await up.wait_end(timeout=30)
        finally:
            await up.close()
        assert up.error is None and up.acks[-1] == len(big)  # acked from the local spool

        small = _body(10, 100, "ssh-conn-during-outage")
        with rec.client(SERVER) as c:
            assert c.post("/record", content=iter([small])).status_code == 200

        open_one = await H2Upload.open("127.0.0.1", rec.port, local_address=SERVER)
        partial = _body(50, 100, "ssh-conn-killed")
        try:
            assert await open_one.wait_headers() == 200
            await open_one.send(partial)
            await open_one.wait_ack(len(partial))
            rec.kill9()  # the recorder dies mid-recording, before S3 is back
        finally:
            await open_one.close()
        rec.start()
        moto.start()  # S3 is back, empty (moto keeps no state): the operator recreates the bucket
        s3 = moto.client()
        s3.create_bucket(Bucket=BUCKET)
        with rec.client(ALICE) as c:
            metas = c.get("/api/v1/recordings").json()["recordings"]
        assert sorted(m["status"] for m in metas) == ["complete", "complete", "incomplete"]
        want = {m["storageKey"]: m for m in metas}
        # How soon they land is not what this test checks (the upload retries back off up to
        # 5 s, and a loaded 2-core machine slows moto down): only that every acked byte does.
        landed = {f"{k}.cast": m["size"] for k, m in want.items()}
        try:
            wait_for(lambda: landed.items() <= _objects(s3).items(), 90, 0.2)
        except AssertionError:
            raise AssertionError(
                f"not in the bucket: {landed} vs {_objects(s3)}; recorder log: "
                f"{rec.log.read_text(errors='replace')[-3000:]}"
            ) from None
        bodies = {len(big): big, len(small): small, len(partial): partial}
        for key, meta in want.items():
            stored = s3.get_object(Bucket=BUCKET, Key=f"{key}.cast")["Body"].read()
            assert stored == bodies[meta["size"]]
        spool = rec.state_dir / "spool"
        # The spool empties file by file (.cast first): wait for all of it, not a fixed time.
        wait_for(lambda: not [p for p in spool.rglob("*") if p.is_file()], 20, 0.2)
        with rec.client(ALICE) as c:
            for meta in metas:
                v = c.get(f"/api/v1/recordings/{meta['id']}/verify").json()
                assert v["ok"] is True, v
    finally:
        rec.stop()


def test_a_kubernetes_api_event_lands_in_the_bucket(tmp_path: Path, moto: MotoServer) -> None:
    """``/v2/event`` (docs/recorder.md, "Kubernetes recordings") with S3 storage: the document
    becomes its own object beside the node's recordings, and no recording."""
    s3 = moto.client()
    s3.create_bucket(Bucket=BUCKET)
    rec = _recorder(tmp_path, moto)
    try:
        rec.start()
        doc = b'{"type": "Kubernetes API Request", "id": "e1"}'
        with rec.client(SERVER) as c:
            assert c.post("/v2/event", content=doc).status_code == 200
        wait_for(lambda: any("-event-" in k for k in _objects(s3)), 20, what="the event object")
        [name] = [k for k in _objects(s3) if "-event-" in k]
        assert name.startswith("nSRV1/") and name.endswith(".cast")
        assert s3.get_object(Bucket=BUCKET, Key=name)["Body"].read() == doc + b"\n"
        with rec.client(ALICE) as c:
            assert c.get("/api/v1/recordings").json()["recordings"] == []
    finally:
        rec.stop()
