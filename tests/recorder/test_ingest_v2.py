"""/v2/record over h2c, full duplex, as Tailscale's client uses it."""

from __future__ import annotations

import httpx

from tests.recorder.conftest import ALICE, SERVER, STRANGER, RecorderProc, cast_header, event
from tests.recorder.h2upload import H2Upload


async def test_head_probe_is_200_only_over_http2(recorder: RecorderProc) -> None:
    probe = await H2Upload.open("127.0.0.1", recorder.port, local_address=SERVER, method="HEAD")
    try:
        assert await probe.wait_headers() == 200
    finally:
        await probe.close()
    async with httpx.AsyncClient() as h1:
        r = await h1.head(f"{recorder.url}/v2/record")
        assert r.http_version == "HTTP/1.1"
        assert r.status_code != 200


async def test_acks_arrive_while_body_streams(recorder: RecorderProc) -> None:
    up = await H2Upload.open("127.0.0.1", recorder.port, local_address=SERVER)
    try:
        assert await up.wait_headers() == 200  # before any body byte
        sent = cast_header()
        await up.send(sent)
        for i in range(5):
            chunk = event(0.1 * (i + 1), f"line {i}\r\n")
            await up.send(chunk)
            sent += chunk
            # the ack for this chunk arrives while the request body is still open
            await up.wait_ack(len(sent), timeout=5)
        await up.send(event(0.7, "0", "x"))
        sent += event(0.7, "0", "x")
        await up.end()
        await up.wait_end()
        assert up.error is None
        assert up.acks[-1] == len(sent)
        assert up.acks == sorted(up.acks)
    finally:
        await up.close()

    with recorder.client(ALICE) as c:
        r = c.get("/api/v1/recordings")
        assert r.status_code == 200, r.text
        listing = r.json()
        assert len(listing["recordings"]) == 1
        meta = listing["recordings"][0]
        assert meta["status"] == "complete"
        assert meta["size"] == len(sent)
        assert meta["exitStatus"] == 0
        assert meta["node"]["id"] == "nSRV1"
        assert meta["header"]["sshUser"] == "alice"
        assert meta["storageKey"].startswith("nSRV1/")
        assert meta["storageKey"].endswith("-ssh-conn-20261125T090000-0123456789")
        cast = c.get(f"/api/v1/recordings/{meta['id']}/cast")
        assert cast.content == sent
        stored = recorder.tmp / "store" / f"{meta['storageKey']}.cast"
        assert stored.read_bytes() == sent
        assert (recorder.tmp / "store" / f"{meta['storageKey']}.json").exists()
        v = c.get(f"/api/v1/recordings/{meta['id']}/verify").json()
        assert v["ok"] is True, v
        metrics = c.get("/metrics").text
        assert f"tsrecorder_ingested_bytes_total {float(len(sent))}" in metrics
        assert 'tsrecorder_recordings_total{status="complete"} 1.0' in metrics
        assert "tsrecorder_recordings_active 0.0" in metrics
        assert "tsrecorder_commit_seconds_count" in metrics
        [acks_line] = [m for m in metrics.splitlines() if m.startswith("tsrecorder_acks_total ")]
        acks_sent = float(acks_line.split()[1])
        assert acks_sent >= len(up.acks)


async def test_unknown_uploader_is_refused(recorder: RecorderProc) -> None:
    up = await H2Upload.open("127.0.0.1", recorder.port, local_address=STRANGER)
    try:
        assert await up.wait_headers() == 403
    finally:
        await up.close()


async def test_recorder_advertises_large_h2_windows(recorder: RecorderProc) -> None:
    """recorder.h2tuning wraps hypercorn internals: fails here if hypercorn changes under it."""
    from recorder.h2tuning import MAX_FRAME, STREAM_WINDOW

    up = await H2Upload.open("127.0.0.1", recorder.port, local_address=SERVER)
    try:
        assert await up.wait_headers() == 200
        await up.send(cast_header())
        await up.wait_ack(1)
        settings = up._conn.remote_settings
        assert settings.initial_window_size == STREAM_WINDOW
        assert settings.max_frame_size == MAX_FRAME
        assert up._conn.max_outbound_frame_size == MAX_FRAME
    finally:
        await up.close()


async def test_body_sent_after_a_refusal_leaves_the_connection_up(recorder: RecorderProc) -> None:
    """Refusals are answered before the body is read; DATA the client was still sending must
    be dropped, not end the h2 connection (hypercorn raised KeyError on it: recorder/h2tuning.py).
    A stranger's 403 here; an overloaded recorder's 503 takes the same path."""
    import asyncio

    up = await H2Upload.open("127.0.0.1", recorder.port, local_address=STRANGER)
    try:
        assert await up.wait_headers() == 403
        await up.wait_end()
        await asyncio.sleep(0.3)  # hypercorn forgets the stream once the application returned
        up._conn.send_data(1, b"the rest of the body", end_stream=True)
        up.status = None
        up._got_headers.clear()
        up._conn.send_headers(3, [(":method", "HEAD"), (":path", "/v2/event"),
                                  (":scheme", "http"), (":authority", "recorder")],
                              end_stream=True)
        await up._flush()
        assert await up.wait_headers() == 200  # the same connection answers the next request
    finally:
        await up.close()


def test_data_frame_repr_does_not_hex_dump_the_payload() -> None:
    from hyperframe.frame import DataFrame

    from recorder import h2tuning

    h2tuning.install()
    assert repr(DataFrame(1, data=b"x" * 100_000)).endswith("<100000 bytes>")


async def test_idle_upload_still_gets_acks_every_10_seconds(recorder: RecorderProc) -> None:
    import asyncio

    up = await H2Upload.open("127.0.0.1", recorder.port, local_address=SERVER)
    try:
        assert await up.wait_headers() == 200
        sent = cast_header() + event(0.1, "then nothing\n")
        await up.send(sent)
        await up.wait_ack(len(sent))
        before = len(up.acks)
        await asyncio.sleep(10.5)
        assert len(up.acks) > before  # a keepalive ack while the uploader is idle
        assert up.acks[-1] == len(sent)
        await up.end()
        await up.wait_end()
        assert up.error is None
    finally:
        await up.close()
