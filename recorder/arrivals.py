"""When the bytes of one stream arrived, so that whoever consumes them in order (the ack of
an upload, the text index) can tell how long its oldest byte waited: the ack latency and the
index lag of docs/recorder.md ("Metrics"). Sans-I/O: the clock is passed in.
"""

from __future__ import annotations

from collections import deque


class Arrivals:
    """A FIFO of (byte count, arrival time of the first of them). Bytes arriving within
    ``grain`` seconds of a mark join it, which keeps the FIFO short for a fast stream; a
    time reported is then up to ``grain`` earlier than the byte's own."""

    def __init__(self, grain: float = 0.0) -> None:
        self.grain = grain
        self._marks: deque[tuple[int, float]] = deque()

    def arrived(self, n: int, now: float) -> None:
        if n <= 0:
            return
        if self._marks and now - self._marks[-1][1] < self.grain:
            size, first = self._marks[-1]
            self._marks[-1] = (size + n, first)
        else:
            self._marks.append((n, now))

    def oldest(self) -> float | None:
        """The arrival time of the oldest byte not consumed yet."""
        return self._marks[0][1] if self._marks else None

    def consumed(self, n: int) -> float | None:
        """The oldest ``n`` bytes are done with; the arrival time of the first of them (None
        when there were none)."""
        first = self.oldest() if n > 0 else None
        while n > 0 and self._marks:
            size, when = self._marks[0]
            if size > n:
                self._marks[0] = (size - n, when)
                break
            self._marks.popleft()
            n -= size
        return first

    def clear(self) -> None:
        self._marks.clear()
