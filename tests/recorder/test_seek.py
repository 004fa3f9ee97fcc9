"""The seek index (``recorder.seek``): checkpoints noted as an upload streams in, whatever its
chunking; segments of the cast from a checkpoint, served over real HTTP by a recorder process
(and in-process, to see which bytes of storage a segment request reads)."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from recorder.seek import RESET, Checkpoint, SeekIndexer, choose, screen_event
from tests.e2e.recorders import RecorderLoop
from tests.recorder.conftest import ALICE, SERVER, RecorderProc, cast_header, event
from tests.recorder.h2upload import H2Upload
from tests.recorder.test_fuzz import InProcess


def long_cast(events: int, *, resize_at: int | None = None, size: int = 200) -> bytes:
    """A cast of ``events`` output events of ~``size`` bytes, one every 0.1 s, each naming
    its number (``line N``), with a resize at event ``resize_at``."""
    parts = [cast_header()]
    pad = "x" * size
    for i in range(events):
        if i == resize_at:
            parts.append(event(i / 10, "100x30", "r"))
        parts.append(event(i / 10, f"line {i} {pad}\r\n"))
    return b"".join(parts)


def _feed(body: bytes, chunks: list[int], step: int) -> SeekIndexer:
    idx = SeekIndexer(step=step)
    at = 0
    for n in chunks:
        idx.feed(body[at:at + n])
        at += n
    idx.feed(body[at:])
    return idx


def _line_at(body: bytes, offset: int) -> Any:
    return json.loads(body[offset:body.index(b"\n", offset)])


@pytest.mark.parametrize("seed", range(6))
def test_checkpoints_are_line_starts_with_their_times_whatever_the_chunking(seed: int) -> None:
    body = long_cast(2000, resize_at=700)
    rng = random.Random(seed)
    chunks = [rng.choice([1, 7, 95, 96, 97, 4096, 65536]) for _ in range(200)]
    idx = _feed(body, chunks, step=16 * 1024)
    whole = _feed(body, [], step=16 * 1024)
    assert idx.checkpoints == whole.checkpoints
    assert len(idx.checkpoints) >= len(body) // (16 * 1024) - 2
    prev = 0
    for cp in idx.checkpoints:
        assert body[cp.offset - 1:cp.offset] == b"\n"
        doc = _line_at(body, cp.offset)
        assert doc[0] == cp.time
        assert cp.offset - prev >= 16 * 1024
        prev = cp.offset
        # the size in force: the resize's once past its line
        assert cp.size == ((100, 30) if cp.offset > body.index(b'"100x30"') else None)


def test_checkpoints_stay_bounded() -> None:
    body = long_cast(5000)
    idx = SeekIndexer(step=1024, max_checkpoints=16)
    for i in range(0, len(body), 4096):
        idx.feed(body[i:i + 4096])
    assert 8 <= len(idx.checkpoints) <= 16
    assert idx.step > 1024
    times = [cp.time for cp in idx.checkpoints]
    assert times == sorted(times)


def test_screen_event_replays_whole_output_events_after_a_reset() -> None:
    window = b'"cut line"]\n' + event(1.0, "a") + event(1.5, "\x1b[2Jb", "o") + event(1.6, "k", "i")
    doc = json.loads(screen_event(window, Checkpoint(99, 2.0, None)))
    assert doc == [2.0, "o", RESET + "a\x1b[2Jb"]
    cps = [Checkpoint(10, 1.0, None), Checkpoint(20, 5.0, None)]
    assert choose(cps, 0.5) is None and choose(cps, 4.9) == cps[0] and choose(cps, 9) == cps[1]
    assert Checkpoint.from_json(cps[1].to_json()) == cps[1]
    for bad in ([1], "x", [1, "t", None], [-1, 1.0, None], [1, True, None]):
        assert Checkpoint.from_json(bad) is None


def _parse_segment(text: bytes) -> tuple[dict[str, Any], list[Any], bytes]:
    header_line, screen_line, rest = text.split(b"\n", 2)
    return json.loads(header_line), json.loads(screen_line), rest


def test_segment_over_http_while_streaming_and_after(tmp_path: Path) -> None:
    """A recording streamed in 64 KiB chunks; while it is live and after it ends, a
    ``cast?from=`` request answers a valid asciicast that starts at the checkpoint before
    that time, its bytes the stored ones from that offset on."""
    rec = RecorderProc(tmp_path, str(tmp_path / "store"))
    body = long_cast(60_000, size=180)  # ~12 MiB: checkpoints every 4 MiB
    loop = RecorderLoop()
    rec.start()
    try:
        up = loop.run(H2Upload.open("127.0.0.1", rec.port, local_address=SERVER))
        assert loop.run(up.wait_headers()) == 200
        half = len(body) * 3 // 4
        for i in range(0, half, 65536):
            loop.run(up.send(body[i:min(i + 65536, half)]))
        loop.run(up.wait_ack(half))
        with rec.client(ALICE) as c:
            [live] = c.get("/api/v1/recordings").json()["recordings"]
            assert live["status"] == "live" and "seek" not in live
            r = c.get(f"/api/v1/recordings/{live['id']}/cast", params={"from": "4500"})
            assert r.status_code == 200
            offset = int(r.headers["x-segment-offset"])
            assert 4 * 1024 * 1024 <= offset <= half
            header, screen, rest = _parse_segment(r.content)
            assert header["segment"]["offset"] == offset and header["width"] == 80
            assert screen[1] == "o" and screen[2].startswith(RESET)
            assert f"line {round(_line_at(body, offset)[0] * 10) - 1} " in screen[2]
            assert rest == body[offset:len(rest) + offset]
        for i in range(half, len(body), 65536):
            loop.run(up.send(body[i:i + 65536]))
        loop.run(up.end())
        loop.run(up.wait_end())
        loop.run(up.close())
        with rec.client(ALICE) as c:
            rid = live["id"]
            meta = c.get(f"/api/v1/recordings/{rid}").json()
            assert meta["status"] == "complete"
            cps = [Checkpoint.from_json(cp) for cp in meta["seek"]]
            assert [cp.offset // (4 << 20) for cp in cps if cp is not None] == [1, 2, 3]
            r = c.get(f"/api/v1/recordings/{rid}/cast", params={"from": "5900"})
            header, screen, rest = _parse_segment(r.content)
            second = choose([cp for cp in cps if cp is not None], 5900)
            assert second is not None and int(r.headers["x-segment-offset"]) == second.offset
            assert rest == body[second.offset:]
            assert screen[0] == second.time
            for line in rest.splitlines():  # every line of the segment is an event
                assert isinstance(json.loads(line), list)
            # before the first checkpoint, or with a Range: the cast itself
            assert c.get(f"/api/v1/recordings/{rid}/cast", params={"from": "1"}).content == body
            ranged = c.get(f"/api/v1/recordings/{rid}/cast", params={"from": "5900"},
                           headers={"Range": "bytes=0-9"})
            assert ranged.status_code == 206 and ranged.content == body[:10]
            assert c.get(f"/api/v1/recordings/{rid}/cast",
                         params={"from": "-1"}).status_code == 422
    finally:
        loop.close()
        rec.stop()


def test_a_segment_reads_storage_only_near_its_checkpoint(tmp_path: Path) -> None:
    app = InProcess(tmp_path)
    try:
        body = long_cast(60_000, size=180)
        assert app.upload(body).status_code == 200
        storage = app.app.service.storage
        reads: list[tuple[int, int | None]] = []
        real_read = storage.read

        def read(key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
            reads.append((start, end))
            return real_read(key, start, end)

        storage.read = read  # type: ignore[method-assign]

        async def fetch() -> tuple[dict[str, Any], bytes]:
            async with app.client(ALICE) as c:
                [meta] = (await c.get("/api/v1/recordings")).json()["recordings"]
                meta = (await c.get(f"/api/v1/recordings/{meta['id']}")).json()
                r = await c.get(f"/api/v1/recordings/{meta['id']}/cast?from=5900")
                return meta, r.content

        meta, _ = app.run(fetch())
        cp = choose([Checkpoint(o, t, None) for o, t, _ in meta["seek"]], 5900)
        assert cp is not None and cp.offset > 8 * 1024 * 1024
        offset = cp.offset
        # the header (first 64 KiB at most), the replay window, and from the checkpoint on
        assert reads[0] == (0, 64 * 1024)
        assert reads[1] == (offset - 64 * 1024, offset)
        assert reads[2] == (offset, None)
        assert len(reads) == 3
    finally:
        app.close()


def test_a_recording_recovered_after_a_crash_gets_its_seek_index(tmp_path: Path) -> None:
    """The index built during the upload dies with the process; recovery, which reads the
    stored bytes anyway to seal them, builds it again."""
    rec = RecorderProc(tmp_path, str(tmp_path / "store"))
    body = long_cast(45_000, size=180)  # ~9 MiB: two checkpoints
    loop = RecorderLoop()
    rec.start()
    try:
        up = loop.run(H2Upload.open("127.0.0.1", rec.port, local_address=SERVER))
        assert loop.run(up.wait_headers()) == 200
        for i in range(0, len(body), 65536):
            loop.run(up.send(body[i:i + 65536]))
        loop.run(up.wait_ack(len(body)))
        rec.kill9()
        loop.close()
        loop = RecorderLoop()
        rec.start()
        with rec.client(ALICE) as c:
            [meta] = c.get("/api/v1/recordings").json()["recordings"]
            meta = c.get(f"/api/v1/recordings/{meta['id']}").json()
            assert meta["status"] == "incomplete"
            assert len(meta["seek"]) == 2
            r = c.get(f"/api/v1/recordings/{meta['id']}/cast", params={"from": "4400"})
            assert int(r.headers["x-segment-offset"]) == meta["seek"][1][0]
            assert r.content.split(b"\n", 2)[2] == body[meta["seek"][1][0]:]
    finally:
        loop.close()
        rec.stop()
