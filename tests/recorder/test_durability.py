"""Nothing acknowledged is lost: SIGKILL mid-recording, and storage that stops accepting."""

from __future__ import annotations

import re
import resource
import time

from tests.recorder.conftest import (
    ALICE,
    SERVER,
    RecorderProc,
    assert_acked_bytes_survived,
    cast_header,
    event,
)
from tests.recorder.h2upload import H2Upload


async def test_sigkill_mid_recording_keeps_everything_acked(recorder: RecorderProc) -> None:
    up = await H2Upload.open("127.0.0.1", recorder.port, local_address=SERVER)
    sent = cast_header()
    try:
        assert await up.wait_headers() == 200
        await up.send(sent)
        for i in range(200):
            chunk = event(0.01 * i, f"{i:04d} " + "z" * 200 + "\r\n")
            await up.send(chunk)
            sent += chunk
        await up.wait_ack(len(sent))
        acked = max(up.acks)
        recorder.kill9()
    finally:
        await up.close()
    recorder.start()
    meta = assert_acked_bytes_survived(recorder, sent, acked)
    assert "stopped" in meta["error"]
    assert meta["lastEventTime"] is not None


def _limit_file_size() -> None:
    limit = 3 * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


async def test_write_error_ends_the_upload_with_an_error_frame(tmp_path: object) -> None:
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    rec = RecorderProc(tmp_path, str(tmp_path / "store"), preexec=_limit_file_size)
    rec.start()
    try:
        up = await H2Upload.open("127.0.0.1", rec.port, local_address=SERVER)
        sent = cast_header()
        try:
            assert await up.wait_headers() == 200
            await up.send(sent)
            for i in range(6 * 1024):
                if up.ended.is_set() or up.error is not None:
                    break
                # mostly escape sequences: the file size limit applies to the index too,
                # which holds the output text, and the cast is to reach it first
                chunk = event(0.001 * i, "\x1b[0m" * 249 + "y\n")
                try:
                    await up.send(chunk)
                except ConnectionError:
                    break
                sent += chunk
            await up.end()  # as Tailscale's client does on an error frame
            await up.wait_end(timeout=20)
        finally:
            await up.close()
        assert up.error is not None and "size limit" in up.error, up.frames[-2:]
        acked = max(up.acks, default=0)
        assert_acked_bytes_survived(rec, sent, acked)
        with rec.client(ALICE) as c:
            metrics = c.get("/metrics").text
            assert 'reason="storage"' in metrics
            # the failed append or sync, counted once more by backend and operation
            assert re.search(r'tsrecorder_storage_errors_total\{backend="disk",'
                             r'operation="(write|sync)"\} [1-9]', metrics), metrics
            # its text is rebuilt from what storage holds, in the background
            deadline = time.monotonic() + 20
            while not (found := c.get("/api/v1/recordings", params={"q": "y"}).json()[
                    "recordings"]) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert found and found[0]["matches"][0]["text"] == "y"
    finally:
        rec.stop()


def test_v1_uploader_vanishing_mid_body_leaves_an_incomplete_recording(
    recorder: RecorderProc,
) -> None:
    import socket
    import time

    head = cast_header(conn="ssh-conn-v1-cut") + event(0.1, "partial\n")
    with socket.create_connection(("127.0.0.1", recorder.port),
                                  source_address=(SERVER, 0)) as s:
        s.sendall(b"POST /record HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        s.sendall(f"{len(head):x}\r\n".encode() + head + b"\r\n")
        time.sleep(1.5)  # v1 syncs about every second
    with recorder.client(ALICE) as c:
        deadline = time.monotonic() + 30  # noticing the dead uploader is slow under load
        while True:
            metas = c.get("/api/v1/recordings").json()["recordings"]
            if (metas and metas[0]["status"] != "live") or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        [meta] = metas
        assert meta["status"] == "incomplete" and "went away" in meta["error"]
        assert c.get(f"/api/v1/recordings/{meta['id']}/cast").content == head


async def test_v2_stream_reset_mid_recording_is_incomplete(recorder: RecorderProc) -> None:
    import asyncio

    up = await H2Upload.open("127.0.0.1", recorder.port, local_address=SERVER)
    sent = cast_header() + event(0.1, "before the reset\n")
    try:
        assert await up.wait_headers() == 200
        await up.send(sent)
        await up.wait_ack(len(sent))
        up._conn.reset_stream(up._sid)
        await up._flush()
    finally:
        await up.close()
    with recorder.client(ALICE) as c:
        for _ in range(100):
            [meta] = c.get("/api/v1/recordings").json()["recordings"]
            if meta["status"] != "live":
                break
            await asyncio.sleep(0.05)
        assert meta["status"] == "incomplete"
        assert c.get(f"/api/v1/recordings/{meta['id']}/cast").content == sent
        assert c.get(f"/api/v1/recordings/{meta['id']}/verify").json()["ok"] is True
