"""Live followers: readers of a recording that is still being uploaded.

The ingest side publishes how many bytes are readable from storage; a follower reads storage up
to that point, then waits for the next publication. Followers never hold recording bytes in
memory beyond one read chunk, so a slow follower cannot grow the recorder's memory.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

Reader = Callable[[int, int], AsyncIterator[bytes]]


@dataclass
class _Live:
    size: int = 0
    ended: bool = False
    followers: int = 0
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)


class LiveHub:
    def __init__(self) -> None:
        self._live: dict[str, _Live] = {}

    def begin(self, recording_id: str) -> None:
        self._live[recording_id] = _Live()

    def is_live(self, recording_id: str) -> bool:
        return recording_id in self._live

    def size(self, recording_id: str) -> int | None:
        state = self._live.get(recording_id)
        return None if state is None else state.size

    async def publish(self, recording_id: str, size: int) -> None:
        state = self._live.get(recording_id)
        if state is None:
            return
        state.size = size
        if state.followers:  # the common case, nobody watching, costs no lock
            async with state.changed:
                state.changed.notify_all()

    async def end(self, recording_id: str) -> None:
        state = self._live.pop(recording_id, None)
        if state is None:
            return
        async with state.changed:
            state.ended = True
            state.changed.notify_all()

    async def follow(
        self, recording_id: str, read: Reader, final_size: Callable[[], Awaitable[int | None]]
    ) -> AsyncIterator[bytes]:
        """Yields whole lines: what is stored so far, then new lines until the recording ends."""
        state = self._live.get(recording_id)
        if state is not None:
            state.followers += 1
        try:
            async for data in self._follow(state, read, final_size):
                yield data
        finally:
            if state is not None:
                state.followers -= 1

    async def _follow(
        self, state: _Live | None, read: Reader, final_size: Callable[[], Awaitable[int | None]]
    ) -> AsyncIterator[bytes]:
        lines = _Lines(read)
        while True:
            if state is not None and not state.ended:
                limit: int | None = state.size
            else:
                limit = await final_size()
            async for piece in lines.up_to(limit):
                yield piece
            if state is None or state.ended:
                if lines.tail:
                    yield lines.tail  # a torn last line of an interrupted recording
                return
            async with state.changed:
                if state.size == lines.pos and not state.ended:
                    await state.changed.wait()


class _Lines:
    """Whole lines of a stored stream read in pieces: where the next read starts, and the
    torn end of the last piece, kept until its newline arrives."""

    def __init__(self, read: Reader) -> None:
        self.read = read
        self.pos = 0
        self.tail = b""

    async def up_to(self, limit: int | None) -> AsyncIterator[bytes]:
        """The whole lines of the bytes from ``pos`` to ``limit`` (None: nothing yet)."""
        if limit is None or limit <= self.pos:
            return
        async for chunk in self.read(self.pos, limit):
            self.pos += len(chunk)
            data = self.tail + chunk
            cut = data.rfind(b"\n") + 1
            self.tail = data[cut:]
            if cut:
                yield data[:cut]


# how often a follower of a recording live on another replica looks again (docs/recorder.md,
# "Fleet"): no replica tells another that bytes arrived, the shared storage and index do
Poll = Callable[[], Awaitable[tuple[int | None, bool]]]
REMOTE_POLL = 0.5


async def follow_elsewhere(read: Reader, poll: Poll,
                           interval: float = REMOTE_POLL) -> AsyncIterator[bytes]:
    """Yields whole lines of a recording another replica is receiving: ``poll`` says how many
    bytes storage holds now (None: none readable yet) and whether the recording has ended
    (then that count is its final size)."""
    lines = _Lines(read)
    while True:
        limit, ended = await poll()
        async for piece in lines.up_to(limit):
            yield piece
        if ended:
            if lines.tail:
                yield lines.tail
            return
        await asyncio.sleep(interval)
