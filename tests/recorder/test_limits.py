"""Bounded uploads: header timeouts for both protocols, caps per node and in total, and the
open file limit raised at start. An idle recording whose header arrived is never cut."""

from __future__ import annotations

import asyncio
import json
import resource
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from recorder.errors import UploadLimitError
from recorder.limits import UploadLimits, raise_fd_limit
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

HEADER_TIMEOUT = 2.0


@pytest.fixture
def strict(tmp_path: Path) -> Iterator[RecorderProc]:
    """A recorder with a short header timeout and small caps."""
    rec = RecorderProc(tmp_path, str(tmp_path / "store"), extra=[
        "--header-timeout", str(HEADER_TIMEOUT), "--max-uploads-per-node", "2",
        "--max-uploads", "3",
    ])
    try:
        rec.start()
        yield rec
    finally:
        rec.stop()


def _v1_head(rec: RecorderProc) -> bytes:
    return (
        f"POST /record HTTP/1.1\r\nHost: 127.0.0.1:{rec.port}\r\n"
        "Transfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n"
    ).encode()


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def _v1_connect(rec: RecorderProc, source: str = SERVER) -> socket.socket:
    return socket.create_connection(("127.0.0.1", rec.port), timeout=15,
                                    source_address=(source, 0))


def _until_closed(s: socket.socket) -> bytes:
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    return data


def test_idle_v1_upload_without_header_is_cut(strict: RecorderProc) -> None:
    """Headers and 100-continue, then no body: the recorder used to hold it open for good
    (330 s and more seen); now it answers 408 after the header timeout and closes."""
    with _v1_connect(strict) as s:
        s.sendall(_v1_head(strict))
        assert recv_until(s, b"\r\n\r\n").startswith(b"HTTP/1.1 100")
        t0 = time.monotonic()
        data = _until_closed(s)
        waited = time.monotonic() - t0
    assert data.startswith(b"HTTP/1.1 408"), data
    assert "no asciicast header within 2 s" in json.loads(data.split(b"\r\n\r\n", 1)[1])["error"]
    assert HEADER_TIMEOUT - 0.5 <= waited < HEADER_TIMEOUT + 8
    with strict.client(ALICE) as c:
        assert c.get("/api/v1/recordings").json()["recordings"] == []
        assert 'tsrecorder_errors_total{reason="header_timeout"} 1.0' in c.get("/metrics").text


def test_incomplete_request_head_is_closed(strict: RecorderProc) -> None:
    """A connection whose request head never completes (bytes trickling in) is closed by
    hypercorn's idle timer, which the header timeout sets."""
    with _v1_connect(strict) as s:
        t0 = time.monotonic()
        s.sendall(b"POST /record HTTP/1.1\r\nHost: x\r\n")
        for _ in range(3):
            time.sleep(0.5)
            s.sendall(b"X-Slow: 1\r\n")
        _until_closed(s)
        assert time.monotonic() - t0 < HEADER_TIMEOUT + 8


async def test_idle_v2_upload_without_header_is_cut(strict: RecorderProc) -> None:
    up = await H2Upload.open("127.0.0.1", strict.port, local_address=SERVER)
    try:
        assert await up.wait_headers() == 200
        await up.send(b'{"version": 2, ')  # an incomplete header line, then nothing
        await asyncio.wait_for(up._changed.wait(), HEADER_TIMEOUT + 8)  # well before an idle ack
        assert up.error is not None and "no asciicast header" in up.error, up.frames
    finally:
        await up.close()


async def test_recordings_whose_header_arrived_may_idle(strict: RecorderProc) -> None:
    """An idle SSH session sends nothing for hours: after the header there is no idle cut,
    for v1 as for v2."""
    v2_body = cast_header(conn="ssh-conn-idle-v2") + event(0.1, "a\n")
    v1_body = cast_header(conn="ssh-conn-idle-v1") + event(0.1, "a\n")
    up = await H2Upload.open("127.0.0.1", strict.port, local_address=SERVER)
    try:
        assert await up.wait_headers() == 200
        await up.send(v2_body)
        await up.wait_ack(len(v2_body))
        with _v1_connect(strict, SERVER2) as s:
            s.sendall(_v1_head(strict))
            assert recv_until(s, b"\r\n\r\n").startswith(b"HTTP/1.1 100")
            s.sendall(_chunk(v1_body))
            await asyncio.sleep(HEADER_TIMEOUT * 2)  # idle, past the header timeout
            later = event(HEADER_TIMEOUT * 2, "b\n")
            s.sendall(_chunk(later) + b"0\r\n\r\n")
            assert recv_until(s, b"}").startswith(b"HTTP/1.1 200")
        await up.send(event(5, "b\n"))
        await up.end()
        await up.wait_end()
        assert up.error is None, up.frames
    finally:
        await up.close()
    with strict.client(ALICE) as c:
        listing = c.get("/api/v1/recordings").json()["recordings"]
        assert sorted(m["status"] for m in listing) == ["complete", "complete"]


async def _live_upload(rec: RecorderProc, source: str, conn: str) -> H2Upload:
    up = await H2Upload.open("127.0.0.1", rec.port, local_address=source)
    assert await up.wait_headers() == 200
    body = cast_header(conn=conn) + event(0.1, "x\n")
    await up.send(body)
    await up.wait_ack(len(body))
    return up


def _v1_post(rec: RecorderProc, source: str, body: bytes) -> tuple[int, dict[str, object]]:
    with rec.client(source) as c:
        r = c.post("/record", content=body)
        return r.status_code, r.json()


async def test_caps_per_node_and_in_total(strict: RecorderProc) -> None:
    """Per node 2, in total 3: the third upload from one node gets 503 (v2 before its 200,
    v1 before its body is read) while another node still uploads; then the total cap."""
    first = await _live_upload(strict, SERVER, "c1")
    second = await _live_upload(strict, SERVER, "c2")
    third = await H2Upload.open("127.0.0.1", strict.port, local_address=SERVER)
    other: H2Upload | None = None
    try:
        assert await third.wait_headers() == 503
        await third.wait_end()
        assert third.frames and "too many uploads from this node" in str(third.frames[0])
        status, answer = await asyncio.to_thread(_v1_post, strict, SERVER, cast_header())
        assert status == 503 and "too many uploads from this node" in str(answer["error"])

        other = await _live_upload(strict, SERVER2, "c3")  # another node: still accepted
        status, answer = await asyncio.to_thread(_v1_post, strict, SERVER2, cast_header())
        assert status == 503 and "limit of 3 uploads" in str(answer["error"])

        await first.end()
        await first.wait_end()
        assert first.error is None
        status, _ = await asyncio.to_thread(  # a place is free again
            _v1_post, strict, SERVER, cast_header(conn="c4") + event(0.1, "y\n"))
        assert status == 200
    finally:
        for up in (first, second, third, other):
            if up is not None:
                await up.close()
    with strict.client(ALICE) as c:
        metrics = c.get("/metrics").text
        assert 'tsrecorder_errors_total{reason="node_limit"} 2.0' in metrics
        assert 'tsrecorder_errors_total{reason="upload_limit"} 1.0' in metrics
        stored = {m["storageKey"].rsplit("-", 1)[1] for m in
                  c.get("/api/v1/recordings").json()["recordings"]}
        assert stored == {"c1", "c2", "c3", "c4"}  # nothing of the refused ones


def test_limits_count_per_node() -> None:
    limits = UploadLimits(per_node=1, total=2)
    limits.acquire("a")
    limits.acquire("b")
    for node in ("a", "c"):
        with pytest.raises(UploadLimitError, match=r"too many|limit of 2"):
            limits.acquire(node)
    limits.release("a")
    limits.acquire("c")
    assert limits.running == 2


def _lower_fd_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))


def _fd_limits(pid: int) -> tuple[str, str]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return soft, hard
    raise AssertionError("no open file limit in /proc")


def test_open_file_limit_is_raised_at_start(tmp_path: Path) -> None:
    """Started with a soft limit of 256 (a container's default may be 128), the recorder
    raises it to the hard limit: 130 idle uploads must not exhaust it."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 256:
        pytest.skip(reason=f"the hard open file limit here is {hard}")
    rec = RecorderProc(tmp_path, str(tmp_path / "store"), preexec=_lower_fd_limit)
    try:
        rec.start()
        assert rec.proc is not None
        soft, hard_seen = _fd_limits(rec.proc.pid)
        assert soft == hard_seen != "256"
        assert f"open file limit: {soft}" in rec.log.read_text().replace("unlimited", soft)
    finally:
        rec.stop()


def test_raise_fd_limit_keeps_a_soft_limit_at_the_hard_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        assert raise_fd_limit() == hard
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
