"""The seek index of a recording, and the cast *segment* built from it (docs/recorder.md,
"Seeking in long recordings").

Pure. ``SeekIndexer`` watches the stored bytes go by as the upload streams in (the same bytes,
in the same order, as the cast file) and notes a checkpoint at the first line start after
every ``step`` bytes: the byte offset of that event line, its event time, and the terminal
size then in force (the header's, or the last ``"r"`` event's). It never parses a line it does
not have to: it looks for one newline per step and for ``"r"`` only in chunks that contain it.

A segment lets a player start near a time without reading what comes before: the header
(with the size at the checkpoint), one synthetic ``"o"`` event at the checkpoint's time that
rebuilds the screen, then the cast's own bytes from the checkpoint on, unchanged. The screen is
rebuilt by a terminal reset followed by the output of the last ``replay`` bytes of events
before the checkpoint: asciinema-player 3.x cannot load a screen snapshot, but it can play
output, and a terminal's screen is a function of its recent output (a full-screen program
redraws, a shell's last lines are in the window). What that cannot restore is state set
earlier than the window and never repeated inside it (an alternate screen entered, a scroll
region or colours set long before); docs/recorder.md says so.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field

STEP = 4 * 1024 * 1024  # bytes between checkpoints (a seek reads at most this much extra)
MAX_CHECKPOINTS = 512  # beyond it every other one is dropped and the step doubles
REPLAY = 64 * 1024  # bytes of events before a checkpoint replayed to rebuild the screen
RESET = "\x1bc"  # RIS: the synthetic event starts from a terminal in its initial state
_PREFIX = 96  # bytes of a line read for its time (and, for "r", its whole data)
_TIME = re.compile(rb'^\s*\[\s*(-?[0-9][0-9.eE+-]*)\s*,')
# a resize event's line (a raw `"r"` is never inside a JSON string: quotes there are escaped)
_RESIZE = re.compile(
    rb'(?m)^\s*\[\s*-?[0-9][0-9.eE+-]*\s*,\s*"r"\s*,\s*"([0-9]{1,6})x([0-9]{1,6})"')


@dataclass(frozen=True)
class Checkpoint:
    offset: int  # byte offset of an event line's first byte in the cast file
    time: float  # that event's time (seconds from the start)
    size: tuple[int, int] | None  # (a, b) of the last "r" event before it, as spelled

    def to_json(self) -> list[object]:
        return [self.offset, self.time, None if self.size is None else list(self.size)]

    @classmethod
    def from_json(cls, doc: object) -> Checkpoint | None:
        """None for anything but ``[offset, time, size|null]`` (metadata is read back from
        storage, where anything may have been written)."""
        if not isinstance(doc, list) or len(doc) != 3:
            return None
        offset, t, size = doc
        if not isinstance(offset, int) or offset < 0 or not isinstance(t, int | float):
            return None
        if isinstance(t, bool) or not math.isfinite(t):
            return None
        parsed: tuple[int, int] | None = None
        if isinstance(size, list) and len(size) == 2 and all(
                isinstance(v, int) and not isinstance(v, bool) for v in size):
            parsed = (size[0], size[1])
        return cls(offset, float(t), parsed)


@dataclass
class SeekIndexer:
    """Consumes the stored bytes of one recording, header first; ``checkpoints`` grows."""

    step: int = STEP
    max_checkpoints: int = MAX_CHECKPOINTS
    checkpoints: list[Checkpoint] = field(default_factory=list)
    position: int = 0  # bytes consumed
    _header_done: bool = False
    _next: int = 0  # the first line start at or after this offset becomes a checkpoint
    _line_start: int | None = None  # offset of the candidate line being read
    _prefix: bytearray = field(default_factory=bytearray)
    _size: tuple[int, int] | None = None  # the last resize before the lines read so far
    _resizes_seen: int = -1  # offset of the last resize line queued
    _queued: list[tuple[int, tuple[int, int]]] = field(default_factory=list)  # (offset, size)
    _tail: bytes = b""  # the end of the previous chunk (an "r" line split across chunks)

    def feed(self, data: bytes) -> None:
        self._scan(data)
        # every line start found later lies past what was read: resizes seen count from now,
        # except those after a candidate line whose start is still being read
        self._apply(self._line_start if self._line_start is not None else self.position)

    def _scan(self, data: bytes) -> None:
        base = self.position
        self.position += len(data)
        i = 0
        if not self._header_done:
            nl = data.find(b"\n")
            if nl < 0:
                return
            self._header_done = True
            self._next = base + nl + 1 + self.step
            i = nl + 1
        if b'"r"' in data or b'"r"' in self._tail + data[:8]:
            self._queue_resizes(self._tail + data, base - len(self._tail))
        self._tail = data[-_PREFIX:]
        while i < len(data):
            if self._line_start is not None:  # reading the start of the candidate line
                line_start = self._line_start
                take = data[i:i + _PREFIX - len(self._prefix)]
                self._prefix += take
                i += len(take)
                nl = self._prefix.find(b"\n")
                if nl < 0 and len(self._prefix) < _PREFIX:
                    return  # the line's start continues in the next chunk
                self._checkpoint(bytes(self._prefix[:nl] if nl >= 0 else self._prefix))
                i = max(0, line_start - base)  # look for the next line from its start
            start = max(i, self._next - base)
            if start >= len(data):
                return
            nl = data.find(b"\n", start)
            if nl < 0:
                return
            self._line_start = base + nl + 1
            self._prefix = bytearray()
            i = nl + 1

    def _checkpoint(self, prefix: bytes) -> None:
        assert self._line_start is not None
        m = _TIME.match(prefix)
        t: float | None = None
        if m is not None:
            try:
                t = float(m.group(1))
            except ValueError:
                t = None
        if t is not None and math.isfinite(t):
            self._apply(self._line_start)
            if not self.checkpoints or t >= self.checkpoints[-1].time:
                self.checkpoints.append(Checkpoint(self._line_start, t, self._size))
                if len(self.checkpoints) > self.max_checkpoints:
                    self.checkpoints = self.checkpoints[1::2]
                    self.step *= 2
            self._next = self._line_start + self.step
        else:
            self._next = self._line_start + 1  # not an event line: the next one
        self._line_start = None
        self._prefix = bytearray()

    def _queue_resizes(self, buf: bytes, buf_base: int) -> None:
        for m in _RESIZE.finditer(buf):
            offset = buf_base + m.start()
            if offset > self._resizes_seen:
                self._resizes_seen = offset
                self._queued.append((offset, (int(m.group(1)), int(m.group(2)))))

    def _apply(self, before: int) -> None:
        """The resizes on lines starting before ``before`` are now in force."""
        while self._queued and self._queued[0][0] < before:
            self._size = self._queued.pop(0)[1]


def choose(checkpoints: list[Checkpoint], t: float) -> Checkpoint | None:
    """The last checkpoint at or before ``t``; None when ``t`` is before the first (a
    segment would save nothing: read the cast from its start)."""
    best: Checkpoint | None = None
    for cp in checkpoints:
        if cp.time > t:
            break
        best = cp
    return best


def segment_header(header_line: bytes, cp: Checkpoint, swapped: bool) -> bytes:
    """The header line of a segment: the recording's own, with the terminal size at the
    checkpoint (``swapped``: the recording spells resizes ``HEIGHTxWIDTH``, the Kubernetes
    operator's way) and ``segment`` saying where the segment starts."""
    doc = json.loads(header_line)
    if cp.size is not None:
        a, b = cp.size
        doc["width"], doc["height"] = (b, a) if swapped else (a, b)
    doc["segment"] = {"offset": cp.offset, "time": cp.time}
    return json.dumps(doc, ensure_ascii=False).encode() + b"\n"


def screen_event(window: bytes, cp: Checkpoint) -> bytes:
    """The synthetic event that rebuilds the screen at ``cp``: a reset, then the ``"o"`` data
    of the whole event lines in ``window`` (the bytes just before the checkpoint; a line cut
    at its start is skipped, lines that are not events are ignored)."""
    first = window.find(b"\n")
    lines = window[first + 1:].split(b"\n") if first >= 0 else []
    out = [RESET]
    for line in lines:
        if not line:
            continue
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, list) and len(doc) >= 3 and doc[1] == "o" and isinstance(doc[2], str):
            out.append(doc[2])
    return json.dumps([cp.time, "o", "".join(out)], ensure_ascii=False).encode() + b"\n"
