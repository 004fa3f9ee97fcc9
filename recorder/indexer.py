"""Feeds recordings' output text to the index as they stream (docs/recorder.md, "Search").

Each recording being uploaded has a ``CastText`` fed the bytes it stores; its lines are
written for all recordings together, one index transaction at most every ``FLUSH_INTERVAL``
seconds, so that a live recording is searchable within a second without a commit per event.
The same extraction over the stored bytes (``rebuild``) is what ``reindex`` and crash recovery
build, so a finished recording's text is what a fresh reindex gives.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from recorder.arrivals import Arrivals
from recorder.errors import RecorderError
from recorder.events import CastText
from recorder.index.base import Index, TextUpdate
from recorder.text import Line

log = logging.getLogger("tssh.recorder.indexer")

FLUSH_INTERVAL = 0.5  # seconds between index writes of live text
REBUILD_BATCH = 5000  # lines per transaction when text is built from storage
SLICE = 256 * 1024  # bytes extracted before the event loop gets a turn
# after a slice, the text task sleeps this many times as long as the slice took: it gets at
# most half of the event loop however fast output arrives, so a flood slows its upload at
# most by half until the backlog overflows (then extraction stops for that recording)
DUTY_PAUSE = 1.0
# bytes of one recording (and of all together) stored but not yet in the index: output
# faster than the recorder indexes (a cat of a big file) falls behind within a second
MAX_BACKLOG = 4 * 1024 * 1024
MAX_TOTAL_BACKLOG = 64 * 1024 * 1024
# bytes fed within this many seconds share one arrival mark: the index lag is exact to this
ARRIVAL_GRAIN = 0.05


@dataclass
class _Live:
    text: CastText = field(default_factory=CastText)
    backlog: list[bytes] = field(default_factory=list)
    backlog_size: int = 0  # bytes in backlog
    unwritten: int = 0  # bytes fed whose lines are not in the index yet (backlog included)
    extracted: int = 0  # bytes extracted since the last flush took the lines
    behind: bool = False  # the backlog overflowed: the text comes from storage at the end
    ending: bool = False  # the recording ended: finalize once the backlog is extracted
    lines: list[Line] = field(default_factory=list)
    partial: Line | None = None  # as last written to the index
    # when the unwritten bytes were fed (monotonic clock): the index lag
    arrivals: Arrivals = field(default_factory=lambda: Arrivals(ARRIVAL_GRAIN))


class TextIndexer:
    """Extraction runs in a task of its own, a slice at a time, so a flood of output never
    holds up the uploads (storing a byte costs far less than indexing it: docs/performance.md).
    A recording whose backlog passes ``MAX_BACKLOG`` (output faster than this recorder can
    index it) stops being indexed live, and ``finish`` reports that its text is to be built
    from storage."""

    def __init__(self, index: Index, interval: float = FLUSH_INTERVAL,
                 max_backlog: int = MAX_BACKLOG,
                 max_total_backlog: int = MAX_TOTAL_BACKLOG,
                 on_error: Callable[[], None] | None = None) -> None:
        self.index = index
        self.on_error = on_error  # an index write failed (tsrecorder_index_errors_total)
        self.interval = interval
        self.max_backlog = max_backlog
        self.max_total_backlog = max_total_backlog
        self._total = 0  # bytes in every backlog
        self._rebuilds: asyncio.Queue[tuple[str, Callable[[], AsyncIterator[bytes]]]] = (
            asyncio.Queue())
        self._rebuilder: asyncio.Task[None] | None = None
        self._rebuilding = 0  # rebuilds taken from the queue, not yet done
        self._live: dict[str, _Live] = {}
        self._dirty: set[str] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._waiting: set[str] = set()  # recordings with a backlog
        self._work = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None

    def begin(self, recording_id: str) -> None:
        self._live[recording_id] = _Live()

    def feed(self, recording_id: str, data: bytes) -> None:
        """Bytes just stored for a live recording; their lines are written within
        ``interval`` (unless the recorder is behind)."""
        live = self._live.get(recording_id)
        if live is None or live.behind or live.ending:
            return
        if (live.unwritten + len(data) > self.max_backlog
                or self._total + len(data) > self.max_total_backlog):
            log.warning("recording %s: output arrives faster than it can be indexed; its "
                        "text will be indexed from storage when it ends", recording_id)
            self._fall_behind(recording_id, live)
            return
        live.backlog.append(data)
        live.backlog_size += len(data)
        live.unwritten += len(data)
        live.arrivals.arrived(len(data), time.monotonic())
        self._total += len(data)
        self._waiting.add(recording_id)
        self._work.set()
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._extract_loop())

    def _fall_behind(self, recording_id: str, live: _Live) -> None:
        live.behind = True
        self._release(live)
        self._waiting.discard(recording_id)

    def _release(self, live: _Live) -> None:
        self._total -= live.unwritten
        live.backlog, live.backlog_size, live.unwritten, live.extracted = [], 0, 0, 0
        live.lines = []
        live.arrivals.clear()

    def discard(self, recording_id: str) -> None:
        """Stops following a recording (its text will be rebuilt from storage)."""
        live = self._live.pop(recording_id, None)
        if live is not None:
            self._release(live)
        self._dirty.discard(recording_id)
        self._waiting.discard(recording_id)

    def rebuild_later(self, recording_id: str,
                      read: Callable[[], AsyncIterator[bytes]]) -> None:
        """Queues a rebuild of a recording's text from storage; one runs at a time."""
        self._rebuilds.put_nowait((recording_id, read))
        if self._rebuilder is None:
            self._rebuilder = asyncio.get_running_loop().create_task(self._rebuild_loop())

    async def _rebuild_loop(self) -> None:
        while True:
            recording_id, read = await self._rebuilds.get()
            self._rebuilding = 1
            try:
                await rebuild(self.index, recording_id, read(), on_error=self.on_error)
            except Exception:
                self._failed()
                log.exception("recording %s: cannot index its text from storage (run "
                              "tssh-recorder reindex)", recording_id)
            finally:
                self._rebuilding = 0

    # -- what /metrics shows (docs/recorder.md, "Metrics") -----------------------------------

    def lag(self, now: float) -> float:
        """Seconds since the oldest byte of a live recording that is not yet in the index
        arrived (``now``: ``time.monotonic()``); 0 when every live recording is caught up.
        Recordings that fell behind are counted by ``rebuilds_pending`` instead."""
        oldest = [t for live in self._live.values() if (t := live.arrivals.oldest()) is not None]
        return max(0.0, now - min(oldest, default=now))

    @property
    def backlog_bytes(self) -> int:
        return self._total

    def rebuilds_pending(self) -> int:
        """Recordings whose text is to come from storage: live ones that fell behind, and
        ended ones queued or being rebuilt."""
        behind = sum(1 for live in self._live.values() if live.behind)
        return behind + self._rebuilds.qsize() + self._rebuilding

    def _failed(self) -> None:
        if self.on_error is not None:
            self.on_error()

    async def finish(self, recording_id: str) -> bool:
        """The recording ended: its last line is complete. What is still waiting for
        extraction is indexed in the background (the upload's final ack does not wait for
        it). False when its text is to be built from storage instead (it fell behind)."""
        live = self._live.get(recording_id)
        if live is None:
            return True
        if live.behind:
            self.discard(recording_id)
            return False
        live.ending = True
        if not live.backlog:
            await self._finalize(recording_id, live)
        return True

    async def _finalize(self, recording_id: str, live: _Live) -> None:
        lines = live.lines + live.text.end()
        self.discard(recording_id)
        await self._write([TextUpdate(recording_id, lines, None)])

    def _extract(self, recording_id: str, live: _Live) -> None:
        """Extracts about one SLICE of a recording's backlog."""
        taken = 0
        while live.backlog and taken < SLICE:
            data = live.backlog.pop(0)
            if len(data) > SLICE:  # a big write: the rest waits for the next turn
                live.backlog.insert(0, data[SLICE:])
                data = data[:SLICE]
            live.backlog_size -= len(data)
            live.extracted += len(data)
            taken += len(data)
            live.lines += live.text.feed(data)
        if not live.backlog:
            self._waiting.discard(recording_id)
        self._dirty.add(recording_id)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.interval, self._spawn_flush)

    async def _extract_loop(self) -> None:
        while True:
            await self._work.wait()
            self._work.clear()
            while self._waiting:
                for rid in list(self._waiting):
                    started = time.perf_counter()
                    live = self._live.get(rid)
                    if live is None:
                        self._waiting.discard(rid)
                    else:
                        try:
                            self._extract(rid, live)
                        except Exception:
                            log.exception("recording %s: text extraction failed", rid)
                            self._fall_behind(rid, live)
                        if live.ending and not live.backlog and not live.behind:
                            await self._finalize(rid, live)
                    await _yield(started)

    def _spawn_flush(self) -> None:
        loop = asyncio.get_running_loop()
        if self._tasks:  # one flush at a time: the index sets the pace
            self._timer = loop.call_later(self.interval, self._spawn_flush)
            return
        self._timer = None
        task = loop.create_task(self.flush())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def flush(self) -> None:
        updates = []
        covered: list[tuple[_Live, int]] = []
        for rid in self._dirty:
            live = self._live.get(rid)
            if live is None:
                continue
            partial = live.text.partial()
            if live.lines or partial != live.partial:
                updates.append(TextUpdate(rid, live.lines, partial))
                live.lines, live.partial = [], partial
            covered.append((live, live.extracted))
            live.extracted = 0
        self._dirty.clear()
        await self._write(updates)
        for live, n in covered:  # those bytes are in the index now
            if live.unwritten >= n:  # (not released meanwhile)
                live.unwritten -= n
                live.arrivals.consumed(n)
                self._total -= n

    async def _write(self, updates: list[TextUpdate]) -> None:
        try:
            await self.index.add_text(updates)
        except Exception:  # the index is a cache: the upload goes on, reindex repairs it
            self._failed()
            log.exception("could not index the text of %d recordings", len(updates))

    async def close(self) -> None:
        """Extracts and writes what is waiting (bounded by the backlog caps), then stops."""
        for rid, live in list(self._live.items()):
            while live.backlog and not live.behind:
                self._extract(rid, live)
            if live.ending and not live.behind:
                await self._finalize(rid, live)
        for task in (self._worker, self._rebuilder):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._worker = self._rebuilder = None
        if not self._rebuilds.empty():
            log.warning("%d recordings' text not rebuilt from storage before stopping; run "
                        "tssh-recorder reindex", self._rebuilds.qsize())
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        await self.flush()
        for task in list(self._tasks):
            await task


async def _yield(started: float) -> None:
    """Gives the event loop back for DUTY_PAUSE times the time used since ``started``."""
    await asyncio.sleep((time.perf_counter() - started) * DUTY_PAUSE)


async def rebuild(index: Index, recording_id: str, chunks: AsyncIterator[bytes], *,
                  on_error: Callable[[], None] | None = None) -> None:
    """Builds a recording's text from its stored bytes, replacing what the index had. An
    index failure is logged (and told to ``on_error``) and leaves the text to the next
    reindex."""
    text = CastText()
    lines: list[Line] = []
    try:
        await index.clear_text(recording_id)
        async for chunk in chunks:
            for i in range(0, len(chunk), SLICE):
                started = time.perf_counter()
                lines += text.feed(chunk[i : i + SLICE])
                if len(lines) >= REBUILD_BATCH:
                    await index.add_text([TextUpdate(recording_id, lines)])
                    lines = []
                await _yield(started)
        await index.add_text([TextUpdate(recording_id, lines + text.end())])
    except RecorderError:
        raise  # storage: the caller says what it was doing
    except Exception:
        if on_error is not None:
            on_error()
        log.exception("could not index the text of recording %s (run tssh-recorder "
                      "reindex)", recording_id)
