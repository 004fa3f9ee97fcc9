"""/record over HTTP/1.1 with ``Expect: 100-continue`` and a chunked body, on a raw socket."""

from __future__ import annotations

import contextlib
import socket

from tests.recorder.conftest import (
    ALICE,
    SERVER,
    STRANGER,
    RecorderProc,
    cast_header,
    event,
    recv_until,
)


def _connect(rec: RecorderProc, source: str) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", rec.port), timeout=10, source_address=(source, 0))
    return s


def _head(rec: RecorderProc) -> bytes:
    return (
        f"POST /record HTTP/1.1\r\nHost: 127.0.0.1:{rec.port}\r\n"
        "Transfer-Encoding: chunked\r\nExpect: 100-continue\r\n"
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()


def _read_response(s: socket.socket) -> bytes:
    return recv_until(s, b"\r\n\r\n")


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def test_100_continue_before_body_then_200_once_stored(recorder: RecorderProc) -> None:
    body = cast_header(conn="ssh-conn-v1-aaaaaaaaaa") + b"".join(
        event(0.5 * i, f"out {i}\n") for i in range(1, 50)
    )
    with _connect(recorder, SERVER) as s:
        s.sendall(_head(recorder))
        interim = _read_response(s)  # nothing of the body has been sent yet
        assert interim.startswith(b"HTTP/1.1 100"), interim
        for i in range(0, len(body), 700):
            s.sendall(_chunk(body[i : i + 700]))
        s.sendall(b"0\r\n\r\n")
        final = _read_response(s)
        assert final.startswith(b"HTTP/1.1 200"), final
    with recorder.client(ALICE) as c:
        [meta] = c.get("/api/v1/recordings").json()["recordings"]
        assert meta["status"] == "complete"
        assert c.get(f"/api/v1/recordings/{meta['id']}/cast").content == body


def test_stranger_gets_no_200(recorder: RecorderProc) -> None:
    """hypercorn answers 100 as soon as it has parsed the request head (before the app runs),
    so a refused uploader sees 100 then 403; its body is never stored."""
    with _connect(recorder, STRANGER) as s:
        s.sendall(_head(recorder))
        data = _read_response(s)
        if data.startswith(b"HTTP/1.1 100"):
            data = data.split(b"\r\n\r\n", 1)[1] or _read_response(s)
        assert data.startswith(b"HTTP/1.1 403"), data
    with recorder.client(ALICE) as c:
        assert c.get("/api/v1/recordings").json()["recordings"] == []


def test_v2_path_refuses_http1_post(recorder: RecorderProc) -> None:
    with recorder.client(SERVER) as c:
        r = c.post("/v2/record", content=cast_header())
        assert r.status_code == 505


def test_a_refused_upload_with_more_body_on_the_way_is_answered_and_closed(
        recorder: RecorderProc) -> None:
    """A malformed header answered 400 while a MiB of body is still arriving: the rest is
    read and discarded, so the connection closes at once (found by tests/lab's fuzzed
    uploads: unread, it stayed open until the uploader gave up, and logged a traceback)."""
    body = b"\xef\xbb\xbf" + cast_header() + event(0.5, "y" * (1024 * 1024 - 20))
    head = (b"POST /record HTTP/1.1\r\nHost: recorder\r\nTransfer-Encoding: chunked\r\n"
            b"Connection: close\r\n\r\n")  # no Expect: the body follows the head at once
    with _connect(recorder, SERVER) as s:
        s.settimeout(5)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            s.sendall(head + _chunk(body) + b"0\r\n\r\n")
        answer = b""
        while chunk := s.recv(65536):  # ends when the recorder closes: a timeout fails
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400"), answer[:300]
    assert b"asciicast header" in answer
    assert "Traceback" not in recorder.log.read_text()
