"""The live text indexer: batched writes, partial lines, and a recording that falls behind."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from recorder.index.base import TextUpdate
from recorder.index.sqlite import SqliteIndex
from recorder.indexer import TextIndexer, rebuild
from recorder.model import NodeInfo, RecordingMeta
from recorder.text import Line
from tests.polling import wait_until

HEADER = json.dumps({"version": 2, "width": 80, "height": 24}).encode() + b"\n"


def ev(t: float, text: str) -> bytes:
    return json.dumps([t, "o", text]).encode() + b"\n"


async def opened(tmp_path: Path, *ids: str, cls: type[SqliteIndex] = SqliteIndex) -> SqliteIndex:
    index = cls(tmp_path / "index.sqlite3")
    await index.open()
    for rid in ids:
        await index.put(RecordingMeta(id=rid, key=f"k/{rid}", node=NodeInfo("n", "n"),
                                      start=1.0, header={"version": 2}, recorder="x"))
    return index


async def test_lines_are_written_in_batches_then_finished(tmp_path: Path) -> None:
    index = await opened(tmp_path, "r1", "r2")
    text = TextIndexer(index, interval=0.2)
    try:
        text.begin("r1")
        text.begin("r2")
        text.feed("r1", HEADER + ev(0.5, "one\r\ntw"))
        text.feed("r2", HEADER + ev(0.7, "other\r\n"))
        assert await index.text("r1") == []  # not before the interval
        await asyncio.sleep(0.5)
        assert await index.text("r1") == [Line(0.5, "one"), Line(0.5, "tw")]
        assert await index.text("r2") == [Line(0.7, "other")]
        text.feed("r1", ev(1.0, "o\r\nthree"))
        assert await text.finish("r1") is True  # the rest is extracted in the background
        text.feed("r1", ev(2.0, "after the end\n"))  # ignored
        expected = [Line(0.5, "one"), Line(1.0, "two"), Line(1.0, "three")]
        for _ in range(100):
            if await index.text("r1") == expected:
                break
            await asyncio.sleep(0.02)
        assert await index.text("r1") == expected
        # what is waiting when the recorder stops is written before it stops
        text.feed("r2", ev(3.0, "last words"))
        assert await text.finish("r2") is True
        await text.close()
        assert await index.text("r2") == [Line(0.7, "other"), Line(3.0, "last words")]
    finally:
        await index.close()


async def test_a_recording_that_falls_behind_is_built_from_storage(tmp_path: Path) -> None:
    index = await opened(tmp_path, "r1")
    text = TextIndexer(index, interval=0.1, max_backlog=4096)
    body = HEADER + b"".join(ev(i / 10, f"line {i}\r\n") for i in range(500))
    try:
        text.begin("r1")
        text.feed("r1", body[:1000])
        text.feed("r1", body[1000:])  # more than the backlog allows at once
        # /metrics: it waits for a rebuild, and is no lag of the live index
        assert text.rebuilds_pending() == 1
        assert text.lag(time.monotonic()) == 0 and text.backlog_bytes == 0
        assert await text.finish("r1") is False
        assert text.rebuilds_pending() == 0  # its caller queues the rebuild (service.py)

        async def chunks() -> object:
            for i in range(0, len(body), 777):
                yield body[i : i + 777]

        await rebuild(index, "r1", chunks())  # type: ignore[arg-type]
        got = await index.text("r1")
        assert [line.text for line in got] == [f"line {i}" for i in range(500)]
        await text.close()
    finally:
        await index.close()


async def test_all_backlogs_together_are_capped_and_rebuilt_later(tmp_path: Path) -> None:
    index = await opened(tmp_path, "r1", "r2")
    text = TextIndexer(index, interval=0.1, max_total_backlog=3000)
    body = HEADER + b"".join(ev(i / 10, f"line {i}\r\n") for i in range(100))
    try:
        text.begin("r1")
        text.begin("r2")
        text.feed("r1", body[:2000])
        text.feed("r2", body[:2000])  # both together are over the cap: r2 falls behind
        assert await text.finish("r1") is True
        assert await text.finish("r2") is False

        async def read() -> object:
            yield body

        text.rebuild_later("r2", read)  # type: ignore[arg-type]
        assert text.rebuilds_pending() == 1
        for _ in range(100):
            if len(await index.text("r2")) == 100:
                break
            await asyncio.sleep(0.05)
        assert [line.text for line in await index.text("r2")] == [
            f"line {i}" for i in range(100)]
        await wait_until(lambda: text.rebuilds_pending() == 0, what="the rebuild done")
        await text.close()
    finally:
        await index.close()


class GatedIndex(SqliteIndex):
    """An index whose text writes wait for ``gate`` (a slow or stuck database), or fail."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.gate = asyncio.Event()
        self.fail = False

    async def add_text(self, updates: list[TextUpdate]) -> None:
        await self.gate.wait()
        if self.fail:
            raise OSError("the index is gone")
        await super().add_text(updates)


async def test_index_lag_is_the_age_of_the_oldest_unwritten_byte(tmp_path: Path) -> None:
    index = await opened(tmp_path, "r1", cls=GatedIndex)
    assert isinstance(index, GatedIndex)
    failures: list[None] = []
    text = TextIndexer(index, interval=0.05, on_error=lambda: failures.append(None))
    try:
        text.begin("r1")
        assert text.lag(time.monotonic()) == 0
        fed_at = time.monotonic()
        first = HEADER + ev(0.1, "one\r\n")
        text.feed("r1", first)
        await asyncio.sleep(0.3)  # extracted, but its write waits at the gate
        text.feed("r1", ev(0.2, "two\r\n"))
        now = time.monotonic()
        assert now - fed_at - 0.05 <= text.lag(now) <= now - fed_at  # the oldest byte's age
        assert text.backlog_bytes == len(first) + len(ev(0.2, "two\r\n"))
        index.gate.set()
        await wait_until(lambda: text.backlog_bytes == 0, what="the text written")
        assert text.lag(time.monotonic()) == 0
        assert [line.text for line in await index.text("r1")] == ["one", "two"]
        assert failures == []
        index.fail = True  # a failed write is counted, and the lag does not stay up for it
        text.feed("r1", ev(0.3, "three\r\n"))
        await wait_until(lambda: failures != [], what="the failed write reported")
        assert text.lag(time.monotonic()) == 0
        await text.close()
    finally:
        await index.close()
