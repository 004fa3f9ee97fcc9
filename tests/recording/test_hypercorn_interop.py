"""The uploader against hypercorn, the HTTP server the recorder node runs on.

A minimal raw-ASGI recorder (as docs/recording.md describes one) served by hypercorn in-process:
checks the client against a production h2c and HTTP/1.1 stack (flow control, SETTINGS,
``100 Continue``) rather than only against the tests' own fake.
"""

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypercorn.asyncio import serve
from hypercorn.config import Config as HypercornConfig

from tests.ports import free_port
from tssh.identity.base import Peer
from tssh.recording.asciicast import CastHeader
from tssh.recording.model import RecordingOptions
from tssh.recording.uploader import start_recording

Message = MutableMapping[str, Any]
PEER = Peer(name="laptop", id="nLAP1", addresses=(), user="alice@example.com", user_id="1")


@dataclass
class MiniRecorder:
    v2: bool = True
    bodies: list[tuple[str, bytes]] = field(default_factory=list)

    async def __call__(self, scope: Message, receive: Callable[[], Awaitable[Message]],
                       send: Callable[[Message], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            return
        http2 = scope.get("http_version") == "2"
        if scope["path"] == "/v2/record":
            if scope["method"] == "HEAD":
                status = 200 if self.v2 and http2 else 404
                await send({"type": "http.response.start", "status": status, "headers": []})
                await send({"type": "http.response.body", "body": b""})
                return
            await send({"type": "http.response.start", "status": 200, "headers": []})
            body = bytearray()
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                body += message.get("body", b"")
                more = message.get("more_body", False)
                ack = (json.dumps({"ack": len(body)}) + "\n").encode()
                await send({"type": "http.response.body", "body": ack, "more_body": more})
                if not more:
                    self.bodies.append(("v2", bytes(body)))
                    return
        if scope["path"] == "/record" and scope["method"] == "POST":
            body = bytearray()
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                body += message.get("body", b"")
                if not message.get("more_body", False):
                    break
            self.bodies.append(("v1", bytes(body)))
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})


@pytest.fixture
async def served() -> AsyncIterator[tuple[MiniRecorder, int]]:
    port = free_port()
    app = MiniRecorder()
    config = HypercornConfig()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    config.errorlog = None
    stop = asyncio.Event()
    task = asyncio.create_task(serve(app, config, shutdown_trigger=stop.wait))
    deadline = time.monotonic() + 10
    while True:
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            break
        except OSError:
            assert time.monotonic() < deadline, "hypercorn did not start"
            await asyncio.sleep(0.02)
    try:
        yield app, port
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


@pytest.mark.parametrize("v2", [True, False], ids=["v2", "v1"])
async def test_upload_through_hypercorn(served: tuple[MiniRecorder, int], v2: bool) -> None:
    app, port = served
    app.v2 = v2
    header = CastHeader.for_session(PEER, ssh_user="alice", local_user="alice",
                                    connection_id="c", started_at=time.time())
    rec = await start_recording([("127.0.0.1", port)], header,
                                options=RecordingOptions(enforce=True, ack_window=5.0))
    fed = b"0123456789abcdef" * 65536  # 1 MiB: well beyond the initial flow-control windows
    for i in range(0, len(fed), 8192):
        rec.output_nowait(fed[i:i + 8192])
    rec.exit_nowait(0)
    stats = await rec.close()
    assert stats.state == "finished"
    assert stats.protocol == ("v2" if v2 else "v1")
    [(protocol, body)] = app.bodies
    assert protocol == stats.protocol and len(body) == stats.bytes_sent
    if v2:
        assert stats.bytes_acked == stats.bytes_sent
    events = [json.loads(line) for line in body.decode().splitlines()[1:]]
    assert "".join(e[2] for e in events if e[1] == "o").encode() == fed
