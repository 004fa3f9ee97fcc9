"""A recording as server-sent events in the format asciinema-player's ``eventsource`` driver
reads (docs/recorder.md, "Web UI"): the live view of the web UI plays through the player's own
live driver instead of a driver of ours.

Pure: takes the asciicast's lines, returns the bytes of SSE frames. What the driver reads
(asciinema-player 3.x, ``src/driver/eventsource.js``): every unnamed message's data is JSON;
an object with ``cols``/``rows`` resets the terminal, an array ``[seconds, code, data]`` is an
event (``"o"`` output, ``"i"`` input, ``"m"`` marker, ``"r"`` resize as ``{"cols", "rows"}``,
not the cast's ``"COLSxROWS"`` string); an event named ``done`` ends the stream (the player
then closes it, so the browser does not reconnect). Anything else the driver ignores, so the
cast's ``"x"`` exit event is carried in ``done``'s data instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from recorder import kubernetes

RETRY_MS = 3000  # the browser's reconnection delay after a cut connection
KEEPALIVE = b": keepalive\n\n"  # an SSE comment: keeps proxies from timing out an idle stream
DEFAULT_SIZE = (80, 24)  # the player's own default when a header says 0 (no PTY)
_PASSED = frozenset(("o", "i", "m"))


def frame(data: Any, event: str | None = None) -> bytes:
    """One SSE frame; ``data`` as compact JSON, which never holds a CR or LF (JSON escapes
    them), so the frame is one ``data:`` line."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {text}\n\n".encode()


def _size(cols: Any, rows: Any) -> tuple[int, int]:
    if isinstance(cols, int) and isinstance(rows, int) and cols > 0 and rows > 0:
        return cols, rows
    return DEFAULT_SIZE


@dataclass
class CastEvents:
    """Turns the lines of one asciicast v2 recording, in order, into SSE frames."""

    header_seen: bool = False
    header: dict[str, Any] | None = None
    exit_status: int | None = None
    last_time: float = 0.0

    def start(self) -> bytes:
        return f"retry: {RETRY_MS}\n\n".encode()

    def line(self, raw: bytes) -> bytes:
        """The frame for one line of the cast (without its newline); b"" when there is none
        (a line the player has no use for, or a torn or invalid one)."""
        try:
            doc = json.loads(raw)
        except ValueError:
            return b""
        if not self.header_seen:
            if not isinstance(doc, dict):
                return b""
            self.header_seen = True
            self.header = doc
            cols, rows = _size(doc.get("width"), doc.get("height"))
            return frame({"cols": cols, "rows": rows, "time": 0})
        if not (isinstance(doc, list) and len(doc) >= 3 and isinstance(doc[0], int | float)
                and isinstance(doc[1], str)):
            return b""
        t, code, data = float(doc[0]), doc[1], doc[2]
        self.last_time = max(self.last_time, t)
        if code in _PASSED and isinstance(data, str):
            return frame([t, code, data])
        if code == "r" and isinstance(data, str):
            size = kubernetes.resize(self.header or {}, data)  # HEIGHTxWIDTH from the operator
            if size is not None:
                cols, rows = _size(*size)
                return frame([t, "r", {"cols": cols, "rows": rows}])
        if code == "x" and isinstance(data, str) and data.lstrip("-").isdigit():
            self.exit_status = int(data)
        return b""

    def done(self, status: str) -> bytes:
        """The last frame: the recording ended (``status`` complete or incomplete)."""
        return frame({"status": status, "exitStatus": self.exit_status,
                      "time": self.last_time}, event="done")
