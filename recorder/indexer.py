"""Feeds recordings' output text to the index as they stream (docs/recorder.md, "Search").

Each recording being uploaded has a ``CastText`` fed the bytes it stores; its lines are
written for all recordings together, one index transaction at most every ``FLUSH_INTERVAL``
seconds, so that a live recording is searchable within a second without a commit per event.
The same extraction over the stored bytes (``rebuild``) is what ``reindex`` and crash recovery
build, so a finished recording's text is what a fresh reindex gives.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from recorder.events import CastText
from recorder.index.base import Index, TextUpdate
from recorder.text import Line

log = logging.getLogger("tssh.recorder.indexer")

FLUSH_INTERVAL = 0.5  # seconds between index writes of live text
REBUILD_BATCH = 5000  # lines per transaction when text is built from storage


@dataclass
class _Live:
    text: CastText = field(default_factory=CastText)
    lines: list[Line] = field(default_factory=list)
    partial: Line | None = None  # as last written to the index


class TextIndexer:
    def __init__(self, index: Index, interval: float = FLUSH_INTERVAL) -> None:
        self.index = index
        self.interval = interval
        self._live: dict[str, _Live] = {}
        self._dirty: set[str] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def begin(self, recording_id: str) -> None:
        self._live[recording_id] = _Live()

    def feed(self, recording_id: str, data: bytes) -> None:
        """Bytes just stored for a live recording; their lines are written within
        ``interval``."""
        live = self._live.get(recording_id)
        if live is None:
            return
        live.lines += live.text.feed(data)
        self._dirty.add(recording_id)
        if self._timer is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self.interval, self._spawn_flush)

    def discard(self, recording_id: str) -> None:
        """Stops following a recording (its text will be rebuilt from storage)."""
        self._live.pop(recording_id, None)
        self._dirty.discard(recording_id)

    async def finish(self, recording_id: str) -> None:
        """The recording ended: its last line is complete and everything is written now."""
        live = self._live.pop(recording_id, None)
        self._dirty.discard(recording_id)
        if live is None:
            return
        live.lines += live.text.end()
        await self._write([TextUpdate(recording_id, live.lines, None)])

    def _spawn_flush(self) -> None:
        self._timer = None
        task = asyncio.get_running_loop().create_task(self.flush())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def flush(self) -> None:
        updates = []
        for rid in self._dirty:
            live = self._live[rid]
            partial = live.text.partial()
            if live.lines or partial != live.partial:
                updates.append(TextUpdate(rid, live.lines, partial))
                live.lines, live.partial = [], partial
        self._dirty.clear()
        await self._write(updates)

    async def _write(self, updates: list[TextUpdate]) -> None:
        try:
            await self.index.add_text(updates)
        except Exception:  # the index is a cache: the upload goes on, reindex repairs it
            log.exception("could not index the text of %d recordings", len(updates))

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        await self.flush()
        for task in list(self._tasks):
            await task


async def rebuild(index: Index, recording_id: str, chunks: AsyncIterator[bytes]) -> None:
    """Builds a recording's text from its stored bytes, replacing what the index had. The
    chunks are always read to the end (the caller may be hashing them), even when the index
    fails: the failure is logged and the text is left for the next reindex."""
    text = CastText()
    lines: list[Line] = []
    broken = False

    async def write(batch: list[Line]) -> None:
        nonlocal broken
        try:
            await index.add_text([TextUpdate(recording_id, batch)])
        except Exception:
            log.exception("could not index the text of recording %s", recording_id)
            broken = True

    try:
        await index.clear_text(recording_id)
    except Exception:
        log.exception("could not clear the text of recording %s", recording_id)
        broken = True
    async for chunk in chunks:
        if broken:
            continue
        lines += text.feed(chunk)
        if len(lines) >= REBUILD_BATCH:
            await write(lines)
            lines = []
    if not broken:
        await write(lines + text.end())
