"""``GET /api/v1/recordings/{id}/events``: a recording as server-sent events in the format
asciinema-player's eventsource driver reads, over real HTTP from a real recorder; and the UI's
pages and files behind the same access check as the API."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from recorder.api import _keepalive
from recorder.sse import CastEvents
from tests.recorder.conftest import (
    ALICE,
    CAROL,
    SERVER,
    STRANGER,
    RecorderProc,
    cast_header,
    event,
)
from tests.recorder.h2upload import H2Upload


def _upload(rec: RecorderProc, body: bytes) -> str:
    with rec.client(SERVER) as c:
        assert c.post("/record", content=iter([body])).status_code == 200
    with rec.client(ALICE) as c:
        return str(c.get("/api/v1/recordings").json()["recordings"][0]["id"])


def _frames(text: str) -> list[dict[str, Any]]:
    """SSE frames as {"event": name or None, "data": parsed JSON, "retry": ...}."""
    out = []
    for block in text.split("\n\n"):
        frame: dict[str, Any] = {"event": None}
        for line in block.split("\n"):
            name, _, value = line.partition(": ")
            if name == "data":
                frame["data"] = json.loads(value)
            elif name in ("event", "retry"):
                frame[name] = value
        if len(frame) > 1:
            out.append(frame)
    return out


async def _sse(lines: AsyncIterator[str]) -> AsyncIterator[dict[str, Any]]:
    block: list[str] = []
    async for line in lines:
        if line:
            block.append(line)
            continue
        frames = _frames("\n".join(block))
        block = []
        for f in frames:
            yield f


@pytest.fixture
def ui_recorder(tmp_path: Path) -> Iterator[RecorderProc]:
    rec = RecorderProc(tmp_path, str(tmp_path / "store"), extra=["--ui"])
    try:
        rec.start()
        yield rec
    finally:
        rec.stop()


def test_events_of_a_finished_recording(recorder: RecorderProc) -> None:
    body = (cast_header(width=100, height=30) + event(0.1, "hello é\r\n")
            + event(0.2, "101x31", "r") + event(0.3, "tssh: file transfer", "m")
            + event(0.4, "not for the player", "q") + event(0.5, "3", "x"))
    rid = _upload(recorder, body)
    with recorder.client(ALICE) as c:
        r = c.get(f"/api/v1/recordings/{rid}/events")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["cache-control"] == "no-store"
    frames = _frames(r.text)
    assert frames[0] == {"event": None, "retry": "3000"}
    assert [f["data"] for f in frames[1:]] == [
        {"cols": 100, "rows": 30, "time": 0},
        [0.1, "o", "hello é\r\n"],
        [0.2, "r", {"cols": 101, "rows": 31}],
        [0.3, "m", "tssh: file transfer"],
        {"status": "complete", "exitStatus": 3, "time": 0.5},
    ]
    assert frames[-1]["event"] == "done"
    assert all(f["event"] is None for f in frames[:-1])


def test_events_need_a_viewer(recorder: RecorderProc) -> None:
    rid = _upload(recorder, cast_header() + event(0.1, "secret\n"))
    url = f"/api/v1/recordings/{rid}/events"
    for source, status in ((CAROL, 403), (STRANGER, 401), (SERVER, 403)):
        with recorder.client(source) as c:
            r = c.get(url)
            assert r.status_code == status, (source, r.text)
            assert "secret" not in r.text
    with recorder.client(STRANGER) as c:
        token = recorder.token()
        assert c.get(url, headers={"Authorization": f"Bearer {token}"}).status_code == 200


async def test_events_follow_a_live_recording(recorder: RecorderProc) -> None:
    up = await H2Upload.open("127.0.0.1", recorder.port, local_address=SERVER)
    first = cast_header(width=0, height=0) + event(0.1, "first\n")
    try:
        assert await up.wait_headers() == 200
        await up.send(first)
        await up.wait_ack(len(first))
        async with recorder.aclient(ALICE) as c:
            [meta] = (await c.get("/api/v1/recordings", params={"live": "true"})).json()[
                "recordings"]
            async with c.stream("GET", f"/api/v1/recordings/{meta['id']}/events") as r:
                assert r.status_code == 200
                frames = _sse(r.aiter_lines())
                assert (await anext(frames)).get("retry") == "3000"
                # no PTY: 0x0 in the header, the player's own 80x24
                assert (await anext(frames))["data"] == {"cols": 80, "rows": 24, "time": 0}
                assert (await anext(frames))["data"] == [0.1, "o", "first\n"]
                await up.send(event(0.2, "second\n"))
                second = await asyncio.wait_for(anext(frames), 5)
                assert second["data"] == [0.2, "o", "second\n"]
                await up.send(event(0.3, "0", "x"))
                await up.end()
                done = await asyncio.wait_for(anext(frames), 5)
                assert done["event"] == "done"
                assert done["data"] == {"status": "complete", "exitStatus": 0, "time": 0.3}
                assert [f async for f in frames] == []  # the stream ends with the recording
            await up.wait_end()
    finally:
        await up.close()


def test_cast_events_translation() -> None:
    """The pure translator: torn and invalid lines give nothing, sizes stay sane."""
    cast = CastEvents()
    assert cast.line(b"[0.1") == b""  # before the header, and torn
    assert cast.line(b'{"version":2,"width":-1,"height":24}') == (
        b'data: {"cols":80,"rows":24,"time":0}\n\n')
    assert cast.line(b'[0.5,"o",') == b""
    assert cast.line(b'[0.6,"r","0x10"]') == b'data: [0.6,"r",{"cols":80,"rows":24}]\n\n'
    assert cast.line(b'[0.7,"r","wide"]') == b""
    assert cast.line(b'["x","o","y"]') == b""
    assert cast.line(b'[0.8,"o","a\\nb\\u2028"]') == 'data: [0.8,"o","a\\nb\u2028"]\n\n'.encode()
    assert cast.line(b'[0.9,"x","-1"]') == b""
    assert cast.done("incomplete") == (
        b'event: done\ndata: {"status":"incomplete","exitStatus":-1,"time":0.9}\n\n')


def test_ui_pages_and_files_only_for_viewers(ui_recorder: RecorderProc) -> None:
    rid = _upload(ui_recorder, cast_header(command="make <deploy>") + event(0.1, "x\n"))
    paths = ["/", f"/play/{rid}", "/ui/app.css", "/ui/player.js", "/ui/list.js",
             "/ui/vendor/asciinema-player.css"]
    with ui_recorder.client(ALICE) as c:
        page = c.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "make &lt;deploy&gt;" in page.text and "<deploy>" not in page.text
        assert f'href="play/{rid}"' in page.text
        assert c.get("/?fragment=rows").text.startswith('<tr class="rec"')
        assert rid in c.get(f"/play/{rid}").text
        assert c.get("/play/20261125T090000Z-0123456789abcdef").status_code == 404
        assert c.get("/ui/nope.js").status_code == 404
        assert c.get("/?since=yesterday").status_code == 200  # the page says what is wrong
        assert "bad query" in c.get("/?since=yesterday").text
    for source, status in ((CAROL, 403), (STRANGER, 401), (SERVER, 403)):
        with ui_recorder.client(source) as c:
            for path in paths:
                r = c.get(path)
                assert r.status_code == status, (source, path, r.status_code)
                assert "deploy" not in r.text


def test_without_ui_only_the_api(recorder: RecorderProc) -> None:
    with recorder.client(ALICE) as c:
        assert c.get("/").status_code == 404
        assert c.get("/ui/app.css").status_code == 404
        assert c.get("/api/v1/recordings").status_code == 200


def test_ui_serves_the_player_files(ui_recorder: RecorderProc) -> None:
    from recorder.web import VENDOR_DIR, vendor_problem

    if vendor_problem() is not None:
        pytest.skip(reason=f"asciinema-player is not installed: {vendor_problem()}")
    with ui_recorder.client(ALICE) as c:
        js = c.get("/ui/vendor/asciinema-player.min.js")
        assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
        assert js.content == (VENDOR_DIR / "asciinema-player.min.js").read_bytes()
        assert c.get("/ui/vendor/other.js").status_code == 404
        assert "connect-src" not in js.headers["content-security-policy"]
        assert "default-src 'self'" in js.headers["content-security-policy"]


def test_pages_name_nothing_outside_the_recorder(ui_recorder: RecorderProc) -> None:
    rid = _upload(ui_recorder, cast_header() + event(0.1, "x\n"))
    with ui_recorder.client(ALICE) as c:
        for path in ("/", f"/play/{rid}", "/ui/player.js", "/ui/list.js", "/ui/app.css"):
            text = c.get(path).text
            for external in ("http:", "https:", '="//', "url(//"):
                assert external not in text, (path, external)


async def test_keepalive_between_quiet_items_and_source_closed_on_exit() -> None:
    closed = asyncio.Event()

    async def source() -> AsyncIterator[bytes]:
        try:
            yield b"a"
            await asyncio.sleep(0.35)
            yield b"b"
            await asyncio.sleep(10)
            yield b"never"
        finally:
            closed.set()

    out: list[bytes | None] = []
    stream = _keepalive(source(), 0.1)
    async for item in stream:
        out.append(item)
        if item == b"b":
            break
    await stream.aclose()  # the client went away: the follower is released
    await asyncio.wait_for(closed.wait(), 2)
    assert out[0] == b"a" and out[-1] == b"b" and 2 <= out.count(None) <= 4

    async def failing() -> AsyncIterator[bytes]:
        yield b"x"
        raise OSError("storage went away")

    with pytest.raises(OSError, match="storage went away"):
        async for _ in _keepalive(failing(), 1):
            pass
