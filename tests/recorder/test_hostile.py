"""Hostile uploads: broken or lying headers, huge lines, bytes that are not UTF-8."""

from __future__ import annotations

import json
import socket

import pytest

from tests.recorder.conftest import (
    ALICE,
    SERVER,
    SERVER2,
    RecorderProc,
    cast_header,
    event,
    recv_until,
)
from tests.recorder.h2upload import H2Upload

MiB = 1024 * 1024


async def _upload(rec: RecorderProc, chunks: list[bytes], source: str = SERVER) -> H2Upload:
    """Sends ``chunks`` until the recorder ends the stream; returns the finished upload."""
    up = await H2Upload.open("127.0.0.1", rec.port, local_address=source)
    try:
        assert await up.wait_headers() == 200
        for chunk in chunks:
            if up.ended.is_set() or up.error is not None:
                break
            try:
                await up.send(chunk)
            except (ConnectionError, TimeoutError):
                break
        await up.end()
        await up.wait_end(timeout=30)
    finally:
        await up.close()
    return up


def _listing(rec: RecorderProc) -> list[dict[str, object]]:
    with rec.client(ALICE) as c:
        return list(c.get("/api/v1/recordings").json()["recordings"])


@pytest.mark.parametrize(("body", "message"), [
    (b'{"version": 2, "width": 80, "height"', "before the asciicast header"),
    (b'{"version": 2, "width": 80, "height": \n[0.1, "o", "x"]\n', "not JSON"),
    (b'["not", "an", "object"]\n', "JSON object"),
    (b'{"version": 1, "width": 80, "height": 24}\n', "version 2"),
    (b'\xff\xfe{"version": 2}\n', "not UTF-8"),
    (b"", "empty recording"),
])
async def test_bad_headers_store_nothing(recorder: RecorderProc, body: bytes, message: str) -> None:
    up = await _upload(recorder, [body])
    assert up.error is not None and message in up.error, up.frames
    assert "error" in up.frames[-1]  # only as the last frame
    assert _listing(recorder) == []
    assert not list((recorder.tmp / "store").glob("*/*.cast"))


async def test_100mb_header_line_is_cut_at_the_limit(recorder: RecorderProc) -> None:
    line = b'{"version": 2, "pad": "' + b"a" * (100 * MiB)
    up = await _upload(recorder, [line[i : i + MiB] for i in range(0, len(line), MiB)])
    assert up.error is not None and "header line longer" in up.error
    assert _listing(recorder) == []


async def test_100mb_event_line_ends_the_recording_incomplete(recorder: RecorderProc) -> None:
    head = cast_header() + event(0.1, "before\n")
    big = b'[0.2, "o", "' + b"b" * (100 * MiB)
    chunks = [head] + [big[i : i + MiB] for i in range(0, len(big), MiB)]
    up = await _upload(recorder, chunks)
    assert up.error is not None and "event line longer" in up.error
    [meta] = _listing(recorder)
    assert meta["status"] == "incomplete"
    assert meta["error"] and "event line longer" in str(meta["error"])
    size = int(str(meta["size"]))
    assert len(head) <= size <= len(head) + 2 * MiB  # bounded, the acked part kept
    with recorder.client(ALICE) as c:
        cast = c.get(f"/api/v1/recordings/{meta['id']}/cast").content
        assert cast.startswith(head)
        assert c.get(f"/api/v1/recordings/{meta['id']}/verify").json()["ok"] is True


async def test_non_utf8_event_ends_the_recording(recorder: RecorderProc) -> None:
    head = cast_header() + event(0.1, "ok\n")
    up = await _upload(recorder, [head, b'[0.2, "o", "\xc3\x28"]\n', event(0.3, "later\n")])
    assert up.error is not None and "UTF-8" in up.error
    [meta] = _listing(recorder)
    assert meta["status"] == "incomplete"
    with recorder.client(ALICE) as c:
        assert c.get(f"/api/v1/recordings/{meta['id']}/cast").content.startswith(head)


@pytest.mark.parametrize(("extra", "warning"), [
    ({"srcNodeUser": "mallory@example.com"}, "srcNodeUser 'mallory@example.com'"),
    ({"srcNode": "bobbook.example.ts.net"}, "calls node 'nLAP1' 'laptop'"),
    ({"srcNodeTags": ["tag:prod"]}, "srcNodeTags"),
])
async def test_header_lying_about_the_client_node_is_flagged(
    recorder: RecorderProc, extra: dict[str, object], warning: str
) -> None:
    """``srcNode*`` name the SSH client's node; claims the tailnet contradicts are kept
    (evidence is not thrown away) but flagged, sealed with the recording, and counted."""
    body = cast_header(**extra) + event(0.1, "x\n")
    up = await _upload(recorder, [body], SERVER2)
    assert up.error is None, up.frames
    [meta] = _listing(recorder)
    assert meta["status"] == "complete"
    assert any(warning in w for w in meta["warnings"]), meta["warnings"]
    with recorder.client(ALICE) as c:
        assert "tsrecorder_flagged_recordings_total 1.0" in c.get("/metrics").text
        assert c.get(f"/api/v1/recordings/{meta['id']}/verify").json()["ok"] is True


async def test_consistent_header_is_not_flagged(recorder: RecorderProc) -> None:
    up = await _upload(recorder, [cast_header() + event(0.1, "x\n")], SERVER2)
    assert up.error is None
    [meta] = _listing(recorder)
    assert meta["warnings"] == []
    assert meta["node"]["id"] == "nSRV2"  # the uploader, from its address


async def test_recording_is_filed_under_the_uploader_not_the_header(
    recorder: RecorderProc,
) -> None:
    # server2 uploads a session whose client was server (nSRV1): consistent claims, so not
    # flagged, and stored under the uploader's own id, known from its address
    header = cast_header(node_id="nSRV1", srcNode="server", srcNodeTags=["tag:prod"])
    header = header.replace(b', "srcNodeUser": "alice@example.com"', b"")
    up = await _upload(recorder, [header + event(0.1, "x\n")], SERVER2)
    assert up.error is None, up.frames
    [meta] = _listing(recorder)
    assert str(meta["storageKey"]).startswith("nSRV2/")
    assert meta["warnings"] == []


async def test_hostile_connection_id_does_not_escape_the_store(recorder: RecorderProc) -> None:
    up = await _upload(recorder, [cast_header(conn="../../../../tmp/evil") + event(0.1, "x\n")])
    assert up.error is None, up.frames
    [meta] = _listing(recorder)
    key = str(meta["storageKey"])
    assert ".." not in key and key.startswith("nSRV1/")
    assert (recorder.tmp / "store" / f"{key}.cast").exists()


def test_v1_bad_header_gets_400(recorder: RecorderProc) -> None:
    with socket.create_connection(("127.0.0.1", recorder.port), source_address=(SERVER, 0)) as s:
        body = b"not json at all\n"
        s.sendall(
            f"POST /record HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        data = recv_until(s, b"}")
        assert data.startswith(b"HTTP/1.1 400"), data
        assert "not JSON" in json.loads(data.split(b"\r\n\r\n", 1)[1])["error"]
