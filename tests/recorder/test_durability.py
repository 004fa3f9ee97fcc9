"""Nothing acknowledged is lost: SIGKILL mid-recording, and storage that stops accepting."""

from __future__ import annotations

import resource

from tests.recorder.conftest import ALICE, SERVER, RecorderProc, cast_header, event
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
    with recorder.client(ALICE) as c:
        [meta] = c.get("/api/v1/recordings").json()["recordings"]
        assert meta["status"] == "incomplete"
        assert "stopped" in meta["error"]
        assert meta["size"] >= acked
        cast = c.get(f"/api/v1/recordings/{meta['id']}/cast").content
        assert cast[:acked] == sent[:acked]
        assert c.get(f"/api/v1/recordings/{meta['id']}/verify").json()["ok"] is True
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
                chunk = event(0.001 * i, "y" * 1000)
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
        with rec.client(ALICE) as c:
            [meta] = c.get("/api/v1/recordings").json()["recordings"]
            assert meta["status"] == "incomplete"
            assert meta["size"] >= acked
            cast = c.get(f"/api/v1/recordings/{meta['id']}/cast").content
            assert cast[:acked] == sent[:acked]
            assert c.get(f"/api/v1/recordings/{meta['id']}/verify").json()["ok"] is True
            assert 'reason="storage"' in c.get("/metrics").text
    finally:
        rec.stop()
