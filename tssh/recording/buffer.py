"""A recording's bounded buffer: what waits to be sent, what was lost, and the markers that
tell a reader about the loss. Pure: no clock, no I/O, no event loop (the uploader drives it).

With ``enforce`` nothing is ever dropped: every event goes in and ``full`` tells the session
to pause until ``half_empty`` (backpressure). Without, a whole event that does not fit is
dropped and counted, and an ``"m"`` marker saying how many bytes were lost goes in before the
next event that fits; the header and a last marker at the end go in whatever the limit.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

# marker(bytes_lost) -> one encoded "m" event saying so
Marker = Callable[[int], bytes]


class RecordingBuffer:
    def __init__(self, limit: int, enforce: bool) -> None:
        self.limit = limit
        self.enforce = enforce
        self._parts: deque[bytes] = deque()
        self.buffered = 0  # bytes waiting, the chunk being sent included
        self.written = 0  # encoded bytes the session produced (markers not counted)
        self.dropped = 0
        self.dropped_events = 0
        self.unmarked = 0  # dropped bytes that no marker has told yet

    def __bool__(self) -> bool:
        """Whether anything is left to take."""
        return bool(self._parts)

    @property
    def full(self) -> bool:
        return self.buffered >= self.limit

    @property
    def half_empty(self) -> bool:
        return self.buffered <= self.limit // 2

    def put_header(self, line: bytes) -> None:
        """The header goes in whatever the limit: without it the recording is unreadable."""
        self.written += len(line)
        self._append(line)

    def put(self, line: bytes, marker: Marker) -> None:
        """One encoded event (or nothing, for ``b""``)."""
        if not line:
            return
        self.written += len(line)
        if self.enforce:
            self._append(line)
            return
        if self.unmarked:
            mark = marker(self.unmarked)
            if self.buffered + len(mark) + len(line) <= self.limit:
                self.unmarked = 0
                self._append(mark)
                self._append(line)
                return
        elif self.buffered + len(line) <= self.limit:
            self._append(line)
            return
        self.count_drop(len(line))

    def count_drop(self, size: int) -> None:
        """One event's worth of output lost (here, or before it reached the recording)."""
        self.dropped += size
        self.dropped_events += 1
        self.unmarked += size

    def put_final_marker(self, marker: Marker) -> None:
        """At the end: a loss after the last event that fitted is told too (one short line)."""
        if self.unmarked:
            self._append(marker(self.unmarked))
            self.unmarked = 0

    def take(self, limit: int) -> bytes:
        """Up to ``limit`` bytes from the front. They stay counted in ``buffered`` until
        ``sent`` says the destination took them."""
        parts: list[bytes] = []
        size = 0
        while self._parts and size < limit:
            part = self._parts.popleft()
            if size + len(part) > limit:
                cut = limit - size
                self._parts.appendleft(part[cut:])
                part = part[:cut]
            parts.append(part)
            size += len(part)
        return b"".join(parts)

    def sent(self, size: int) -> None:
        self.buffered -= size

    def put_back(self, data: bytes) -> None:
        """A chunk taken but never confirmed ``sent`` goes to the front again (a failover
        sends it to the next destination); it is still counted in ``buffered``."""
        if data:
            self._parts.appendleft(data)

    def skip_line_rest(self) -> int:
        """Drops the front up to and including the first newline: the rest of an event whose
        start went to a destination that failed (a new one must begin on a line). The
        number of bytes dropped, counted as dropped."""
        skipped = 0
        while self._parts:
            part = self._parts.popleft()
            end = part.find(b"\n")
            if end >= 0:
                if end + 1 < len(part):
                    self._parts.appendleft(part[end + 1:])
                skipped += end + 1
                break
            skipped += len(part)
        self.buffered -= skipped
        self.dropped += skipped
        return skipped

    def discard(self, also_lost: int = 0) -> None:
        """The destination failed: everything waiting is lost (plus ``also_lost`` bytes the
        caller held back), counted as dropped."""
        self.dropped += self.buffered + also_lost
        self._parts.clear()
        self.buffered = 0

    def _append(self, data: bytes) -> None:
        self._parts.append(data)
        self.buffered += len(data)
