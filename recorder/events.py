"""Sans-I/O: the bytes of a stored asciicast → its output events, for the text index.

Fed exactly the bytes storage holds (header line included, in pieces of any size), so that
text indexed while an upload streams and text rebuilt from storage by ``reindex`` are the
same. Only ``"o"`` events matter to a search: input is echoed as output by the terminal when
the user sees it, and resize, marker and exit events carry no text. A line that is not a
well-formed event is skipped (``recorder/stream.py`` decides what is stored, not this).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

from recorder.stream import LINE_LIMIT
from recorder.text import Line, TerminalText

Event = tuple[float, str]


@dataclass
class OutputEvents:
    line_limit: int = LINE_LIMIT
    _header_seen: bool = False
    _pending: bytearray = field(default_factory=bytearray)
    _skipping: bool = False  # inside a line longer than line_limit

    def feed(self, data: bytes) -> list[Event]:
        out: list[Event] = []
        start = 0
        while True:
            nl = data.find(b"\n", start)
            if nl < 0:
                break
            if self._skipping:
                self._skipping = False
            elif self._pending:
                self._pending += data[start:nl]
                self._line(bytes(self._pending), out)
                self._pending = bytearray()
            else:
                self._line(data[start:nl], out)
            start = nl + 1
        if not self._skipping and start < len(data):
            self._pending += data[start:]
            if len(self._pending) > self.line_limit:
                self._pending = bytearray()
                self._skipping = True
        return out

    def end(self) -> list[Event]:
        """The stream ended: a last line without its newline is still an event (a recording
        cut short may end so)."""
        out: list[Event] = []
        if self._pending and not self._skipping:
            self._line(bytes(self._pending), out)
        self._pending = bytearray()
        return out

    def _line(self, line: bytes, out: list[Event]) -> None:
        if not self._header_seen:
            self._header_seen = True
            return
        if b'"o"' not in line:
            return
        try:
            event = json.loads(line)
        except (ValueError, RecursionError):
            return
        if (
            isinstance(event, list) and len(event) >= 3 and event[1] == "o"
            and isinstance(event[2], str) and isinstance(event[0], int | float)
            and not isinstance(event[0], bool) and math.isfinite(event[0])
        ):
            out.append((float(event[0]), event[2]))


@dataclass
class CastText:
    """Stored cast bytes → searchable lines: ``OutputEvents`` then ``TerminalText``."""

    events: OutputEvents = field(default_factory=OutputEvents)
    terminal: TerminalText = field(default_factory=TerminalText)

    def feed(self, data: bytes) -> list[Line]:
        out: list[Line] = []
        for time, text in self.events.feed(data):
            out += self.terminal.feed(time, text)
        return out

    def partial(self) -> Line | None:
        return self.terminal.partial()

    def end(self) -> list[Line]:
        out: list[Line] = []
        for time, text in self.events.end():
            out += self.terminal.feed(time, text)
        return out + self.terminal.end()
